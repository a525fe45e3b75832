"""The addresses of a list and VERP: which role a recipient address plays for list ``name``.

A list ``name@domain`` answers, like CommuniGate and the usual list servers, at:
``name`` (a post), ``name-on`` and ``name-off`` (subscribe, unsubscribe), ``name-request``
(commands in the subject or body: subscribe, unsubscribe, confirm, approve, reject, help),
``name-owner`` (the owner), and ``name-bounce`` or ``name-bounce+local=domain`` (bounces: the
envelope sender of a copy; the VERP form names the subscriber the bounce is for).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

POST, ON, OFF, REQUEST, OWNER, BOUNCE = "post", "on", "off", "request", "owner", "bounce"
_SUFFIXES = {"-on": ON, "-off": OFF, "-request": REQUEST, "-owner": OWNER, "-bounce": BOUNCE}


@dataclass(frozen=True)
class Role:
    """What an address of a list is for: ``role`` of list ``name``, ``arg`` (VERP subscriber)."""

    name: str
    role: str
    arg: str = ""


def candidates(local: str) -> list[Role]:
    """Every reading of a local part, the list's own name first: ``dev-on`` is the list
    ``dev-on`` if there is one, else the subscribe address of ``dev``."""
    low = local.lower()
    out = [Role(low, POST)]
    base, plus, arg = low.partition("+")
    if plus and base.endswith("-bounce") and len(base) > len("-bounce"):
        out.append(Role(base[: -len("-bounce")], BOUNCE, verp_decode(arg) or ""))
        return out
    for suffix, role in _SUFFIXES.items():
        if low.endswith(suffix) and len(low) > len(suffix):
            out.append(Role(low[: -len(suffix)], role))
    return out


def role_of(address: str, list_address: str) -> Role:
    """The role of recipient ``address`` for the list ``list_address`` (its router result)."""
    name, _at, _domain = list_address.lower().rpartition("@")
    local = address.rpartition("@")[0].lower()
    for r in candidates(local):
        if r.name == name:
            return r
    return Role(name, POST)


def role_address(list_address: str, role: str) -> str:
    """``dev@example.com``, "on" -> ``dev-on@example.com`` (POST: the list itself)."""
    name, _at, domain = list_address.rpartition("@")
    return list_address if role == POST else f"{name}-{role}@{domain}"


def verp_encode(subscriber: str) -> str:
    """``bob@example.org`` -> ``bob=example.org`` (the VERP convention of qmail and Postfix)."""
    local, _at, domain = subscriber.rpartition("@")
    return f"{local}={domain}"


def verp_decode(arg: str) -> Optional[str]:
    """``bob=example.org`` -> ``bob@example.org``; None when ``arg`` is not of that form."""
    local, eq, domain = arg.rpartition("=")
    if not eq or not local or not domain or "." not in domain:
        return None
    return f"{local}@{domain}"


def bounce_address(list_address: str, subscriber: Optional[str] = None) -> str:
    """The envelope sender of a copy: ``name-bounce@domain``, with a VERP subscriber
    ``name-bounce+bob=example.org@domain`` when the copy is for one subscriber."""
    name, _at, domain = list_address.rpartition("@")
    if subscriber:
        return f"{name}-bounce+{verp_encode(subscriber)}@{domain}"
    return f"{name}-bounce@{domain}"
