"""Tests for cgtwist.queue.attempts: SMTP host attempts kept between an agent's report and the
queue manager's journal write (the seam that lets the SMTP agent be built before the manager)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.queue.attempts import AttemptLog


class Attempt:
    time, host, ip, reply, tls = 5.0, "mx.example", "192.0.2.7", "451 busy", "TLSv1.3"


class FakeSpool:
    def __init__(self) -> None:
        self.records: list[tuple[str, list[dict[str, Any]]]] = []

    def record(self, msg_id: str, records: list[dict[str, Any]]) -> defer.Deferred[None]:
        self.records.append((msg_id, records))
        return defer.succeed(None)


class AttemptLogTests(unittest.TestCase):
    def setUp(self) -> None:
        self.spool = FakeSpool()
        self.log = AttemptLog(self.spool, Clock())

    def test_open_message_keeps_attempts_for_its_journal(self) -> None:
        """While the manager holds the message, attempts wait for its next journal write
        (no fsync of their own); ``take`` hands them over once."""
        self.log.open("m1")
        self.log.note("m1", Attempt())
        self.assertEqual(self.spool.records, [])
        self.assertEqual([r["host"] for r in self.log.kept("m1")], ["mx.example"])
        [rec] = self.log.take("m1")
        self.assertEqual((rec["k"], rec["ip"], rec["tls"]), ("a", "192.0.2.7", "TLSv1.3"))
        self.assertEqual(self.log.take("m1"), [])

    def test_other_message_journaled_at_once(self) -> None:
        """An attempt of a message the manager does not hold (closed, or never opened) goes
        to the spool's journal directly."""
        self.log.open("m1")
        self.log.note("m1", Attempt())
        self.log.close("m1")
        self.log.note("m1", Attempt())
        self.assertEqual([m for m, _ in self.spool.records], ["m1"])
        self.assertEqual(self.log.kept("m1"), [])
