"""SHA512-CRYPT (``$6$``), verification only: passwords imported from Dovecot or /etc/shadow.

Pure: Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" algorithm, because Python's
``crypt`` module is gone in 3.13 (PEP 594). cgtwist never creates such hashes; a successful login
replaces one with argon2id (RELIABILITY.md b-G 41). Accepts Dovecot's ``{SHA512-CRYPT}`` prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Optional, Union

PREFIX = "{SHA512-CRYPT}"
_B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HASH_RE = re.compile(r"^\$6\$(?:rounds=(\d{1,9})\$)?([^$]{0,16})\$([./0-9A-Za-z]{86})$")
_ROUNDS_DEFAULT = 5000
_ROUNDS_MIN = 1000
_ROUNDS_MAX = 999_999_999
# Byte order of the final encoding (glibc sha512-crypt.c).
_PERMUTATION = [
    (0, 21, 42),
    (22, 43, 1),
    (44, 2, 23),
    (3, 24, 45),
    (25, 46, 4),
    (47, 5, 26),
    (6, 27, 48),
    (28, 49, 7),
    (50, 8, 29),
    (9, 30, 51),
    (31, 52, 10),
    (53, 11, 32),
    (12, 33, 54),
    (34, 55, 13),
    (56, 14, 35),
    (15, 36, 57),
    (37, 58, 16),
    (59, 17, 38),
    (18, 39, 60),
    (40, 61, 19),
    (62, 20, 41),
]


def _strip(stored: str) -> str:
    return stored[len(PREFIX) :] if stored.upper().startswith(PREFIX) else stored


def is_sha512_crypt(stored: str) -> bool:
    """True for a well-formed ``$6$`` hash (with or without the Dovecot prefix)."""
    return _HASH_RE.match(_strip(stored)) is not None


def _b64(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_B64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password: bytes, salt: str, rounds: Optional[int] = None) -> str:
    """The ``$6$`` string for ``password`` with ``salt`` (at most 16 characters used)."""
    custom = rounds is not None
    n = min(max(rounds if rounds is not None else _ROUNDS_DEFAULT, _ROUNDS_MIN), _ROUNDS_MAX)
    salt = salt[:16]
    s = salt.encode()
    plen = len(password)
    b = hashlib.sha512(password + s + password).digest()
    a = hashlib.sha512(password + s)
    a.update(_repeat(b, plen))
    i = plen
    while i > 0:
        a.update(b if i & 1 else password)
        i >>= 1
    c = a.digest()
    p = _repeat(hashlib.sha512(password * plen).digest(), plen)
    ds = hashlib.sha512(s * (16 + c[0])).digest()
    sb = _repeat(ds, len(s))
    for r in range(n):
        h = hashlib.sha512(p if r & 1 else c)
        if r % 3:
            h.update(sb)
        if r % 7:
            h.update(p)
        h.update(c if r & 1 else p)
        c = h.digest()
    encoded = "".join(_b64(c[x], c[y], c[z], 4) for x, y, z in _PERMUTATION) + _b64(0, 0, c[63], 2)
    head = f"$6$rounds={n}$" if custom else "$6$"
    return f"{head}{salt}${encoded}"


def verify(stored: str, password: Union[str, bytes]) -> bool:
    """True when ``password`` matches the ``$6$`` hash ``stored`` (constant-time compare)."""
    m = _HASH_RE.match(_strip(stored))
    if not m:
        return False
    pw = password.encode("utf-8") if isinstance(password, str) else password
    rounds = int(m.group(1)) if m.group(1) else None
    computed = sha512_crypt(pw, m.group(2), rounds)
    return hmac.compare_digest(computed.encode(), _strip(stored).encode())
