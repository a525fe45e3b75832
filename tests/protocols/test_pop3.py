"""POP3 dialogue over a StringTransport: every command, UPDATE-only deletion, lock, STLS, policy."""

from __future__ import annotations

import base64
import os
from typing import Any, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from cgtwist import paths
from cgtwist.mailstore import maildir
from cgtwist.protocols.pop3 import maildrop as pop3_module
from cgtwist.protocols.pop3.server import POP3Factory, POP3Server
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec
from tests.protocols.test_pop3_fakes import FakeStore, deliver, make_portal


class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS (the handshake itself is tested end to end)."""

    tls_ctx: Any = None

    def startTLS(self, ctx: Any) -> None:
        self.tls_ctx = ctx


MSG1 = b"From: a@example.com\r\nSubject: one\r\n\r\nline1\r\n.dotted\r\nline3\r\n"
MSG2 = b"Subject: two\nX: y\n\nbare lf body\n"


class POP3TestBase(unittest.TestCase):
    plain_ok = False
    tls_available = True

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.store = FakeStore()
        self.store.add("alice", "secret")
        self.store.add("nopop", "secret", frozenset({"imap"}))
        self.portal, self.realm = make_portal(self.base, self.store)
        self.clock = task.Clock()
        self.settings = SettingsHolder(Settings({"auth.fail_delays": [0, 2]}))
        self.listener = ListenerSpec(
            "pop3", 110, "127.0.0.1", "starttls", allow_plain_auth=self.plain_ok
        )
        self.ctx = object()
        self.factory = POP3Factory(
            self.listener,
            self.settings,
            self.portal,
            lambda: self.ctx if self.tls_available else None,
            "mail.example.com",
            clock=self.clock,
        )
        self.md = paths.maildir(self.base, "example.com", "alice")
        deliver(self.base, "alice", MSG1)
        deliver(self.base, "alice", MSG2)

    def connect(self, ip: str = "10.0.0.1") -> tuple[POP3Server, TLSStringTransport]:
        proto = self.factory.buildProtocol(None)
        tr = TLSStringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        proto.makeConnection(tr)
        self.addCleanup(lambda: proto.connectionLost() if not tr.disconnecting else None)
        self.assertTrue(tr.value().startswith(b"+OK"))
        tr.clear()
        return proto, tr

    def send(self, proto: POP3Server, tr: StringTransport, line: bytes) -> bytes:
        tr.clear()
        proto.dataReceived(line + b"\r\n")
        self.pump(tr)
        return tr.value()

    def pump(self, tr: StringTransport) -> None:
        """Play the consumer of a pull producer (RETR streams with back-pressure)."""
        while tr.producer is not None:
            tr.producer.resumeProducing()

    def login(self, proto: POP3Server, tr: StringTransport) -> None:
        if not self.plain_ok:
            self.send(proto, tr, b"STLS")
            proto._tls_started = True
        self.assertTrue(self.send(proto, tr, b"USER alice@example.com").startswith(b"+OK"))
        self.assertTrue(
            self.send(proto, tr, b"PASS secret").startswith(b"+OK Logged in, 2 messages")
        )

    def close(self, proto: POP3Server, tr: StringTransport) -> None:
        if not tr.disconnecting:
            tr.loseConnection()
            proto.connectionLost()

    def files(self) -> list[str]:
        return sorted(
            os.listdir(os.path.join(self.md, "cur")) + os.listdir(os.path.join(self.md, "new"))
        )


class PlaintextPolicyTests(POP3TestBase):
    def test_user_pass_refused_before_stls(self) -> None:
        """On port 110 without TLS, passwords are refused with [AUTH] until STLS (RFC 2595)."""
        proto, tr = self.connect()
        self.assertEqual(
            self.send(proto, tr, b"USER alice"),
            b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS\r\n",
        )
        self.assertTrue(self.send(proto, tr, b"PASS secret").startswith(b"-ERR [AUTH]"))
        self.assertTrue(
            self.send(proto, tr, b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret")).startswith(
                b"-ERR [AUTH]"
            )
        )
        capa = self.send(proto, tr, b"CAPA")
        self.assertIn(b"\r\nSTLS\r\n", capa)
        self.assertNotIn(b"USER", capa)
        self.assertNotIn(b"SASL", capa)

    def test_capa_after_stls(self) -> None:
        """After STLS, CAPA offers USER and SASL PLAIN and no longer STLS."""
        proto, tr = self.connect()
        self.assertEqual(self.send(proto, tr, b"STLS"), b"+OK Begin TLS negotiation now\r\n")
        self.assertIs(tr.tls_ctx, self.ctx)
        proto.transport = tr
        capa = self.send(proto, tr, b"CAPA")
        self.assertIn(b"\r\nUSER\r\n", capa)
        self.assertIn(b"\r\nSASL PLAIN\r\n", capa)
        self.assertNotIn(b"STLS", capa)
        self.assertTrue(self.send(proto, tr, b"STLS").startswith(b"-ERR"))

    def test_stls_discards_pipelined_plaintext(self) -> None:
        """Commands sent in the same packet as STLS are discarded, not run inside TLS (CVE-2011-0411)."""
        proto, tr = self.connect()
        proto.dataReceived(b"STLS\r\nUSER alice\r\nCAPA\r\n")
        self.assertEqual(tr.value(), b"+OK Begin TLS negotiation now\r\n")
        tr.clear()
        proto.dataReceived(b"PASS secret\r\n")
        self.assertEqual(tr.value(), b"-ERR USER first\r\n")

    def test_stls_unavailable(self) -> None:
        """Without a certificate STLS is neither offered nor accepted."""
        self.tls_available = False
        proto, tr = self.connect()
        self.assertNotIn(b"STLS", self.send(proto, tr, b"CAPA"))
        self.assertEqual(self.send(proto, tr, b"STLS"), b"-ERR TLS not available\r\n")

    def test_setting_allows_plaintext(self) -> None:
        """auth.allow_plaintext lets an administrator permit passwords without TLS."""
        self.settings.replace(Settings({"auth.allow_plaintext": True}))
        proto, tr = self.connect()
        self.assertEqual(self.send(proto, tr, b"USER alice"), b"+OK\r\n")
        self.assertTrue(self.send(proto, tr, b"PASS secret").startswith(b"+OK"))

    def test_apop_off(self) -> None:
        """APOP is not offered (no timestamp in the greeting) and is refused."""
        proto = self.factory.buildProtocol(None)
        tr = TLSStringTransport()
        proto.makeConnection(tr)
        self.assertEqual(tr.value(), b"+OK cgtwist POP3 server ready\r\n")
        self.assertTrue(
            self.send(proto, tr, b"APOP alice 0123456789abcdef0123456789abcdef").startswith(b"-ERR")
        )
        self.close(proto, tr)


class AuthTests(POP3TestBase):
    plain_ok = True

    def test_auth_plain_initial_response(self) -> None:
        """AUTH PLAIN with an initial response logs in (RFC 5034)."""
        proto, tr = self.connect()
        out = self.send(
            proto, tr, b"AUTH PLAIN " + base64.b64encode(b"\0alice@example.com\0secret")
        )
        self.assertTrue(out.startswith(b"+OK Logged in"), out)
        self.close(proto, tr)

    def test_auth_plain_continuation_and_cancel(self) -> None:
        """AUTH PLAIN without initial response asks with '+ '; '*' cancels."""
        proto, tr = self.connect()
        self.assertEqual(self.send(proto, tr, b"AUTH PLAIN"), b"+ \r\n")
        self.assertEqual(self.send(proto, tr, b"*"), b"-ERR Authentication cancelled\r\n")
        self.assertEqual(self.send(proto, tr, b"AUTH PLAIN"), b"+ \r\n")
        self.assertEqual(self.send(proto, tr, b"not base64!"), b"-ERR Invalid SASL response\r\n")
        self.assertEqual(self.send(proto, tr, b"AUTH PLAIN"), b"+ \r\n")
        self.assertTrue(
            self.send(proto, tr, base64.b64encode(b"\0alice\0secret")).startswith(b"+OK")
        )
        self.close(proto, tr)

    def test_utf8_password(self) -> None:
        """A UTF-8 password works with USER/PASS and with AUTH PLAIN."""
        self.store.add("utf", "p\u00e4ss w\u00f6rd")
        proto, tr = self.connect()
        self.send(proto, tr, b"USER utf")
        self.assertTrue(
            self.send(proto, tr, "PASS p\u00e4ss w\u00f6rd".encode()).startswith(b"+OK")
        )
        self.close(proto, tr)
        proto, tr = self.connect()
        out = self.send(
            proto, tr, b"AUTH PLAIN " + base64.b64encode("\0utf\0p\u00e4ss w\u00f6rd".encode())
        )
        self.assertTrue(out.startswith(b"+OK"), out)
        self.close(proto, tr)

    def test_auth_plain_non_ascii_initial_response(self) -> None:
        """A non-ASCII initial response is a bad SASL response, not an internal error (the
        fuzz suite found a traceback and -ERR [SYS/TEMP] here)."""
        proto, tr = self.connect()
        self.assertEqual(
            self.send(proto, tr, "AUTH PLAIN Eç".encode()), b"-ERR Invalid SASL response\r\n"
        )
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertTrue(self.send(proto, tr, b"NOOP").startswith(b"-ERR"))  # still talking

    def test_auth_other_mechanism(self) -> None:
        """Only PLAIN is offered; CRAM-MD5 and friends are refused."""
        proto, tr = self.connect()
        self.assertEqual(
            self.send(proto, tr, b"AUTH"), b"+OK Supported SASL mechanisms follow\r\nPLAIN\r\n.\r\n"
        )
        self.assertEqual(
            self.send(proto, tr, b"AUTH CRAM-MD5"), b"-ERR Unsupported SASL mechanism\r\n"
        )

    def test_wrong_password_delayed_then_disconnect(self) -> None:
        """Each wrong password is answered only after its auth.fail_delays entry; the
        auth.max_failures-th failure on the connection is answered and then the link closes."""
        self.settings.replace(Settings({"auth.fail_delays": [2, 4], "auth.max_failures": 2}))
        proto, tr = self.connect()
        self.send(proto, tr, b"USER alice")
        self.assertEqual(self.send(proto, tr, b"PASS wrong"), b"")
        self.clock.advance(1.9)
        self.assertEqual(tr.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(tr.value(), b"-ERR [AUTH] Authentication failed\r\n")
        self.assertFalse(tr.disconnecting)
        self.send(proto, tr, b"USER alice")
        self.assertEqual(self.send(proto, tr, b"PASS wrong again"), b"")
        self.clock.advance(3.9)
        self.assertEqual(tr.value(), b"")
        self.assertFalse(tr.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(tr.value(), b"-ERR [AUTH] Authentication failed\r\n")
        self.assertTrue(tr.disconnecting)
        proto.connectionLost()

    def test_same_wrong_password_does_not_escalate(self) -> None:
        """A client retrying one stale password is not slowed down further (RELIABILITY.md
        b-G 39, as SMTP AUTH); a new guess is."""
        self.settings.replace(Settings({"auth.fail_delays": [2, 4, 8]}))
        proto, tr = self.connect()
        for password, delay in ((b"stale", 2.0), (b"stale", 2.0), (b"new", 4.0)):
            self.send(proto, tr, b"USER alice")
            self.assertEqual(self.send(proto, tr, b"PASS " + password), b"")
            self.clock.advance(delay - 0.1)
            self.assertEqual(tr.value(), b"")
            self.clock.advance(0.1)
            self.assertEqual(tr.value(), b"-ERR [AUTH] Authentication failed\r\n")
            tr.clear()
        proto.connectionLost()

    def test_pipelined_after_delayed_failure_waits_for_it(self) -> None:
        """A command pipelined behind a wrong password is answered after the delayed -ERR,
        not before it (RFC 2449 PIPELINING keeps replies in order)."""
        self.settings.replace(Settings({"auth.fail_delays": [2]}))
        proto, tr = self.connect()
        self.send(proto, tr, b"USER alice")
        self.assertEqual(self.send(proto, tr, b"PASS wrong\r\nUSER alice"), b"")
        self.clock.advance(2)
        self.assertEqual(tr.value(), b"-ERR [AUTH] Authentication failed\r\n+OK\r\n")

    def test_penalty_follows_the_ip_across_connections(self) -> None:
        """Reconnecting does not reset the delay; another IP is not slowed down; a good
        login from the IP clears its penalty."""
        self.settings.replace(Settings({"auth.fail_delays": [2, 4, 8], "auth.max_failures": 1}))

        guesses: list[bytes] = []

        def fail(ip: str) -> float:
            """Seconds until a wrong password from a new connection of ``ip`` is answered."""
            proto, tr = self.connect(ip)
            self.send(proto, tr, b"USER alice")
            guesses.append(b"wrong%d" % len(guesses))  # a new guess each time, as an attacker
            self.send(proto, tr, b"PASS " + guesses[-1])
            waited = 0.0
            while not tr.value() and waited < 30:
                self.clock.advance(0.5)
                waited += 0.5
            self.assertEqual(tr.value(), b"-ERR [AUTH] Authentication failed\r\n")
            self.assertTrue(tr.disconnecting)
            proto.connectionLost()
            return waited

        self.assertEqual([fail("10.0.0.1"), fail("10.0.0.1"), fail("10.0.0.1")], [2, 4, 8])
        self.assertEqual(fail("10.0.0.2"), 2)
        self.assertEqual(fail("10.0.0.1"), 8)
        proto, tr = self.connect("10.0.0.1")
        self.login(proto, tr)  # answered at once: the penalty delays failures only
        self.close(proto, tr)
        self.assertEqual(fail("10.0.0.1"), 2)

    def test_service_disabled(self) -> None:
        """An account without the POP service cannot log in."""
        proto, tr = self.connect()
        self.send(proto, tr, b"USER nopop")
        self.assertEqual(
            self.send(proto, tr, b"PASS secret"), b"-ERR [AUTH] Authentication failed\r\n"
        )

    def test_store_down(self) -> None:
        """A failing account store gives a temporary error, never 'wrong password'."""
        self.store.fail = True
        proto, tr = self.connect()
        self.send(proto, tr, b"USER alice")
        self.assertTrue(self.send(proto, tr, b"PASS secret").startswith(b"-ERR [SYS/TEMP]"))
        self.flushLoggedErrors()

    def test_lock_in_use(self) -> None:
        """A second POP3 session on the same maildrop gets [IN-USE] until the first ends."""
        p1, t1 = self.connect()
        self.login(p1, t1)
        p2, t2 = self.connect()
        self.send(p2, t2, b"USER alice")
        self.assertEqual(
            self.send(p2, t2, b"PASS secret"),
            b"-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n",
        )
        self.close(p1, t1)
        self.send(p2, t2, b"USER alice")
        self.assertTrue(self.send(p2, t2, b"PASS secret").startswith(b"+OK"))
        self.close(p2, t2)

    def test_connection_cap(self) -> None:
        """More connections from one IP than access.max_connections_per_ip are turned away."""
        self.settings.replace(Settings({"access.max_connections_per_ip": 1}))
        p1, t1 = self.connect("10.9.9.9")
        p2 = self.factory.buildProtocol(None)
        t2 = TLSStringTransport(peerAddress=IPv4Address("TCP", "10.9.9.9", 40001))
        p2.makeConnection(t2)
        self.assertTrue(t2.value().startswith(b"-ERR [SYS/TEMP]"))
        self.assertTrue(t2.disconnecting)
        p2.connectionLost()
        self.close(p1, t1)
        self.assertEqual(self.factory.per_ip.counts, {})


class TransactionTests(POP3TestBase):
    plain_ok = True

    def setUp(self) -> None:
        super().setUp()
        self.proto, self.tr = self.connect()
        self.login(self.proto, self.tr)

    def cmd(self, line: bytes) -> bytes:
        return self.send(self.proto, self.tr, line)

    def sizes(self) -> tuple[int, int]:
        return len(MSG1), len(maildir.to_crlf(MSG2))

    def test_stat_list_uidl(self) -> None:
        """STAT, LIST and UIDL describe the maildrop; sizes count CRLF line ends."""
        s1, s2 = self.sizes()
        self.assertEqual(self.cmd(b"STAT"), b"+OK 2 %d\r\n" % (s1 + s2))
        self.assertEqual(
            self.cmd(b"LIST"), b"+OK Scan list follows\r\n1 %d\r\n2 %d\r\n.\r\n" % (s1, s2)
        )
        self.assertEqual(self.cmd(b"LIST 2"), b"+OK 2 %d\r\n" % s2)
        uidl = self.cmd(b"UIDL").split(b"\r\n")
        self.assertEqual(uidl[0], b"+OK Unique-ID list follows")
        self.assertEqual(len(uidl[1].split()[1]), 16)
        self.assertEqual(self.cmd(b"UIDL 1"), b"+OK " + uidl[1] + b"\r\n")

    def test_uidl_stable_across_restart(self) -> None:
        """UIDLs are the same after a server restart, so clients do not download twice."""
        first = self.cmd(b"UIDL")
        self.cmd(b"QUIT")
        self.proto.connectionLost()
        self.portal, self.realm = make_portal(self.base, self.store)  # a fresh process
        self.factory.portal = self.portal
        proto, tr = self.connect()
        self.login(proto, tr)
        self.assertEqual(self.send(proto, tr, b"UIDL"), first)
        self.close(proto, tr)

    def test_retr_dot_stuffing_and_crlf(self) -> None:
        """RETR sends the message dot-stuffed with CRLF line ends and the final '.'."""
        out = self.cmd(b"RETR 1")
        self.assertEqual(
            out, b"+OK %d octets\r\n" % len(MSG1) + MSG1.replace(b"\r\n.", b"\r\n..") + b".\r\n"
        )
        out = self.cmd(b"RETR 2")
        self.assertEqual(
            out,
            b"+OK %d octets\r\nSubject: two\r\nX: y\r\n\r\nbare lf body\r\n.\r\n" % self.sizes()[1],
        )

    def test_retr_streamed(self) -> None:
        """Large messages are streamed with back-pressure and arrive byte-identical, stuffed."""
        small = [self.cmd(b"RETR 1"), self.cmd(b"RETR 2")]
        self.patch(pop3_module, "SMALL_MESSAGE", 0)
        self.assertEqual([self.cmd(b"RETR 1"), self.cmd(b"RETR 2")], small)

    def test_top(self) -> None:
        """TOP n k sends the header and k body lines; TOP n 0 the header only."""
        self.assertEqual(
            self.cmd(b"TOP 1 1"),
            b"+OK Top of message follows\r\nFrom: a@example.com\r\nSubject: one\r\n\r\nline1\r\n.\r\n",
        )
        self.assertEqual(
            self.cmd(b"TOP 1 0"),
            b"+OK Top of message follows\r\nFrom: a@example.com\r\nSubject: one\r\n\r\n.\r\n",
        )
        self.assertEqual(
            self.cmd(b"TOP 1 2"),
            b"+OK Top of message follows\r\nFrom: a@example.com\r\nSubject: one\r\n\r\nline1\r\n..dotted\r\n.\r\n",
        )
        self.assertTrue(self.cmd(b"TOP 1 99").endswith(b"line3\r\n.\r\n"))

    def test_dele_applied_only_at_quit(self) -> None:
        """DELE marks; the file stays until QUIT (RFC 1939 UPDATE state)."""
        self.assertEqual(self.cmd(b"DELE 1"), b"+OK Message 1 marked for deletion\r\n")
        self.assertEqual(len(self.files()), 2)
        self.assertEqual(self.cmd(b"RETR 1"), b"-ERR Message 1 is deleted\r\n")
        self.assertEqual(self.cmd(b"DELE 1"), b"-ERR Message 1 is deleted\r\n")
        self.assertEqual(self.cmd(b"STAT"), b"+OK 1 %d\r\n" % self.sizes()[1])
        self.assertNotIn(b"\r\n1 ", self.cmd(b"LIST"))
        self.assertEqual(self.cmd(b"QUIT"), b"+OK Logging out, 1 messages deleted\r\n")
        self.assertTrue(self.tr.disconnecting)
        self.assertEqual(len(self.files()), 1)

    def test_connection_loss_keeps_messages(self) -> None:
        """A dropped connection (or crash) after DELE deletes nothing."""
        self.cmd(b"DELE 1")
        self.cmd(b"DELE 2")
        self.tr.loseConnection()
        self.proto.connectionLost()
        self.assertEqual(len(self.files()), 2)

    def test_message_expunged_by_imap_meanwhile(self) -> None:
        """A message removed by an IMAP session during the POP3 session gets -ERR, not garbage;
        QUIT still works."""
        for name in os.listdir(os.path.join(self.md, "cur")):
            os.unlink(os.path.join(self.md, "cur", name))
        self.assertEqual(self.cmd(b"RETR 1"), b"-ERR Message 1 was removed by another session\r\n")
        self.assertEqual(self.cmd(b"TOP 2 0"), b"-ERR Message 2 was removed by another session\r\n")
        self.cmd(b"DELE 1")
        self.assertEqual(self.cmd(b"QUIT"), b"+OK Logging out, 1 messages deleted\r\n")

    def test_rset(self) -> None:
        """RSET undoes DELE."""
        self.cmd(b"DELE 1")
        self.assertEqual(self.cmd(b"RSET"), b"+OK\r\n")
        self.assertTrue(self.cmd(b"STAT").startswith(b"+OK 2 "))
        self.cmd(b"QUIT")
        self.assertEqual(len(self.files()), 2)

    def test_retr_marks_seen_at_quit(self) -> None:
        """Messages read by POP3 appear \\Seen to IMAP afterwards."""
        self.cmd(b"RETR 2")
        self.cmd(b"QUIT")
        self.assertEqual(sum(1 for f in self.files() if f.endswith(",S")), 1)

    def test_noop_and_bad_commands(self) -> None:
        """Every bad command or argument gets -ERR and the session goes on."""
        self.assertEqual(self.cmd(b"NOOP"), b"+OK\r\n")
        for line in [
            b"RETR 0",
            b"RETR 999999",
            b"RETR -1",
            b"RETR abc",
            b"LIST abc",
            b"LIST 1 2",
            b"TOP 1 -1",
            b"TOP 1",
            b"TOP x 1",
            b"DELE",
            b"XYZZY",
            b"USER bob",
            b"STLS",
            b"\xff\xfe",
            b"",
            b"RETR 99999999999999999999",
        ]:
            out = self.cmd(line)
            self.assertTrue(out.startswith(b"-ERR "), (line, out))
            self.assertNotIn(b"Traceback", out)
        self.assertTrue(self.cmd(b"STAT").startswith(b"+OK 2"))

    def test_pipelining(self) -> None:
        """Several commands in one packet are answered in order (RFC 2449 PIPELINING)."""
        self.tr.clear()
        self.proto.dataReceived(b"STAT\r\nRETR 2\r\nDELE 2\r\nNOOP\r\n")
        self.pump(self.tr)
        out = self.tr.value()
        self.assertTrue(out.startswith(b"+OK 2 "))
        self.assertIn(b"bare lf body\r\n.\r\n+OK Message 2 marked for deletion\r\n+OK\r\n", out)

    def test_pipelined_flood_pauses_reading(self) -> None:
        """A client that pipelines hundreds of commands behind a slow RETR is paused, not buffered
        without bound, and every command is still answered in order."""
        self.patch(pop3_module, "SMALL_MESSAGE", 0)  # stream even small messages
        self.tr.clear()
        self.proto.dataReceived(b"RETR 1\r\n" + b"NOOP\r\n" * 200)
        self.assertEqual(self.tr.producerState, "paused")
        self.pump(self.tr)
        self.assertEqual(self.tr.producerState, "producing")
        self.assertEqual(self.tr.value().count(b"+OK\r\n"), 200)

    def test_idle_timeout(self) -> None:
        """An idle session is closed after pop3.idle_timeout without applying deletions."""
        self.cmd(b"DELE 1")
        self.clock.advance(599)
        self.assertFalse(self.tr.disconnecting)
        self.clock.advance(2)
        self.assertTrue(self.tr.disconnecting)
        self.proto.connectionLost()
        self.assertEqual(len(self.files()), 2)

    def test_long_line(self) -> None:
        """A 100 KB line gets -ERR and the connection is closed, without a traceback."""
        self.tr.clear()
        self.proto.dataReceived(b"X" * 100000)
        self.assertEqual(self.tr.value(), b"-ERR Line too long\r\n")
        self.assertTrue(self.tr.disconnecting)

    def test_new_mail_not_in_snapshot(self) -> None:
        """Mail delivered during a session shows up at the next login (RFC 1939 maildrop)."""
        deliver(self.base, "alice", b"Subject: three\r\n\r\nx\r\n")
        self.assertTrue(self.cmd(b"STAT").startswith(b"+OK 2 "))
        self.cmd(b"QUIT")
        self.proto.connectionLost()
        proto, tr = self.connect()
        self.login_any(proto, tr, 3)

    def login_any(self, proto: POP3Server, tr: StringTransport, n: int) -> None:
        self.send(proto, tr, b"USER alice")
        self.assertTrue(
            self.send(proto, tr, b"PASS secret").startswith(b"+OK Logged in, %d messages" % n)
        )
        self.close(proto, tr)

    def test_capa_in_transaction(self) -> None:
        """CAPA works after login and lists TOP, UIDL, PIPELINING, RESP-CODES."""
        capa = self.cmd(b"CAPA")
        for c in (b"TOP", b"UIDL", b"PIPELINING", b"RESP-CODES"):
            self.assertIn(b"\r\n" + c + b"\r\n", capa)

    def tearDown(self) -> Optional[Any]:
        if not self.tr.disconnecting:
            self.close(self.proto, self.tr)
        return None


class FuzzTests(POP3TestBase):
    plain_ok = True

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.lists(
            st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b), max_size=6
        ),
        st.booleans(),
    )
    def test_garbage_in_every_state(self, lines: list[bytes], logged_in: bool) -> None:
        """Random command lines in either state never raise, never leak a traceback, and every
        reply line is a status, a listing line or a continuation (Mox-style protocol fuzz)."""
        proto, tr = self.connect()
        try:
            if logged_in:
                self.login(proto, tr)
            for line in lines:
                if line.upper().startswith(b"QUIT"):
                    continue
                out = self.send(proto, tr, line)
                self.assertNotIn(b"Traceback", out)
                if tr.disconnecting:
                    break
                first = out.split(b"\r\n", 1)[0]
                self.assertTrue(first.startswith((b"+OK", b"-ERR ", b"+ ")), (line, out))
            if not tr.disconnecting:
                self.send(proto, tr, b"*")  # ends a pending SASL exchange, else a bad command
                self.assertTrue(self.send(proto, tr, b"CAPA").startswith(b"+OK"))
        finally:
            self.close(proto, tr)


class ShutdownTests(POP3TestBase):
    """SIGTERM: every session hears why it is closed, and nothing marked with DELE is lost."""

    plain_ok = True
    BYE = b"-ERR [SYS/TEMP] server shutting down\r\n"

    def test_idle_session_told_and_closed_then_shutdown_fires(self) -> None:
        """An idle session gets -ERR [SYS/TEMP] at once and is closed; the factory's Deferred
        fires only when the last session has gone; a late connection is refused the same way."""
        p1, t1 = self.connect()
        p2, t2 = self.connect("10.0.0.2")
        self.login(p2, t2)
        t1.clear()
        t2.clear()
        done = self.factory.shutdown()
        self.assertNoResult(done)
        for tr in (t1, t2):
            self.assertEqual(tr.value(), self.BYE)
            self.assertTrue(tr.disconnecting)
        late = self.factory.buildProtocol(None)
        lt = TLSStringTransport(peerAddress=IPv4Address("TCP", "10.0.0.3", 40000))
        late.makeConnection(lt)
        self.assertEqual(lt.value(), self.BYE)
        self.assertTrue(lt.disconnecting)
        p1.connectionLost()
        p2.connectionLost()
        self.assertNoResult(done)
        late.connectionLost()
        self.successResultOf(done)
        self.assertEqual(self.factory.live, set())
        self.assertEqual(self.factory.per_ip.counts, {})

    def test_shutdown_keeps_deleted_messages_and_frees_the_lock(self) -> None:
        """Shutdown is not QUIT: no UPDATE state, so messages marked with DELE stay (RFC 1939
        §6), and the maildrop lock is released for the next session."""
        proto, tr = self.connect()
        self.login(proto, tr)
        self.send(proto, tr, b"DELE 1")
        self.send(proto, tr, b"DELE 2")
        tr.clear()
        done = self.factory.shutdown()
        self.assertEqual(tr.value(), self.BYE)
        self.assertNotEqual(proto.state, "UPDATE")
        proto.connectionLost()
        self.successResultOf(done)
        self.assertEqual(len(self.files()), 2)
        other = POP3Factory(
            self.listener,
            self.settings,
            self.portal,
            lambda: None,
            "mail.example.com",
            clock=self.clock,
        )
        self.factory = other
        p2, t2 = self.connect()
        self.login(p2, t2)  # not -ERR [IN-USE]: the lock went with the session
        self.close(p2, t2)

    def test_no_sessions_fires_at_once(self) -> None:
        """A factory without sessions has nothing to wait for."""
        self.successResultOf(self.factory.shutdown())
        self.assertTrue(self.factory.stopping)

    def test_streamed_retr_completes_before_the_goodbye(self) -> None:
        """A RETR being streamed is sent to its final '.' and only then comes the -ERR;
        commands pipelined behind it are not run."""
        self.patch(pop3_module, "SMALL_MESSAGE", 0)
        proto, tr = self.connect()
        self.login(proto, tr)
        tr.clear()
        proto.dataReceived(b"RETR 1\r\nDELE 1\r\nQUIT\r\n")
        self.assertIsNotNone(tr.producer)
        done = self.factory.shutdown()
        self.assertNotIn(b"-ERR", tr.value())
        self.assertFalse(tr.disconnecting)
        self.pump(tr)
        stuffed = MSG1.replace(b"\r\n.", b"\r\n..")
        self.assertEqual(
            tr.value(), b"+OK %d octets\r\n" % len(MSG1) + stuffed + b".\r\n" + self.BYE
        )
        self.assertTrue(tr.disconnecting)
        proto.connectionLost()
        self.successResultOf(done)
        self.assertEqual(len(self.files()), 2)

    def test_login_check_answered_before_the_goodbye(self) -> None:
        """A password check still running (here: the failed-login delay) is answered first."""
        self.settings.replace(Settings({"auth.fail_delays": [5]}))
        proto, tr = self.connect()
        self.send(proto, tr, b"USER alice")
        self.assertEqual(self.send(proto, tr, b"PASS wrong"), b"")
        done = self.factory.shutdown()
        self.assertEqual(tr.value(), b"")
        self.assertFalse(tr.disconnecting)
        self.clock.advance(5)
        self.assertEqual(tr.value(), b"-ERR [AUTH] Authentication failed\r\n" + self.BYE)
        self.assertTrue(tr.disconnecting)
        proto.connectionLost()
        self.successResultOf(done)
