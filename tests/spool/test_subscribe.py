"""Tests for ``Spool.subscribe``: the spool announces each message it made durable.

Mail flows one way (receivers store, the spool announces, the queue manager or a worker's link
to the server listens): these pin the order (durable, announced, then the caller's 250) and
that a failing subscriber never turns a stored message into a refused one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cgtwist.interfaces import ISpool
from cgtwist.spool.spool import Spool
from cgtwist.types import Envelope, Recipient
from tests.queue.helpers import SyncClock, SyncPool

DATA = b"Subject: hi\r\n\r\nbody\r\n"


def envelope() -> Envelope:
    return Envelope("alice@example.com", [Recipient("bob@example.org")], {"protocol": "ESMTP"})


class SubscribeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="cgtwist-sub-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.clock = SyncClock()
        self.spool = Spool(self.base, self.clock, threadpool=SyncPool())  # type: ignore[arg-type]
        self.heard: list[tuple[str, Envelope, bytes, bool]] = []

    def on_stored(self, msg_id: str, env: Envelope, data: bytes) -> None:
        path = os.path.join(self.base, "Queue", msg_id + ".msg")
        self.heard.append((msg_id, env, data, os.path.exists(path)))

    def test_interface(self) -> None:
        """The spool provides ISpool, subscription included."""
        self.assertTrue(verifyObject(ISpool, self.spool))

    def test_announced_once_durable_before_the_caller_hears(self) -> None:
        """A subscriber hears of the message with its envelope and bytes once the file is
        in place, before the store's Deferred fires (so before the 250)."""
        self.spool.subscribe(self.on_stored)
        order: list[str] = []
        d = self.spool.store(envelope(), DATA)
        d.addCallback(lambda msg_id: order.append(f"fired {len(self.heard)}"))
        self.successResultOf(d)
        self.assertEqual(order, ["fired 1"])
        [(msg_id, env, data, on_disk)] = self.heard
        self.assertEqual((env, data, on_disk), (envelope(), DATA, True))

    def test_every_subscriber_hears(self) -> None:
        """Two subscribers both hear each message, in subscription order."""
        seen: list[str] = []
        self.spool.subscribe(lambda i, e, d: seen.append("a" + i))
        self.spool.subscribe(lambda i, e, d: seen.append("b" + i))
        msg_id = self.successResultOf(self.spool.store(envelope(), DATA))
        self.assertEqual(seen, ["a" + msg_id, "b" + msg_id])

    def test_failing_subscriber_keeps_the_message(self) -> None:
        """A subscriber that raises (or fails its Deferred) is logged; the store still
        succeeds, the message stays in the spool for the next start's recovery, and the
        other subscribers still hear of it."""

        def boom(msg_id: str, env: Envelope, data: bytes) -> Any:
            raise RuntimeError("boom")

        self.spool.subscribe(boom)
        self.spool.subscribe(lambda i, e, d: defer.fail(ValueError("late boom")))
        self.spool.subscribe(self.on_stored)
        msg_id = self.successResultOf(self.spool.store(envelope(), DATA))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError, ValueError)), 2)
        self.assertEqual([h[0] for h in self.heard], [msg_id])
        self.assertEqual(self.successResultOf(self.spool.recover()), [msg_id])

    def test_refused_store_is_not_announced(self) -> None:
        """A message the spool could not make durable is never announced."""
        self.spool.subscribe(self.on_stored)
        shutil.rmtree(os.path.join(self.base, "Queue"))
        self.failureResultOf(self.spool.store(envelope(), DATA))
        self.assertEqual(self.heard, [])
