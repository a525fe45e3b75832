"""Every TLS listener of a real server (SMTP STARTTLS and 465, POP3 STLS and 995, IMAP
STARTTLS and 993) negotiates only the Mozilla intermediate groups X25519, P-256 and P-384.

``openssl s_client -groups`` is the client: a user would notice a handshake failure, and an
auditor a server offering X448 or secp521r1.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.e2e.harness import Server

pytestmark = pytest.mark.e2e

# (protocol, listener tls mode, submission, s_client -starttls argument or None)
LISTENERS = [
    ("smtp", "starttls", False, "smtp"),
    ("smtp", "implicit", True, None),
    ("pop3", "starttls", False, "pop3"),
    ("pop3", "implicit", False, None),
    ("imap", "starttls", False, "imap"),
    ("imap", "implicit", False, None),
]


def handshake(
    server: Server, proto: str, tls: str, submission: bool, starttls: str | None, group: str
) -> tuple[bool, str]:
    """(handshake completed, s_client output) for a client offering only ``group``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not installed")
    port = server.port(proto, tls=tls, submission=submission)
    argv = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-groups", group, "-brief"]
    if starttls:
        argv += ["-starttls", starttls]
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    text = (out.stdout + out.stderr).decode("utf-8", "replace")
    return "CONNECTION ESTABLISHED" in text, text


@pytest.mark.parametrize("proto,tls,submission,starttls", LISTENERS)
def test_x25519_is_accepted(
    server: Server, proto: str, tls: str, submission: bool, starttls: str | None
) -> None:
    """A client offering X25519 (or P-256, P-384) completes the handshake."""
    for group in ("X25519", "P-256", "P-384"):
        ok, text = handshake(server, proto, tls, submission, starttls, group)
        assert ok, f"{proto}/{tls} refused {group}:\n{text}"


@pytest.mark.parametrize("proto,tls,submission,starttls", LISTENERS)
def test_x448_and_p521_are_refused(
    server: Server, proto: str, tls: str, submission: bool, starttls: str | None
) -> None:
    """A client offering only X448 or secp521r1 gets no TLS session."""
    for group in ("X448", "P-521"):
        ok, text = handshake(server, proto, tls, submission, starttls, group)
        assert not ok, f"{proto}/{tls} accepted {group}:\n{text}"
