"""The base every delivery agent shares: the logical queue read from the route when none is
given, an empty attempt answered at once, and a crash that leaves the recipients pending."""

from __future__ import annotations

from typing import Optional

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cgtwist.delivery.agent import DeliveryAgent, settle
from cgtwist.delivery.group import GroupDelivery
from cgtwist.interfaces import IDeliveryAgent
from cgtwist.types import Envelope, QueueName, Recipient


class Recording(DeliveryAgent):
    module = "TEST"

    def __init__(self, crash: Optional[Exception] = None) -> None:
        self.crash = crash
        self.queues: list[Optional[QueueName]] = []

    async def attempt(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> list[Recipient]:
        self.queues.append(queue)
        if self.crash is not None:
            raise self.crash
        return settle(recipients, "delivered", "250 ok")


def rcpt(route: str = "LOCAL(a@example.com)") -> Recipient:
    return Recipient("a@example.com", route=route)


class DeliveryAgentTests(unittest.TestCase):
    def test_queue_from_the_route_without_one(self) -> None:
        """A caller that gives no queue gets the one named by the first recipient's route."""
        agent = Recording()
        done = self.successResultOf(agent.deliver("m1", Envelope("s@x"), b"", [rcpt()]))
        self.assertEqual([r.state for r in done], ["delivered"])
        self.assertEqual(agent.queues, [QueueName("LOCAL", "a@example.com")])

    def test_given_queue_wins(self) -> None:
        agent = Recording()
        q = QueueName("SMTP", "far.dom")
        self.successResultOf(agent.deliver("m1", Envelope("s@x"), b"", [rcpt()], queue=q))
        self.assertEqual(agent.queues, [q])

    def test_empty_attempt_answers_at_once(self) -> None:
        agent = Recording()
        self.assertEqual(self.successResultOf(agent.deliver("m1", Envelope("s@x"), b"", [])), [])
        self.assertEqual(agent.queues, [])

    def test_crash_leaves_recipients_pending(self) -> None:
        """A bug in an agent must never reach the queue as a failure: even a KeyError (which
        the queue reads as "gone from the spool") becomes a retry, with the traceback logged."""
        agent = Recording(crash=KeyError("oops"))
        done = self.successResultOf(agent.deliver("m1", Envelope("s@x"), b"", [rcpt(), rcpt()]))
        self.assertEqual([r.state for r in done], ["pending", "pending"])
        self.assertIn("4.3.0", done[0].detail)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_agents_provide_the_interface(self) -> None:
        class Nowhere:
            def resolve_group(self, name: str, domain: str) -> None: ...
            def submit(self, envelope: Envelope, data: bytes) -> None: ...

        verifyObject(IDeliveryAgent, GroupDelivery(Nowhere(), Nowhere()))  # type: ignore[arg-type]
