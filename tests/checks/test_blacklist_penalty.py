"""Blacklists, the offender auto-blacklist, the AUTH penalty (Clock-driven) and the Verdict."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial import unittest

from cgtwist.addresslist import AddressList
from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.checks.blacklist import AutoBlacklist, SenderBlacklist, check_ip, check_sender
from cgtwist.checks.result import CheckResult
from cgtwist.checks.verdict import Verdict
from cgtwist.settings import Settings, SettingsHolder


def capture_logs(testcase: unittest.TestCase) -> list[str]:
    lines: list[str] = []

    def observer(event: LogEvent) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return lines


class BlacklistTests(unittest.TestCase):
    def test_static_ip_blacklist(self) -> None:
        """A blacklisted IP is refused at connect; others pass."""
        static = AddressList.parse("192.0.2.0/24")
        self.assertEqual(check_ip("192.0.2.7", static, None, Clock()).outcome, "listed")
        self.assertEqual(check_ip("198.51.100.1", static, None, Clock()).outcome, "pass")

    def test_sender_blacklist(self) -> None:
        """Blacklisted senders match by address, domain, or domain with subdomains."""
        bl = SenderBlacklist.parse("spam@example.com\n@bad.test, evil.test ; c\n*.junk.test")
        self.assertEqual(check_sender("Spam@Example.COM", bl).outcome, "listed")
        self.assertEqual(check_sender("ham@example.com", bl).outcome, "pass")
        self.assertEqual(check_sender("x@bad.test", bl).outcome, "listed")
        self.assertEqual(check_sender("x@sub.bad.test", bl).outcome, "pass")
        self.assertEqual(check_sender("x@evil.test.", bl).outcome, "listed")
        self.assertEqual(check_sender("x@a.b.junk.test", bl).outcome, "listed")
        self.assertEqual(check_sender("x@junk.test", bl).outcome, "listed")
        self.assertEqual(check_sender("", bl).outcome, "pass")

    def test_auto_blacklist_expires(self) -> None:
        """Offenders are blacklisted after the threshold, and released when the time is up."""
        clock = Clock()
        auto = AutoBlacklist(clock, threshold=3, window=60, duration=300)
        self.assertFalse(auto.offence("192.0.2.1"))
        clock.advance(61)  # the first offence left the window
        self.assertFalse(auto.offence("192.0.2.1"))
        self.assertFalse(auto.offence("192.0.2.1"))
        self.assertTrue(auto.offence("192.0.2.1"))
        self.assertEqual(check_ip("192.0.2.1", AddressList(), auto, clock).outcome, "listed")
        self.assertFalse(auto.is_blocked("192.0.2.2"))
        clock.advance(299)
        self.assertTrue(auto.is_blocked("192.0.2.1"))
        clock.advance(2)
        self.assertFalse(auto.is_blocked("192.0.2.1"))
        self.assertEqual(auto.entries(), [])

    def test_auto_blacklist_ipv6_per_64_and_settings(self) -> None:
        """IPv6 offenders count per /64; thresholds come from the live settings."""
        clock = Clock()
        holder = SettingsHolder(Settings({"protection.autoblacklist.threshold": 2}))
        auto = AutoBlacklist(clock, holder)
        auto.offence("2001:db8::1")
        self.assertTrue(auto.offence("2001:db8::2"))
        self.assertTrue(auto.is_blocked("2001:db8::ffff"))
        self.assertTrue(auto.unblock("2001:db8::3"))
        holder.replace(Settings({"protection.autoblacklist.threshold": 0}))
        for _ in range(5):
            self.assertFalse(auto.offence("192.0.2.9"))


class AuthPenaltyTests(unittest.TestCase):
    """RELIABILITY.md b-G 39: brute force from one IP, on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.holder = SettingsHolder(Settings())
        self.offenders: list[str] = []
        self.penalty = AuthPenalty(
            self.clock,
            self.holder,
            is_trusted=lambda ip: ip.startswith("10."),
            on_failure=self.offenders.append,
        )
        self.logs = capture_logs(self)

    def fail(self, ip: str, password: str) -> float:
        d = self.penalty.failed(ip, "alice", "imap", password)
        waited = 0.0
        while not d.called:
            self.clock.advance(1)
            waited += 1
        return waited

    def test_brute_force_delays(self) -> None:
        """50 wrong passwords: replies are delayed 2, 4, 8 and then 15 s at most."""
        delays = [self.fail("192.0.2.1", f"guess{i}") for i in range(50)]
        self.assertEqual(delays[:5], [2, 4, 8, 15, 15])
        self.assertEqual(max(delays), 15)
        self.assertEqual(len(self.offenders), 50)

    def test_log_line_per_failure(self) -> None:
        """Every failure writes one fail2ban-readable line; the password is never logged."""
        self.fail("192.0.2.1", "s3cret-pw")
        self.fail("192.0.2.1", "other pw")
        lines = [x for x in self.logs if x.startswith("auth failed:")]
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith("auth failed: ip=192.0.2.1 login=alice protocol=imap"))
        self.assertFalse(any("s3cret" in x for x in self.logs))

    def test_hostile_login_in_log(self) -> None:
        """A login with CR/LF or spaces cannot forge a second log line or shift the fields."""
        self.penalty.failed("192.0.2.1", "x\nauth failed: ip=203.0.113.9 login=y", "smtp")
        lines = [x for x in self.logs if "auth failed" in x]
        self.assertEqual(len(lines), 1)
        self.assertNotIn("\n", lines[0])
        self.assertNotIn(" ip=203.0.113.9", lines[0])

    def test_same_password_does_not_escalate(self) -> None:
        """A client retrying one stale password is not punished harder each time."""
        delays = [self.fail("192.0.2.1", "old-password") for _ in range(5)]
        self.assertEqual(delays, [2, 2, 2, 2, 2])

    def test_other_ips_and_trusted_unaffected(self) -> None:
        """No global lock-out: other IPs and trusted networks get no delay."""
        for i in range(10):
            self.fail("192.0.2.1", f"g{i}")
        self.assertEqual(self.fail("192.0.2.2", "x"), 2)
        self.assertEqual(self.fail("10.1.1.1", "x"), 0)
        self.assertEqual(self.fail("10.1.1.1", "y"), 0)

    def test_ipv6_counts_per_64(self) -> None:
        """Hopping addresses inside one IPv6 /64 does not reset the penalty."""
        self.assertEqual(self.fail("2001:db8::1", "a"), 2)
        self.assertEqual(self.fail("2001:db8::2", "b"), 4)
        self.assertEqual(self.fail("2001:db8:0:1::2", "c"), 2)

    def test_penalty_expires_no_permanent_lockout(self) -> None:
        """After the expiry time without failures the IP starts from scratch."""
        for i in range(6):
            self.fail("192.0.2.1", f"g{i}")
        self.clock.advance(900)
        self.assertEqual(self.fail("192.0.2.1", "again"), 2)

    def test_success_clears(self) -> None:
        """A successful login clears the IP's penalty."""
        self.fail("192.0.2.1", "a")
        self.fail("192.0.2.1", "b")
        self.penalty.succeeded("192.0.2.1")
        self.assertEqual(self.fail("192.0.2.1", "c"), 2)

    def test_concurrency_cap(self) -> None:
        """Concurrent AUTH attempts from an IP with failures on record are capped; trusted
        networks are not."""
        self.fail("192.0.2.1", "wrong")
        self.assertTrue(all(self.penalty.acquire("192.0.2.1") for _ in range(3)))
        self.assertFalse(self.penalty.acquire("192.0.2.1"))
        self.assertTrue(self.penalty.acquire("192.0.2.2"))
        self.penalty.release("192.0.2.1")
        self.assertTrue(self.penalty.acquire("192.0.2.1"))
        self.assertTrue(all(self.penalty.acquire("10.0.0.1") for _ in range(10)))

    def test_no_cap_without_failures(self) -> None:
        """Users behind one NAT address who log in correctly at once are never refused: the
        concurrency cap is for hosts that have failed (10 at once gave 7 refusals before)."""
        self.assertTrue(all(self.penalty.acquire("192.0.2.1") for _ in range(10)))

    def test_disconnect_after_n(self) -> None:
        """The connection is closed after auth.max_failures failures (default 5)."""
        self.assertFalse(self.penalty.should_disconnect(4))
        self.assertTrue(self.penalty.should_disconnect(5))
        self.holder.replace(Settings({"auth.max_failures": 2}))
        self.assertTrue(self.penalty.should_disconnect(2))


class VerdictTests(unittest.TestCase):
    def test_log_line_and_headers(self) -> None:
        """The verdict lists every check with timing, and renders the SPF headers when tagged."""
        v = Verdict("S1", "192.0.2.1", "alice@example.com")
        v.add(CheckResult("rbl", "pass", "not listed", 0.012))
        spf = CheckResult(
            "spf",
            "softfail",
            "x",
            0.034,
            {
                "identity": "mailfrom",
                "client_ip": "192.0.2.1",
                "sender": "alice@example.com",
                "helo": "h.example.com",
                "domain": "example.com",
                "receiver": "mx.ours.test",
            },
        )
        v.add(spf, tag=True)
        line = v.log_line()
        self.assertIn("action=accept checks=rbl=pass(12ms) spf=softfail(34ms)", line)
        self.assertEqual(
            v.authentication_results("mx.ours.test"),
            "mx.ours.test; spf=softfail smtp.mailfrom=alice@example.com",
        )
        headers = v.trace_headers("mx.ours.test")
        self.assertTrue(headers[0].startswith(b"Received-SPF: softfail (mx.ours.test: "))
        self.assertTrue(
            headers[1].startswith(b"Authentication-Results: mx.ours.test; spf=softfail")
        )

    def test_untagged_and_refused(self) -> None:
        """An untagged result adds no header; a refusal is recorded with its check and reply."""
        v = Verdict("S2", "192.0.2.1", "")
        v.add(CheckResult("spf", "fail", "", 0.0, {"identity": "helo", "helo": "h.test"}))
        self.assertEqual(v.trace_headers("mx"), [])
        self.assertEqual(v.authentication_results("bad id;"), "localhost; none")
        v.refuse("spf", "550 5.7.23 SPF check failed", temporary=False)
        self.assertIn("sender=<> action=reject", v.log_line())
        self.assertIn("by=spf", v.log_line())


class SharedPenaltyTests(unittest.TestCase):
    def test_protocols_share_one_counter(self) -> None:
        """Failures from IMAP, POP3 and SMTP escalate one counter per host (the one login path
        reports them all through ``failed``); a success from any of them clears it."""
        from cgtwist.interfaces import IAuthPenalty

        clock = Clock()
        offenders: list[str] = []
        p = AuthPenalty(clock, SettingsHolder(Settings()), on_failure=offenders.append)
        self.assertTrue(IAuthPenalty.providedBy(p))
        delays = []
        for protocol, secret in (("imap", "a"), ("pop3", "b"), ("smtp", "c")):
            d = p.failed("192.0.2.1", "alice", protocol, secret)
            clock.advance(15)
            delays.append(self.successResultOf(d))
        self.assertEqual(delays, [2, 4, 8])
        p.succeeded("192.0.2.1")
        self.assertEqual(p.failures("192.0.2.1"), 0)
        self.assertEqual(offenders, ["192.0.2.1"] * 3)


class ForgedHeaderTests(unittest.TestCase):
    def test_forged_authentication_results_detected(self) -> None:
        """An incoming Authentication-Results claiming to be ours is recognised (RFC 8601 §5)."""
        from cgtwist.checks.verdict import claims_our_authserv_id

        self.assertTrue(
            claims_our_authserv_id(b"MX.Ours.Test; spf=pass smtp.mailfrom=a@b", "mx.ours.test")
        )
        self.assertTrue(claims_our_authserv_id("(c)\r\n mx.ours.test 1; none", "mx.ours.test"))
        self.assertFalse(claims_our_authserv_id("mx.other.test; spf=pass", "mx.ours.test"))
        self.assertFalse(claims_our_authserv_id("", "mx.ours.test"))
