"""The SMTP receiver's end-of-DATA check: refusal, Discard, and the protection facts recorded.

A StringTransport harness (tests/protocols/test_smtp_fakes.py) with a policy that also has
``check_message`` (IMessageCheck) and ``submit_facts`` (IReceptionFacts), as the protection
policy has: what the client hears and what reaches the submission.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface import implementer

from cgtwist.errors import MailError
from cgtwist.interfaces import DISCARD, IMessageCheck, IReceptionFacts
from tests.protocols.test_smtp_fakes import FakePolicy, Harness


@implementer(IMessageCheck, IReceptionFacts)
class CheckingPolicy(FakePolicy):
    def __init__(self) -> None:
        super().__init__()
        self.answer: Any = None
        self.facts: dict[str, str] = {}

    def check_message(self, session: Any, envelope: Any, message: bytes) -> Any:
        self.calls.append(("check_message", envelope))
        if isinstance(self.answer, MailError):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)

    def submit_facts(self, session: Any) -> dict[str, str]:
        return dict(self.facts)


class MessageCheckTests(unittest.TestCase):
    def harness(self, answer: Optional[Any] = None) -> Harness:
        h = Harness(greet=False)
        policy = CheckingPolicy()
        policy.answer = answer
        h.policy = h.factory.policy = policy  # type: ignore[assignment]
        h.connect()
        h.cmd("EHLO client.example")
        return h

    def test_refusal_is_the_reply_and_nothing_is_queued(self) -> None:
        """A check's MailError (a Server Rule's Reject with) is the answer to the final dot;
        no spool file is written and the session goes on."""
        h = self.harness(MailError(550, "5.7.1", "no thanks"))
        replies = h.transaction()
        self.assertEqual(replies[-1], "550 5.7.1 no thanks")
        self.assertEqual(h.submission.messages, [])
        self.assertEqual(h.cmd("NOOP"), ["250 2.0.0 Ok"])

    def test_discard_answers_250_and_stores_nothing(self) -> None:
        """DISCARD: the client hears 250, nothing is submitted, no trace headers are made."""
        h = self.harness(DISCARD)
        replies = h.transaction()
        self.assertTrue(replies[-1].startswith("250 2.0.0"), replies)
        self.assertEqual(h.submission.messages, [])
        self.assertNotIn("trace_headers", [c[0] for c in h.policy.calls])

    def test_accepted_message_carries_the_protection_facts(self) -> None:
        """What the checks found (SPF result, RBL zones) is in the queued envelope's submit
        record, where the Server Rules read it."""
        h = self.harness()
        h.policy.facts = {"spf": "softfail", "rbl": "zen.example"}  # type: ignore[attr-defined]
        replies = h.transaction()
        self.assertTrue(replies[-1].startswith("250 2.0.0 Ok: queued as"), replies)
        envelope, _data = h.submission.messages[0]
        self.assertEqual(envelope.submit["spf"], "softfail")
        self.assertEqual(envelope.submit["rbl"], "zen.example")

    def test_entries_a_check_returns_join_the_submit_record(self) -> None:
        """A check that accepts with entries (the Server Rules' "none fired" mark) has them
        in the queued envelope's submit record, beside the session's own."""
        h = self.harness({"rules": "none-fired@3"})
        replies = h.transaction()
        self.assertTrue(replies[-1].startswith("250 2.0.0 Ok: queued as"), replies)
        envelope, _data = h.submission.messages[0]
        self.assertEqual(envelope.submit["rules"], "none-fired@3")
        self.assertEqual(envelope.submit["peer"], "192.0.2.10")
