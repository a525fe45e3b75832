"""The POP3 maildrop: a locked snapshot of INBOX with deletions applied only at QUIT (RFC 1939).

Owns the POP3 view of the store: the exclusive maildrop lock (``flock`` on a file in the
Maildir, so two POP3 sessions, in this process or another, never both delete), the message
list fixed at login, UIDLs derived from the persistent IMAP UIDs (stable across restarts), and
the UPDATE state. Never speaks the POP3 protocol.
"""

from __future__ import annotations

import fcntl
import os
from typing import Any, BinaryIO, Optional

from twisted.internet import defer
from twisted.mail import pop3
from zope.interface import implementer

from cgtwist.logs import Logger
from cgtwist.mailstore import filemeta, maildir
from cgtwist.mailstore.account import MaildirAccount
from cgtwist.mailstore.mailbox import MaildirMailbox
from cgtwist.mailstore.message import MaildirMessage

LOCK_FILE = "cgtwist-pop3.lock"


class MailboxInUse(Exception):
    """Another POP3 session holds the maildrop lock (POP3 ``-ERR [IN-USE]``, RFC 2449 §8.1.2)."""


def acquire_lock(maildir_path: str) -> int:
    """Take the maildrop lock without waiting; returns the fd, raises MailboxInUse."""
    maildir.ensure(maildir_path)
    fd = os.open(os.path.join(maildir_path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise MailboxInUse("maildrop locked") from None
    return fd


@implementer(pop3.IMailbox)
class PopMailbox:
    """``PopMailbox(box, lock_fd)``: build it with ``PopMailbox.open(account)``.

    Message indexes are 0-based as in twisted.mail.pop3.IMailbox; deleted messages report
    size 0. ``sync()`` (QUIT) expunges the deleted messages and marks retrieved ones \\Seen,
    and fires when that is durable.
    """

    log = Logger()

    def __init__(self, box: MaildirMailbox, lock_fd: Optional[int]) -> None:
        self.box = box
        self._lock_fd = lock_fd
        self.uids = box.uids
        folder = box.folder
        self.entries = [folder.entries[u] for u in self.uids]
        self.uidvalidity = folder.uidvalidity
        self.deleted: set[int] = set()
        self.retrieved: set[int] = set()

    @classmethod
    def open(cls, account: MaildirAccount) -> defer.Deferred[PopMailbox]:
        """Lock the account's maildrop and snapshot INBOX; errbacks with MailboxInUse.

        The lock is taken in a thread, as all the mailbox's file work is: at a first login it
        creates the lock file, and the server's reactor serves every other session."""

        def locked(fd: int) -> defer.Deferred[PopMailbox]:
            def opened(box: Optional[MaildirMailbox]) -> PopMailbox:
                assert box is not None, "INBOX always exists"
                return cls(box, fd)

            def failed(f: Any) -> Any:
                os.close(fd)
                return f

            return account.select("INBOX", True).addCallbacks(opened, failed)

        return account.notifier.run(acquire_lock, account.path).addCallback(locked)

    # -- helpers ------------------------------------------------------------------------------

    def _check(self, i: int) -> None:
        if not isinstance(i, int) or i < 0 or i >= len(self.entries):
            raise ValueError("no such message")

    def is_deleted(self, i: int) -> bool:
        self._check(i)
        return i in self.deleted

    def count_and_size(self) -> tuple[int, int]:
        """STAT: messages and octets, not counting those marked deleted."""
        live = [e.meta.size for n, e in enumerate(self.entries) if n not in self.deleted]
        return len(live), sum(live)

    def _message(self, i: int) -> MaildirMessage:
        self._check(i)
        e = self.entries[i]
        return MaildirMessage(self.box.folder, e, frozenset(), False)

    def message_file(self, i: int) -> BinaryIO:
        """The message with CRLF line ends; LookupError when another session (IMAP) expunged
        it since this session began."""
        f = self._message(i).open_or_none()
        if f is None:
            raise LookupError("message no longer exists")
        self.retrieved.add(i)
        return f

    def top(self, i: int, lines: int) -> bytes:
        """TOP: the header, the blank line, and the first ``lines`` body lines (RFC 1939 §7)."""
        with self.message_file(i) as f:
            data = f.read()
        off = filemeta.split_header(data)
        body = data[off:]
        if lines == 0:
            cut = 0
        else:
            pos = -1
            for _ in range(lines):
                pos = body.find(b"\n", pos + 1)
                if pos < 0:
                    pos = len(body) - 1
                    break
            cut = pos + 1
        return data[:off] + body[:cut]

    # -- twisted.mail.pop3.IMailbox -----------------------------------------------------------

    def listMessages(self, i: Optional[int] = None) -> Any:
        if i is None:
            return [0 if n in self.deleted else e.meta.size for n, e in enumerate(self.entries)]
        self._check(i)
        return 0 if i in self.deleted else self.entries[i].meta.size

    def getMessage(self, i: int) -> BinaryIO:
        return self.message_file(i)

    def getUidl(self, i: int) -> str:
        """Dovecot's default format ``%08Xu%08Xv``: UID and UIDVALIDITY, stable across restarts."""
        self._check(i)
        return f"{self.entries[i].uid:08X}{self.uidvalidity:08X}"

    def deleteMessage(self, i: int) -> None:
        self._check(i)
        if i in self.deleted:
            raise ValueError("message already deleted")
        self.deleted.add(i)

    def undeleteMessages(self) -> None:
        self.deleted.clear()

    def sync(self) -> defer.Deferred[int]:
        """UPDATE state: mark retrieved messages \\Seen, expunge the deleted ones; fires with
        the number removed."""
        doomed = [self.entries[i].uid for i in sorted(self.deleted)]
        seen = [self.entries[i].uid for i in sorted(self.retrieved - self.deleted)]
        folder = self.box.folder
        d: defer.Deferred[Any] = defer.succeed(None)
        if seen:
            d.addCallback(lambda _: folder.set_flags(seen, ["\\Seen"], 1))
        if doomed:
            d.addCallback(lambda _: folder.expunge(doomed))
        return d.addCallback(lambda _: len(doomed))

    def release(self) -> None:
        """End of session (QUIT done or connection lost): unlock, without applying deletions."""
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None
            self.box.close()
