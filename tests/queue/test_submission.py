"""Tests for cgtwist.core.submission: admission limits, then durable store.

The announcement to the queue is the spool's (tests/spool/test_subscribe.py)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cgtwist.core.submission import Submission
from cgtwist.errors import MailError
from cgtwist.interfaces import ISubmission
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, Recipient


class FakeSpool:
    def __init__(self) -> None:
        self.count = 0
        self.free = 10**12
        self.stored: list[tuple[Envelope, bytes]] = []
        self.statvfs_calls = 0
        self.pending: list[defer.Deferred[str]] = []
        self.hold = False

    def message_count(self) -> int:
        return self.count

    def free_space(self) -> defer.Deferred[int]:
        self.statvfs_calls += 1
        return defer.succeed(self.free)

    def store(self, envelope: Envelope, data: bytes) -> defer.Deferred[str]:
        self.stored.append((envelope, data))
        if self.hold:
            d: defer.Deferred[str] = defer.Deferred()
            self.pending.append(d)
            return d
        return defer.succeed(f"id{len(self.stored)}")


def env() -> Envelope:
    return Envelope("a@example.org", [Recipient("b@example.com")], {"protocol": "ESMTP"})


class SubmissionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.spool = FakeSpool()
        self.settings = SettingsHolder(
            Settings({"queue.max_messages": 5, "smtp.max_message_size": 1000})
        )
        self.clock = Clock()
        self.sub = Submission(self.spool, self.settings, clock=self.clock)

    def test_interface(self) -> None:
        """Submission provides ISubmission."""
        self.assertTrue(verifyObject(ISubmission, self.sub))

    def test_fires_only_after_store(self) -> None:
        """The id (and so the 250) comes only after the spool made the message durable."""
        self.spool.hold = True
        d = self.sub.submit(env(), b"data")
        self.assertNoResult(d)
        self.spool.pending[0].callback("id1")
        self.assertEqual(self.successResultOf(d), "id1")

    def test_queue_full_refused(self) -> None:
        """At queue.max_messages new mail gets 452 4.3.1 and nothing is written."""
        self.spool.count = 5
        f = self.failureResultOf(self.sub.submit(env(), b"x"), MailError)
        self.assertEqual((f.value.code, f.value.enhanced), (452, "4.3.1"))
        self.assertEqual(self.spool.stored, [])

    def test_low_disk_refused(self) -> None:
        """With less free space than 1.5 x the size limit, mail gets 452 4.3.1 (queue_minfree)."""
        self.spool.free = 1499
        f = self.failureResultOf(self.sub.submit(env(), b""), MailError)
        self.assertEqual((f.value.code, f.value.enhanced), (452, "4.3.1"))
        self.spool.free = 1500
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(self.sub.submit(env(), b"")), "id1")

    def test_limit_change_applies_at_once(self) -> None:
        """Raising queue.max_messages with the CLI takes effect for the next message."""
        self.spool.count = 5
        self.failureResultOf(self.sub.submit(env(), b"x"), MailError)
        self.settings.replace(Settings({"queue.max_messages": 6, "smtp.max_message_size": 1000}))
        self.successResultOf(self.sub.submit(env(), b"x"))

    def test_free_space_reading_reused_briefly(self) -> None:
        """A burst of messages does not stat the file system once per message."""
        for _ in range(10):
            self.successResultOf(self.sub.submit(env(), b"x"))
        self.assertEqual(self.spool.statvfs_calls, 1)
        self.clock.advance(1.5)
        self.successResultOf(self.sub.submit(env(), b"x"))
        self.assertEqual(self.spool.statvfs_calls, 2)
