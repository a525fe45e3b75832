"""SMTP AUTH PLAIN/LOGIN through the shared Portal's checkers (RFC 4954)."""

from __future__ import annotations

import base64
from typing import Any

from twisted.trial import unittest

from cgtwist.types import ListenerSpec
from tests.protocols.test_smtp_fakes import BrokenChecker, FormsChecker, Harness, make_portal

SUBMISSION = ListenerSpec("smtp", 587, submission=True, allow_plain_auth=True)


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


class AuthTests(unittest.TestCase):
    def setUp(self) -> None:
        self.checker = FormsChecker()
        self.h = Harness(
            listener=SUBMISSION,
            portal=make_portal(self.checker),
            overrides={"auth.fail_delays": [2, 4], "auth.max_failures": 3},
        )
        self.h.cmd("EHLO c.example")

    def test_plain_with_initial_response(self) -> None:
        """AUTH PLAIN with the right password gives 235 2.7.0 and lets the user send on 587."""
        h = self.h
        self.assertEqual(
            h.cmd("AUTH PLAIN " + b64(b"\0alice@example.com\0secret")),
            ["235 2.7.0 Authentication successful"],
        )
        self.assertEqual(h.proto.session.account, "alice@example.com")
        h.transaction(rcpt="bob@ext.example")
        envelope, data = h.submission.messages[0]
        self.assertEqual(envelope.submit["account"], "alice@example.com")
        self.assertEqual(envelope.submit["protocol"], "ESMTPA")
        self.assertIn(b"with ESMTPA", data)
        # The policy sees the authenticated account (for relaying).
        rcpt_session = [c for c in h.policy.calls if c[0] == "rcpt_to"][0][1][0]
        self.assertEqual(rcpt_session.account, "alice@example.com")

    def test_plain_with_challenge(self) -> None:
        """AUTH PLAIN without initial response gets an empty 334 challenge first."""
        h = self.h
        self.assertEqual(h.cmd("AUTH PLAIN"), ["334 "])
        self.assertEqual(
            h.cmd(b64(b"alice@example.com\0alice@example.com\0secret")),
            ["235 2.7.0 Authentication successful"],
        )

    def test_login_mechanism(self) -> None:
        """AUTH LOGIN asks for Username: and Password: (base64) and accepts the right pair."""
        h = self.h
        self.assertEqual(h.cmd("AUTH LOGIN"), ["334 " + b64(b"Username:")])
        self.assertEqual(h.cmd(b64(b"alice")), ["334 " + b64(b"Password:")])
        self.assertEqual(h.cmd(b64(b"secret")), ["235 2.7.0 Authentication successful"])
        h2 = Harness(listener=SUBMISSION)
        h2.cmd("EHLO c.example")
        self.assertEqual(
            h2.cmd("AUTH LOGIN " + b64(b"alice%example.com")), ["334 " + b64(b"Password:")]
        )
        self.assertEqual(h2.cmd(b64(b"secret"))[0][:3], "235")

    def test_login_forms_passed_through(self) -> None:
        """user@domain, user%domain and a bare name reach the checker exactly as typed."""
        for name in [b"alice@example.com", b"alice%example.com", b"alice"]:
            h = Harness(listener=SUBMISSION, portal=make_portal(self.checker))
            h.cmd("EHLO c.example")
            self.assertEqual(
                h.cmd("AUTH PLAIN " + b64(b"\0" + name + b"\0secret"))[0][:3], "235", name
            )
        self.assertEqual(self.checker.seen, [b"alice@example.com", b"alice%example.com", b"alice"])

    def test_wrong_password_delayed_then_disconnect(self) -> None:
        """Wrong passwords get 535 5.7.8 after a growing delay; after N failures, 421 and close."""
        h = self.h
        self.assertEqual(h.cmd("AUTH PLAIN " + b64(b"\0alice\0wrong")), [])
        h.clock.advance(1.9)
        self.assertEqual(h.replies(), [])
        h.clock.advance(0.1)
        self.assertEqual(h.replies(), ["535 5.7.8 Authentication credentials invalid"])
        h.cmd("AUTH PLAIN " + b64(b"\0nobody\0secret"))
        h.clock.advance(4)
        self.assertEqual(h.replies(), ["535 5.7.8 Authentication credentials invalid"])
        h.cmd("AUTH PLAIN " + b64(b"\0alice\0again"))
        h.clock.advance(4)
        self.assertEqual(
            h.replies(),
            [
                "535 5.7.8 Authentication credentials invalid",
                "421 4.7.0 Too many authentication failures",
            ],
        )
        self.assertTrue(h.closed)
        # Reading resumes, so the transport notices the peer's close (a paused TLS connection
        # never did, and the server then hung at shutdown waiting for this session).
        self.assertEqual(h.transport.producerState, "producing")

    def test_pipelined_command_waits_for_delayed_failure(self) -> None:
        """A command pipelined after a failing AUTH is answered after the 535, in order."""
        h = self.h
        self.assertEqual(
            h.send(b"AUTH PLAIN " + b64(b"\0alice\0wrong").encode() + b"\r\nNOOP\r\n"), []
        )
        h.clock.advance(2)
        self.assertEqual(
            h.replies(), ["535 5.7.8 Authentication credentials invalid", "250 2.0.0 Ok"]
        )

    def test_store_down_is_454(self) -> None:
        """When the account store cannot answer, AUTH gets 454 4.7.0 (retry), never 535."""
        h = Harness(listener=SUBMISSION, portal=make_portal(BrokenChecker()))
        h.cmd("EHLO c.example")
        self.assertEqual(
            h.cmd("AUTH PLAIN " + b64(b"\0alice\0secret")),
            ["454 4.7.0 Temporary authentication failure"],
        )
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_auth_needs_tls(self) -> None:
        """Without TLS (and no plaintext permission) AUTH is refused 538 5.7.11."""
        h = Harness(listener=ListenerSpec("smtp", 587, submission=True))
        h.cmd("EHLO c.example")
        self.assertEqual(
            h.cmd("AUTH PLAIN " + b64(b"\0alice\0secret")),
            ["538 5.7.11 Encryption required for requested authentication mechanism"],
        )

    def test_bad_exchanges(self) -> None:
        """Aborts, bad base64, unknown mechanisms and repeated AUTH get the RFC 4954 replies."""
        h = self.h
        self.assertEqual(h.cmd("AUTH CRAM-MD5"), ["504 5.5.4 Unrecognized authentication type"])
        h.cmd("AUTH LOGIN")
        self.assertEqual(h.cmd("*"), ["501 5.7.0 Authentication aborted"])
        self.assertEqual(h.cmd("AUTH PLAIN !!!notbase64"), ["501 5.5.2 Cannot decode response"])
        self.assertEqual(
            h.cmd("AUTH PLAIN " + b64(b"no-nul-here")), ["501 5.5.2 Malformed PLAIN response"]
        )
        h.cmd("AUTH PLAIN " + b64(b"bob\0alice\0secret"))  # acting for someone else
        h.clock.advance(2)
        self.assertEqual(h.replies(), ["535 5.7.8 Authentication credentials invalid"])
        h.cmd("AUTH PLAIN " + b64(b"\0alice\0secret"))
        self.assertEqual(
            h.cmd("AUTH PLAIN " + b64(b"\0alice\0secret")),
            ["503 5.5.1 Error: already authenticated"],
        )
        # The EHLO after AUTH no longer offers AUTH.
        self.assertFalse(any("AUTH" in x for x in h.cmd("EHLO c.example")))

    def test_auth_not_inside_transaction(self) -> None:
        """AUTH during a mail transaction is a sequence error (RFC 4954 §4)."""
        h = Harness(listener=ListenerSpec("smtp", 25, allow_plain_auth=True))
        h.cmd("EHLO c.example")
        h.cmd("MAIL FROM:<a@b.example>")
        self.assertEqual(h.cmd("AUTH PLAIN " + b64(b"\0alice\0secret"))[0][:9], "503 5.5.1")


class AuthPerIPTests(unittest.TestCase):
    def test_delay_grows_across_connections(self) -> None:
        """Reconnecting does not reset the failure delay for an IP (a guesser trying new
        passwords); time does. The same wrong password again (a client retrying what it has
        stored) is not counted twice."""
        first = Harness(listener=SUBMISSION, overrides={"auth.fail_delays": [2, 4, 8, 16]})
        f = first.factory
        # The last attempt repeats the third password: still 8 s, not 16.
        for guess, expected in ((b"w0", 2), (b"w1", 4), (b"w2", 8), (b"w2", 8)):
            h = Harness(factory=f)
            h.cmd("EHLO c.example")
            h.cmd("AUTH PLAIN " + b64(b"\0alice\0" + guess))
            h.clock.advance(expected - 0.5)
            self.assertEqual(h.replies(), [], expected)
            h.clock.advance(0.5)
            self.assertEqual(h.replies()[0][:3], "535", expected)
        other = Harness(factory=f, peer="192.0.2.200")
        other.cmd("EHLO c.example")
        other.cmd("AUTH PLAIN " + b64(b"\0alice\0wrong"))
        other.clock.advance(2)
        self.assertEqual(other.replies()[0][:3], "535")  # another IP is not slowed down
        f.clock.advance(1000)  # the window passes: back to the first delay
        h = Harness(factory=f)
        h.cmd("EHLO c.example")
        h.cmd("AUTH PLAIN " + b64(b"\0alice\0wrong"))
        h.clock.advance(2)
        self.assertEqual(h.replies()[0][:3], "535")


class SharedPenaltyTests(unittest.TestCase):
    """The service passes the shared AuthPenalty (cgtwist.checks.authpenalty) to the factory."""

    def make(self, checker: object = None, **overrides: object) -> Harness:
        from twisted.internet.task import Clock

        from cgtwist.checks.authpenalty import AuthPenalty
        from cgtwist.protocols.smtp.factory import SMTPFactory
        from cgtwist.settings import Settings, SettingsHolder
        from tests.protocols.test_smtp_fakes import FakePolicy, FakeSubmission

        clock = Clock()
        settings = SettingsHolder(Settings(dict(overrides)))
        factory = SMTPFactory(
            SUBMISSION,
            settings,
            FakePolicy(),
            FakeSubmission(),
            make_portal(checker),
            lambda: None,
            "mx.example.com",
            clock=clock,
            penalty=AuthPenalty(clock, settings),
        )
        self.factory = factory
        h = Harness(factory=factory)
        h.cmd("EHLO c.example")
        return h

    def test_shared_penalty_delays(self) -> None:
        """With the shared penalty, failures are delayed by it and success clears it."""
        h = self.make(**{"auth.fail_delays": [3]})
        h.cmd("AUTH PLAIN " + b64(b"\0alice\0wrong"))
        h.clock.advance(2.9)
        self.assertEqual(h.replies(), [])
        h.clock.advance(0.1)
        self.assertEqual(h.replies(), ["535 5.7.8 Authentication credentials invalid"])
        self.assertEqual(
            h.cmd("AUTH PLAIN " + b64(b"\0alice\0secret")), ["235 2.7.0 Authentication successful"]
        )
        self.assertEqual(self.factory.penalty.failures("192.0.2.10"), 0)

    def test_concurrency_cap(self) -> None:
        """More simultaneous AUTHs than allowed from an IP that has failed get 454 4.7.0 at once."""
        from twisted.cred.credentials import IUsernamePassword
        from twisted.internet import defer

        class SlowChecker:
            credentialInterfaces = (IUsernamePassword,)
            pending: list = []

            def requestAvatarId(self, c: object) -> object:
                d: defer.Deferred[str] = defer.Deferred()
                self.pending.append(d)
                return d

        checker = SlowChecker()
        first = self.make(checker, **{"auth.max_concurrent_per_ip": 1})
        self.factory.penalty.failed("192.0.2.10", "alice", "smtp")
        self.assertEqual(first.cmd("AUTH PLAIN " + b64(b"\0alice\0secret")), [])
        second = Harness(factory=self.factory)
        second.cmd("EHLO c.example")
        self.assertEqual(
            second.cmd("AUTH PLAIN " + b64(b"\0alice\0secret")),
            ["454 4.7.0 Too many authentications in progress, try again later"],
        )
        checker.pending.pop().callback("alice@example.com")
        self.assertEqual(first.replies(), ["235 2.7.0 Authentication successful"])
        self.assertEqual(second.cmd("AUTH PLAIN " + b64(b"\0alice\0secret")), [])  # slot free again


class RealCheckerTests(unittest.TestCase):
    """AUTH through the project's AccountChecker (cgtwist.core.auth) over a fake store."""

    def make(self, fail: bool = False) -> Harness:
        from twisted.internet import defer

        from cgtwist.core.auth import AccountChecker
        from cgtwist.types import Account

        class Store:
            main_domain = "example.com"

            def verify_password(self, name: str, domain: str, password: Any) -> Any:
                if fail:
                    return defer.fail(OSError("database is locked"))
                ok = (name, domain) == ("alice", "example.com") and password in (
                    b"secret",
                    "secret",
                )
                return defer.succeed(Account("alice", "example.com") if ok else None)

        h = Harness(listener=SUBMISSION, portal=make_portal(AccountChecker(Store())))  # type: ignore[arg-type]
        h.cmd("EHLO c.example")
        return h

    def test_all_login_forms(self) -> None:
        """user@domain, user%domain and a bare name in the main domain all log in as alice."""
        for login in [b"alice@example.com", b"alice%example.com", b"ALICE", b"alice@EXAMPLE.COM"]:
            h = self.make()
            self.assertEqual(
                h.cmd("AUTH PLAIN " + b64(b"\0" + login + b"\0secret")),
                ["235 2.7.0 Authentication successful"],
                login,
            )
            self.assertEqual(h.proto.session.account, "alice@example.com")

    def test_wrong_and_unknown_alike(self) -> None:
        """Wrong password and unknown user get the same 535; a broken store gets 454."""
        for login in [b"alice", b"nobody", b"bad name!"]:
            h = self.make()
            h.cmd("AUTH PLAIN " + b64(b"\0" + login + b"\0nope"))
            h.clock.advance(30)
            self.assertEqual(h.replies(), ["535 5.7.8 Authentication credentials invalid"], login)
        h = self.make(fail=True)
        self.assertEqual(
            h.cmd("AUTH PLAIN " + b64(b"\0alice\0secret")),
            ["454 4.7.0 Temporary authentication failure"],
        )
        self.flushLoggedErrors()
