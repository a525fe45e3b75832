"""cgtwist.mailstore: mailboxes over Maildir++ for IMAP and POP3 (UIDs, flags, folders, push).

Public API:
* ``MailboxNotifier(reactor, threadpool=None, hostname=None)``: one per process; implements
  ``cgtwist.interfaces.IMailboxNotifier`` (LOCAL delivery calls ``mailbox_changed``).
  Every process that serves sessions calls ``watch_other_processes(max_folders,
  poll_interval)`` once at start (imap.watch_folders, imap.watch_poll_interval), so other
  processes' changes reach its sessions at once; ``flush()`` at shutdown closes it.
* ``MaildirAccount(path, account, notifier)``: twisted.mail.imap4 IAccount for one Maildir.
* ``MaildirMailbox``: IMailbox view of a folder for one session (from ``account.select``).
* ``provision(path)``: create a Maildir with the special-use folders (blocking).
"""

from cgtwist.mailstore.account import MailboxError, MaildirAccount
from cgtwist.mailstore.listing import MailboxInfo
from cgtwist.mailstore.mailbox import MaildirMailbox, parse_imap_date
from cgtwist.mailstore.message import MaildirMessage, MessagePart
from cgtwist.mailstore.names import MailboxNameError
from cgtwist.mailstore.notifier import MailboxNotifier
from cgtwist.mailstore.tree import SPECIAL_USE, provision

__all__ = [
    "SPECIAL_USE",
    "MailboxError",
    "MailboxInfo",
    "MaildirAccount",
    "MaildirMailbox",
    "MaildirMessage",
    "MailboxNameError",
    "MailboxNotifier",
    "MessagePart",
    "parse_imap_date",
    "provision",
]
