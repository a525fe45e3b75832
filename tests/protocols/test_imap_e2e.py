"""IMAP end to end: Python's imaplib against CgIMAP4Server over real loopback TCP with TLS."""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import socket
import ssl as pyssl
import subprocess
import tempfile
from typing import Any, Callable

from twisted.internet import defer, reactor, threads
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from cgtwist.protocols.imap.server import IMAPFactory
from tests.certs import server_tls
from tests.protocols.test_imap_support import MESSAGE, World


def client_tls() -> pyssl.SSLContext:
    ctx = pyssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = pyssl.CERT_NONE
    return ctx


class TrackingFactory(IMAPFactory):
    """Remembers when each connection is gone so tests end with a clean reactor."""

    def buildProtocol(self, addr: Any) -> Any:
        p = super().buildProtocol(addr)
        gone: defer.Deferred[None] = defer.Deferred()
        self.gone.append(gone)
        lost = p.connectionLost

        def connection_lost(reason: Any) -> None:
            lost(reason)
            gone.callback(None)

        p.connectionLost = connection_lost  # type: ignore[method-assign]
        return p


class Harness(unittest.TestCase):
    """A listening CgIMAP4Server on 127.0.0.1 and a way to run blocking clients in a thread."""

    timeout = 60

    def setUp(self) -> None:
        self.world = World()
        self.world.deliver("alice@example.com", MESSAGE)

    def listen(self, tls: str) -> int:
        from cgtwist.types import ListenerSpec

        spec = ListenerSpec("imap", 0, address="127.0.0.1", tls=tls)
        ctx = server_tls()
        f = TrackingFactory(
            spec, self.world.settings, self.world.portal, lambda: ctx, "localhost", reactor
        )
        f.gone = []
        self.factory = f
        wrapped = TLSMemoryBIOFactory(ctx, False, f) if tls == "implicit" else f
        port = reactor.listenTCP(0, wrapped, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def in_thread(self, fn: Callable[[], Any]) -> Any:
        result = yield threads.deferToThread(fn)
        yield defer.DeferredList(self.factory.gone)
        return result


class ImaplibTests(Harness):
    @defer.inlineCallbacks
    def test_starttls_session_with_imaplib(self) -> Any:
        """imaplib: LOGINDISABLED before STARTTLS, then a full session over TLS works."""
        port = self.listen("starttls")

        def session() -> dict[str, Any]:
            r: dict[str, Any] = {}
            c = imaplib.IMAP4("127.0.0.1", port)
            r["caps_before"] = c.capabilities
            try:
                c.login("alice@example.com", "secret")
                r["plain_login"] = "accepted"
            except imaplib.IMAP4.error as e:
                r["plain_login"] = str(e)
            c.starttls(client_tls())
            r["caps_after"] = c.capabilities
            c.login("alice@example.com", "secret")
            r["select"] = c.select("INBOX")
            typ, data = c.append("Drafts", r"(\Draft)", None, b"Subject: note\r\n\r\nbody\r\n")
            r["append"] = (typ, data)
            r["fetch"] = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)")
            r["search"] = c.search(None, "SUBJECT", "Hello")
            r["copy"] = c.copy("1", "Trash")
            r["move"] = c.uid("MOVE", "1", "Junk")
            r["status"] = c.status("Junk", "(MESSAGES)")
            c.logout()
            return r

        r = yield self.in_thread(session)
        self.assertIn("STARTTLS", r["caps_before"])
        self.assertIn("LOGINDISABLED", r["caps_before"])
        self.assertIn("PRIVACYREQUIRED", r["plain_login"])
        self.assertNotIn("LOGINDISABLED", r["caps_after"])
        self.assertIn("AUTH=PLAIN", r["caps_after"])
        self.assertEqual(r["select"], ("OK", [b"1"]))
        self.assertEqual(r["append"][0], "OK")
        self.assertRegex(r["append"][1][0], rb"\[APPENDUID \d+ 1\]")
        self.assertIn(b"Subject: Hello there", r["fetch"][1][0][1])
        self.assertEqual(r["search"], ("OK", [b"1"]))
        self.assertRegex(r["copy"][1][0], rb"\[COPYUID \d+ 1 1\]")
        self.assertEqual(r["move"][0], "OK")
        self.assertEqual(r["status"][1][0], b'"Junk" (MESSAGES 1)')

    @defer.inlineCallbacks
    def test_implicit_tls_idle_push(self) -> Any:
        """imaplib over implicit TLS: a message delivered during IDLE arrives as EXISTS at once."""
        port = self.listen("implicit")
        world = self.world

        def session() -> list[bytes]:
            c = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_tls())
            c.login("alice@example.com", "secret")
            c.select("INBOX")
            c.send(b"i1 IDLE\r\n")
            lines = [c.readline()]
            threads.blockingCallFromThread(reactor, world.deliver, "alice@example.com")
            lines.append(c.readline())
            c.send(b"DONE\r\n")
            while not lines[-1].startswith(b"i1 "):
                lines.append(c.readline())
            c.logout()
            return lines

        lines = yield self.in_thread(session)
        self.assertEqual(lines[0], b"+ idling\r\n")
        self.assertEqual(lines[1], b"* 2 EXISTS\r\n")
        self.assertEqual(lines[-1], b"i1 OK IDLE terminated\r\n")

    @defer.inlineCallbacks
    def test_attacks_do_not_stop_other_clients(self) -> Any:
        """Literal attacks on one connection get BAD while another client keeps working."""
        port = self.listen("starttls")

        def session() -> tuple[list[bytes], Any]:
            s = socket.create_connection(("127.0.0.1", port))
            f = s.makefile("rb")
            f.readline()
            replies = []
            for attack in (
                b"a1 LOGIN {400000000}\r\n",
                b"a2 LOGIN {-1}\r\n",
                b"a3 SEARCH {-100}zzz\r\n",
                b"a4 LOGIN {9999999999}\r\n",
                b"a5 LOGIN {}\r\n",
            ):
                s.sendall(attack)
                replies.append(f.readline())
            other = imaplib.IMAP4("127.0.0.1", port)
            other.starttls(client_tls())
            other.login("alice@example.com", "secret")
            noop = other.noop()
            other.logout()
            s.sendall(b"z LOGOUT\r\n")
            f.read()
            s.close()
            return replies, noop

        replies, noop = yield self.in_thread(session)
        for r in replies:
            self.assertTrue(re.match(rb"a\d (BAD|NO) ", r), r)
        self.assertEqual(noop[0], "OK")


class FetchmailTests(Harness):
    """A real third-party client: fetchmail over STARTTLS and implicit TLS."""

    if shutil.which("fetchmail") is None:
        skip = "fetchmail is not installed (.ci/run installs it)"

    def run_fetchmail(self, port: int, ssl_line: str) -> tuple[int, bytes, str]:
        home = tempfile.mkdtemp(dir=self.world.tmp)
        out = os.path.join(home, "out.mbox")
        rc = os.path.join(home, "fetchmailrc")
        with open(rc, "w") as f:
            f.write(
                f"set no syslog\npoll 127.0.0.1 protocol IMAP port {port} auth password\n"
                f'  user "alice@example.com" password "secret" is "x" here\n'
                f"  {ssl_line} no sslcertck keep\n"
                f"  mda \"/bin/sh -c 'cat >> {out}'\"\n"
            )
        os.chmod(rc, 0o600)
        env = dict(os.environ, FETCHMAILHOME=home, HOME=home)
        proc = subprocess.run(
            ["fetchmail", "-f", rc, "--nodetach", "-v"], env=env, capture_output=True, timeout=30
        )
        data = open(out, "rb").read() if os.path.exists(out) else b""
        return (
            proc.returncode,
            data,
            proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace"),
        )

    @defer.inlineCallbacks
    def test_fetchmail_implicit_tls(self) -> Any:
        """fetchmail retrieves the message over port-993 style implicit TLS."""
        port = self.listen("implicit")
        code, data, log_text = yield self.in_thread(lambda: self.run_fetchmail(port, "ssl"))
        self.assertEqual(code, 0, log_text)
        self.assertIn(b"Subject: Hello there", data)

    @defer.inlineCallbacks
    def test_fetchmail_starttls(self) -> Any:
        """fetchmail upgrades with STARTTLS (LOGINDISABLED before it) and retrieves the message."""
        port = self.listen("starttls")
        code, data, log_text = yield self.in_thread(
            lambda: self.run_fetchmail(port, "sslproto 'TLS1.2+'")
        )
        self.assertEqual(code, 0, log_text)
        self.assertIn(b"Subject: Hello there", data)
        self.assertIn("STARTTLS", log_text)
