"""Tests for cgtwist.dns.Resolver against the loopback DNS test server (tests/dnsserver.py)."""

from __future__ import annotations

import os
import tempfile

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.dns import Resolver, parse_nameserver, reverse_name, system_nameservers
from cgtwist.errors import DNSPermanentError, DNSTemporaryError
from cgtwist.interfaces import IResolver
from tests.dnsserver import DNSTestServer, parse_zone_text

ZONE = """
$ORIGIN example.com.
$TTL 300
@        IN MX 20 mx2
@        IN MX 10 mx1.example.com.
@           TXT "v=spf1 ip4:127.0.0.1 -all"
mx1         A 127.0.0.1
mx1         AAAA ::1
mx2      60 A 127.0.0.2   ; a comment
alias       CNAME mx1
nomx        TXT "only text" "and more"
"""


class ResolverTests(unittest.TestCase):
    """Lookups through the real twisted.names client against the loopback server."""

    def setUp(self) -> None:
        self.server = DNSTestServer(zone_text=ZONE)
        self.server.add_records(
            {
                "1.0.0.127.in-addr.arpa": ["PTR mx1.example.com"],
                "nullmx.test": ["MX 0 ."],
                "long.test": [("TXT", "x" * 600)],
            }
        )
        address = self.server.listen(reactor)
        self.addCleanup(self.server.stop)
        self.resolver = Resolver([address], timeout=0.6, max_concurrency=10, reactor=reactor)
        self.addCleanup(self.resolver.stop)

    def test_provides_interface(self) -> None:
        """The resolver can be wired wherever an IResolver is expected."""
        self.assertTrue(IResolver.providedBy(self.resolver))

    @defer.inlineCallbacks
    def test_mx_sorted(self) -> None:
        """Mail goes to the most preferred exchanger first: MX records come back sorted."""
        mx = yield self.resolver.lookup_mx("Example.COM.")
        self.assertEqual(mx, [(10, "mx1.example.com"), (20, "mx2.example.com")])

    @defer.inlineCallbacks
    def test_a_aaaa_txt_ptr(self) -> None:
        """A, AAAA, TXT and PTR records come back as plain strings."""
        self.assertEqual((yield self.resolver.lookup_a("mx1.example.com")), ["127.0.0.1"])
        self.assertEqual((yield self.resolver.lookup_aaaa("mx1.example.com")), ["::1"])
        self.assertEqual(
            (yield self.resolver.lookup_txt("example.com")), ["v=spf1 ip4:127.0.0.1 -all"]
        )
        self.assertEqual(
            (yield self.resolver.lookup_txt("nomx.example.com")), ["only textand more"]
        )
        self.assertEqual((yield self.resolver.lookup_ptr("127.0.0.1")), ["mx1.example.com"])

    @defer.inlineCallbacks
    def test_long_txt_joined(self) -> None:
        """A TXT record longer than 255 octets is split on the wire and joined again."""
        self.assertEqual((yield self.resolver.lookup_txt("long.test")), ["x" * 600])

    @defer.inlineCallbacks
    def test_cname_followed(self) -> None:
        """An alias resolves to its target's addresses."""
        self.assertEqual((yield self.resolver.lookup_a("alias.example.com")), ["127.0.0.1"])

    @defer.inlineCallbacks
    def test_null_mx(self) -> None:
        """A domain that declares it takes no mail (RFC 7505) shows as an MX with empty host."""
        self.assertEqual((yield self.resolver.lookup_mx("nullmx.test")), [(0, "")])

    @defer.inlineCallbacks
    def test_nodata_is_empty(self) -> None:
        """An existing name without records of the type is an empty answer, not an error."""
        self.assertEqual((yield self.resolver.lookup_mx("mx1.example.com")), [])

    def test_nxdomain_permanent(self) -> None:
        """A name that does not exist is a permanent error (mail to it can bounce)."""
        return self.assertFailure(self.resolver.lookup_a("nope.example.com"), DNSPermanentError)

    def test_servfail_refused_temporary(self) -> None:
        """SERVFAIL and REFUSED are temporary: never a reason to bounce."""
        self.server.set_behaviour("sf.example.com", "servfail")
        self.server.set_behaviour("rf.example.com", "refused")
        return defer.gatherResults(
            [
                self.assertFailure(self.resolver.lookup_a("sf.example.com"), DNSTemporaryError),
                self.assertFailure(self.resolver.lookup_mx("rf.example.com"), DNSTemporaryError),
            ]
        )

    @defer.inlineCallbacks
    def test_timeout_does_not_block_others(self) -> None:
        """While one name never answers, other lookups complete; the hung one times out."""
        self.server.set_behaviour("hang.example.com", "timeout")
        hung = self.resolver.lookup_a("hang.example.com")
        ok = yield self.resolver.lookup_a("mx1.example.com")
        self.assertEqual(ok, ["127.0.0.1"])
        self.assertFalse(hung.called)
        yield self.assertFailure(hung, DNSTemporaryError)

    @defer.inlineCallbacks
    def test_slow_answer_within_timeout(self) -> None:
        """A server that answers slowly but within the timeout is still heard."""
        self.server.set_behaviour("mx2.example.com", ("delay", 0.1))
        self.assertEqual((yield self.resolver.lookup_a("mx2.example.com")), ["127.0.0.2"])

    @defer.inlineCallbacks
    def test_cache_honours_ttl(self) -> None:
        """A second lookup of the same record is answered from the cache, not the server."""
        yield self.resolver.lookup_a("mx1.example.com")
        yield self.resolver.lookup_a("mx1.example.com")
        self.assertEqual(self.server.count("mx1.example.com", "A"), 1)

    @defer.inlineCallbacks
    def test_garbage_answer_temporary(self) -> None:
        """A reply that is not DNS at all is a temporary failure, not a crash or a hang."""
        self.server.set_behaviour("junk.example.com", ("raw", lambda m: b"\x00\x01garbage"))
        r = Resolver([self.server.address], timeout=0.3, max_concurrency=2, reactor=reactor)
        yield self.assertFailure(r.lookup_a("junk.example.com"), DNSTemporaryError)

    @defer.inlineCallbacks
    def test_compression_loop_answer(self) -> None:
        """A compression-pointer loop in an answer (CVE-2026-42304 shape) is an error, no hang."""

        def loop(message: object) -> bytes:
            mid = message.id  # type: ignore[attr-defined]
            header = mid.to_bytes(2, "big") + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
            question = b"\xc0\x0c\x00\x01\x00\x01"  # name points at itself
            return (
                header
                + question
                + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01"
            )

        self.server.set_behaviour("loop.example.com", ("raw", loop))
        r = Resolver([self.server.address], timeout=0.3, max_concurrency=2, reactor=reactor)
        yield self.assertFailure(r.lookup_a("loop.example.com"), DNSTemporaryError)

    def test_invalid_names(self) -> None:
        """Syntactically impossible names fail at once without a query."""
        self.assertFailure(self.resolver.lookup_a("a..b"), DNSPermanentError)
        self.assertFailure(self.resolver.lookup_a("x" * 70 + ".com"), DNSPermanentError)
        self.assertFailure(self.resolver.lookup_ptr("not-an-ip"), DNSPermanentError)
        self.assertEqual(self.server.queries, [])


class ConcurrencyTests(unittest.TestCase):
    """Bounded concurrency and the overall deadline, with a Clock and a fake wire."""

    def test_concurrency_bounded_and_queue_times_out(self) -> None:
        """At most max_concurrency lookups are on the wire; queued ones time out, not pile up."""
        clock = Clock()
        r = Resolver(["127.0.0.1:5353"], timeout=2.0, max_concurrency=2, reactor=clock)
        pending: list[defer.Deferred[object]] = []

        def fake(name: str, qtype: int, depth: int) -> defer.Deferred[object]:
            d: defer.Deferred[object] = defer.Deferred()
            pending.append(d)
            return d

        r._resolve = fake  # type: ignore[method-assign]
        ds = [r.lookup_a(f"h{i}.test") for i in range(5)]
        self.assertEqual(len(pending), 2)
        self.assertEqual(r.in_flight, 2)
        clock.advance(3)
        for d in ds:
            self.failureResultOf(d, DNSTemporaryError)
        # the wire answers late: the slots are released and the late answers are dropped
        for d in pending:
            d.callback(([], 0))
        self.assertEqual(r.in_flight, 0)

    def test_no_nameservers(self) -> None:
        """Without configured servers every lookup is a temporary failure, never a system lookup."""
        r = Resolver([], timeout=1, max_concurrency=1, reactor=Clock())
        self.failureResultOf(r.lookup_mx("example.com"), DNSTemporaryError)


class HelperTests(unittest.TestCase):
    def test_parse_nameserver(self) -> None:
        """Nameservers are written ip, ip:port, [v6]:port; anything else is refused."""
        self.assertEqual(parse_nameserver("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(parse_nameserver("192.0.2.1"), ("192.0.2.1", 53))
        self.assertEqual(parse_nameserver("::1"), ("::1", 53))
        self.assertEqual(parse_nameserver("[::1]:54"), ("::1", 54))
        for bad in ("example.com", "1.2.3.4:0", "1.2.3.4:x", ""):
            self.assertRaises(ValueError, parse_nameserver, bad)

    def test_reverse_name(self) -> None:
        """PTR names: reversed octets for IPv4, reversed nibbles for IPv6."""
        self.assertEqual(reverse_name("192.0.2.1"), "1.2.0.192.in-addr.arpa")
        self.assertTrue(reverse_name("2001:db8::1").startswith("1.0.0.0."))

    def test_system_nameservers(self) -> None:
        """The explicit resolv.conf helper reads nameserver lines only."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "resolv.conf")
            with open(path, "w") as f:
                f.write(
                    "# c\nsearch x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver bogus\n"
                )
            self.assertEqual(system_nameservers(path), ["192.0.2.53:53", "[fe80::1]:53"])
            self.assertEqual(system_nameservers(os.path.join(tmp, "missing")), [])

    def test_zone_text_parser_names_line(self) -> None:
        """The test server's zone parser reports the bad line."""
        with self.assertRaises(ValueError) as cm:
            parse_zone_text("a A 127.0.0.1\nb BOGUS x\n", "t")
        self.assertIn("line 2", str(cm.exception))


class HostileAnswerTests(unittest.TestCase):
    """RELIABILITY.md b-C 20: hostile DNS data never hangs or crashes the resolver."""

    def setUp(self) -> None:
        records: dict[str, list[object]] = {
            f"c{i}.test": [f"CNAME c{i + 1}.test"] for i in range(20)
        }
        records["c20.test"] = ["A 127.0.0.1"]
        records["big.test"] = [("TXT", "y" * 20000)]
        self.server = DNSTestServer(records)  # type: ignore[arg-type]
        self.server.listen(reactor)
        self.addCleanup(self.server.stop)
        self.resolver = Resolver(
            [self.server.address], timeout=2, max_concurrency=4, reactor=reactor
        )
        self.addCleanup(self.resolver.stop)

    def test_long_cname_chain(self) -> None:
        """A chain of 20 CNAMEs is cut off as a temporary error instead of being followed forever."""
        return self.assertFailure(self.resolver.lookup_a("c0.test"), DNSTemporaryError)

    @defer.inlineCallbacks
    def test_huge_txt_over_tcp(self) -> None:
        """A 20 KB TXT record arrives (truncated over UDP, fetched over TCP) intact."""
        txt = yield self.resolver.lookup_txt("big.test")
        self.assertEqual(txt, ["y" * 20000])
        self.assertGreaterEqual(self.server.count("big.test", "TXT"), 2)


class SharedQueryTests(unittest.TestCase):
    def test_identical_questions_share_one_slot(self) -> None:
        """1000 connections asking the same name use one wire query, leaving room for others."""
        clock = Clock()
        r = Resolver(["127.0.0.1:5353"], timeout=2.0, max_concurrency=2, reactor=clock)
        wire: list[tuple[str, defer.Deferred[object]]] = []

        def fake(name: str, qtype: int, depth: int) -> defer.Deferred[object]:
            d: defer.Deferred[object] = defer.Deferred()
            wire.append((name, d))
            return d

        r._resolve = fake  # type: ignore[method-assign]
        same = [r.lookup_a("2.0.0.127.rbl.test") for _ in range(1000)]
        other = r.lookup_a("mx.example.com")
        self.assertEqual([n for n, _d in wire], ["2.0.0.127.rbl.test", "mx.example.com"])
        wire[1][1].callback(([], 0))
        self.assertEqual(self.successResultOf(other), [])
        clock.advance(3)
        for d in same:
            self.failureResultOf(d, DNSTemporaryError)
        wire[0][1].callback(([], 0))  # a late answer is dropped quietly
        self.assertEqual(r.in_flight, 0)


class IDNTests(unittest.TestCase):
    def test_unicode_names_go_out_as_a_labels(self) -> None:
        """An internationalised domain is asked in its xn-- form; an invalid one fails at once."""
        clock = Clock()
        r = Resolver(["127.0.0.1:5353"], timeout=1, max_concurrency=1, reactor=clock)
        asked: list[str] = []

        def fake(name: str, qtype: int, depth: int) -> defer.Deferred[object]:
            asked.append(name)
            return defer.succeed(([], 0))

        r._resolve = fake  # type: ignore[method-assign]
        self.successResultOf(r.lookup_mx("bücher.example"))
        self.assertEqual(asked, ["xn--bcher-kva.example"])
        self.failureResultOf(r.lookup_mx("exa\u2028mple.com"), DNSPermanentError)
        self.failureResultOf(r.lookup_mx("a\x00b.com"), DNSPermanentError)
        self.failureResultOf(r.lookup_mx("a b.com"), DNSPermanentError)
        self.assertEqual(len(asked), 1)


class NegativeCacheTests(unittest.TestCase):
    def test_nxdomain_and_nodata_cached_briefly(self) -> None:
        """Repeated questions for a missing name are answered locally for a short while only."""
        clock = Clock()
        r = Resolver(
            ["127.0.0.1:5353"], timeout=1, max_concurrency=1, reactor=clock, negative_ttl=60
        )
        asked: list[str] = []

        def fake(name: str, qtype: int, depth: int) -> defer.Deferred[object]:
            asked.append(name)
            if name.startswith("nx"):
                return defer.fail(DNSPermanentError(name))
            return defer.succeed(([], 0))

        r._resolve = fake  # type: ignore[method-assign]
        for _ in range(3):
            self.failureResultOf(r.lookup_a("nx.test"), DNSPermanentError)
            self.assertEqual(self.successResultOf(r.lookup_a("nodata.test")), [])
        self.assertEqual(asked, ["nx.test", "nodata.test"])
        clock.advance(61)
        self.failureResultOf(r.lookup_a("nx.test"), DNSPermanentError)
        self.assertEqual(asked, ["nx.test", "nodata.test", "nx.test"])
