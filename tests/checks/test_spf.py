"""SPF results on the loopback DNS server, and the headers they produce."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from cgtwist.checks.result import CheckResult
from cgtwist.checks.spf import SPFChecker, authentication_results_part, received_spf
from tests.dnsserver import DNSTestServer

SPF_ZONE = {
    "pass.test": ['TXT "v=spf1 ip4:127.0.0.1 -all"'],
    "fail.test": ['TXT "v=spf1 -all"'],
    "softfail.test": ['TXT "v=spf1 ~all"'],
    "neutral.test": ['TXT "v=spf1 ?all"'],
    "none.test": ['TXT "not an spf record"'],
    "permerror.test": ['TXT "v=spf1 bogus:mechanism -all"'],
    "temperror.test": ['TXT "v=spf1 -all"'],
    "slow.test": ['TXT "v=spf1 -all"'],
    "loop.test": ['TXT "v=spf1 include:loop.test -all"'],
    "many.test": ['TXT "v=spf1 ' + " ".join(f"a:h{i}.many.test" for i in range(12)) + ' -all"'],
    "amx.test": ['TXT "v=spf1 mx -all"', "MX 10 mx.amx.test"],
    "mx.amx.test": ["A 127.0.0.1"],
    "helo.test": ['TXT "v=spf1 ip4:127.0.0.1 -all"'],
    "six.test": ['TXT "v=spf1 ip6:2001:db8::/32 -all"'],
}
SPF_ZONE.update({f"h{i}.many.test": ["A 192.0.2.1"] for i in range(12)})


def pairs(text: str) -> list[tuple[str, str]]:
    """Split ``k=v; k="quoted; v"`` honouring quoted-strings and comments (for the tests)."""
    out, key, val, state, depth = [], "", "", "key", 0
    i = 0
    while i < len(text):
        c = text[i]
        if state == "quoted":
            if c == "\\":
                val += text[i : i + 2]
                i += 2
                continue
            if c == '"':
                state = "val"
            val += c
        elif depth or c == "(":
            depth += {"(": 1, ")": -1}.get(c, 0)
        elif c == '"' and state == "val":
            state = "quoted"
            val += c
        elif c == ";":
            if key.strip():
                out.append((key.strip(), val.strip()))
            key, val, state = "", "", "key"
        elif c == "=" and state == "key":
            state = "val"
        elif state == "key":
            key += c
        else:
            val += c
        i += 1
    if key.strip():
        out.append((key.strip(), val.strip()))
    return out


def start_spf_server(testcase: unittest.TestCase) -> DNSTestServer:
    server = DNSTestServer(SPF_ZONE)
    server.listen(reactor)
    testcase.addCleanup(server.stop)
    server.set_behaviour("temperror.test", "servfail")
    server.set_behaviour("slow.test", "timeout")
    return server


def make_pool(testcase: unittest.TestCase) -> ThreadPool:
    pool = ThreadPool(minthreads=0, maxthreads=4, name="spf-test")
    pool.start()
    testcase.addCleanup(pool.stop)
    return pool


class SPFResultTests(unittest.TestCase):
    """Every RFC 7208 result, evaluated by pyspf against the loopback server only."""

    def setUp(self) -> None:
        self.server = start_spf_server(self)
        self.spf = SPFChecker(
            [self.server.address],
            reactor,
            make_pool(self),
            timeout=0.5,
            query_time=3,
            receiver="mx.ours.test",
        )

    @defer.inlineCallbacks
    def test_matrix(self) -> None:
        """Each sender domain yields the SPF result its record says, for MAIL FROM."""
        expected = {
            "pass.test": "pass",
            "fail.test": "fail",
            "softfail.test": "softfail",
            "neutral.test": "neutral",
            "none.test": "none",
            "nx.test": "none",
            "permerror.test": "permerror",
            "temperror.test": "temperror",
            "loop.test": "permerror",
            "many.test": "permerror",
            "amx.test": "pass",
        }
        results = yield defer.gatherResults(
            [self.spf.check("127.0.0.1", f"alice@{dom}", "client.test") for dom in expected]
        )
        got = {r.data["domain"]: r.outcome for r in results}
        self.assertEqual(got, expected)
        for r in results:
            self.assertIsInstance(r, CheckResult)
            self.assertEqual(r.check, "spf")
            self.assertEqual(r.data["identity"], "mailfrom")

    @defer.inlineCallbacks
    def test_timeout_is_temperror(self) -> None:
        """A domain whose DNS never answers gives temperror, not a hang or a crash."""
        r = yield self.spf.check("127.0.0.1", "bob@slow.test", "client.test")
        self.assertEqual(r.outcome, "temperror")

    @defer.inlineCallbacks
    def test_helo_identity_for_null_sender(self) -> None:
        """For MAIL FROM:<> the HELO name is checked (RFC 7208 §2.4)."""
        r = yield self.spf.check("127.0.0.1", "", "helo.test")
        self.assertEqual((r.outcome, r.data["identity"]), ("pass", "helo"))
        r = yield self.spf.check("127.0.0.2", "", "helo.test")
        self.assertEqual(r.outcome, "fail")
        r = yield self.spf.check("127.0.0.1", "", "[127.0.0.1]")
        self.assertEqual(r.outcome, "none")

    @defer.inlineCallbacks
    def test_ipv6_client(self) -> None:
        """IPv6 clients are matched against ip6 mechanisms."""
        r = yield self.spf.check("2001:db8::25", "a@six.test", "client.test")
        self.assertEqual(r.outcome, "pass")
        r = yield self.spf.check("2001:db9::25", "a@six.test", "client.test")
        self.assertEqual(r.outcome, "fail")

    @defer.inlineCallbacks
    def test_hostile_sender_cannot_inject_headers(self) -> None:
        """CR/LF, quotes and parentheses from the peer never break out of the header value."""
        evil = 'x"\r\nBcc: victim@example.com (\\)@fail.test'
        r = yield self.spf.check("127.0.0.1", evil, "evil\r\nX-Injected: 1")
        rspf, ar = received_spf(r), authentication_results_part(r)
        for value in (rspf, ar):
            self.assertNotIn("\r", value)
            self.assertNotIn("\n", value)
            self.assertTrue(all(0x20 <= ord(c) < 0x7F for c in value), value)
        # Parsed back, the values hold exactly the keys we wrote: nothing was smuggled in.
        keys = [k for k, _v in pairs(rspf.split(")", 1)[1])]
        self.assertEqual(keys, ["client-ip", "envelope-from", "helo", "receiver", "identity"])
        self.assertEqual([k for k, _v in pairs(ar.replace(" ", ";", 1))], ["spf", "smtp.mailfrom"])


class HeaderTests(unittest.TestCase):
    """Header text for known results (no DNS)."""

    def result(
        self, outcome: str, sender: str = "alice@example.com", helo: str = "mail.example.com"
    ) -> CheckResult:
        return CheckResult(
            "spf",
            outcome,
            "why",
            0.0,
            {
                "identity": "mailfrom" if sender else "helo",
                "client_ip": "192.0.2.1",
                "sender": sender,
                "helo": helo,
                "domain": "example.com",
                "receiver": "mx.ours.test",
            },
        )

    def test_received_spf(self) -> None:
        """Received-SPF follows RFC 7208 §9.1: result, comment, key=value pairs."""
        v = received_spf(self.result("pass"))
        self.assertEqual(
            v,
            "pass (mx.ours.test: domain of alice@example.com designates 192.0.2.1 as permitted "
            "sender) client-ip=192.0.2.1; envelope-from=alice@example.com; helo=mail.example.com; "
            "receiver=mx.ours.test; identity=mailfrom;",
        )

    def test_authentication_results(self) -> None:
        """Authentication-Results uses smtp.mailfrom, or smtp.helo for <> (RFC 8601 §2.7.2)."""
        self.assertEqual(
            authentication_results_part(self.result("fail")),
            "spf=fail smtp.mailfrom=alice@example.com",
        )
        self.assertEqual(
            authentication_results_part(self.result("pass", sender="")),
            "spf=pass smtp.helo=mail.example.com",
        )

    def test_odd_sender_is_quoted(self) -> None:
        """A quoted local part is rendered as a quoted-string, escaped."""
        v = authentication_results_part(self.result("none", sender='"a b\\"c"@example.com'))
        self.assertEqual(v, 'spf=none smtp.mailfrom="\\"a b\\\\\\"c\\"@example.com"')
