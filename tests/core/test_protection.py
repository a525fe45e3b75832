"""ProtectedPolicy: the receiving-protection checks at the SMTP hooks, on loopback DNS and MX."""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest
from zope.interface import implementer

from cgtwist.checks.blacklist import SenderBlacklist
from cgtwist.core.protection import ProtectedPolicy
from cgtwist.dns import Resolver
from cgtwist.errors import MailError
from cgtwist.interfaces import IPolicy
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, SessionInfo
from tests.checks.fakemx import FakeMX
from tests.checks.test_blacklist_penalty import capture_logs
from tests.dnsserver import DNSTestServer

ZONE = {
    # SPF: one domain per result (the client is 192.0.2.1)
    "pass.test": ['TXT "v=spf1 ip4:192.0.2.1 -all"', "MX 10 mx.pass.test"],
    "fail.test": ['TXT "v=spf1 -all"', "A 192.0.2.50"],
    "softfail.test": ['TXT "v=spf1 ~all"', "A 192.0.2.50"],
    "neutral.test": ['TXT "v=spf1 ?all"', "A 192.0.2.50"],
    "none.test": ['TXT "hello"', "A 192.0.2.50"],
    "temperror.test": ["A 192.0.2.50"],
    "permerror.test": ['TXT "v=spf1 nonsense:x -all"', "A 192.0.2.50"],
    "mx.pass.test": ["A 127.0.0.1"],
    "helo.test": ['TXT "v=spf1 ip4:192.0.2.1 -all"'],
    "broken.test": ["A 192.0.2.50"],
    # RBL
    "66.2.0.192.rbl.test": ["A 127.0.0.2"],
    "67.2.0.192.rbl.test": ["A 127.255.255.254"],
}


@implementer(IPolicy)
class InnerPolicy:
    """Stands in for BasicPolicy: accepts everything and records the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def connect(self, session: SessionInfo) -> Any:
        self.calls.append("connect")
        return defer.succeed(None)

    def helo(self, session: SessionInfo, name: str) -> Any:
        self.calls.append("helo")
        return defer.succeed(None)

    def mail_from(self, session: SessionInfo, sender: str, params: Mapping[str, str]) -> Any:
        self.calls.append("mail")
        if sender == "routed@error.test":
            return defer.fail(MailError(550, "5.1.0", "Sender rejected by router"))
        return defer.succeed(None)

    def rcpt_to(
        self, session: SessionInfo, sender: str, recipient: str, params: Mapping[str, str]
    ) -> Any:
        self.calls.append("rcpt")
        return defer.succeed(recipient)

    def trace_headers(self, session: SessionInfo, envelope: Envelope) -> Any:
        return defer.succeed([b"X-Inner: 1"])


def session(
    ip: str = "192.0.2.1",
    port: int = 25,
    sid: str = "S1",
    helo: str = "client.test",
    account: str | None = None,
    listener: str = "",
) -> SessionInfo:
    return SessionInfo(
        sid,
        ip,
        40000,
        "127.0.0.1",
        port,
        listener=listener or f"smtp:0.0.0.0:{port}",
        helo=helo,
        account=account,
    )


class Base(unittest.TestCase):
    """A ProtectedPolicy on the loopback DNS server, a thread pool for SPF, a fake MX."""

    def setUp(self) -> None:
        self.dns = DNSTestServer(ZONE)
        self.dns.listen(reactor)
        self.addCleanup(self.dns.stop)
        self.dns.set_behaviour("temperror.test", "servfail", qtype="TXT")
        self.dns.set_behaviour("broken.test", "servfail")
        self.mx = FakeMX()
        self.mx.listen(reactor)
        self.addCleanup(self.mx.stop)
        pool = ThreadPool(minthreads=0, maxthreads=4, name="protection-test")
        pool.start()
        self.addCleanup(pool.stop)
        self.resolver = Resolver(
            [self.dns.address], timeout=0.5, max_concurrency=20, reactor=reactor
        )
        self.holder = SettingsHolder(
            Settings(
                {"protection.rbl.zones": ["rbl.test"], "protection.reverse_connect.timeout": 1}
            )
        )
        self.inner = InnerPolicy()
        self.policy = ProtectedPolicy(
            self.inner,
            self.resolver,
            self.holder,
            reactor,
            reactor=reactor,
            hostname="mx.ours.test",
            threadpool=pool,
            connector=lambda ip, port: TCP4ClientEndpoint(reactor, ip, self.mx.port, timeout=2),
        )
        self.logs = capture_logs(self)

    def set(self, **values: Any) -> None:
        """Change dynamic settings the way cgtwist-admin does: a new Settings object."""
        merged = dict(self.holder.current.overrides)
        merged.update({k.replace("__", "."): v for k, v in values.items()})
        self.holder.replace(Settings(merged))

    @defer.inlineCallbacks
    def refused(self, d: defer.Deferred[Any]) -> Any:
        try:
            yield d
        except MailError as e:
            return e
        self.fail("expected a refusal")


class SPFActionMatrixTests(Base):
    """RELIABILITY.md b-H 46: every SPF result x every action."""

    EXPECTED = {  # action -> (reply code or None, headers added)
        "reject": (550, True),
        "tempfail": (451, True),
        "tag": (None, True),
        "accept": (None, False),
    }

    @defer.inlineCallbacks
    def test_matrix(self) -> None:
        """Each result, under each configured action, gives the configured reply and headers."""
        for result in ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"):
            for action, (code, tagged) in self.EXPECTED.items():
                self.set(
                    protection__spf__actions={result: action}, protection__returnpath__mode="off"
                )
                s = session(sid=f"{result}-{action}")
                d = self.policy.mail_from(s, f"alice@{result}.test", {})
                if code is None:
                    yield d
                    headers = yield self.policy.trace_headers(
                        s, Envelope(sender=f"alice@{result}.test")
                    )
                    self.assertEqual(headers[-1], b"X-Inner: 1")
                    if tagged:
                        self.assertTrue(
                            headers[0].startswith(f"Received-SPF: {result} ".encode()), headers
                        )
                        self.assertIn(f"spf={result}".encode(), headers[1])
                    else:
                        self.assertEqual(headers, [b"X-Inner: 1"])
                else:
                    err = yield self.refused(d)
                    self.assertEqual(err.code, code, (result, action))
                    if result == "temperror" and action == "tempfail":
                        self.assertEqual(err.enhanced, "4.4.3")
                    if result == "fail" and action == "reject":
                        self.assertEqual(err.enhanced, "5.7.23")
                verdict = self.policy.verdict(s)
                assert verdict is not None
                self.assertEqual(verdict.get("spf").outcome, result)  # type: ignore[union-attr]

    @defer.inlineCallbacks
    def test_defaults(self) -> None:
        """By default SPF fail is refused, temperror deferred, softfail tagged and accepted."""
        self.set(protection__returnpath__mode="off")
        err = yield self.refused(self.policy.mail_from(session(), "a@fail.test", {}))
        self.assertEqual(err.reply(), "550 5.7.23 SPF check failed (fail)")
        err = yield self.refused(self.policy.mail_from(session(), "a@temperror.test", {}))
        self.assertEqual(err.reply()[:9], "451 4.4.3")
        yield self.policy.mail_from(session(), "a@softfail.test", {})
        line = [
            x for x in self.logs if x.startswith("protection refused: check=spf peer=192.0.2.1")
        ]
        self.assertEqual(len(line), 2)

    @defer.inlineCallbacks
    def test_helo_identity_for_bounces(self) -> None:
        """MAIL FROM:<> is checked against the HELO name (from the session or the HELO hook)."""
        s = session(helo="")
        yield self.policy.helo(s, "helo.test")
        yield self.policy.mail_from(s, "", {})
        headers = yield self.policy.trace_headers(s, Envelope(sender=""))
        self.assertIn(b"spf=pass smtp.helo=helo.test", headers[1])

    @defer.inlineCallbacks
    def test_clients_and_authenticated_skip_spf(self) -> None:
        """Client IPs and authenticated senders are not SPF-checked in 'nonclients' mode."""
        self.set(clients__ips="192.0.2.0/24")
        yield self.policy.mail_from(session(), "a@fail.test", {})
        self.set(clients__ips="")
        yield self.policy.mail_from(session(account="alice@ours.test"), "a@fail.test", {})
        self.set(protection__spf__mode="all")
        yield self.refused(
            self.policy.mail_from(session(account="alice@ours.test"), "a@fail.test", {})
        )


class ConnectTests(Base):
    """Blacklist and RBL at connect; exemptions; per-listener modes; live settings."""

    @defer.inlineCallbacks
    def test_rbl_listed_refused(self) -> None:
        """An RBL-listed peer gets 554 at connect, naming the zone, and the refusal is logged."""
        err = yield self.refused(self.policy.connect(session("192.0.2.66")))
        self.assertEqual(
            err.reply(),
            "554 5.7.1 Service unavailable; client host [192.0.2.66] blocked using rbl.test",
        )
        self.assertTrue(
            any(x.startswith("protection refused: check=rbl peer=192.0.2.66") for x in self.logs)
        )
        self.assertTrue(any(x.startswith("verdict session=S1 peer=192.0.2.66") for x in self.logs))

    @defer.inlineCallbacks
    def test_rbl_listing_tagged_reaches_the_submit_record(self) -> None:
        """protection.rbl.action tag: the listed peer is accepted and every transaction's
        submit facts name the zone (the RBL Listed rule condition); an unlisted peer's name
        none."""
        self.set(protection__rbl__action="tag")
        listed = session("192.0.2.66", sid="L")
        yield self.policy.connect(listed)
        yield self.policy.mail_from(listed, "", {})
        self.assertEqual(self.policy.submit_facts(listed).get("rbl"), "rbl.test")
        self.assertTrue(any(x.startswith("rbl listing tagged, not refused") for x in self.logs))
        clean = session("192.0.2.68", sid="C")
        yield self.policy.connect(clean)
        yield self.policy.mail_from(clean, "", {})
        self.assertNotIn("rbl", self.policy.submit_facts(clean))

    @defer.inlineCallbacks
    def test_rbl_error_code_and_unlisted_accepted(self) -> None:
        """127.255.255.x answers and unlisted peers are accepted."""
        yield self.policy.connect(session("192.0.2.67"))
        yield self.policy.connect(session("192.0.2.68"))
        self.assertEqual(self.inner.calls, ["connect", "connect"])

    @defer.inlineCallbacks
    def test_rbl_timeout_fails_open_others_continue(self) -> None:
        """A hung RBL lookup lets that peer in after the timeout; other peers are not held up."""
        self.dns.set_behaviour("69.2.0.192.rbl.test", "timeout")
        hung = self.policy.connect(session("192.0.2.69", sid="hung"))
        yield self.refused(self.policy.connect(session("192.0.2.66", sid="other")))
        self.assertFalse(hung.called)
        yield hung

    @defer.inlineCallbacks
    def test_exemptions(self) -> None:
        """Client IPs and white-holed IPs skip RBL; 'all' mode checks clients too."""
        self.set(clients__ips="192.0.2.66")
        yield self.policy.connect(session("192.0.2.66"))
        self.set(protection__rbl__mode="all")
        yield self.refused(self.policy.connect(session("192.0.2.66")))
        self.set(protection__whitehole__ips="192.0.2.64/30")
        yield self.policy.connect(session("192.0.2.66"))

    @defer.inlineCallbacks
    def test_per_listener(self) -> None:
        """A lenient 587 (RBL off by default) and a strict 25 on the same server."""
        yield self.policy.connect(session("192.0.2.66", port=587))
        yield self.refused(self.policy.connect(session("192.0.2.66", port=25)))
        self.set(protection__listeners={"smtp:0.0.0.0:25": {"rbl": "off"}})
        yield self.policy.connect(session("192.0.2.66", port=25))

    @defer.inlineCallbacks
    def test_submission_lenient_on_any_port(self) -> None:
        """Every AUTH-required listener skips the RBL by default, whatever its port, so roaming
        users on residential (policy-listed) IPs can still submit; port 25 stays strict."""
        self.set(
            listeners=[
                {"protocol": "smtp", "address": "0.0.0.0", "port": 25},
                {"protocol": "smtp", "address": "0.0.0.0", "port": 10587, "submission": True},
                {"protocol": "smtp", "address": "127.0.0.1", "port": 0},
                {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "submission": True},
            ]
        )
        yield self.policy.connect(session("192.0.2.66", port=10587))
        yield self.refused(self.policy.connect(session("192.0.2.66", port=25)))
        # Two sockets on port 0 share one name: ambiguous, so the strict mode applies.
        yield self.refused(
            self.policy.connect(session("192.0.2.66", port=40001, listener="smtp:127.0.0.1:0"))
        )

    @defer.inlineCallbacks
    def test_static_blacklist_and_bad_setting(self) -> None:
        """Blacklisted IPs get 554; a malformed stored list is not used (the default, empty,
        stands in and the loaded settings name the bad line for the log), never a crash."""
        self.set(protection__blacklist__ips="203.0.113.0/24")
        err = yield self.refused(self.policy.connect(session("203.0.113.5")))
        self.assertEqual(err.reply(), "554 5.7.1 Access denied")
        self.set(protection__blacklist__ips="203.0.113.0/24\nnot-an-ip")
        yield self.policy.connect(session("203.0.113.5"))
        self.assertIn("line 2", self.holder.current.problems["protection.blacklist.ips"])

    @defer.inlineCallbacks
    def test_auth_failures_blacklist_offender(self) -> None:
        """Failed AUTHs from one IP put it on the temporary blacklist; it is refused at connect."""
        self.set(protection__autoblacklist__threshold=3, auth__fail_delays=[0])
        for _ in range(3):
            yield self.policy.auth_penalty.failed("198.51.100.9", "x", "smtp", None)
        err = yield self.refused(self.policy.connect(session("198.51.100.9")))
        self.assertIn("temporarily blacklisted", err.detail)
        self.assertTrue(self.policy.report_offence("198.51.100.10") is False)

    @defer.inlineCallbacks
    def test_client_ip_never_auto_blacklisted(self) -> None:
        """A Client IP is never refused by the automatic blacklist, even with the blacklist
        in mode 'all' and even when it was listed before it joined clients.ips; the static
        list still applies to it in mode 'all'."""
        self.set(
            protection__autoblacklist__threshold=2,
            protection__blacklist__mode="all",
            protection__rbl__mode="off",
        )
        ip = "198.51.100.20"
        for _ in range(2):
            self.policy.report_offence(ip, "errors")
        yield self.refused(self.policy.connect(session(ip)))
        self.set(clients__ips=ip)
        yield self.policy.connect(session(ip, sid="S2"))
        self.assertFalse(self.policy.report_offence(ip, "errors"))
        self.set(protection__blacklist__ips=ip)
        err = yield self.refused(self.policy.connect(session(ip, sid="S3")))
        self.assertEqual(err.reply(), "554 5.7.1 Access denied")

    def test_is_client_ip_and_auth_trust(self) -> None:
        """is_client_ip follows the live clients.ips setting; trusted IPs bypass AUTH caps."""
        self.assertFalse(self.policy.is_client_ip("10.0.0.1"))
        self.set(clients__ips="10.0.0.0/8")
        self.assertTrue(self.policy.is_client_ip("10.0.0.1"))
        self.assertTrue(all(self.policy.auth_penalty.acquire("10.0.0.1") for _ in range(20)))
        self.set(auth__trusted_ips="172.16.0.1")
        self.assertTrue(self.policy.is_auth_trusted("172.16.0.1"))


class MailFromTests(Base):
    """Sender blacklist, return-path DNS and Reverse Connect at MAIL FROM."""

    def setUp(self) -> None:
        super().setUp()
        self.set(protection__spf__mode="off")

    @defer.inlineCallbacks
    def test_inner_first(self) -> None:
        """The router's refusal (inner policy) comes before any DNS work."""
        err = yield self.refused(self.policy.mail_from(session(), "routed@error.test", {}))
        self.assertEqual(err.code, 550)
        self.assertEqual(self.dns.queries, [])

    @defer.inlineCallbacks
    def test_return_path(self) -> None:
        """Non-existent sender domain: 550 5.1.8; DNS failure: 451 4.4.3; <> is not checked."""
        err = yield self.refused(self.policy.mail_from(session(), "a@nx.test", {}))
        self.assertEqual((err.code, err.enhanced), (550, "5.1.8"))
        err = yield self.refused(self.policy.mail_from(session(), "a@broken.test", {}))
        self.assertEqual((err.code, err.enhanced), (451, "4.4.3"))
        yield self.policy.mail_from(session(), "", {})
        yield self.policy.mail_from(session(), "a@pass.test", {})

    @defer.inlineCallbacks
    def test_own_domain_needs_no_dns(self) -> None:
        """A sender in one of our domains passes the Return-path check without a DNS query."""
        self.policy.is_local_domain = lambda d: defer.succeed(d == "nx.test")
        yield self.policy.mail_from(session(), "a@nx.test", {})
        self.assertEqual(self.dns.queries, [])

    @defer.inlineCallbacks
    def test_sender_blacklist(self) -> None:
        """A blacklisted sender is refused with 550 5.7.1."""
        self.set(protection__blacklist__senders="*.pass.test, pass.test")
        err = yield self.refused(self.policy.mail_from(session(), "x@pass.test", {}))
        self.assertEqual(err.reply(), "550 5.7.1 Sender address rejected: access denied")

    @defer.inlineCallbacks
    def test_sender_blacklist_is_parsed_once_per_value(self) -> None:
        """A long sender blacklist is parsed when it changes, not at every MAIL FROM (work on
        the event loop that grows with the list); a new value applies to the next MAIL FROM."""
        parsed: list[object] = []
        real = SenderBlacklist.parse

        def counting(text: Any) -> SenderBlacklist:
            parsed.append(text)
            return real(text)

        self.patch(SenderBlacklist, "parse", staticmethod(counting))
        self.set(protection__blacklist__senders="pass.test")
        for _ in range(3):
            yield self.refused(self.policy.mail_from(session(), "x@pass.test", {}))
        self.assertEqual(parsed, ["pass.test"])
        self.set(protection__blacklist__senders="other.test")
        yield self.policy.mail_from(session(), "x@pass.test", {})
        self.assertEqual(parsed, ["pass.test", "other.test"])

    @defer.inlineCallbacks
    def test_reverse_connect(self) -> None:
        """Reverse Connect refuses senders the MX rejects; one probe per transaction."""
        self.set(protection__reverse_connect__mode="nonclients")
        yield self.policy.mail_from(session(), "good@pass.test", {})
        self.assertEqual(len(self.mx.sessions), 1)
        self.mx.mode = "reject"
        err = yield self.refused(self.policy.mail_from(session(), "bad@pass.test", {}))
        self.assertEqual((err.code, err.enhanced), (550, "5.1.7"))
        self.assertEqual(len(self.mx.sessions), 2)
        # authenticated and <> are never probed
        yield self.policy.mail_from(session(account="a@ours.test"), "bad2@pass.test", {})
        yield self.policy.mail_from(session(), "", {})
        self.assertEqual(len(self.mx.sessions), 2)

    @defer.inlineCallbacks
    def test_reverse_connect_stall_fail_open_or_not(self) -> None:
        """A stalling MX: accepted when failing open, 451 4.1.7 otherwise."""
        self.set(protection__reverse_connect__mode="all", protection__reverse_connect__timeout=0.3)
        self.mx.mode = "stall"
        yield self.policy.mail_from(session(), "a@pass.test", {})
        self.set(protection__reverse_connect__fail_open=False)
        err = yield self.refused(self.policy.mail_from(session(), "b@pass.test", {}))
        self.assertEqual((err.code, err.enhanced), (451, "4.1.7"))

    @defer.inlineCallbacks
    def test_rcpt_delegated_and_session_closed(self) -> None:
        """RCPT is the inner policy's; a closed session's state is freed."""
        s = session()
        self.assertEqual((yield self.policy.rcpt_to(s, "", "bob@ours.test", {})), "bob@ours.test")
        yield self.policy.mail_from(s, "", {})
        self.assertIsNotNone(self.policy.verdict(s))
        self.policy.session_closed(s)
        self.assertIsNone(self.policy.verdict(s))


class UnitTests(unittest.TestCase):
    """Mode resolution without any network."""

    def test_bad_mode_falls_back_to_default(self) -> None:
        """A typo in a mode setting falls back to the safe default instead of disabling checks."""
        holder = SettingsHolder(Settings({"protection.rbl.mode": "sometimes"}))
        policy = ProtectedPolicy(
            InnerPolicy(), Resolver([], 1, 1, reactor=Clock()), holder, Clock()
        )
        self.assertEqual(policy.mode("rbl", session()), "nonclients")
        self.assertEqual(policy.mode("reverse_connect", session()), "off")
        self.assertIsNone(policy.spf)
        self.assertIsNone(policy.reverse_connect)


class WrapsBasicPolicyTests(unittest.TestCase):
    """ProtectedPolicy around the real BasicPolicy: relaying decisions pass through unchanged."""

    @defer.inlineCallbacks
    def test_relay_refused_local_accepted(self) -> None:
        """Unauthenticated relaying is still refused and local mail accepted through the wrapper."""
        from cgtwist.core.policy import BasicPolicy
        from cgtwist.types import Route

        class Router:
            def route(self, address: str, kind: str = "mail") -> Any:
                if address.endswith("@ours.test"):
                    return defer.succeed(Route("LOCAL", address, address))
                return defer.succeed(Route("SMTP", address.split("@")[1], address))

        holder = SettingsHolder(
            Settings({"protection.returnpath.mode": "off", "protection.spf.mode": "off"})
        )
        policy = ProtectedPolicy(
            BasicPolicy(Router(), holder),
            Resolver([], 1, 1, reactor=Clock()),  # type: ignore[arg-type]
            holder,
            Clock(),
        )
        s = session()
        yield policy.connect(s)
        yield policy.mail_from(s, "a@example.org", {})
        self.assertEqual(
            (yield policy.rcpt_to(s, "a@example.org", "bob@ours.test", {})), "bob@ours.test"
        )
        try:
            yield policy.rcpt_to(s, "a@example.org", "x@elsewhere.test", {})
        except MailError as e:
            self.assertEqual((e.code, e.enhanced), (554, "5.7.1"))
        else:
            self.fail("relay accepted")
        holder.replace(Settings({"clients.ips": "192.0.2.0/24"}))
        self.assertTrue(policy.is_client_ip(s.peer_ip))

    @defer.inlineCallbacks
    def test_sender_ownership_passes_through(self) -> None:
        """The wrapper keeps the inner policy's sender-ownership refusals: MAIL FROM (553) and,
        with smtp.check_from_header, the From: field after DATA (550)."""
        from dataclasses import replace

        from cgtwist.core.policy import BasicPolicy
        from cgtwist.types import Envelope, Route

        class Router:
            def route(self, address: str, kind: str = "mail") -> Any:
                return defer.succeed(Route("LOCAL", address, address))

        holder = SettingsHolder(
            Settings(
                {
                    "protection.returnpath.mode": "off",
                    "protection.spf.mode": "off",
                    "smtp.check_from_header": True,
                }
            )
        )
        policy = ProtectedPolicy(
            BasicPolicy(Router(), holder),
            Resolver([], 1, 1, reactor=Clock()),  # type: ignore[arg-type]
            holder,
            Clock(),
        )
        s = replace(session(), account="alice@ours.test")
        yield policy.connect(s)
        yield policy.mail_from(s, "alice@ours.test", {})
        for call, code in [
            (lambda: policy.mail_from(s, "bob@ours.test", {}), 553),
            (
                lambda: policy.check_message(
                    s, Envelope(sender="alice@ours.test"), b"From: bob@ours.test\r\n\r\nx\r\n"
                ),
                550,
            ),
        ]:
            try:
                yield call()
            except MailError as e:
                self.assertEqual((e.code, e.enhanced), (code, "5.7.1"))
            else:
                self.fail("foreign sender accepted")


class ValidateSettingTests(unittest.TestCase):
    def test_rejects_typos_before_they_are_stored(self) -> None:
        """cgtwist-admin can refuse a bad protection setting with a reason naming the problem."""
        from cgtwist.core.protection import validate_setting

        self.assertEqual(validate_setting("clients.ips", "10.0.0.0/8\n::1"), "10.0.0.0/8\n::1")
        with self.assertRaises(ValueError) as cm:
            validate_setting("clients.ips", "10.0.0.0/8\n10.0.0.300")
        self.assertIn("line 2", str(cm.exception))
        for key, bad in (
            ("protection.rbl.mode", "sometimes"),
            ("protection.spf.actions", {"fail": "bounce"}),
            ("protection.spf.actions", {"failed": "reject"}),
            ("protection.rbl.zones", "zen"),
            ("protection.rbl.zones", ["zen.test=127.0.0.x"]),
            ("protection.listeners", {"587": {"spf": "never"}}),
            ("protection.listeners", {"587": {"dkim": "off"}}),
        ):
            self.assertRaises(ValueError, validate_setting, key, bad)
        self.assertEqual(validate_setting("smtp.max_recipients", 5), 5)
