"""TLS: the generated certificate serves real handshakes with TLS 1.2+ only, and reloads."""

from __future__ import annotations

import os
import socket
import ssl as stdlib_ssl

from cryptography import x509
from twisted.internet import defer, protocol, reactor
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from cgtwist import tls


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class TLSTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.cert = os.path.join(self.dir, "tls", "cert.pem")
        self.key = os.path.join(self.dir, "tls", "key.pem")

    def test_generated_certificate_names_and_key_mode(self) -> None:
        """Clients that check names can be pointed at localhost or the main domain."""
        self.assertTrue(
            tls.ensure_certificate(
                self.cert, self.key, ["mail.example.test", "example.test", "localhost"]
            )
        )
        self.assertFalse(
            tls.ensure_certificate(self.cert, self.key, ["other"])
        )  # kept, not regenerated
        with open(self.cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(
            san.get_values_for_type(x509.DNSName),
            ["mail.example.test", "example.test", "localhost"],
        )
        self.assertEqual(os.stat(self.key).st_mode & 0o777, 0o600)

    def _serve(self, server: tls.ServerTLS) -> int:
        f = protocol.Factory.forProtocol(Echo)
        port = reactor.listenTCP(0, TLSMemoryBIOFactory(server, False, f), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[no-any-return]

    @staticmethod
    def _client(
        port: int,
        cafile: str,
        maximum: stdlib_ssl.TLSVersion | None = None,
        alpn: list[str] | None = None,
    ) -> tuple[str, bytes]:
        ctx = stdlib_ssl.create_default_context(cafile=cafile)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if maximum is not None:
            ctx.minimum_version = stdlib_ssl.TLSVersion.TLSv1
            ctx.maximum_version = maximum
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"ping")
                return s.version() or "", s.recv(4)

    @defer.inlineCallbacks
    def test_verified_handshake_with_tls13(self):  # type: ignore[no-untyped-def]
        """A client that verifies the certificate against it connects to 'localhost'."""
        tls.ensure_certificate(self.cert, self.key, ["localhost"])
        port = self._serve(tls.ServerTLS(self.cert, self.key))
        version, echo = yield deferToThread(self._client, port, self.cert)
        self.assertEqual(echo, b"ping")
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))

    @defer.inlineCallbacks
    def test_client_offering_alpn_connects(self):  # type: ignore[no-untyped-def]
        """A client that offers ALPN (every browser; some mail clients offer "imap") completes
        the handshake on an implicit-TLS listener instead of getting an internal-error alert:
        Twisted's ALPN callback finds the TLS protocol through the connection's app data."""
        tls.ensure_certificate(self.cert, self.key, ["localhost"])
        port = self._serve(tls.ServerTLS(self.cert, self.key))
        version, echo = yield deferToThread(
            self._client, port, self.cert, None, ["h2", "http/1.1", "imap"]
        )
        self.assertEqual(echo, b"ping")

    @defer.inlineCallbacks
    def test_tls11_is_refused(self):  # type: ignore[no-untyped-def]
        """RFC 8997: TLS 1.0/1.1 clients cannot negotiate."""
        tls.ensure_certificate(self.cert, self.key, ["localhost"])
        port = self._serve(tls.ServerTLS(self.cert, self.key))
        try:
            yield deferToThread(self._client, port, self.cert, stdlib_ssl.TLSVersion.TLSv1_1)
        except (stdlib_ssl.SSLError, OSError):
            pass
        else:
            self.fail("TLS 1.1 handshake succeeded")

    def test_reload_keeps_old_certificate_on_error(self) -> None:
        """A broken file at SIGHUP does not take TLS down."""
        tls.ensure_certificate(self.cert, self.key, ["localhost"])
        server = tls.ServerTLS(self.cert, self.key)
        self.assertTrue(server.reload())
        with open(self.cert, "w") as f:
            f.write("garbage")
        self.assertFalse(server.reload())
        self.assertIsNotNone(server.getContext())
        self.assertTrue(server.available)


class GroupTests(unittest.TestCase):
    """Key exchange only over the Mozilla intermediate groups X25519, P-256 and P-384."""

    def setUp(self) -> None:
        d = self.mktemp()
        os.makedirs(d)
        self.cert = os.path.join(d, "tls", "cert.pem")
        self.key = os.path.join(d, "tls", "key.pem")
        tls.ensure_certificate(self.cert, self.key, ["localhost"])
        f = protocol.Factory.forProtocol(Echo)
        port = reactor.listenTCP(
            0,
            TLSMemoryBIOFactory(tls.ServerTLS(self.cert, self.key), False, f),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def _client(self, group: str, version: stdlib_ssl.TLSVersion) -> bytes:
        ctx = stdlib_ssl.create_default_context(cafile=self.cert)
        ctx.minimum_version = ctx.maximum_version = version
        ctx.set_ecdh_curve(group)  # the client offers this one group only
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"ping")
                return s.recv(4)

    @defer.inlineCallbacks
    def test_intermediate_groups_are_accepted(self):  # type: ignore[no-untyped-def]
        """Clients offering only X25519, P-256 or P-384 connect, with TLS 1.2 and 1.3."""
        for version in (stdlib_ssl.TLSVersion.TLSv1_2, stdlib_ssl.TLSVersion.TLSv1_3):
            for group in ("X25519", "prime256v1", "secp384r1"):
                echo = yield deferToThread(self._client, group, version)
                self.assertEqual(echo, b"ping", (group, version))

    @defer.inlineCallbacks
    def test_other_groups_are_refused(self):  # type: ignore[no-untyped-def]
        """A client offering only X448 or secp521r1 cannot complete a handshake."""
        for version in (stdlib_ssl.TLSVersion.TLSv1_2, stdlib_ssl.TLSVersion.TLSv1_3):
            for group in ("X448", "secp521r1"):
                try:
                    yield deferToThread(self._client, group, version)
                except (stdlib_ssl.SSLError, OSError):
                    continue
                self.fail(f"handshake with only {group} succeeded over {version.name}")
