"""POP3 end to end: Python's poplib over real loopback TCP, with STLS and with implicit TLS."""

from __future__ import annotations

import os
import poplib
import ssl
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from cgtwist import paths
from cgtwist.mailstore import MailboxNotifier
from cgtwist.protocols.pop3.server import POP3Factory
from cgtwist.settings import SettingsHolder
from cgtwist.tls import ServerTLS
from cgtwist.types import ListenerSpec
from tests.certs import write_pem
from tests.protocols.test_pop3_fakes import FakeStore, deliver, make_portal


class POP3EndToEndTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.store = FakeStore()
        self.store.add("alice", "secret")
        self.portal, _realm = make_portal(self.base, self.store, MailboxNotifier(reactor))
        cert, key = write_pem(os.path.join(self.base, "tls"))
        self.cafile = cert
        self.tls = ServerTLS(cert, key)
        self.settings = SettingsHolder()
        for i in range(3):
            deliver(
                self.base, "alice", b"Subject: m%d\r\n\r\nbody %d\r\n.starts with dot\r\n" % (i, i)
            )

    def listen(self, tls_mode: str) -> int:
        spec = ListenerSpec("pop3", 0, "127.0.0.1", tls_mode)
        factory: Any = POP3Factory(
            spec, self.settings, self.portal, self.tls, "localhost", clock=reactor
        )
        if tls_mode == "implicit":
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cafile)
        ctx.check_hostname = False
        return ctx

    def test_stls_session(self) -> None:
        """A poplib client upgrades with STLS, logs in, reads, deletes, and the deletion sticks;
        UIDLs are the same in the next session."""
        port = self.listen("starttls")

        def client() -> tuple[Any, ...]:
            p = poplib.POP3("127.0.0.1", port, timeout=10)
            try:
                with self.assertRaises(poplib.error_proto):
                    p.user("alice@example.com")  # refused before TLS
                caps = p.capa()
                p.stls(self.client_context())
                caps_tls = p.capa()
                p.user("alice@example.com")
                p.pass_("secret")
                stat = p.stat()
                uidl = p.uidl()[1]
                body = p.retr(2)[1]
                top = p.top(1, 0)[1]
                p.dele(1)
                p.quit()
                p2 = poplib.POP3("127.0.0.1", port, timeout=10)
                p2.stls(self.client_context())
                p2.user("alice")
                p2.pass_("secret")
                uidl2 = p2.uidl()[1]
                stat2 = p2.stat()
                p2.quit()
                return caps, caps_tls, stat, uidl, body, top, uidl2, stat2
            finally:
                p.close()

        def check(r: tuple[Any, ...]) -> None:
            caps, caps_tls, stat, uidl, body, top, uidl2, stat2 = r
            self.assertIn("STLS", caps)
            self.assertNotIn("USER", caps)
            self.assertIn("USER", caps_tls)
            self.assertNotIn("STLS", caps_tls)
            self.assertEqual(stat[0], 3)
            self.assertEqual(body, [b"Subject: m1", b"", b"body 1", b".starts with dot"])
            self.assertEqual(top, [b"Subject: m0", b""])
            self.assertEqual([x.split()[1] for x in uidl2], [x.split()[1] for x in uidl[1:]])
            self.assertEqual(stat2[0], 2)
            md = paths.maildir(self.base, "example.com", "alice")
            self.assertEqual(len(os.listdir(os.path.join(md, "cur"))), 2)

        return threads.deferToThread(client).addCallback(check)

    def test_implicit_tls(self) -> None:
        """POP3S (995-style implicit TLS) offers USER at once and serves the maildrop."""
        port = self.listen("implicit")

        def client() -> tuple[Any, ...]:
            p = poplib.POP3_SSL("127.0.0.1", port, context=self.client_context(), timeout=10)
            try:
                caps = p.capa()
                p.user("alice@example.com")
                p.pass_("secret")
                return caps, p.stat(), p.list()[1]
            finally:
                p.quit()

        def check(r: tuple[Any, ...]) -> None:
            caps, stat, listing = r
            self.assertIn("USER", caps)
            self.assertNotIn("STLS", caps)
            self.assertEqual(stat[0], 3)
            self.assertEqual(len(listing), 3)

        return threads.deferToThread(client).addCallback(check)

    def test_concurrent_sessions_locked(self) -> None:
        """Two poplib sessions on one maildrop: the second is told [IN-USE]."""
        port = self.listen("implicit")

        def client() -> bytes:
            p = poplib.POP3_SSL("127.0.0.1", port, context=self.client_context(), timeout=10)
            p.user("alice")
            p.pass_("secret")
            q = poplib.POP3_SSL("127.0.0.1", port, context=self.client_context(), timeout=10)
            q.user("alice")
            try:
                q.pass_("secret")
                return b"no error"
            except poplib.error_proto as e:
                return e.args[0]
            finally:
                q.quit()
                p.quit()

        d: defer.Deferred[bytes] = threads.deferToThread(client)
        return d.addCallback(lambda msg: self.assertTrue(msg.startswith(b"-ERR [IN-USE]"), msg))
