"""STARTTLS and implicit TLS over real loopback sockets, with a throwaway self-signed certificate."""

from __future__ import annotations

import smtplib
import socket
import ssl as pyssl
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from cgtwist.protocols.smtp.factory import SMTPFactory
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec
from tests.certs import server_tls
from tests.protocols.test_smtp_fakes import FakePolicy, FakeSubmission, make_portal


def client_context() -> pyssl.SSLContext:
    ctx = pyssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = pyssl.CERT_NONE  # the test's throwaway certificate
    return ctx


class TLSTests(unittest.TestCase):
    def start(self, listener: ListenerSpec, implicit: bool = False) -> tuple[int, FakeSubmission]:
        self.ctx = server_tls()
        submission = FakeSubmission()
        factory: Any = SMTPFactory(
            listener,
            SettingsHolder(Settings()),
            FakePolicy(),
            submission,
            make_portal(),
            lambda: self.ctx,
            "mx.example.com",
            clock=reactor,
        )
        if implicit:
            factory = TLSMemoryBIOFactory(self.ctx, False, factory)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, submission

    def test_starttls_then_auth_and_send(self) -> None:
        """smtplib upgrades with STARTTLS, sees AUTH only then, logs in and sends a message."""
        port, submission = self.start(ListenerSpec("smtp", 587, submission=True))

        def client() -> tuple[Any, Any]:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.ehlo("c.example")
                before = dict(s.esmtp_features)
                s.starttls(context=client_context())
                s.ehlo("c.example")
                after = dict(s.esmtp_features)
                s.login("alice@example.com", "secret")
                s.sendmail("alice@example.com", ["bob@ext.example"], b"Subject: t\r\n\r\nhello\r\n")
            return before, after

        def check(result: tuple[Any, Any]) -> None:
            before, after = result
            self.assertIn("starttls", before)
            self.assertNotIn("auth", before)
            self.assertNotIn("starttls", after)
            self.assertEqual(after["auth"].split(), ["PLAIN", "LOGIN"])
            envelope, data = submission.messages[0]
            self.assertIn(envelope.submit["tls"], ("TLSv1.2", "TLSv1.3"))
            self.assertEqual(envelope.submit["protocol"], "ESMTPSA")
            self.assertIn(b"with ESMTPSA (TLSv1.", data)
            self.assertTrue(data.endswith(b"\r\nSubject: t\r\n\r\nhello\r\n"))

        return deferToThread(client).addCallback(check)

    def test_starttls_discards_pipelined_plaintext(self) -> None:
        """Commands sent with STARTTLS in one packet are never run inside TLS (CVE-2011-0411)."""
        port, submission = self.start(ListenerSpec("smtp", 25))

        def client() -> list[bytes]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            f = raw.makefile("rb")
            f.readline()  # banner
            raw.sendall(b"EHLO c.example\r\nSTARTTLS\r\nHELP\r\nMAIL FROM:<x@evil.example>\r\n")
            while not f.readline().startswith(b"220 "):
                pass
            tls = client_context().wrap_socket(raw, server_hostname="localhost")
            tf = tls.makefile("rb")
            tls.sendall(b"NOOP\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n")
            lines = [tf.readline() for _ in range(3)]
            tls.close()
            return lines

        def check(lines: list[bytes]) -> None:
            # No 214 for the injected HELP; MAIL is refused because EHLO state was reset.
            self.assertEqual(
                lines,
                [
                    b"250 2.0.0 Ok\r\n",
                    b"503 5.5.1 Error: send HELO/EHLO first\r\n",
                    b"221 2.0.0 Bye\r\n",
                ],
            )

        return deferToThread(client).addCallback(check)

    def test_implicit_tls(self) -> None:
        """On an implicit-TLS listener (465) STARTTLS is not offered and the TLS version is kept."""
        port, submission = self.start(
            ListenerSpec("smtp", 465, tls="implicit", submission=True), implicit=True
        )

        def client() -> Any:
            with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=client_context()) as s:
                s.ehlo("c.example")
                features = dict(s.esmtp_features)
                s.login("alice", "secret")
                s.sendmail("alice@example.com", ["bob@example.com"], b"Subject: t\r\n\r\nhi\r\n")
            return features

        def check(features: Any) -> None:
            self.assertNotIn("starttls", features)
            self.assertIn("auth", features)
            envelope, _data = submission.messages[0]
            self.assertIn(envelope.submit["tls"], ("TLSv1.2", "TLSv1.3"))
            self.assertEqual(envelope.submit["account"], "alice@example.com")

        return deferToThread(client).addCallback(check)
