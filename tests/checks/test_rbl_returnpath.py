"""RBL and return-path DNS checks on the loopback DNS server."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial import unittest

from cgtwist.checks.rbl import RBLChecker, classify, query_name
from cgtwist.checks.returnpath import REPLIES, check_return_path
from cgtwist.dns import Resolver
from tests.dnsserver import DNSTestServer

RECORDS = {
    # rbl.test lists 192.0.2.2 and 2001:db8::2; answers an error code for .254/.255
    "2.2.0.192.rbl.test": ["A 127.0.0.2", 'TXT "https://rbl.test/lookup?ip=192.0.2.2\r\nX: y"'],
    "254.2.0.192.rbl.test": ["A 127.255.255.254"],
    "255.2.0.192.rbl.test": ["A 127.255.255.255"],
    "9.2.0.192.rbl.test": ["A 10.0.0.1"],  # a wildcarded/hijacked zone: not a listing
    query_name("2001:db8::2", "rbl.test"): ["A 127.0.0.4"],
    "2.2.0.192.other.test": ["A 127.0.0.3"],
    # return-path domains
    "mx.test": ["MX 10 mail.mx.test"],
    "mail.mx.test": ["A 192.0.2.25"],
    "aonly.test": ["A 192.0.2.26"],
    "aaaaonly.test": ["AAAA 2001:db8::26"],
    "txtonly.test": ['TXT "hello"'],
    "nullmx.test": ["MX 0 ."],
}


class RBLTests(unittest.TestCase):
    """DNSBL answers: listed, not listed, error codes, lookup failures."""

    def setUp(self) -> None:
        self.server = DNSTestServer(RECORDS)
        self.server.listen(reactor)
        self.addCleanup(self.server.stop)
        self.resolver = Resolver(
            [self.server.address], timeout=0.4, max_concurrency=20, reactor=reactor
        )
        self.rbl = RBLChecker(self.resolver, reactor)

    def test_query_name(self) -> None:
        """Zones are asked for reversed octets (IPv4) or reversed nibbles (IPv6), RFC 5782."""
        self.assertEqual(query_name("192.0.2.1", "zen.example."), "1.2.0.192.zen.example")
        self.assertEqual(query_name("::ffff:192.0.2.1", "z"), "1.2.0.192.z")
        self.assertEqual(
            query_name("2001:db8::1", "z"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.z",
        )

    def test_classify(self) -> None:
        """127.0.0.x lists; 127.255.255.x and non-loopback answers are errors, not listings."""
        self.assertEqual(classify(["127.0.0.2"]), ("listed", "127.0.0.2"))
        self.assertEqual(classify(["127.255.255.254"]), ("error", "127.255.255.254"))
        self.assertEqual(classify(["8.8.8.8"]), ("error", "8.8.8.8"))
        self.assertEqual(classify([]), ("pass", ""))

    @defer.inlineCallbacks
    def test_listed(self) -> None:
        """A listed IP is reported with zone and code; the TXT reason is sanitised for the log."""
        r = yield self.rbl.check("192.0.2.2", ["rbl.test"])
        self.assertEqual(r.outcome, "listed")
        self.assertEqual((r.data["zone"], r.data["code"]), ("rbl.test", "127.0.0.2"))
        self.assertNotIn("\r", r.data["text"])
        self.assertIn("rbl.test/lookup", r.data["text"])

    @defer.inlineCallbacks
    def test_listed_ipv6_and_second_zone(self) -> None:
        """IPv6 peers are checked too; a listing in any configured zone counts."""
        r = yield self.rbl.check("2001:db8::2", ["rbl.test"])
        self.assertEqual(r.outcome, "listed")
        r = yield self.rbl.check("192.0.2.2", ["nothing.test", "other.test"])
        self.assertEqual((r.outcome, r.data["zone"]), ("listed", "other.test"))

    @defer.inlineCallbacks
    def test_not_listed(self) -> None:
        """NXDOMAIN means not listed."""
        r = yield self.rbl.check("192.0.2.3", ["rbl.test"])
        self.assertEqual(r.outcome, "pass")

    @defer.inlineCallbacks
    def test_error_codes_not_listed(self) -> None:
        """127.255.255.254/.255 and bogus answers are not listings (Spamhaus error channel)."""
        for ip in ("192.0.2.254", "192.0.2.255", "192.0.2.9"):
            r = yield self.rbl.check(ip, ["rbl.test"])
            self.assertEqual(r.outcome, "error", ip)
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_timeout_and_servfail_fail_open(self) -> None:
        """A zone that times out or fails is treated as not listed, and others still count."""
        self.server.set_behaviour("3.2.0.192.rbl.test", "timeout")
        self.server.set_behaviour("3.2.0.192.other.test", "servfail")
        r = yield self.rbl.check("192.0.2.3", ["rbl.test", "other.test"])
        self.assertEqual(r.outcome, "error")
        self.server.set_behaviour("2.2.0.192.rbl.test", "timeout")
        r = yield self.rbl.check("192.0.2.2", ["rbl.test", "other.test"])
        self.assertEqual(r.outcome, "listed")

    @defer.inlineCallbacks
    def test_return_code_filter(self) -> None:
        """zone=codes acts only on the listed return codes (e.g. skip a policy list's codes)."""
        r = yield self.rbl.check("192.0.2.2", ["rbl.test=127.0.0.3,127.0.0.10-127.0.0.11"])
        self.assertEqual(r.outcome, "pass")
        r = yield self.rbl.check("192.0.2.2", ["rbl.test=127.0.0.2-127.0.0.3"])
        self.assertEqual((r.outcome, r.data["zone"]), ("listed", "rbl.test"))
        r = yield self.rbl.check("192.0.2.2", ["rbl.test=bogus"])
        self.assertEqual(r.outcome, "skipped")

    @defer.inlineCallbacks
    def test_no_zones(self) -> None:
        """With no zones configured nothing is asked."""
        r = yield self.rbl.check("192.0.2.2", [])
        self.assertEqual(r.outcome, "skipped")
        self.assertEqual(self.server.queries, [])


class ReturnPathTests(unittest.TestCase):
    """MAIL FROM domain existence: MX or A/AAAA; NXDOMAIN 5xx, DNS failure 4xx."""

    def setUp(self) -> None:
        self.server = DNSTestServer(RECORDS)
        self.server.listen(reactor)
        self.addCleanup(self.server.stop)
        self.resolver = Resolver(
            [self.server.address], timeout=0.4, max_concurrency=20, reactor=reactor
        )

    @defer.inlineCallbacks
    def test_matrix(self) -> None:
        """Each sender domain gets the outcome its DNS deserves."""
        self.server.set_behaviour("broken.test", "servfail")
        self.server.set_behaviour("hung.test", "timeout")
        cases = {
            "a@mx.test": "pass",
            "a@aonly.test": "pass",
            "a@aaaaonly.test": "pass",
            "a@AONLY.TEST.": "pass",
            "a@txtonly.test": "fail",
            "a@nx.test": "fail",
            "a@nullmx.test": "nullmx",
            "a@broken.test": "temperror",
            "a@hung.test": "temperror",
            "": "skipped",
            "a@[192.0.2.1]": "skipped",
            "nodomain": "fail",
        }
        for sender, outcome in cases.items():
            r = yield check_return_path(self.resolver, sender, reactor)
            self.assertEqual(r.outcome, outcome, sender)

    def test_replies(self) -> None:
        """NXDOMAIN-like outcomes are permanent 5xx, DNS failures temporary 4xx."""
        self.assertEqual(
            REPLIES["fail"].reply(), "550 5.1.8 Sender address rejected: domain not found"
        )
        self.assertTrue(REPLIES["temperror"].temporary)
        self.assertEqual(REPLIES["nullmx"].enhanced, "5.7.27")
