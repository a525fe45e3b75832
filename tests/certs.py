"""Throw-away self-signed certificates for tests that run TLS on loopback (helpers only).

One EC P-256 key and certificate per name and process (fast to make, made once), valid for
the name and 127.0.0.1, usable as its own trust anchor (CA: a client may verify against it).
Handed out as PEM, as a Twisted context factory, or as files for ``[tls]`` settings.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl

_CERT: dict[str, tuple[bytes, bytes]] = {}


def self_signed(name: str = "localhost") -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for ``name`` and 127.0.0.1."""
    if name not in _CERT:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        san = [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        _CERT[name] = (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return _CERT[name]


def server_tls(name: str = "localhost") -> ssl.CertificateOptions:
    """A server context factory for ``name``'s certificate, TLS 1.2 at least."""
    cert, key = self_signed(name)
    pc = ssl.PrivateCertificate.loadPEM(cert + key)
    return ssl.CertificateOptions(
        privateKey=pc.privateKey.original,
        certificate=pc.original,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def write_pem(directory: str, name: str = "localhost") -> tuple[str, str]:
    """``cert.pem`` and ``key.pem`` for ``name`` in ``directory`` (made if missing); their paths."""
    cert, key = self_signed(name)
    os.makedirs(directory, exist_ok=True)
    paths = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    for path, data in zip(paths, (cert, key), strict=True):
        with open(path, "wb") as f:
            f.write(data)
    return paths
