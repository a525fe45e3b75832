"""SMTPWorkers' sweep of Queue/incoming/ after a worker ended (no processes started here)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.config import BootstrapConfig
from cgtwist.workers import SMTPWorkers


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

    def test_a_sweep_adopts_what_it_finds(self) -> None:
        """Messages a worker left in Queue/incoming/ without its notice are all adopted."""
        self.waiting = ["0000000000000001-4242-1", "0000000000000002-4242-2"]
        self.successResultOf(self.workers.sweep())
        self.assertEqual(self.adopted, self.waiting)
