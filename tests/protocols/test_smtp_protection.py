"""The SMTP receiver with the real protection policy wrapped around BasicPolicy."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer

from cgtwist import router
from cgtwist.core.policy import BasicPolicy
from cgtwist.core.protection import ProtectedPolicy
from cgtwist.interfaces import IRouter
from cgtwist.protocols.smtp.factory import SMTPFactory
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec
from tests.protocols.test_smtp_fakes import FakeSubmission, Harness, make_portal

FACTS = router.StaticFacts(
    domains=frozenset({"ours.example"}), accounts=frozenset({"alice@ours.example"})
)


@implementer(IRouter)
class TableRouter:
    def route(self, address: str, kind: str = "mail") -> Any:
        return defer.succeed(
            router.resolve_with(FACTS, router.Table(), address, "ours.example", kind).route
        )


class NoDNS:
    """Every check that would ask DNS is switched off below; any lookup is a test failure."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected DNS lookup {name}")


SETTINGS = {
    "protection.rbl.mode": "off",
    "protection.returnpath.mode": "off",
    "protection.spf.mode": "off",
    "protection.reverse_connect.mode": "off",
    "protection.blacklist.mode": "all",
    "protection.blacklist.ips": "203.0.113.0/24",
    "clients.ips": "192.0.2.0/28",
}


def harness(peer: str) -> Harness:
    clock = Clock()
    settings = SettingsHolder(Settings(SETTINGS))
    policy = ProtectedPolicy(
        BasicPolicy(TableRouter(), settings),
        NoDNS(),
        settings,
        clock,  # type: ignore[arg-type]
        hostname="mx.ours.example",
    )
    factory = SMTPFactory(
        ListenerSpec("smtp", 25),
        settings,
        policy,
        FakeSubmission(),
        make_portal(),
        lambda: None,
        "mx.ours.example",
        clock=clock,
        penalty=policy.auth_penalty,
    )
    return Harness(factory=factory, greet=False, peer=peer)


class ProtectedSMTPTests(unittest.TestCase):
    def test_blacklisted_peer_refused_at_connect(self) -> None:
        """A blacklisted IP gets 554 5.7.1 instead of the banner and is closed."""
        h = harness("203.0.113.7")
        self.assertEqual(h.connect(), ["554 5.7.1 Access denied"])
        self.assertTrue(h.closed)

    def test_client_ip_may_relay(self) -> None:
        """A Client IP (trusted network) relays without AUTH; a stranger cannot."""
        h = harness("192.0.2.5")
        self.assertEqual(h.connect()[0][:3], "220")
        h.cmd("EHLO c.example")
        h.cmd("MAIL FROM:<a@ours.example>")
        self.assertEqual(h.cmd("RCPT TO:<bob@ext.example>"), ["250 2.1.5 Recipient OK"])
        h.send(b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
        self.assertEqual(len(h.submission.messages), 1)
        stranger = harness("198.51.100.9")
        stranger.connect()
        stranger.cmd("EHLO c.example")
        stranger.cmd("MAIL FROM:<a@other.example>")
        self.assertEqual(stranger.cmd("RCPT TO:<bob@ext.example>"), ["554 5.7.1 Relaying denied"])
        self.assertEqual(stranger.cmd("RCPT TO:<alice@ours.example>"), ["250 2.1.5 Recipient OK"])
