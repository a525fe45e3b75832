"""Tests for cgtwist.storage.rulehistory: the delivery history ``rules replay`` reads.

Real files in a temporary directory; the clock is task.Clock and the disk jobs run at once
(the writing itself is what is tested, not the threads).
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer, task
from twisted.trial import unittest

from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.rulehistory import (
    FLUSH_DELAY,
    MAX_HEAD,
    Delivered,
    RuleHistory,
    enforce,
    history_dir,
    read_history,
    write_batch,
)
from cgtwist.types import Envelope, Recipient

HOUR = 3600.0
T0 = 1_800_000_000.0  # an hour's start (divisible by 3600)


def record(when: float, n: int = 0, head: bytes = b"Subject: hi\r\n") -> Delivered:
    return Delivered(
        when=when,
        msg_id=f"m{n}",
        level="server",
        sender="bob@example.net",
        recipients=("alice@example.com",),
        submit={"peer": "192.0.2.1", "spf": "pass"},
        size=1234,
        head=head,
    )


class FilesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.base, ignore_errors=True))
        self.folder = history_dir(self.base)

    def test_round_trip_every_octet(self) -> None:
        """A record reads back as written, header octets included (8-bit, folded lines)."""
        r = record(T0 + 5, head=b"Subject: caf\xc3\xa9\r\n\tfolded\r\nX-Raw: \xff\r\n")
        write_batch(self.folder, [r], T0 + 10, days=7, max_bytes=1 << 20)
        self.assertEqual(list(read_history(self.base, T0, T0 + 20)), [r])

    def test_since_and_partial_lines(self) -> None:
        """Only records in the window come back; a line still being written is skipped."""
        write_batch(
            self.folder, [record(T0 + 1, 1), record(T0 + HOUR + 1, 2)], T0 + HOUR, 7, 1 << 20
        )
        with open(os.path.join(self.folder, sorted(os.listdir(self.folder))[-1]), "a") as f:
            f.write('{"t": 1800003700, "level": "ser')
        got = [r.msg_id for r in read_history(self.base, T0 + HOUR, T0 + 2 * HOUR)]
        self.assertEqual(got, ["m2"])

    def test_retention_drops_old_hours(self) -> None:
        """An hour leaves once its end is older than rules.history_days."""
        write_batch(self.folder, [record(T0 + 1, 1)], T0 + 2, 1, 1 << 20)
        write_batch(self.folder, [record(T0 + 12 * HOUR, 2)], T0 + 12 * HOUR, 1, 1 << 20)
        self.assertEqual(len(os.listdir(self.folder)), 2)
        enforce(self.folder, T0 + 86400 + HOUR + 1, 1, 1 << 20)
        got = [r.msg_id for r in read_history(self.base, 0, T0 + 3 * 86400)]
        self.assertEqual(got, ["m2"])

    def test_size_limit_drops_oldest_then_refuses(self) -> None:
        """Over the size limit the oldest hours go; the newest hour alone at the limit takes
        no more lines (they are counted as left out)."""
        big = b"X-Pad: " + b"a" * 4000 + b"\r\n"
        for h in range(3):
            write_batch(self.folder, [record(T0 + h * HOUR, h, big)], T0 + h * HOUR, 7, 9000)
        self.assertEqual(len(os.listdir(self.folder)), 2)  # the first hour went
        left_out = 0
        for n in range(4):
            left_out += write_batch(
                self.folder, [record(T0 + 2 * HOUR + n, 10 + n, big)], T0 + 2 * HOUR, 7, 9000
            )
        self.assertGreater(left_out, 0)
        total = sum(os.path.getsize(os.path.join(self.folder, n)) for n in os.listdir(self.folder))
        self.assertLess(total, 9000 + 2 * len(big) * 2)


class WriterTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = tempfile.mkdtemp()
        self.addCleanup(lambda: __import__("shutil").rmtree(self.base, ignore_errors=True))
        self.reactor = task.Clock()
        self.reactor.advance(T0)
        self.settings = SettingsHolder(Settings({}))
        self.history = RuleHistory(
            self.base, self.settings, self.reactor, lambda job: defer.succeed(job())
        )

    def envelope(self) -> Envelope:
        return Envelope(
            "bob@example.net",
            [Recipient("alice@example.com")],
            {"peer": "192.0.2.1", "protocol": "ESMTP", "helo": "not kept", "rbl": "zen.example"},
        )

    def test_batched_and_written_later(self) -> None:
        """note() writes nothing itself: one batch goes to disk after FLUSH_DELAY."""
        data = b"Subject: hi\r\nFrom: bob@example.net\r\n\r\n" + b"body" * 1000
        for n in range(3):
            self.history.note("server", f"m{n}", self.envelope(), data)
        self.assertFalse(os.path.exists(history_dir(self.base)))
        self.reactor.advance(FLUSH_DELAY)
        got = list(read_history(self.base, T0 - 1, T0 + 10))
        self.assertEqual([r.msg_id for r in got], ["m0", "m1", "m2"])
        self.assertEqual(got[0].head, b"Subject: hi\r\nFrom: bob@example.net\r\n")
        self.assertEqual(got[0].size, len(data))
        self.assertEqual(
            dict(got[0].submit), {"peer": "192.0.2.1", "protocol": "ESMTP", "rbl": "zen.example"}
        )

    def test_header_section_is_bounded(self) -> None:
        data = b"X-Long: " + b"a" * (2 * MAX_HEAD) + b"\r\n\r\nbody"
        self.history.note("local", "m1", self.envelope(), data, account="alice@example.com")
        self.reactor.advance(FLUSH_DELAY)
        (r,) = read_history(self.base, T0 - 1, T0 + 10)
        self.assertEqual(len(r.head), MAX_HEAD)
        self.assertEqual((r.level, r.account), ("local", "alice@example.com"))

    def test_off_keeps_nothing(self) -> None:
        self.settings.replace(Settings({"rules.history_days": 0}))
        self.history.note("server", "m1", self.envelope(), b"Subject: x\r\n\r\n")
        self.reactor.advance(FLUSH_DELAY)
        self.assertFalse(os.path.exists(history_dir(self.base)))
