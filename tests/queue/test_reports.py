"""Tests for cgtwist.queue.reports on its own: the rule "a message leaves the spool only when
every failure is reported", with fakes for the spool and the manager's callables."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.queue.config import QueueConfig
from cgtwist.queue.data import MessageData
from cgtwist.queue.reports import Reports
from cgtwist.queue.scheduler import Scheduler
from cgtwist.queue.state import Msg
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, Recipient


class FakeSpool:
    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []
        self.removed: list[str] = []

    def load(self, msg_id: str) -> defer.Deferred[tuple[Envelope, bytes]]:
        return defer.succeed((Envelope("", []), b"data"))

    def record(self, msg_id: str, records: Any) -> defer.Deferred[None]:
        self.records.append((msg_id, records))
        return defer.succeed(None)

    def remove(self, msg_id: str) -> defer.Deferred[None]:
        self.removed.append(msg_id)
        return defer.succeed(None)


class ReportsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.spool = FakeSpool()
        settings = QueueConfig(SettingsHolder(Settings({"queue.retry_schedule": [60]})))
        self.events: list[tuple[str, Any, float]] = []
        scheduler = Scheduler(
            self.clock,
            lambda lq, msg_id: None,
            lambda kind, key, when: self.events.append((kind, key, when)),
            lambda module: 1,
            lambda module: 1,
            lambda module: True,
        )
        self.gone: list[str] = []
        self.bounces: list[list[str]] = []
        self.bounce_error: Exception | None = None
        self.reports = Reports(
            self.spool,
            self.clock,
            scheduler,
            settings,
            MessageData(self.spool),
            lambda d: d,
            lambda m: True,
            lambda m: self.gone.append(m.msg_id),
            bouncer=self.bounce,
        )

    def bounce(self, msg_id: str, env: Envelope, data: bytes, failed: list[Recipient]) -> Any:
        if self.bounce_error is not None:
            raise self.bounce_error
        self.bounces.append([r.address for r in failed])
        return None

    def msg(self, *states: str) -> Msg:
        rcpts = [Recipient(f"r{i}@example.org", state=s) for i, s in enumerate(states)]
        return Msg("m1", Envelope("a@example.com", rcpts), 0.0)

    def test_done_message_without_failures_leaves(self) -> None:
        """All delivered, nothing to report: the message is removed and the manager told."""
        self.reports.check_done(self.msg("delivered", "delivered"))
        self.assertEqual((self.spool.removed, self.gone, self.bounces), (["m1"], ["m1"], []))

    def test_failures_reported_once_before_removal(self) -> None:
        """Failed recipients are reported (once, and journaled as reported) before the
        message leaves the spool."""
        m = self.msg("delivered", "failed", "failed")
        self.reports.check_done(m)
        self.assertEqual(self.bounces, [["r1@example.org", "r2@example.org"]])
        self.assertEqual(self.spool.records, [("m1", [{"k": "b", "i": [1, 2]}])])
        self.assertEqual(self.spool.removed, ["m1"])
        self.reports.check_done(m)  # removing: nothing more
        self.assertEqual(len(self.bounces), 1)

    def test_report_failure_keeps_message_and_retries(self) -> None:
        """A report that cannot be sent keeps the message in the spool and is retried on
        the scheduler's timer; once it is sent the message leaves."""
        self.bounce_error = OSError("disk full")
        m = self.msg("failed")
        self.reports.check_done(m)
        self.assertEqual(self.spool.removed, [])
        self.assertEqual(m.report_due, 60.0)
        self.reports.check_done(m)  # a report is due later: not removed meanwhile
        self.assertEqual(self.spool.removed, [])
        self.bounce_error = None
        self.reports.due(m, 60.0)
        self.assertEqual((self.bounces, self.spool.removed), ([["r0@example.org"]], ["m1"]))

    def test_pending_message_stays(self) -> None:
        """A recipient still pending keeps the message (its failures are reported already)."""
        m = self.msg("pending", "failed")
        self.reports.check_done(m)
        self.assertEqual((self.bounces, self.spool.removed), ([["r1@example.org"]], []))
