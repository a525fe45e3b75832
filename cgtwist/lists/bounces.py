"""Bounce attribution and the bounce counter of a subscriber.

Owns two questions: whom is this bounce for (the VERP address it came to, else the
``Final-Recipient``/``Original-Recipient`` of an RFC 3464 delivery status notification), and
what a new bounce does to a subscriber's count (a window of ``window`` seconds; ``limit``
bounces in it suspend; a suspended subscriber is removed ``remove_after`` seconds later).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from cgtwist.lists.model import Subscriber

_RECIPIENT = re.compile(
    rb"^(?:Final|Original)-Recipient:\s*rfc822\s*;\s*<?([^\s<>]+@[^\s<>]+?)>?\s*$",
    re.I | re.M,
)
_ACTION = re.compile(rb"^Action:\s*(\S+)", re.I | re.M)
_MAX_SCAN = 256 * 1024


def dsn_recipients(data: bytes) -> list[str]:
    """The failed recipients an RFC 3464 report names (its ``Action: failed`` groups), in
    order, lower-case domain; an unparsable bounce names none."""
    text = data[:_MAX_SCAN].replace(b"\r\n", b"\n")
    out: list[str] = []
    for group in re.split(rb"\n\s*\n", text):
        action = _ACTION.search(group)
        if action is None or action.group(1).lower() != b"failed":
            continue
        m = _RECIPIENT.search(group)
        if m:
            local, _at, domain = m.group(1).decode("utf-8", "replace").rpartition("@")
            addr = f"{local}@{domain.lower()}"
            if addr not in out:
                out.append(addr)
    return out


def count(sub: Subscriber, now: float, window: float, limit: int) -> Subscriber:
    """``sub`` after one more bounce at ``now``: a new window when the last one is over,
    suspended when ``limit`` bounces fall within one window."""
    if sub.state == "suspended":
        return sub
    if not sub.first_bounce or now - sub.first_bounce > window:
        sub = dataclasses.replace(sub, bounces=0, first_bounce=now)
    sub = dataclasses.replace(sub, bounces=sub.bounces + 1)
    if limit and sub.bounces >= limit:
        sub = dataclasses.replace(sub, state="suspended", suspended_at=now)
    return sub


def due_for_removal(sub: Subscriber, now: float, remove_after: float) -> bool:
    """Has ``sub`` been suspended for bounces for ``remove_after`` seconds?"""
    return (
        sub.state == "suspended"
        and bool(sub.suspended_at)
        and now - sub.suspended_at >= (remove_after)
    )


def attribute(verp: str, data: bytes) -> Optional[list[str]]:
    """The subscribers a bounce is for: the VERP one when the address named one, else the
    DSN's failed recipients; None when it names nobody (then it is only logged)."""
    if verp:
        return [verp]
    found = dsn_recipients(data)
    return found or None
