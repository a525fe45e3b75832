"""The spine's mail path without the network: Submission -> Spool -> QueueManager ->
LocalDelivery into Maildir, and a restart in the middle."""

from __future__ import annotations

import os

from twisted.internet import defer

from cgtwist.core.submission import Submission
from cgtwist.delivery.local import LocalDelivery
from cgtwist.queue.manager import QueueManager
from cgtwist.spool.spool import Spool
from cgtwist.types import Account
from tests.queue.helpers import QueueTestCase, SyncPool, env


class Store:
    def __init__(self, *accounts: str) -> None:
        self.accounts = set(accounts)

    def get_account(self, name: str, domain: str) -> defer.Deferred[object]:
        a = f"{name}@{domain}"
        return defer.succeed(Account(name, domain) if a in self.accounts else None)


class MailPathTests(QueueTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.store = Store("bob@example.com", "carol@example.com")
        self.local = LocalDelivery(
            self.base,
            self.store,
            reactor=self.clock,  # type: ignore[assignment]
            threadpool=SyncPool(),
            hostname="mx",
        )
        self.manager = self.make_manager()
        self.submission = Submission(self.spool, self.settings, clock=self.clock)
        self.spool.subscribe(self.manager.enqueue)

    def inbox(self, account: str) -> list[bytes]:
        new = os.path.join(self.base, "Domains", "example.com", account, "Maildir", "new")
        if not os.path.isdir(new):
            return []
        out = []
        for n in sorted(os.listdir(new)):
            with open(os.path.join(new, n), "rb") as f:
                out.append(f.read())
        return out

    def test_submitted_mail_reaches_maildir(self) -> None:
        """Accepted mail ends up byte-exact in each recipient's Maildir and the spool empties."""
        data = b"Subject: hello\r\n\r\nbody\r\n"
        msg_id = self.successResultOf(
            self.submission.submit(
                env("bob@example.com", "carol@example.com", "alias@example.com"), data
            )
        )
        self.pump()
        self.assertTrue(msg_id)
        bob = self.inbox("bob")
        self.assertEqual(len(bob), 1)  # alias@ routes to bob: one copy for the account
        self.assertTrue(bob[0].endswith(data))
        self.assertEqual(len(self.inbox("carol")), 1)
        self.assertEqual(self.spooled(), [])

    def test_account_created_later_gets_its_mail(self) -> None:
        """Mail for an account that is missing at delivery time waits and is delivered once the
        account exists; it is never bounced meanwhile."""
        self.successResultOf(self.submission.submit(env("dave@example.com"), b"x\r\n"))
        self.pump()
        self.assertEqual(self.inbox("dave"), [])
        self.store.accounts.add("dave@example.com")
        for _ in range(5):
            self.pump(60)
        self.assertEqual(len(self.inbox("dave")), 1)
        self.assertEqual(self.bounced, [])
        self.assertEqual(self.spooled(), [])

    def test_restart_delivers_spooled_mail(self) -> None:
        """Mail spooled before a crash (never delivered) is delivered after the restart."""
        self.manager.stop()
        ids = [
            self.successResultOf(self.spool.store(env("bob@example.com"), b"m%d\r\n" % i))
            for i in range(3)
        ]
        spool2 = Spool(self.base, self.clock, threadpool=SyncPool())  # type: ignore[arg-type]
        manager2 = QueueManager(
            spool2, self.router, {"LOCAL": self.local}, self.settings, self.clock
        )
        self.assertEqual(self.successResultOf(manager2.start()), 3)
        self.pump()
        self.assertEqual(len(self.inbox("bob")), 3)
        self.assertEqual(self.spooled(), [])
        self.assertEqual(len(ids), 3)
