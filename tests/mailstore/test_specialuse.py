"""Special-use attributes kept with their folders (RFC 6154): the account's map, its file,
and provisioning that respects what CREATE, RENAME and DELETE did to the defaults."""

from __future__ import annotations

import os

from twisted.trial import unittest

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, provision, specialuse
from cgtwist.mailstore.account import MailboxError


class SpecialUseStoreTests(unittest.TestCase):
    def account(self, limit: int = 0) -> MaildirAccount:
        md = os.path.join(os.path.abspath(self.mktemp()), "Maildir")
        provision(md)
        return MaildirAccount(md, "a@example.com", MailboxNotifier(), limit)

    def reopened(self, account: MaildirAccount) -> MaildirAccount:
        """The account as a restarted server sees it: provisioned again, nothing shared."""
        provision(account.path)
        return MaildirAccount(account.path, account.account, MailboxNotifier())

    def test_defaults_without_a_file(self) -> None:
        """A Maildir provisioned before this feature (no file) has the four defaults."""
        account = self.account()
        self.assertFalse(specialuse.file_exists(account.path))
        self.assertEqual(account.special_use_of("Sent"), "\\Sent")
        self.assertEqual(account.special_use_of("Junk"), "\\Junk")
        self.assertIsNone(account.special_use_of("INBOX"))

    def test_round_trip_across_restart(self) -> None:
        """What CREATE, RENAME and DELETE did survives a restart; names outside ASCII too."""
        account = self.account()
        self.successResultOf(account.create("Ärchiv", ["\\archive"]))
        self.successResultOf(account.rename("Sent", "Gesendet"))
        self.successResultOf(account.delete("Drafts"))
        again = self.reopened(account)
        self.assertEqual(again.special_uses_of("Ärchiv"), ("\\Archive",))
        self.assertEqual(again.special_uses_of("Gesendet"), ("\\Sent",))
        self.assertFalse(again.exists("Sent"))  # not made again beside its renamed folder
        # Drafts was deleted with no other folder holding \Drafts: a default comes back.
        self.assertTrue(again.exists("Drafts"))
        self.assertEqual(again.special_uses_of("Drafts"), ("\\Drafts",))
        entries = specialuse.load(account.path).snapshot()
        self.assertEqual(entries["Drafts"], ("\\Drafts",))

    def test_unreadable_lines_are_skipped(self) -> None:
        """A hand-edited file with bad lines, an attribute twice or one not honoured still
        loads what it can; the first holder of an attribute keeps it."""
        account = self.account()
        with open(os.path.join(account.path, specialuse.FILE), "wb") as f:
            f.write(
                b"A\t\\Archive\nB\t\\Archive \\Sent\nC\t\\All\n../x\t\\Trash\n"
                b"no tab here\nD\t\\Bogus\n\xff\t\\Junk\n"
            )
        uses = specialuse.load(account.path)
        self.assertEqual(uses.snapshot(), {"A": ("\\Archive",), "B": ("\\Sent",)})

    def test_refused_create_keeps_nothing(self) -> None:
        """A CREATE refused by the folder limit neither makes the folder nor keeps the
        attribute taken; a refused attribute makes no folder."""
        account = self.account()
        have = len(account.folder_names()) - 1
        limited = MaildirAccount(account.path, account.account, account.notifier, have)
        failure = self.failureResultOf(limited.create("Old", ["\\Archive"]), MailboxError)
        self.assertIn("[LIMIT]", str(failure.value))
        self.assertFalse(account.exists("Old"))
        self.assertRaises(MailboxError, account.create, "Old", ["\\Flagged"])
        self.assertFalse(account.exists("Old"))
        self.successResultOf(account.create("Old", ["\\Archive"]))
        self.assertEqual(account.special_use_of("Old"), "\\Archive")
