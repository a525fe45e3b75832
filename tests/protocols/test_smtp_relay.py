"""The open-relay matrix end to end: SMTP receiver + BasicPolicy + the real Router table."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer

from cgtwist import router
from cgtwist.core.policy import BasicPolicy
from cgtwist.interfaces import IRouter
from cgtwist.protocols.smtp.factory import SMTPFactory
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec
from tests.protocols.test_smtp_fakes import FakeSubmission, Harness, make_portal

FACTS = router.StaticFacts(
    domains=frozenset({"ours.example"}),
    accounts=frozenset({"alice@ours.example", "postmaster@ours.example"}),
)

# Issue 4 part 3 / RELIABILITY.md b-H 43: every spelling of "somewhere else".
EXTERNAL = [
    "user@ext.example",
    "user%ext.example@ours.example",
    "@ours.example:user@ext.example",
    '"user@ext.example"@ours.example',
    "ext.example!user@ours.example",
    "user@[127.0.0.2]",
    "user@ext.example.",
    "USER@EXT.EXAMPLE",
    "@ext.example:alice@ours.example",
]
LOCAL = [
    "alice@ours.example",
    "ALICE@OURS.EXAMPLE",
    "alice@ours.example.",
    '"alice"@ours.example',
    "postmaster",
    "alice%ours.example@ours.example",
]


@implementer(IRouter)
class TableRouter:
    def route(self, address: str, kind: str = "mail") -> Any:
        return defer.succeed(
            router.resolve_with(FACTS, router.Table(), address, "ours.example", kind).route
        )


def harness(listener: ListenerSpec, **overrides: Any) -> Harness:
    settings = SettingsHolder(Settings(dict(overrides, **{"smtp.max_errors": 100})))
    factory = SMTPFactory(
        listener,
        settings,
        BasicPolicy(TableRouter(), settings),
        FakeSubmission(),
        make_portal(),
        lambda: None,
        "mx.ours.example",
        clock=Clock(),
    )
    h = Harness(factory=factory, peer="203.0.113.50")
    h.cmd("EHLO client.example")
    return h


class SenderOwnershipTests(unittest.TestCase):
    def test_foreign_sender_refused_after_auth(self) -> None:
        """RELIABILITY.md #44: alice, authenticated on 587, may not send as someone else
        (553 5.7.1); her own address and the null sender pass."""
        h = harness(ListenerSpec("smtp", 587, submission=True, allow_plain_auth=True))
        creds = base64.b64encode(b"\0alice@example.com\0secret").decode()
        self.assertEqual(h.cmd("AUTH PLAIN " + creds)[0][:3], "235")
        self.assertEqual(
            h.cmd("MAIL FROM:<bob@example.com>"),
            [
                "553 5.7.1 <bob@example.com>: Sender address rejected: not owned by alice@example.com"
            ],
        )
        self.assertEqual(h.cmd("MAIL FROM:<postmaster@ours.example>")[0][:9], "553 5.7.1")
        self.assertEqual(h.cmd("MAIL FROM:<>"), ["250 2.1.0 Sender OK"])
        h.cmd("RSET")
        self.assertEqual(h.cmd("MAIL FROM:<Alice@Example.com>"), ["250 2.1.0 Sender OK"])

    def test_foreign_from_header_refused_after_data(self) -> None:
        """With smtp.check_from_header on, a message whose From: is not alice's gets 550 5.7.1
        after DATA and is not queued; her own From: goes through."""
        h = harness(
            ListenerSpec("smtp", 587, submission=True, allow_plain_auth=True),
            **{"smtp.check_from_header": True},
        )
        creds = base64.b64encode(b"\0alice@example.com\0secret").decode()
        h.cmd("AUTH PLAIN " + creds)
        envelope = b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<user@ext.example>\r\nDATA\r\n"
        out = h.send(envelope + b"From: Bob <bob@example.com>\r\n\r\nhi\r\n.\r\n")
        self.assertEqual(
            out[-1], "550 5.7.1 From: header address rejected: not owned by alice@example.com"
        )
        self.assertEqual(h.submission.messages, [])
        out = h.send(envelope + b"From: Alice <alice@example.com>\r\n\r\nhi\r\n.\r\n")
        self.assertEqual(out[-1][:9], "250 2.0.0")
        self.assertEqual(len(h.submission.messages), 1)


class OpenRelayMatrixTests(unittest.TestCase):
    def test_unauthenticated_relay_refused(self) -> None:
        """A stranger on port 25 cannot relay in any address form: 554 5.7.1; local mail passes."""
        h = harness(ListenerSpec("smtp", 25))
        h.cmd("MAIL FROM:<spammer@bad.example>")
        for rcpt in EXTERNAL:
            self.assertEqual(h.cmd(f"RCPT TO:<{rcpt}>"), ["554 5.7.1 Relaying denied"], rcpt)
        for rcpt in LOCAL:
            self.assertEqual(h.cmd(f"RCPT TO:<{rcpt}>"), ["250 2.1.5 Recipient OK"], rcpt)
        self.assertEqual(h.cmd("RCPT TO:<nobody@ours.example>"), ["550 5.1.1 unknown user"])
        self.assertFalse(h.closed)

    def test_authenticated_relay_allowed(self) -> None:
        """The same matrix after AUTH on the submission port is relayed."""
        h = harness(ListenerSpec("smtp", 587, submission=True, allow_plain_auth=True))
        creds = base64.b64encode(b"\0alice@example.com\0secret").decode()
        self.assertEqual(h.cmd("AUTH PLAIN " + creds)[0][:3], "235")
        # The checker logs alice in as alice@example.com: her own address is the sender.
        self.assertEqual(h.cmd("MAIL FROM:<alice@example.com>"), ["250 2.1.0 Sender OK"])
        for rcpt in EXTERNAL + LOCAL:
            self.assertEqual(h.cmd(f"RCPT TO:<{rcpt}>"), ["250 2.1.5 Recipient OK"], rcpt)
