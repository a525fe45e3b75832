"""The domain/account Rules hook on LOCAL delivery: discard, reject, "Store in", add header."""

from __future__ import annotations

import os

from twisted.internet import defer

from cgtwist.types import LocalDecision
from tests.delivery.test_local import DATA, LocalDeliveryTests, rcpt


class LocalRulesTests(LocalDeliveryTests):
    """Runs the plain LOCAL tests again with a hook that decides nothing, plus these."""

    def setUp(self) -> None:
        super().setUp()
        self.decision: object = None
        self.seen: list[tuple[str, str]] = []

        def rules(account, envelope, data):  # type: ignore[no-untyped-def]
            self.seen.append((account.address, envelope.sender))
            return self.decision

        self.agent.rules = rules

    def folder_files(self, folder_dir: str) -> list[str]:
        path = os.path.join(self.maildir(), folder_dir, "new")
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    @defer.inlineCallbacks
    def test_store_in_folder(self):  # type: ignore[no-untyped-def]
        """A rule's "Store in Lists/Twisted" files the message into that Maildir++ folder."""
        self.decision = LocalDecision(folder="Lists/Twisted")
        rs = yield self.agent.deliver("r1", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(self.files(), [])
        (name,) = self.folder_files(".Lists.Twisted")
        with open(os.path.join(self.maildir(), ".Lists.Twisted", "new", name), "rb") as f:
            self.assertTrue(f.read().endswith(DATA))
        self.assertEqual(self.seen, [("bob@example.com", "alice@example.org")])

    @defer.inlineCallbacks
    def test_unsafe_folder_falls_back_to_inbox(self):  # type: ignore[no-untyped-def]
        """A folder name that would escape the account never does: the mail goes to INBOX."""
        self.decision = LocalDecision(folder="../../carol/Maildir")
        rs = yield self.agent.deliver("r2", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(len(self.files()), 1)
        self.assertEqual(self.files("carol"), [])

    @defer.inlineCallbacks
    def test_discard_and_reject(self):  # type: ignore[no-untyped-def]
        """Discard drops the copy (done, nothing stored); Reject fails it so a DSN goes out."""
        self.decision = LocalDecision(discard=True)
        rs = yield self.agent.deliver("r3", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual((rs[0].state, self.files()), ("delivered", []))
        self.decision = LocalDecision(reject="Go away\r\nBcc: x")
        rs = yield self.agent.deliver("r4", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(rs[0].state, "failed")
        self.assertEqual(rs[0].detail, "550 5.7.1 Go away Bcc: x")

    @defer.inlineCallbacks
    def test_added_header_and_injection(self):  # type: ignore[no-untyped-def]
        """Added header lines are prepended; one carrying CR/LF is dropped, never split."""
        self.decision = LocalDecision(add_headers=("X-Rule: vip", "X-Bad: a\r\nBcc: evil"))
        yield self.agent.deliver("r5", self.env, DATA, [rcpt("bob@example.com")])
        (name,) = self.files()
        with open(os.path.join(self.maildir(), "new", name), "rb") as f:
            content = f.read()
        self.assertIn(b"X-Rule: vip\r\n", content)
        self.assertNotIn(b"Bcc: evil", content)

    @defer.inlineCallbacks
    def test_broken_rules_never_lose_mail(self):  # type: ignore[no-untyped-def]
        """A hook that raises is logged and the message is stored in INBOX."""

        def broken(account, envelope, data):  # type: ignore[no-untyped-def]
            raise RuntimeError("rule engine bug")

        self.agent.rules = broken
        rs = yield self.agent.deliver("r6", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(len(self.files()), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
