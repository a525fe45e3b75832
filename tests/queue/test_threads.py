"""The mail path on the real reactor and real worker threads (no synchronous fakes): many
concurrent submissions all end up in Maildir exactly once and the spool empties."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from cgtwist.core.submission import Submission
from cgtwist.delivery.local import LocalDelivery
from cgtwist.queue.manager import QueueManager
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.spool.spool import Spool
from cgtwist.types import Account, Envelope, Recipient
from tests.queue.helpers import FakeRouter


class Store:
    def get_account(self, name: str, domain: str) -> defer.Deferred[Account]:
        return defer.succeed(Account(name, domain))


class CountingSpool(Spool):
    def __init__(self, *a: object, expect: int, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.removed = 0
        self.expect = expect
        self.all_removed: defer.Deferred[None] = defer.Deferred()

    def remove(self, msg_id: str) -> defer.Deferred[None]:
        def counted(_: None) -> None:
            self.removed += 1
            if self.removed == self.expect:
                self.all_removed.callback(None)

        return super().remove(msg_id).addCallback(counted)


class RealThreadsTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_concurrent_submissions_delivered_once(self) -> None:
        """40 messages submitted at once to 4 accounts: 40 Maildir files, each body exactly once,
        no spool files left."""
        base = tempfile.mkdtemp(prefix="cgtwist-thr-")
        self.addCleanup(shutil.rmtree, base, True)
        n = 40
        settings = SettingsHolder(Settings())
        spool = CountingSpool(base, reactor, expect=n)
        local = LocalDelivery(base, Store(), reactor=reactor, hostname="mx")
        manager = QueueManager(spool, FakeRouter(), {"LOCAL": local}, settings, reactor)
        self.addCleanup(manager.stop)
        yield manager.start()
        spool.subscribe(manager.enqueue)
        sub = Submission(spool, settings, clock=reactor)
        ds = [
            sub.submit(
                Envelope("a@example.org", [Recipient(f"u{i % 4}@example.com")]),
                b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i),
            )
            for i in range(n)
        ]
        ids = yield defer.gatherResults(ds)
        self.assertEqual(len(set(ids)), n)
        yield spool.all_removed
        bodies = []
        for u in range(4):
            new = os.path.join(base, "Domains", "example.com", f"u{u}", "Maildir", "new")
            for name in os.listdir(new):
                with open(os.path.join(new, name), "rb") as f:
                    bodies.append(f.read().split(b"\r\n\r\n", 1)[1])
        self.assertEqual(sorted(bodies), sorted(b"body %d\r\n" % i for i in range(n)))
        self.assertEqual(
            sorted(os.listdir(os.path.join(base, "Queue"))),
            ["corrupt", "finished", "free", "incoming"],
        )
