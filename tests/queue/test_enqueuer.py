"""cgtwist.queue.enqueuer: what each Router answer means for one recipient, and routing a big
message a slice at a time."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock, Cooperator
from twisted.trial import unittest

from cgtwist.logs import Logger
from cgtwist.queue.enqueuer import ROUTE_SLICE, Enqueuer
from cgtwist.queue.state import DELIVERED, FAILED, PENDING, Msg
from cgtwist.types import Route
from tests.queue.helpers import FakeRouter, env


class _Crashing(FakeRouter):
    def route(self, address: str, kind: str = "mail") -> defer.Deferred[Route]:
        if address.startswith("crash@"):
            self.calls.append(address)
            return defer.fail(RuntimeError("router bug"))
        return super().route(address, kind)


class EnqueuerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.coop = Cooperator(scheduler=lambda f: self.clock.callLater(0, f))
        self.router = _Crashing()
        self.enqueuer = Enqueuer(self.router, self.coop, Logger())

    def test_each_answer_settles_records_or_hands_back(self) -> None:
        """A route is recorded on the recipient, ERROR fails it with the Router's text, NULL
        discards it as delivered, and a temporary error or a crash in the Router comes back
        for the queue manager to retry (the crash logged), the recipient still pending."""
        m = Msg(
            "m1",
            env(
                "bob@example.com",
                "error@example.com",
                "null@example.com",
                "slow@remote.example",
                "crash@remote.example",
            ),
            0.0,
        )
        self.router.temp.add("slow@remote.example")
        temp = self.successResultOf(self.enqueuer.route(m, [0, 1, 2, 3, 4]))
        rcpts = m.envelope.recipients
        self.assertEqual(m.routes[0].module, "LOCAL")
        self.assertEqual(rcpts[0].route, "LOCAL(bob@example.com)")
        self.assertEqual((rcpts[1].state, rcpts[1].detail), (FAILED, "5.1.1 unknown user"))
        self.assertEqual(rcpts[2].state, DELIVERED)
        self.assertNotIn(1, m.routes)
        self.assertNotIn(2, m.routes)
        self.assertEqual([i for i, _ in temp], [3, 4])
        self.assertEqual((rcpts[3].state, rcpts[4].state), (PENDING, PENDING))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_big_message_is_routed_a_slice_per_step(self) -> None:
        """Only the first ROUTE_SLICE recipients are asked at once; the rest take turns on the
        cooperator, and the result fires when the last is answered."""
        n = ROUTE_SLICE * 2 + 5
        m = Msg("m2", env(*(f"u{i}@example.com" for i in range(n))), 0.0)
        d = self.enqueuer.route(m, list(range(n)))
        self.assertEqual(len(self.router.calls), ROUTE_SLICE)
        self.assertNoResult(d)
        while not d.called:
            self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual(len(m.routes), n)
