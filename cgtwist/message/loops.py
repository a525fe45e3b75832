"""Mail loops: the ``Delivered-To:`` hop markers a message carries and what they forbid.

Owns the one rule every place that sends a message on applies (the LOCAL Rules' Redirect,
Forward and Mirror; the GROUP agent's expansion): each address a message passes adds its
marker (RFC 9228 §4, as Postfix's local(8) does); an address that finds its own marker
already there refuses the message (5.4.6, RFC 3463: one DSN instead of a storm); a copy is
never sent on to an address whose marker it carries (it had the message, and would refuse it);
and the number of markers is bounded. Pure: reads and writes octets, decides nothing else.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from cgtwist.message.headers import header_block, header_fields, unfolded

# Only a header section with a line starting with the field's name is parsed for markers.
_NAMED = re.compile(rb"(?im)^delivered-to[ \t]*:")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def hops(data: bytes) -> list[str]:
    """The addresses whose marker the message carries, lower-cased, newest first, read by
    the one header parser from its header block (at most MAX_HEADER_BYTES). Every LOCAL
    delivery asks, so a header without the field's name is searched once, not parsed."""
    head = header_block(data)
    if not _NAMED.search(head):
        return []
    return [
        unfolded(value).strip("<>").lower()
        for name, value in header_fields(head)
        if name == "delivered-to"
    ]


def refusal(
    address: str, passed: Iterable[str], max_hops: Optional[int] = None, done: str = "delivered to"
) -> str:
    """The 5.4.6 reason ``address`` must not take a message that passed ``passed`` (its
    ``hops``; ``done`` names what passing it did), or "" when it may."""
    seen = [a.lower() for a in passed]
    if address.lower() in seen:
        return f"5.4.6 mail loop: already {done} {address}"
    if max_hops is not None and len(seen) > max_hops:
        return f"5.4.6 mail loop: {len(seen)} hops (more than {max_hops})"
    return ""


def never_back(targets: Iterable[str], passed: Iterable[str]) -> tuple[list[str], list[str]]:
    """``targets`` split into those the message may go on to and those it already passed
    (each such address would refuse it as a loop)."""
    had = {a.lower() for a in passed}
    kept: list[str] = []
    back: list[str] = []
    for t in targets:
        (back if t.lower() in had else kept).append(t)
    return kept, back


def nowhere_left(back: list[str]) -> str:
    """The 5.4.6 reason for a message whose every target ``never_back`` took out: sent on
    to none and kept nowhere, it fails, so the sender learns (one DSN)."""
    return f"5.4.6 mail loop: {back[0]} had this message before"


def marked(data: bytes, address: str) -> bytes:
    """``data`` with ``address``'s marker in front, in the message's own line ending and
    with control characters removed (no field can be injected through the address)."""
    nl = data.find(b"\n")
    eol = b"\n" if nl > 0 and data[nl - 1 : nl] != b"\r" else b"\r\n"
    return b"Delivered-To: " + _UNSAFE.sub("", address).encode("utf-8", "replace") + eol + data
