"""Tests for cgtwist.queue.admin over a fake manager: the administrator's operations need only
the manager's public API (messages, find, retry, hold, release, drop, bounce, entry)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.queue.admin import ADMIN_BOUNCE, QueueAdmin
from cgtwist.queue.state import Msg
from cgtwist.types import Envelope, Recipient


class FakeManager:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.msgs = {"m1": Msg("m1", Envelope("a@example.com", [Recipient("b@x.example")]), 40)}
        self.calls: list[tuple[str, ...]] = []

    def messages(self) -> list[Msg]:
        return list(self.msgs.values())

    def find(self, msg_id: str) -> Msg | None:
        return self.msgs.get(msg_id)

    def backlog_size(self) -> int:
        return 3

    def is_due(self, m: Msg, job: Any) -> bool:
        return False

    def retry(self, msg_id: str) -> int:
        if msg_id not in self.msgs and msg_id != "all":
            raise KeyError(msg_id)
        return 1

    def hold(self, msg_id: str) -> defer.Deferred[None]:
        self.calls.append(("hold", msg_id))
        return defer.succeed(None) if msg_id in self.msgs else defer.fail(KeyError(msg_id))

    def release(self, msg_id: str) -> defer.Deferred[None]:
        self.calls.append(("release", msg_id))
        return defer.succeed(None)

    def drop(self, msg_id: str) -> defer.Deferred[None]:
        self.calls.append(("drop", msg_id))
        return defer.succeed(None)

    def bounce(self, msg_id: str, reason: str) -> defer.Deferred[int]:
        self.calls.append(("bounce", msg_id, reason))
        return defer.succeed(1)


class AdminOverPublicAPITests(unittest.TestCase):
    def setUp(self) -> None:
        self.manager = FakeManager()
        self.admin = QueueAdmin(self.manager)  # type: ignore[arg-type]

    def test_list_describes_messages(self) -> None:
        """list answers JSON-ready dicts with the age and the backlog count."""
        out = self.successResultOf(self.admin.list())
        self.assertEqual((out["active"], out["backlog"]), (1, 3))
        self.assertEqual(out["messages"][0]["age"], 60)
        self.assertEqual(out["messages"][0]["recipients"][0]["address"], "b@x.example")

    def test_actions_answer_dicts_and_name_unknown_ids(self) -> None:
        """Each action becomes one call of the manager and a dict; unknown ids a KeyError
        that names the message."""
        self.assertEqual(self.successResultOf(self.admin.retry("m1")), {"retried": 1})
        self.assertEqual(self.successResultOf(self.admin.hold("m1")), {"id": "m1", "held": True})
        self.assertEqual(self.successResultOf(self.admin.bounce("m1")), {"id": "m1", "bounced": 1})
        self.assertEqual(self.manager.calls[-1], ("bounce", "m1", ADMIN_BOUNCE))
        f = self.failureResultOf(self.admin.hold("m2"), KeyError)
        self.assertIn("no such message: m2", str(f.value))
        self.failureResultOf(self.admin.retry("m2"), KeyError)
