"""POP3, IMAP and authenticated SMTP sessions on the server's list of logged-in sessions (cgtwist.activesessions):
listed from login to their end, and ended from it with the protocol's goodbye."""

from __future__ import annotations

import base64

from twisted.trial import unittest

from cgtwist.activesessions import ActiveSessions
from cgtwist.protocols.imap import IMAPFactory
from cgtwist.protocols.pop3 import POP3Factory
from cgtwist.protocols.smtp import SMTPFactory
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec
from tests.protocols.test_imap_support import Client, World
from tests.protocols.test_pop3 import POP3TestBase
from tests.protocols.test_smtp_fakes import Harness, make_portal

ALICE = "alice@example.com"


class IMAPListedTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.active = ActiveSessions(self.world.clock.seconds)
        spec = ListenerSpec("imap", 993, address="127.0.0.1", tls="implicit")
        w = self.world
        self.factory = IMAPFactory(
            spec, w.settings, w.portal, lambda: "ctx", "mail.example.com", w.clock,
            active=self.active,
        )  # fmt: skip

    def test_listed_from_login_to_logout(self) -> None:
        """A login appears with protocol, address and TLS; the connection's end removes it."""
        c = Client(self.world, ip="192.0.2.7", factory=self.factory)
        self.assertEqual(self.active.of_account(ALICE), [])
        c.login()
        (s,) = self.active.of_account(ALICE)
        self.assertEqual((s.protocol, s.peer, s.secure), ("imap", "192.0.2.7", True))
        c.close()
        self.assertEqual(self.active.of_account(ALICE), [])

    def test_ended_session_hears_bye_and_closes(self) -> None:
        """Ended from the list: ``* BYE <reason>`` and the connection closes at once."""
        c = Client(self.world, factory=self.factory)
        c.login()
        c.select()
        (s,) = self.active.of_account(ALICE)
        self.active.end(ALICE, s.id, "Ended by the owner")
        self.assertEqual(c.take(), b"* BYE Ended by the owner\r\n")
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(self.active.of_account(ALICE), [])
        c.close()


class POP3ListedTests(POP3TestBase):
    plain_ok = True

    def setUp(self) -> None:
        super().setUp()
        self.active = ActiveSessions(self.clock.seconds)
        self.factory = POP3Factory(
            self.listener,
            self.settings,
            self.portal,
            lambda: self.ctx,
            "mail.example.com",
            clock=self.clock,
            active=self.active,
        )

    def test_listed_then_ended_without_update(self) -> None:
        """Listed at login; ended: ``-ERR <reason>``, closed, no UPDATE (messages marked with
        DELE stay, RFC 1939 §6), the maildrop free for the next login and the list empty."""
        proto, tr = self.connect("10.0.0.9")
        self.login(proto, tr)
        (s,) = self.active.of_account(ALICE)
        self.assertEqual((s.protocol, s.peer, s.secure), ("pop3", "10.0.0.9", False))
        self.send(proto, tr, b"DELE 1")
        tr.clear()
        self.active.end(ALICE, s.id, "Ended by the owner")
        self.assertEqual(tr.value(), b"-ERR Ended by the owner\r\n")
        self.assertTrue(tr.disconnecting)
        self.assertNotEqual(proto.state, "UPDATE")
        proto.connectionLost()
        self.assertEqual(self.active.of_account(ALICE), [])
        self.assertEqual(len(self.files()), 2)
        p2, t2 = self.connect()
        self.login(p2, t2)  # not -ERR [IN-USE]
        self.close(p2, t2)

    def test_connection_end_removes_it(self) -> None:
        proto, tr = self.connect()
        self.login(proto, tr)
        self.assertEqual(len(self.active.of_account(ALICE)), 1)
        self.close(proto, tr)
        self.assertEqual(self.active.of_account(ALICE), [])


class SMTPListedTests(unittest.TestCase):
    """Authenticated SMTP sessions served by the server process are listed too."""

    def setUp(self) -> None:
        self.active = ActiveSessions(lambda: 1000.0)
        probe = Harness()  # its fakes, for a factory of our own that lists sessions
        self.factory = SMTPFactory(
            ListenerSpec("smtp", 587, submission=True, allow_plain_auth=True),
            SettingsHolder(Settings({})),
            probe.policy,
            probe.submission,
            make_portal(),
            lambda: None,
            "mx.example.com",
            clock=probe.clock,
            active=self.active,
        )
        self.h = Harness(factory=self.factory, peer="192.0.2.5")
        self.h.cmd("EHLO c.example")

    def login(self) -> None:
        plain = base64.b64encode(b"\0alice@example.com\0secret").decode()
        self.assertEqual(self.h.cmd("AUTH PLAIN " + plain)[0][:3], "235")

    def test_listed_after_auth_until_the_connection_ends(self) -> None:
        self.assertEqual(self.active.of_account(ALICE), [])
        self.login()
        (s,) = self.active.of_account(ALICE)
        self.assertEqual((s.protocol, s.peer, s.secure), ("smtp", "192.0.2.5", False))
        self.h.proto.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.active.of_account(ALICE), [])

    def test_ended_session_gets_421_after_the_message_in_progress(self) -> None:
        """Ended while a message is being sent: the message is taken (250) first, then
        421 4.7.0 and the connection closes; an idle session is told at once."""
        self.login()
        (s,) = self.active.of_account(ALICE)
        self.h.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        self.active.end(ALICE, s.id, "Ended by the owner")
        self.assertFalse(self.h.closed)
        out = self.h.send(b"Subject: hi\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(out[0][:3], "250")
        self.assertEqual(out[-1], "421 4.7.0 mx.example.com Ended by the owner")
        self.assertTrue(self.h.closed)
        self.assertEqual(len(self.h.submission.messages), 1)
        self.assertEqual(self.active.of_account(ALICE), [])
