"""Signed tokens: a confirmation, a moderation decision or a one-click unsubscribe, by mail
or by the web service, without keeping the pending request anywhere but in the token.

A token is ``action.expiry.payload.signature`` in URL-safe text: HMAC-SHA256 over the action,
list, address (or held message id) and expiry with the server's secret (``<base>/lists.secret``,
0600), so nobody without the secret can subscribe someone else, unsubscribe them or approve a
post. ``check`` is the one verifier, pure, for the LIST agent and a web handler alike
(RFC 8058 one-click: ``unsubscribe_url`` and ``check(..., action="unsubscribe")``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

ACTIONS = ("subscribe", "unsubscribe", "approve", "reject")
_SIG_BYTES = 16  # 128 bits of HMAC-SHA256: forging one is out of reach


@dataclass(frozen=True)
class Token:
    action: str
    list_address: str
    subject: str  # the subscriber address, or the held message's id
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, action: str, list_address: str, subject: str, expires: int) -> bytes:
    msg = "\0".join((action, list_address.lower(), subject, str(expires))).encode("utf-8")
    return hmac.new(secret, msg, hashlib.sha256).digest()[:_SIG_BYTES]


def make(secret: bytes, action: str, list_address: str, subject: str, expires: int) -> str:
    """A token allowing ``action`` on ``subject`` of ``list_address`` until ``expires``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown token action {action!r}")
    payload = _b64(subject.encode("utf-8"))
    sig = _b64(_mac(secret, action, list_address, subject, expires))
    return f"{action}.{expires}.{payload}.{sig}"


def check(
    secret: bytes, text: str, list_address: str, now: float, action: Optional[str] = None
) -> Optional[Token]:
    """The Token if ``text`` is a valid, unexpired token of ``list_address`` (and of
    ``action`` when given); None for anything else: malformed, forged, expired, another list."""
    parts = text.strip().split(".")
    if len(parts) != 4 or len(text) > 1000:
        return None
    act, exp, payload, sig = parts
    if act not in ACTIONS or (action is not None and act != action) or not exp.isdigit():
        return None
    try:
        subject = _unb64(payload).decode("utf-8")
        given = _unb64(sig)
    except (ValueError, UnicodeDecodeError):
        return None
    expires = int(exp)
    if not hmac.compare_digest(given, _mac(secret, act, list_address, subject, expires)):
        return None
    if expires < now:
        return None
    return Token(act, list_address.lower(), subject, expires)


def find(secret: bytes, text: str, list_address: str, now: float) -> Optional[Token]:
    """The first valid token among the words of ``text`` (a subject or a body line)."""
    for word in text.replace("<", " ").replace(">", " ").split()[:200]:
        if word.count(".") == 3:
            tok = check(secret, word.strip(".,;:()[]"), list_address, now)
            if tok is not None:
                return tok
    return None


def unsubscribe_url(base_url: str, list_address: str, token: str) -> str:
    """RFC 8058 one-click URL for ``token`` under the web service's ``base_url``."""
    return f"{base_url.rstrip('/')}/lists/unsubscribe?list={quote(list_address)}&token={token}"
