"""Reverse Connect against loopback MX servers that accept, reject, and stall."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.checks.reverseconnect import ReverseConnect, ReverseConnectConfig
from cgtwist.dns import Resolver
from tests.checks.fakemx import FakeMX
from tests.dnsserver import DNSTestServer

RECORDS = {
    "sender.test": ["MX 10 mx.sender.test"],
    "mx.sender.test": ["A 127.0.0.1"],
    "other.test": ["MX 10 mx.sender.test"],
    "implicit.test": ["A 127.0.0.1"],
    "nullmx.test": ["MX 0 ."],
    "broken.test": ["MX 10 mx.sender.test"],
}


class ReverseConnectTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = DNSTestServer(RECORDS)
        self.dns.listen(reactor)
        self.addCleanup(self.dns.stop)
        self.dns.set_behaviour("broken.test", "servfail")
        self.mx = FakeMX()
        self.mx.listen(reactor)
        self.addCleanup(self.mx.stop)
        self.resolver = Resolver(
            [self.dns.address], timeout=0.5, max_concurrency=10, reactor=reactor
        )
        self.connected: list[tuple[str, int]] = []

    def connector(self, ip: str, port: int) -> Any:
        """Every MX address is reached on the fake MX's port on loopback."""
        self.connected.append((ip, port))
        return TCP4ClientEndpoint(reactor, ip, self.mx.port, timeout=2)

    def make(self, **kw: Any) -> ReverseConnect:
        cfg = ReverseConnectConfig(**dict({"timeout": 2.0, "helo": "mx.ours.test"}, **kw))
        return ReverseConnect(self.resolver, self.connector, reactor, cfg)

    @defer.inlineCallbacks
    def test_accepting_mx(self) -> None:
        """An MX that accepts the sender verifies it, with the Postfix-style dialogue."""
        rc = self.make()
        r = yield rc.verify("alice@sender.test")
        self.assertEqual(r.outcome, "pass")
        self.assertEqual(
            self.mx.sessions[0][:3],
            ["EHLO mx.ours.test", "MAIL FROM:<>", "RCPT TO:<alice@sender.test>"],
        )
        self.assertEqual(self.connected, [("127.0.0.1", 25)])

    @defer.inlineCallbacks
    def test_rejecting_mx_and_negative_cache(self) -> None:
        """A 5xx to RCPT fails the sender; a second message makes no new connection."""
        self.mx.mode = "reject"
        rc = self.make()
        r = yield rc.verify("nobody@sender.test")
        self.assertEqual(r.outcome, "fail")
        self.assertIn("550", r.reason)
        r2 = yield rc.verify("NOBODY@sender.test")
        self.assertEqual((r2.outcome, r2.data.get("cached")), ("fail", "yes"))
        self.assertEqual(len(self.mx.sessions), 1)

    @defer.inlineCallbacks
    def test_positive_cache(self) -> None:
        """A verified sender is not probed again within the positive TTL."""
        rc = self.make()
        yield rc.verify("alice@sender.test")
        yield rc.verify("alice@sender.test")
        self.assertEqual(rc.probes, 1)

    @defer.inlineCallbacks
    def test_stalling_mx_times_out(self) -> None:
        """A tarpit MX costs at most the configured timeout and gives temperror, uncached."""
        self.mx.mode = "stall"
        rc = self.make(timeout=0.3)
        r = yield rc.verify("alice@sender.test")
        self.assertEqual((r.outcome, r.reason), ("temperror", "timeout"))
        self.assertEqual(rc.probes, 1)
        self.mx.mode = "accept"
        r = yield rc.verify("alice@sender.test")
        self.assertEqual(r.outcome, "pass")

    @defer.inlineCallbacks
    def test_tempfail_and_bad_greeting(self) -> None:
        """4xx answers and a refusing greeting are temporary, not a verdict on the sender."""
        self.mx.mode = "tempfail"
        rc = self.make()
        self.assertEqual((yield rc.verify("a@sender.test")).outcome, "temperror")
        self.mx.mode = "badgreet"
        self.assertEqual((yield rc.verify("b@sender.test")).outcome, "temperror")

    @defer.inlineCallbacks
    def test_helo_fallback(self) -> None:
        """An MX without EHLO is spoken to with HELO."""
        self.mx.mode = "noehlo"
        r = yield self.make().verify("a@sender.test")
        self.assertEqual(r.outcome, "pass")
        self.assertEqual(self.mx.sessions[0][1], "HELO mx.ours.test")

    @defer.inlineCallbacks
    def test_dns_outcomes(self) -> None:
        """No such domain and null MX fail; a DNS failure is temporary; implicit MX is used."""
        rc = self.make()
        self.assertEqual((yield rc.verify("a@nx.test")).outcome, "fail")
        self.assertEqual((yield rc.verify("a@nullmx.test")).outcome, "fail")
        self.assertEqual((yield rc.verify("a@broken.test")).outcome, "temperror")
        self.assertEqual((yield rc.verify("a@implicit.test")).outcome, "pass")
        self.assertEqual(rc.probes, 1)

    @defer.inlineCallbacks
    def test_concurrent_same_sender_one_probe(self) -> None:
        """Two transactions from the same sender at once share one probe."""
        rc = self.make()
        a, b = yield defer.gatherResults([rc.verify("x@sender.test"), rc.verify("x@sender.test")])
        self.assertEqual((a.outcome, b.outcome), ("pass", "pass"))
        self.assertEqual(rc.probes, 1)

    @defer.inlineCallbacks
    def test_rate_limit_per_domain(self) -> None:
        """More probes for one domain than the rate limit are refused without connecting."""
        rc = self.make(rate_limit=2)
        outcomes = []
        for i in range(4):
            outcomes.append((yield rc.verify(f"u{i}@sender.test")).outcome)
        self.assertEqual(outcomes, ["pass", "pass", "temperror", "temperror"])
        self.assertEqual(rc.probes, 2)
        self.assertEqual((yield rc.verify("u@other.test")).outcome, "pass")

    @defer.inlineCallbacks
    def test_concurrency_bounded(self) -> None:
        """With a stalling MX, at most max_concurrency probes are connected at once."""
        self.mx.mode = "stall"
        rc = self.make(timeout=0.5, max_concurrency=1)
        ds = [rc.verify(f"u{i}@sender.test") for i in range(3)]
        yield defer.gatherResults(ds)
        # the first held the only slot until its timeout; the others timed out waiting
        self.assertEqual(rc.probes, 1)
        self.assertEqual(rc._active, 0)

    def test_nothing_to_verify(self) -> None:
        """<>, address literals and unsafe addresses are never probed."""
        rc = ReverseConnect(self.resolver, self.connector, Clock())
        for sender in (
            "",
            "nodomain",
            "a@[127.0.0.1]",
            "a b@sender.test",
            "a>\r\n@x.test",
            "a>b@sender.test",
        ):
            r = self.successResultOf(rc.verify(sender))
            self.assertEqual(r.outcome, "skipped", sender)
        self.assertEqual(self.connected, [])
