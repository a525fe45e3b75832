"""The shared mail-access realm: avatars for POP3 and IMAP, service checks, first-login setup."""

from __future__ import annotations

import os
from typing import Any

from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin
from twisted.mail import imap4, pop3
from twisted.trial import unittest

from cgtwist import paths
from cgtwist.mailstore import MaildirAccount
from cgtwist.mailstore.notifier import MailboxNotifier
from cgtwist.mailstore.pop import MailboxInUse, PopMailbox, acquire_lock
from cgtwist.protocols.realm import ServiceDisabled
from tests.protocols.test_pop3_fakes import FakeStore, make_portal


class RealmTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.store = FakeStore()
        self.store.add("alice", "secret")
        self.store.add("nopop", "secret", frozenset({"imap"}))
        self.store.add("noimap", "secret", frozenset({"pop"}))
        self.portal, self.realm = make_portal(self.base, self.store)

    def login(self, user: str, iface: object) -> object:
        return self.portal.login(
            credentials.UsernamePassword(user.encode(), b"secret"), None, iface
        )

    def test_imap_avatar_and_first_login_setup(self) -> None:
        """An IMAP login gets the account's folders; the Maildir with Sent/Drafts/Trash/Junk
        exists after the first login."""
        iface, avatar, logout = self.successResultOf(
            self.login("alice@example.com", imap4.IAccount)
        )
        self.assertIs(iface, imap4.IAccount)
        self.assertIsInstance(avatar, MaildirAccount)
        md = paths.maildir(self.base, "example.com", "alice")
        self.assertEqual(avatar.path, md)
        for sub in ("cur", "new", "tmp", ".Sent/cur", ".Drafts/cur", ".Trash/cur", ".Junk/cur"):
            self.assertTrue(os.path.isdir(os.path.join(md, sub)), sub)
        logout()

    def test_pop_avatar_locks(self) -> None:
        """A POP3 login gets a locked maildrop; a second POP3 login waits for the first to end."""
        iface, box, logout = self.successResultOf(self.login("alice", pop3.IMailbox))
        self.assertIs(iface, pop3.IMailbox)
        self.assertIsInstance(box, PopMailbox)
        self.failureResultOf(self.login("alice@example.com", pop3.IMailbox), MailboxInUse)
        logout()
        _i, _b, logout2 = self.successResultOf(self.login("alice", pop3.IMailbox))
        logout2()

    def test_pop_lock_is_taken_off_the_reactor(self) -> None:
        """The maildrop lock (a file created at the first login, then flock) is file work and
        goes through the notifier's thread like the rest of the mailbox's; a second session
        still finds the maildrop in use."""
        ran: list[object] = []

        class Recording(MailboxNotifier):
            def run(self, fn: Any, *args: Any) -> Any:
                ran.append(fn)
                return super().run(fn, *args)

        md = os.path.join(self.base, "drop")
        account = MaildirAccount(md, "alice@example.com", Recording())
        box = self.successResultOf(PopMailbox.open(account))
        self.assertIn(acquire_lock, ran)
        self.failureResultOf(PopMailbox.open(account), MailboxInUse)
        box.release()
        self.successResultOf(PopMailbox.open(account)).release()

    def test_service_disabled(self) -> None:
        """An account without the pop (or imap) service cannot use that protocol."""
        self.failureResultOf(self.login("nopop@example.com", pop3.IMailbox), ServiceDisabled)
        self.failureResultOf(self.login("noimap@example.com", imap4.IAccount), ServiceDisabled)
        self.successResultOf(self.login("nopop@example.com", imap4.IAccount))
        self.assertFalse(os.path.exists(paths.maildir(self.base, "example.com", "noimap")))

    def test_unknown_avatar(self) -> None:
        """An avatar id for an account that vanished or is malformed is refused."""
        self.failureResultOf(
            self.realm.requestAvatar("ghost@example.com", None, imap4.IAccount), UnauthorizedLogin
        )
        self.failureResultOf(
            self.realm.requestAvatar("../x@example.com", None, imap4.IAccount), UnauthorizedLogin
        )
        self.failureResultOf(
            self.realm.requestAvatar(b"a@..", None, imap4.IAccount), UnauthorizedLogin
        )
