"""The Router's address analysis: split, normalise and check an address (COMMUNIGATE.md a.1).

Pure: no I/O, no twisted. Shared by the table parser (cgtwist.router_table) and the resolver
(cgtwist.router), which re-exports these names; the ERROR route texts live here too.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Iterator, Optional

PIPE_DOMAIN = "pipe"

# The error texts of ERROR routes: RFC 3463 enhanced code, then generic text.
LOOP = "5.4.6 routing loop detected"
UNKNOWN_USER = "5.1.1 unknown user"
REJECTED = "5.1.1 address rejected"
BAD_SYNTAX = "5.1.3 bad address syntax"
BAD_DOMAIN = "5.1.2 bad destination domain"
BAD_PROGRAM = "5.1.3 invalid PIPE program name"
NOT_LOCAL = "5.7.8 not a local account"

_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SPACE_RE = re.compile(r"\s")  # str.isspace's characters
# LDH labels (RFC 1035 §2.3.1) plus "_", which real host names carry and cgtwist.address accepts.
_LABEL_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# Longest address analysed: RFC 5321 §4.5.3.1.3 allows 256 octets in a path; login names and
# rewritten addresses get some room, attacker-sized strings none.
MAX_ADDRESS = 1024


def _lower(text: str) -> str:
    """ASCII-only lower-casing: keeps the length, so wildcard offsets stay valid."""
    return text.translate(_ASCII_LOWER)


class AddressError(ValueError):
    """An address the Router cannot analyse; ``status`` is the ERROR route text to use."""

    def __init__(self, reason: str, status: str = BAD_SYNTAX) -> None:
        super().__init__(reason)
        self.status = status


# --- address analysis (COMMUNIGATE.md a.1) -------------------------------------------------


def _scan(text: str) -> Iterator[tuple[int, str]]:
    """Yield (index, char) of the characters outside double quotes (RFC 5321 §4.1.2)."""
    quoted = escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif not quoted:
            yield i, c
    if quoted or escaped:
        raise AddressError("unbalanced quotes")


def _unquote(local: str) -> str:
    """``"a b"`` -> ``a b`` (quoted-pairs undone); other strings unchanged."""
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def normalize_domain(domain: str) -> str:
    """Lower-case, strip one trailing dot, IDNA-encode, check LDH syntax or an IP literal."""
    d = _lower(domain.strip())
    d = d[:-1] if d.endswith(".") and not d.startswith("[") else d
    if d.startswith("[") and d.endswith("]"):  # RFC 5321 §4.1.3 address literals
        inner = d[1:-1]
        try:
            if inner.startswith("ipv6:"):
                return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
            return f"[{ipaddress.IPv4Address(inner)}]"
        except ValueError:
            raise AddressError(f"bad address literal {domain!r}", BAD_DOMAIN) from None
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:
            raise AddressError(f"bad domain {domain!r}", BAD_DOMAIN) from None
    if not _LABEL_RE.match(d):
        raise AddressError(f"bad domain {domain!r}", BAD_DOMAIN)
    return d


def split_address(text: str) -> tuple[str, str]:
    """Split an address into (local, domain), the domain being the next hop.

    Accepts ``local@domain``, the source route ``<@zzzz,@www:xxxx@yyyyy>``, the UUCP path
    ``zzzz!yyyyy!xxxx``, and ``xxxx%yyyyy`` with no ``@``. A complex local part is returned in
    the canonical ``%`` form: ``xxxx%yyyyy@zzzz`` gives ("xxxx%yyyyy", "zzzz"). No domain at all
    gives ("name", ""). Raises AddressError on syntax the Router cannot route.
    """
    s = text.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1].strip()
    if not s:
        raise AddressError("empty address")
    if len(s) > MAX_ADDRESS:
        raise AddressError("address too long")
    if _CONTROL_RE.search(s):
        raise AddressError("control character in address")
    if '"' not in s and s.count("@") == 1 and not s.startswith("@") and not _SPACE_RE.search(s):
        # A plain local@domain (nothing quoted, no source route), found in C: what the scan
        # below gives it, at a tenth of the cost, for each of a list's 10,000 subscribers.
        local, _at, domain = s.partition("@")
        if not local or not domain:
            raise AddressError("empty local part or domain")
        return local, normalize_domain(domain)
    plain = list(_scan(s))  # also checks the quotes
    if any(c.isspace() for _i, c in plain):
        raise AddressError("white space in address")
    if s.startswith("@"):  # RFC 5321 §4.1.2 A-d-l, §C: source routes are flattened with "%"
        colon = next((i for i, c in plain if c == ":"), -1)
        if colon < 0:
            raise AddressError("source route without ':'")
        hops = s[:colon].split(",")
        if any(len(h) < 2 or not h.startswith("@") for h in hops):
            raise AddressError("bad source route")
        local, domain = split_address(s[colon + 1 :])
        if not domain:
            raise AddressError("source route to an address without domain")
        tail = "".join("%" + h[1:] for h in reversed(hops[1:]))
        return f"{local}%{domain}{tail}", normalize_domain(hops[0][1:])
    ats = [i for i, c in plain if c == "@"]
    if ats:
        local, domain = s[: ats[-1]], s[ats[-1] + 1 :]
        if not local or not domain:
            raise AddressError("empty local part or domain")
        if len(ats) > 1:  # a@b@c: the canonical complex local part is a%b
            chars = list(local)
            for i in ats[:-1]:
                chars[i] = "%"
            local = "".join(chars)
        return local, normalize_domain(domain)
    pct = [i for i, c in plain if c == "%"]
    if pct:
        local, domain = s[: pct[-1]], s[pct[-1] + 1 :]
        if not local or not domain:
            raise AddressError("empty local part or domain")
        return local, normalize_domain(domain)
    bangs = [i for i, c in plain if c == "!"]
    if bangs:
        cuts = [-1, *bangs, len(s)]
        parts = [s[a + 1 : b] for a, b in zip(cuts, cuts[1:], strict=False)]
        if not all(parts):
            raise AddressError("empty element in '!' path")
        hosts, user = parts[:-1], parts[-1]
        return user + "".join("%" + h for h in reversed(hosts[1:])), normalize_domain(hosts[0])
    return s, ""


def _complex_inner(local: str) -> Optional[str]:
    """The address inside a complex local part (``user%other.dom``), or None for a plain name."""
    inner = _unquote(local)
    try:
        _l, domain = split_address(inner)
    except AddressError:
        return None
    return inner if domain else None


def pipe_command(address: str) -> list[str]:
    """The program and arguments of a ``"prog args"@pipe`` address; ValueError if unsafe.

    PIPE name rules (COMMUNIGATE.md a.5): no ``/`` or ``\\`` and no leading ``.``; never a shell.
    """
    local, _domain = split_address(address)
    command = _unquote(local)
    if "/" in command or "\\" in command or command.startswith("."):
        raise ValueError(f"program name may not contain / or \\ or start with '.': {command!r}")
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise ValueError(f"bad PIPE command {command!r}: {e}") from None
    if not argv or argv[0].startswith("."):
        raise ValueError(f"bad PIPE command {command!r}")
    return argv
