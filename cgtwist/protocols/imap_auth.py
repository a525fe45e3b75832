"""Login helpers for IMAP: SASL PLAIN decoding and the per-IP failed-login delay.

Owns only the arithmetic of delays and the PLAIN wire format; the protocol decides when to ask.
``LoginPenalty`` is the hook a shared, cross-protocol auth-penalty object replaces later: any
object with ``delay_for(ip)``, ``record_failure(ip, user)`` and ``record_success(ip, user)``.
"""

from __future__ import annotations

import binascii
import ipaddress
from typing import Any, Optional, Protocol

from cgtwist.settings import SettingsHolder


class IPenalty(Protocol):
    """What the protocol needs from an auth-penalty object (Dovecot anvil model, RELIABILITY a5)."""

    def delay_for(self, ip: str) -> float:
        """Seconds to hold back the reply to a failed login from ``ip``."""

    def record_failure(self, ip: str, user: str) -> None:
        """Count one failed login."""

    def record_success(self, ip: str, user: str) -> None:
        """A good login: forget the failures of this IP."""


def ip_key(ip: str) -> str:
    """IPv4 as is; IPv6 aggregated per /64 (RELIABILITY §c)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return ip


class LoginPenalty:
    """Per-IP failed-login delays: the n-th failure waits ``auth.fail_delays[n-1]`` seconds (the
    last value repeats). Repeating the same wrong user does not escalate (a misconfigured client);
    entries expire after an hour without failures. ``clock`` is any IReactorTime (``seconds``).
    """

    EXPIRE = 3600.0

    def __init__(self, settings: SettingsHolder, clock: Any) -> None:
        self.settings = settings
        self.clock = clock
        self._fails: dict[str, tuple[int, float, str]] = {}  # key -> (count, last time, last user)

    def _entry(self, ip: str) -> Optional[tuple[int, float, str]]:
        key = ip_key(ip)
        entry = self._fails.get(key)
        if entry and self.clock.seconds() - entry[1] > self.EXPIRE:
            del self._fails[key]
            return None
        return entry

    def delay_for(self, ip: str) -> float:
        entry = self._entry(ip)
        count = entry[0] if entry else 0
        delays = list(self.settings.current["auth.fail_delays"]) or [0]
        return float(delays[min(count, len(delays) - 1)])

    def record_failure(self, ip: str, user: str) -> None:
        entry = self._entry(ip)
        count, _, last_user = entry if entry else (0, 0.0, "")
        if not (entry and last_user == user):
            count += 1
        self._fails[ip_key(ip)] = (count, self.clock.seconds(), user)

    def record_success(self, ip: str, user: str) -> None:
        self._fails.pop(ip_key(ip), None)


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
