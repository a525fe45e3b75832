"""The one login path (cgtwist.protocols.login): SASL decoding and LoginAttempt's outcomes."""

from __future__ import annotations

import base64
from typing import Any, Callable

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import Interface, implementer

from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.core.auth import AuthUnavailable
from cgtwist.protocols.limits import UserIPSessions
from cgtwist.protocols.login import (
    AuthzDenied,
    BadBase64,
    Busy,
    LoggedIn,
    LoginAttempt,
    MalformedResponse,
    Refused,
    SaslExchange,
    TooManySessions,
    Unavailable,
    decode_response,
    parse_plain,
)
from cgtwist.settings import Settings, SettingsHolder


class IThing(Interface):
    """The avatar interface asked for in these tests."""


@implementer(IRealm)
class Realm:
    def __init__(self) -> None:
        self.logouts = 0

    def requestAvatar(
        self, avatar_id: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        def logout() -> None:
            self.logouts += 1

        return interfaces[0], f"avatar of {avatar_id!r}", logout


class BrokenChecker:
    """A checker whose store cannot answer (or that has a bug)."""

    credentialInterfaces = InMemoryUsernamePasswordDatabaseDontUse.credentialInterfaces

    def __init__(self, error: Exception) -> None:
        self.error = error

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes]:
        return defer.fail(self.error)


class SaslTests(unittest.TestCase):
    def test_decode_response(self) -> None:
        """Base64 only, no stray characters; '=' is the empty response (RFC 4954 §4)."""
        self.assertEqual(decode_response(base64.b64encode(b"\0bob\0pw")), b"\0bob\0pw")
        self.assertEqual(decode_response(b"="), b"")
        self.assertEqual(decode_response(b""), b"")
        for bad in (b"!!!", b"QQ", b"QQ===", b"QQ==\0", b"QU JD"):
            with self.assertRaises(BadBase64):
                decode_response(bad)

    def test_parse_plain(self) -> None:
        """PLAIN: [authzid] NUL authcid NUL passwd; acting as another user is refused."""
        self.assertEqual(parse_plain(b"\0bob\0pw"), (b"bob", b"pw"))
        self.assertEqual(parse_plain(b"bob\0bob\0pw"), (b"bob", b"pw"))
        self.assertEqual(parse_plain(b"\0bob\0"), (b"bob", b""))
        for bad in (b"nonul", b"\0\0pw", b"", b"a\0b\0c\0d"):
            with self.assertRaises(MalformedResponse):
                parse_plain(bad)
        with self.assertRaises(AuthzDenied):
            parse_plain(b"admin\0bob\0pw")

    def test_login_exchange(self) -> None:
        """LOGIN asks for the name, then the password, then finishes."""
        sasl = SaslExchange("LOGIN")
        self.assertEqual(sasl.first_challenge(), b"Username:")
        self.assertEqual(sasl.step(b"bob"), b"Password:")
        self.assertEqual(sasl.step(b"pw"), (b"bob", b"pw"))
        plain = SaslExchange("PLAIN")
        self.assertEqual(plain.first_challenge(), b"")
        self.assertEqual(plain.step(b"\0bob\0pw"), (b"bob", b"pw"))
        with self.assertRaises(ValueError):
            SaslExchange("CRAM-MD5")


class LoginAttemptTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.settings = SettingsHolder(
            Settings({"auth.fail_delays": [2, 4], "auth.max_failures": 2})
        )
        self.penalty = AuthPenalty(self.clock, self.settings)
        self.realm = Realm()
        self.portal = Portal(self.realm, [InMemoryUsernamePasswordDatabaseDontUse(bob=b"pw")])

    def attempt(self, failures: int = 0, ip: str = "192.0.2.1", portal: Any = None) -> LoginAttempt:
        return LoginAttempt(portal or self.portal, self.penalty, "imap", IThing, ip, failures)

    def test_right_password(self) -> None:
        """The avatar and its logout come back, and the host's failures are forgotten."""
        self.penalty.failed("192.0.2.1", "bob", "imap", "guess")
        self.clock.advance(2)
        outcome = self.successResultOf(self.attempt().run(b"bob", b"pw"))
        assert isinstance(outcome, LoggedIn)
        self.assertEqual(outcome.avatar, "avatar of b'bob'")
        outcome.logout()
        self.assertEqual(self.realm.logouts, 1)
        self.assertEqual(self.penalty.failures("192.0.2.1"), 0)

    def test_sessions_per_account_and_ip(self) -> None:
        """With the server's UserIPSessions, a login beyond auth.max_userip_connections is
        TooManySessions and its avatar is logged out again; a logout gives the place back."""
        self.settings.replace(Settings({"auth.max_userip_connections": 1}))
        sessions = UserIPSessions(self.settings)

        def attempt() -> LoginAttempt:
            return LoginAttempt(
                self.portal, self.penalty, "imap", IThing, "192.0.2.1", sessions=sessions
            )

        first = self.successResultOf(attempt().run(b"bob", b"pw"))
        assert isinstance(first, LoggedIn)
        self.assertEqual(first.account, "bob")
        self.assertEqual(self.successResultOf(attempt().run(b"bob", b"pw")), TooManySessions("bob"))
        self.assertEqual(self.realm.logouts, 1)
        first.logout()
        self.assertIsInstance(self.successResultOf(attempt().run(b"bob", b"pw")), LoggedIn)

    def test_wrong_password_waits_for_the_delay(self) -> None:
        """A failure is counted and answered only after the penalty's delay; the connection's
        second failure (auth.max_failures=2) asks for a disconnect."""
        d = self.attempt().run(b"bob", b"wrong")
        self.assertNoResult(d)
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(d), Refused(failures=1, disconnect=False))
        d = self.attempt(failures=1).run(b"nobody", b"wrong-too")
        self.clock.advance(3.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), Refused(failures=2, disconnect=True))
        self.assertEqual(self.penalty.failures("192.0.2.1"), 2)

    def test_failure_log_line_by_the_penalty_or_the_protocol(self) -> None:
        """By default the penalty writes the fail2ban line (SMTP); with ``penalty_logs=False``
        the protocol writes its own (IMAP, POP3) and the penalty still counts."""
        from twisted.logger import formatEvent, globalLogPublisher

        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if formatEvent(event).startswith("auth failed:"):
                lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.attempt().run(b"bob", b"wrong")
        self.clock.advance(2)
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("auth failed: ip=192.0.2.1 login=bob protocol=imap"))
        quiet = LoginAttempt(self.portal, self.penalty, "imap", IThing, "192.0.2.1", 0, False)
        d = quiet.run(b"bob", b"wrong-again")
        self.clock.advance(4)
        self.assertEqual(self.successResultOf(d), Refused(failures=1, disconnect=False))
        self.assertEqual((len(lines), self.penalty.failures("192.0.2.1")), (1, 2))

    def test_refuse_counts_a_failure_found_before_the_portal(self) -> None:
        """``refuse`` (an SMTP authzid for another user) costs like a wrong password."""
        d = self.attempt().refuse(b"")
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(d), Refused(failures=1, disconnect=False))
        self.assertEqual(self.penalty.failures("192.0.2.1"), 1)

    def test_busy_when_the_host_runs_too_many(self) -> None:
        """A host with failures on record may run auth.max_concurrent_per_ip attempts at once;
        the next is Busy at once, and a finished attempt frees its slot."""
        self.settings.replace(Settings({"auth.max_concurrent_per_ip": 1}))
        self.penalty.failed("192.0.2.1", "bob", "imap", "guess")
        pending: defer.Deferred[bytes] = defer.Deferred()

        class Slow:
            credentialInterfaces = BrokenChecker.credentialInterfaces

            def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes]:
                return pending

        slow = Portal(self.realm, [Slow()])
        first = self.attempt(portal=slow).run(b"bob", b"pw")
        self.assertIsInstance(self.successResultOf(self.attempt().run(b"bob", b"pw")), Busy)
        pending.callback(b"bob")
        self.assertIsInstance(self.successResultOf(first), LoggedIn)
        self.assertIsInstance(self.successResultOf(self.attempt().run(b"bob", b"pw")), LoggedIn)

    def test_store_down_is_unavailable_not_refused(self) -> None:
        """A store that cannot answer is a temporary failure, not counted as a wrong password;
        a bug is Unavailable too, but not ``temporary`` (the protocol logs its traceback)."""
        down = Portal(self.realm, [BrokenChecker(AuthUnavailable("db down"))])
        outcome = self.successResultOf(self.attempt(portal=down).run(b"bob", b"pw"))
        assert isinstance(outcome, Unavailable)
        self.assertTrue(outcome.temporary)
        self.assertEqual(self.penalty.failures("192.0.2.1"), 0)
        buggy = Portal(self.realm, [BrokenChecker(RuntimeError("bug"))])
        outcome = self.successResultOf(self.attempt(portal=buggy).run(b"bob", b"pw"))
        assert isinstance(outcome, Unavailable)
        self.assertFalse(outcome.temporary)
        self.assertTrue(outcome.failure.check(RuntimeError))
