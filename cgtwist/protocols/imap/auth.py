"""Login helpers for IMAP: SASL PLAIN decoding and the interface of the auth penalty.

Owns only the PLAIN wire format and ``IPenalty``, the three methods the IMAP and POP3 servers
call; the penalty itself (delays, expiry, per-/64 counting) is
``cgtwist.checks.authpenalty.AuthPenalty``. The protocol decides when to ask.
"""

from __future__ import annotations

import binascii
from typing import Protocol


class IPenalty(Protocol):
    """What the protocol needs from an auth-penalty object (Dovecot anvil model, RELIABILITY a5)."""

    def delay_for(self, ip: str) -> float:
        """Seconds to hold back the reply to a failed login from ``ip``."""

    def record_failure(self, ip: str, user: str) -> None:
        """Count one failed login."""

    def record_success(self, ip: str, user: str) -> None:
        """A good login: forget the failures of this IP."""


class SaslError(ValueError):
    """A malformed SASL response; answered with BAD."""


def decode_plain(b64: bytes) -> tuple[bytes, bytes, bytes]:
    """RFC 4616 PLAIN: base64 of ``authzid NUL authcid NUL passwd`` -> (authzid, authcid, pw)."""
    try:
        raw = binascii.a2b_base64(b64.strip(), strict_mode=True) if b64.strip() else b""
    except (binascii.Error, ValueError):
        raise SaslError("Invalid base64") from None
    parts = raw.split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        raise SaslError("Invalid PLAIN response")
    return parts[0], parts[1], parts[2]
