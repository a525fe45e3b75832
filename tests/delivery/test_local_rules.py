"""LOCAL delivery carrying out a Rules decision: Mark, the edited message, a reject status."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from cgtwist.delivery.local import LocalDelivery
from cgtwist.mailstore import maildir as md
from cgtwist.types import Account, Envelope, LocalDecision
from tests.delivery.test_local import DATA, FakeNotifier, FakeStore, rcpt


class LocalRulesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="cgtwist-local-rules-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.agent = LocalDelivery(
            self.base, FakeStore("bob@example.com"), FakeNotifier(), reactor=reactor, hostname="mx"
        )
        self.env = Envelope(sender="alice@example.org", recipients=[])
        self.decision = LocalDecision()

        def rules(account: Account, envelope: Envelope, data: bytes) -> LocalDecision:
            return self.decision

        self.agent.rules = rules

    def listing(self, folder: str = "", sub: str = "new") -> list[str]:
        path = os.path.join(self.base, "Domains", "example.com", "bob", "Maildir", folder, sub)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def read(self, folder: str, sub: str, name: str) -> bytes:
        path = os.path.join(self.base, "Domains", "example.com", "bob", "Maildir", folder, sub)
        with open(os.path.join(path, name), "rb") as f:
            return f.read()

    @defer.inlineCallbacks
    def test_mark_stores_the_flags_in_cur(self) -> None:
        """Mark Read and Flagged: the message is in cur/ as key:2,FS, nothing left in new/."""
        self.decision = LocalDecision(flags=("\\Seen", "\\Flagged"))
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(self.listing(), [])
        (name,) = self.listing(sub="cur")
        self.assertEqual(md.split_name(name)[1], "FS")
        self.assertTrue(self.read("", "cur", name).endswith(DATA))

    @defer.inlineCallbacks
    def test_mark_in_a_folder_with_the_edited_message(self) -> None:
        """Store in plus Mark plus Tag Subject: the edited bytes land flagged in the folder."""
        edited = DATA.replace(b"Subject: t", b"Subject: [X] t")
        self.decision = LocalDecision(folder="Lists", flags=("\\Seen",), data=edited)
        yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        (name,) = self.listing(".Lists", "cur")
        self.assertTrue(name.endswith(":2,S"))
        self.assertTrue(self.read(".Lists", "cur", name).endswith(edited))

    @defer.inlineCallbacks
    def test_mark_stores_keywords_as_imap_append_does(self) -> None:
        """Mark with keywords: letters in dovecot-keywords (kept across messages, a known
        keyword reuses its letter), the message named with them and its system flags; an
        IMAP Folder that loaded before shows them after its next look."""
        from cgtwist.mailstore.folder import Folder

        inbox = os.path.join(self.base, "Domains", "example.com", "bob", "Maildir")
        self.decision = LocalDecision(flags=("\\Seen",))
        yield self.agent.deliver("m0", self.env, DATA, [rcpt("bob@example.com")])
        folder = Folder(
            inbox, "bob@example.com", "INBOX", lambda f, *a: threads.deferToThread(f, *a)
        )
        yield folder.refresh()
        self.decision = LocalDecision(flags=("\\Seen", "Junk", "$Label1"))
        yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        self.decision = LocalDecision(flags=("$label1",))
        yield self.agent.deliver("m2", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(md.read_keywords(inbox), {0: "Junk", 1: "$Label1"})
        letters = sorted(md.split_name(n)[1] for n in self.listing(sub="cur"))
        self.assertEqual(letters, ["S", "Sab", "b"])
        yield folder.refresh()
        flags = sorted(sorted(folder.flags_of(e)) for e in folder.entries.values())
        self.assertIn(["$Label1", "Junk", "\\Seen"], flags)

    @defer.inlineCallbacks
    def test_reject_keeps_its_own_status(self) -> None:
        """A loop reject says 5.4.6; a plain text gets 5.7.1."""
        self.decision = LocalDecision(reject="5.4.6 mail loop: already delivered to bob")
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual((rs[0].state, rs[0].detail[:9]), ("failed", "550 5.4.6"))
        self.decision = LocalDecision(reject="go away")
        rs = yield self.agent.deliver("m2", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(rs[0].detail, "550 5.7.1 go away")
