"""TLS for every listener: the self-signed bootstrap certificate, Mozilla "intermediate" server
options, reload on SIGHUP, and client options for outbound connections.

Owns certificate files and OpenSSL contexts; knows nothing about mail protocols. Protocols get
a ``ServerTLS`` object whose ``getContext()`` always answers with the current certificate, so a
reload applies to the next handshake without rebinding any socket (RELIABILITY.md §c).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Callable, Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL._util import lib as _ossl  # the cffi binding; see _IntermediateOptions
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IAcceptableCiphers,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolNegotiationFactory,
)
from zope.interface import implementer

from cgtwist.logs import Logger

log = Logger()

# Mozilla server-side TLS "intermediate" profile (v5): TLS 1.2 suites; TLS 1.3 suites are
# OpenSSL's defaults, which are exactly the intermediate list.
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    ]
)
# Key-exchange groups of the same profile, for TLS 1.2 ECDHE and TLS 1.3 alike. OpenSSL's
# default list also offers X448, secp521r1 and the FFDHE groups; a client limited to those is
# refused (handshake failure), as by a server configured per Mozilla.
INTERMEDIATE_GROUPS = "X25519:P-256:P-384"


def generate_self_signed(
    cert_path: str, key_path: str, names: Iterable[str], days: int = 825
) -> None:
    """Write a self-signed RSA-2048 certificate whose SANs are ``names`` (and 127.0.0.1, ::1).

    The key is written with mode 0600 before any data goes into it.
    """
    uniq = []
    for n in names:
        n = n.strip().lower()
        if n and n not in uniq:
            uniq.append(n)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, uniq[0] if uniq else "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in uniq]
    san += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    for p in (cert_path, key_path):
        os.makedirs(os.path.dirname(p), mode=0o700, exist_ok=True)
    fd = os.open(key_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        f.flush()
        os.fsync(f.fileno())
    with open(cert_path + ".tmp", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        f.flush()
        os.fsync(f.fileno())
    os.replace(key_path + ".tmp", key_path)
    os.replace(cert_path + ".tmp", cert_path)


def ensure_certificate(cert_path: str, key_path: str, names: Iterable[str]) -> bool:
    """Generate the bootstrap certificate when missing; True when one was generated."""
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return False
    generate_self_signed(cert_path, key_path, names)
    log.info(
        "generated self-signed TLS certificate {path} for {names}",
        path=cert_path,
        names=",".join(names),
    )
    return True


class _IntermediateOptions(ssl.CertificateOptions):
    """CertificateOptions whose contexts offer only ``INTERMEDIATE_GROUPS``.

    Twisted has no option for the group list (it leaves OpenSSL's default), and pyOpenSSL
    exposes only ``set_tmp_ecdh`` (one curve); ``SSL_CTX_set1_curves_list`` is the same call
    as ``SSL_CTX_set1_groups_list`` in OpenSSL 1.1.1+, so the binding's name for it is used.
    """

    def _makeContext(self, skipCiphers: bool = False) -> SSL.Context:
        ctx = super()._makeContext(skipCiphers)
        if not _ossl.SSL_CTX_set1_curves_list(ctx._context, INTERMEDIATE_GROUPS.encode()):
            raise SSL.Error(f"OpenSSL refused the group list {INTERMEDIATE_GROUPS}")
        ctx.set_alpn_select_callback(_alpn_select)  # in place of Twisted's (see there)
        return ctx


def _alpn_select(
    connection: SSL.Connection, offered: list[bytes]
) -> bytes | SSL._NoOverlappingProtocols:
    """Choose the first protocol the listener's factory speaks among those the client offers
    (RFC 7301 §3.2); with none in common (a mail protocol has no ALPN name to offer) go on
    without ALPN. Twisted's own callback answers b"" then, which pyOpenSSL 24+ turns into
    an internal-error alert: every browser and some IMAP clients offer ALPN."""
    tls_protocol = connection.get_app_data()
    wrapped = getattr(getattr(tls_protocol, "factory", None), "wrappedFactory", None)
    negotiation = IProtocolNegotiationFactory(wrapped, None)
    ours = list(negotiation.acceptableProtocols()) if negotiation is not None else []
    for name in ours:
        if name in offered:
            return name
    return SSL.NO_OVERLAPPING_PROTOCOLS


# Typed doorways (as in cgtwist.typedtwisted) to the two Twisted constructors used below,
# which Twisted leaves unannotated.
_load_private_certificate: Callable[[bytes], ssl.PrivateCertificate] = (
    ssl.PrivateCertificate.loadPEM
)
_ciphers: Callable[[str], IAcceptableCiphers] = ssl.AcceptableCiphers.fromOpenSSLCipherString


def server_options(cert_path: str, key_path: str) -> ssl.CertificateOptions:
    """CertificateOptions for the Mozilla intermediate profile: TLS 1.2+, groups X25519, P-256
    and P-384 only, no compression, no renegotiation (OpenSSL 3 default), client cipher order,
    session tickets off."""
    with open(cert_path, "rb") as f:
        cert_pem = f.read()
    with open(key_path, "rb") as f:
        key_pem = f.read()
    cert = _load_private_certificate(cert_pem + b"\n" + key_pem)
    chain = []
    # Extra certificates after the first in the file form the chain (Let's Encrypt fullchain.pem).
    pems = cert_pem.split(b"-----END CERTIFICATE-----")
    for extra in pems[1:]:
        if b"-----BEGIN CERTIFICATE-----" in extra:
            chain.append(ssl.Certificate.loadPEM(extra + b"-----END CERTIFICATE-----\n").original)
    return _IntermediateOptions(
        privateKey=cert.privateKey.original,
        certificate=cert.original,
        extraCertChain=chain or None,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableCiphers=_ciphers(INTERMEDIATE_CIPHERS),
        enableSessionTickets=False,
    )


class _ClosingConnection(SSL.Connection):
    """A server connection whose close does not wait for the client's close_notify.

    Twisted's TLS layer closes the TCP connection only once ``shutdown()`` reports both
    close_notify alerts exchanged; a client that reads ours as end-of-file and never answers
    (Python's ``ssl``, many mail clients, a phone gone to sleep) kept the connection open for
    ever after the server's goodbye: a descriptor and a per-IP slot held, and a session that
    WebUser ended held up the next SIGTERM for ``server.shutdown_grace`` seconds. RFC 8446
    §6.1 (and RFC 5246 §7.2.1) let the side that closes go without waiting for the answer,
    so once our close_notify is sent the shutdown counts as done and the TCP close follows
    it (after the pending output, as over plain TCP)."""

    def shutdown(self) -> bool:
        super().shutdown()
        return True


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The current server context; ``reload()`` re-reads the files (on SIGHUP).

    Usable both as the ``contextFactory`` for ``transport.startTLS`` and for
    TLSMemoryBIOFactory, because it answers ``getContext()`` with the current context.
    """

    def __init__(self, cert_path: str, key_path: str) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self._options: Optional[ssl.CertificateOptions] = None

    def load(self) -> None:
        self._options = server_options(self.cert_path, self.key_path)

    def reload(self) -> bool:
        """Re-read certificate and key; on error keep the old ones and log why."""
        try:
            self.load()
        except Exception as e:
            log.error("TLS reload failed, keeping the previous certificate: {err}", err=str(e))
            return False
        log.info("TLS certificate reloaded from {path}", path=self.cert_path)
        return True

    @property
    def available(self) -> bool:
        if self._options is None:
            try:
                self.load()
            except Exception as e:
                log.error("TLS unavailable: {err}", err=str(e))
                return False
        return True

    def getContext(self) -> SSL.Context:
        if self._options is None:
            self.load()
        assert self._options is not None
        return self._options.getContext()

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """IOpenSSLServerConnectionCreator: a connection on the current context.

        Its app data is the TLS protocol, as Twisted's own creators set it: the ALPN callback
        Twisted installs on every context looks the protocol up there, and without it any
        client offering ALPN (browsers, some IMAP clients) got an internal-error alert. Its
        close does not wait for the client's close_notify (``_ClosingConnection``)."""
        connection = _ClosingConnection(self.getContext(), None)
        connection.set_app_data(tlsProtocol)
        return connection

    def __call__(self) -> Optional[ServerTLS]:
        """Protocol factories take a ``tls`` callable returning a context factory or None."""
        return self if self.available else None


def client_options(
    hostname: str, verify: bool, ca_file: Optional[str] = None
) -> IOpenSSLClientConnectionCreator:
    """Outbound TLS with our floor (TLS 1.2), never Twisted's legacy default (twisted #7770).

    ``verify`` False is opportunistic STARTTLS to an MX (RFC 3207 practice): encrypted, not
    authenticated. ``verify`` True checks the certificate and ``hostname`` with service-identity.
    """
    if verify:
        trust = ssl.Certificate.loadPEM(open(ca_file, "rb").read()) if ca_file else None
        return ssl.optionsForClientTLS(
            hostname,
            trustRoot=trust,
            extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
        )
    return _UnverifiedClientTLS(hostname)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientTLS:
    """IOpenSSLClientConnectionCreator that encrypts without verifying (opportunistic TLS)."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        self._options = ssl.CertificateOptions(raiseMinimumTo=ssl.TLSVersion.TLSv1_2, verify=False)

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        ctx = self._options.getContext()
        conn = SSL.Connection(ctx, None)
        try:
            conn.set_tlsext_host_name(self._hostname.encode("idna"))
        except Exception:
            pass
        conn.set_connect_state()
        return conn

    def getContext(self) -> SSL.Context:
        return self._options.getContext()
