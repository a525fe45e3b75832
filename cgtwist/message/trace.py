"""Build the ``Received:`` trace header we prepend to every accepted message (RFC 5321 §4.4).

Pure: formats text only. Nothing the client sent (HELO name, recipient) can reach the header
unfiltered: every client-supplied token is reduced to printable ASCII without CR, LF, parentheses,
quotes, backslash or ';', and capped in length, so it can neither start a new header line nor
close the comment or the date clause. Long headers are folded at clause boundaries.
"""

from __future__ import annotations

import re
import time
from typing import Optional, Sequence

MAX_TOKEN = 255  # a HELO name or address longer than a domain name is truncated
# Everything but printable ASCII (33..126) without comment and clause delimiters.
_UNSAFE_RE = re.compile(r"[^!#-\'*-:=?-Z\^-~]")
_FOLD = b"\r\n\t"


def sanitize(text: str, limit: int = MAX_TOKEN) -> str:
    """Printable ASCII only: controls, spaces, non-ASCII and comment/clause delimiters -> '?'.
    (One regular-expression pass: this runs for half a dozen tokens of every message.)"""
    return _UNSAFE_RE.sub("?", text[:limit])


def rfc5322_date(when: float) -> str:
    """``Sun, 29 Nov 2026 09:00:00 +0000`` (RFC 5322 §3.3), always in UTC."""
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))


def with_protocol(esmtp: bool, tls: bool, authenticated: bool) -> str:
    """RFC 3848 protocol type: SMTP, ESMTP, ESMTPA, ESMTPS, ESMTPSA."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def received_header(
    *,
    helo: str,
    peer_ip: str,
    hostname: str,
    protocol: str,
    msg_id: str,
    when: float,
    recipients: Sequence[str] = (),
    tls_version: Optional[str] = None,
    reverse_name: Optional[str] = None,
) -> bytes:
    """Return the complete ``Received:`` header, folded, ending with CRLF.

    ``for <rcpt>`` is written only for a single recipient, so one copy never discloses the other
    recipients (as Postfix does). ``tls_version`` goes into a comment beside the protocol.
    """
    helo_s = sanitize(helo) or "unknown"
    ip = sanitize(peer_ip, 64)
    if ":" in ip:
        ip = "IPv6:" + ip  # RFC 5321 §4.1.3 IPv6-address-literal
    tcp_info = f"[{ip}]" if not reverse_name else f"{sanitize(reverse_name)} [{ip}]"
    lines = [f"Received: from {helo_s} ({tcp_info})"]
    lines.append(f"by {sanitize(hostname)} (cgtwist) with {sanitize(protocol, 16)}")
    if tls_version:
        lines[-1] += f" ({sanitize(tls_version, 32)})"
    lines.append(f"id {sanitize(msg_id, 64)}")
    if len(recipients) == 1:
        lines[-1] += f" for <{sanitize(recipients[0], 320)}>"
    lines[-1] += ";"
    lines.append(rfc5322_date(when))
    return _FOLD.join(x.encode("ascii") for x in lines) + b"\r\n"


def safe_header_line(line: bytes) -> Optional[bytes]:
    """Return ``line`` + CRLF if it is one header line (``Name: value``) with no CR, LF or NUL.

    Used for trace lines that other components (SPF, Authentication-Results) hand us: a line
    that could inject another header is refused (None) rather than repaired.
    """
    if not line or b"\r" in line or b"\n" in line or b"\0" in line:
        return None
    name, colon, _ = line.partition(b":")
    if not colon or not name or any(not 33 <= c <= 126 for c in name):
        return None
    return line + b"\r\n"
