"""quota.max_folders: IMAP CREATE beyond the account's folder limit is refused with [LIMIT]
(RFC 5530), counting every folder but INBOX, parents created on the way included."""

from __future__ import annotations

import os

from twisted.trial import unittest

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, provision
from cgtwist.mailstore.account import MailboxError


class MaxFoldersTests(unittest.TestCase):
    def account(self, limit: int) -> MaildirAccount:
        md = os.path.join(os.path.abspath(self.mktemp()), "Maildir")
        provision(md)
        return MaildirAccount(md, "a@example.com", MailboxNotifier(), limit)

    def test_create_beyond_the_limit_is_refused(self) -> None:
        account = self.account(0)
        have = len(account.folder_names()) - 1  # the special-use folders provision made
        limited = MaildirAccount(account.path, account.account, account.notifier, have + 1)
        self.successResultOf(limited.create("Projects"))
        failure = self.failureResultOf(limited.create("More"), MailboxError)
        self.assertIn("[LIMIT]", str(failure.value))
        self.assertFalse(limited.exists("More"))
        # a parent made on the way counts too
        wider = MaildirAccount(account.path, account.account, account.notifier, have + 2)
        self.failureResultOf(wider.create("A/B"), MailboxError)
        self.assertFalse(wider.exists("A"))
        self.successResultOf(wider.create("C"))

    def test_no_limit_by_default(self) -> None:
        account = self.account(0)
        for i in range(5):
            self.successResultOf(account.create(f"F{i}"))
