"""SMTPWorkers' sweep of Queue/incoming/ after a worker ended (no processes started here)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.config import BootstrapConfig
from cgtwist.workers import SWEEP_SLICE, SMTPWorkers


class SweepTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.adopted: list[str] = []
        self.waiting: list[str] = []
        cfg = BootstrapConfig(base_dir="/nonexistent", main_domain="example.test",
                              hostname="mx.example.test", database_url="sqlite:",
                              certificate="", key="", generated_certificate=True)
        self.workers = SMTPWorkers(self.clock, cfg, self.adopt, self.sweep, lambda: 0)

    def adopt(self, msg_id: str) -> defer.Deferred[Any]:
        self.adopted.append(msg_id)
        return defer.succeed(True)

    def sweep(self, live: frozenset[int]) -> defer.Deferred[list[str]]:
        return defer.succeed(list(self.waiting))

    def test_a_big_sweep_is_adopted_a_slice_per_reactor_turn(self) -> None:
        """Adoption runs on the server's reactor: a sweep that finds many messages (their
        notices lost with a crashed worker) takes them a slice at a time, so the connections
        the server serves meanwhile are not held up, and every one is adopted in the end."""
        self.waiting = [f"{i:016d}-4242-{i}" for i in range(2 * SWEEP_SLICE + 3)]
        d = self.workers.sweep()
        self.assertEqual(self.adopted, self.waiting[:SWEEP_SLICE])
        self.assertNoResult(d)
        self.clock.advance(0)  # the later turns (a Clock runs them all in one advance)
        self.assertEqual(self.adopted, self.waiting)
        self.successResultOf(d)

    def test_a_small_sweep_is_adopted_at_once(self) -> None:
        self.waiting = ["0000000000000001-4242-1", "0000000000000002-4242-2"]
        self.successResultOf(self.workers.sweep())
        self.assertEqual(self.adopted, self.waiting)
