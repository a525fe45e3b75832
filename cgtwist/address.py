"""RFC 5321 path parser: MAIL FROM / RCPT TO arguments into a ParsedPath, in linear time.

Pure: no I/O, no twisted.internet, no regular expressions over attacker input. Length caps are
checked before any parsing (RFC 5321 §4.5.3.1.1-3: local part 64, domain 255, path 256). Every
rejection is a ``MailError``; nothing else escapes, whatever the input.

Source routes (``@a,@b:user@c``) are kept so the Router can apply CommuniGate's semantics
(COMMUNIGATE.md a.1): ``router_address`` spells them in the canonical ``user%c%b@a`` form.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

from cgtwist.errors import MailError
from cgtwist.types import Address

MAX_LOCAL = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3
MAX_PARAMS = 1024  # our own cap on the parameter text after the path
MAX_ENVID = 100  # RFC 3461 §4.4

# RFC 5322 §3.2.3 atext
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_KEYWORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")

MAIL_PARAMS = frozenset({"SIZE", "BODY", "RET", "ENVID", "AUTH"})
RCPT_PARAMS = frozenset({"NOTIFY", "ORCPT"})


@dataclass(frozen=True)
class ParsedPath:
    """A parsed reverse- or forward-path with its ESMTP parameters.

    ``mailbox`` is None for the null path ``<>``. ``route`` holds the source-route domains in
    order (next hop first). ``params`` maps upper-cased keywords to values ("" for a bare
    keyword); values of SIZE/BODY/RET/NOTIFY are upper-cased and validated.
    """

    mailbox: Optional[Address]
    route: tuple[str, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def null(self) -> bool:
        return self.mailbox is None

    @property
    def address(self) -> str:
        """The final mailbox in RFC 5321 form (local part quoted when needed); "" for ``<>``."""
        if self.mailbox is None:
            return ""
        return format_mailbox(self.mailbox.local, self.mailbox.domain)

    @property
    def router_address(self) -> str:
        """The address as the Router must see it: source routes become ``user%c%b@a``."""
        if self.mailbox is None:
            return ""
        if not self.route:
            return self.address
        local = quote_local(self.mailbox.local)
        hops = [self.mailbox.domain, *reversed(self.route[1:])]
        return "%".join([local, *hops]) + "@" + self.route[0]


def quote_local(local: str) -> str:
    """Return ``local`` as a Dot-string when it is one, else as an RFC 5321 Quoted-string."""
    if _is_dot_string(local):
        return local
    out = ['"']
    for ch in local:
        if ch in '"\\':
            out.append("\\")
        out.append(ch)
    out.append('"')
    return "".join(out)


def format_mailbox(local: str, domain: str) -> str:
    return f"{quote_local(local)}@{domain}" if domain else quote_local(local)


def _is_dot_string(s: str) -> bool:
    if not s or s[0] == "." or s[-1] == ".":
        return False
    prev = ""
    for ch in s:
        if ch == ".":
            if prev == ".":
                return False
        elif ch not in _ATEXT:
            return False
        prev = ch
    return True


def _syntax(kind: str, text: str) -> MailError:
    # RFC 3463: X.1.7 bad sender address syntax, X.1.3 bad destination address syntax.
    return MailError(501, "5.1.7" if kind == "mail" else "5.1.3", text)


def parse_path(text: Union[str, bytes], kind: str = "rcpt") -> ParsedPath:
    """Parse the argument of ``MAIL FROM:`` (kind "mail") or ``RCPT TO:`` (kind "rcpt").

    ``text`` is everything after the colon: ``<path> [SP params]``. Accepts ``<>`` only for
    MAIL, the bare ``<postmaster>`` only for RCPT (RFC 5321 §4.1.1.3), a path without angle
    brackets (tolerated as Postfix does), quoted local parts, address literals, source routes,
    one trailing dot on the domain. Raises MailError (501/553/555) on anything else.
    """
    if kind not in ("mail", "rcpt"):
        raise ValueError(f"kind must be 'mail' or 'rcpt', not {kind!r}")
    if isinstance(text, bytes):
        if len(text) > MAX_PATH + MAX_PARAMS + 16:
            raise _syntax(kind, "Path too long")
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            # No SMTPUTF8 advertised: RFC 6531 §3.5 reply for non-ASCII without it.
            raise MailError(553, "5.6.7", "Non-ASCII address requires SMTPUTF8") from None
    elif any(ord(c) > 126 for c in text[: MAX_PATH + MAX_PARAMS + 16]):
        raise MailError(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
    if len(text) > MAX_PATH + MAX_PARAMS + 16:
        raise _syntax(kind, "Path too long")
    text = text.lstrip(" ")
    if not text:
        raise _syntax(kind, "Syntax: missing address")
    if text[0] == "<":
        end = text.find(">")
        if end < 0:
            raise _syntax(kind, "Syntax: missing '>'")
        # A '>' inside a quoted local part would end the path early: find the real end.
        if '"' in text[:end]:
            end = _find_close(text, kind)
        path = text[1:end]
        rest = text[end + 1 :]
        if len(path) + 2 > MAX_PATH:
            raise _syntax(kind, "Path too long")
    else:
        sp = text.find(" ")
        path, rest = (text, "") if sp < 0 else (text[:sp], text[sp:])
        if len(path) > MAX_PATH:
            raise _syntax(kind, "Path too long")
    if rest and rest[0] != " ":
        raise _syntax(kind, "Syntax: junk after the address")
    params = parse_params(rest, kind)
    if path == "":
        if kind == "mail":
            return ParsedPath(None, (), params)
        raise _syntax(kind, "Syntax: empty recipient")
    route, mailbox = _parse_path_body(path, kind)
    return ParsedPath(mailbox, route, params)


def _find_close(text: str, kind: str) -> int:
    """Index of the '>' closing a path that starts with '<', skipping quoted strings."""
    quoted = False
    i, n = 1, len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ">":
            return i
        i += 1
    raise _syntax(kind, "Syntax: missing '>'")


def _parse_path_body(path: str, kind: str) -> tuple[tuple[str, ...], Address]:
    """Path inside the brackets: ``[A-d-l ":"] Mailbox`` (RFC 5321 §4.1.2)."""
    route: list[str] = []
    if path.startswith("@"):
        colon = path.find(":")
        if colon < 0:
            raise _syntax(kind, "Syntax: bad source route")
        for hop in path[:colon].split(","):
            if not hop.startswith("@"):
                raise _syntax(kind, "Syntax: bad source route")
            route.append(_parse_domain(hop[1:], kind))
        path = path[colon + 1 :]
    local, domain = _split_mailbox(path, kind)
    if domain is None:
        # RFC 5321 §4.1.1.3: "Postmaster" without a domain must be accepted as a recipient.
        if kind == "rcpt" and not route and local.lower() == "postmaster":
            return (), Address("postmaster", "")
        raise _syntax(kind, "Syntax: address needs a domain")
    return tuple(route), Address(local, domain)


def _split_mailbox(s: str, kind: str) -> tuple[str, Optional[str]]:
    """Split ``Local-part "@" Domain``; the local part is returned unquoted."""
    if s.startswith('"'):
        buf: list[str] = []
        i, n = 1, len(s)
        while True:
            if i >= n:
                raise _syntax(kind, "Syntax: unterminated quoted string")
            ch = s[i]
            if ch == '"':
                break
            if ch == "\\":
                # RFC 5321 §4.1.2 quoted-pairSMTP = %d92 %d32-126
                if i + 1 >= n or not 32 <= ord(s[i + 1]) <= 126:
                    raise _syntax(kind, "Syntax: bad quoted pair")
                buf.append(s[i + 1])
                i += 2
                continue
            if not 32 <= ord(ch) <= 126:
                raise _syntax(kind, "Syntax: bad character in quoted string")
            buf.append(ch)
            i += 1
        local = "".join(buf)
        tail = s[i + 1 :]
        if not local:
            raise _syntax(kind, "Syntax: empty local part")
    else:
        at = s.rfind("@")
        local, tail = (s, "") if at < 0 else (s[:at], s[at:])
        if not _is_dot_string(local):
            raise _syntax(kind, "Syntax: bad local part")
    if len(local) > MAX_LOCAL:
        raise _syntax(kind, "Local part too long")
    if not tail:
        return local, None
    if tail[0] != "@":
        raise _syntax(kind, "Syntax: junk after local part")
    return local, _parse_domain(tail[1:], kind)


def _parse_domain(d: str, kind: str) -> str:
    """Domain or address literal, lower-cased; one trailing dot is dropped."""
    if len(d) > MAX_DOMAIN:
        raise _syntax(kind, "Domain too long")
    if d.startswith("["):
        if not d.endswith("]"):
            raise _syntax(kind, "Syntax: bad address literal")
        return "[" + _parse_literal(d[1:-1], kind) + "]"
    if d.endswith("."):
        d = d[:-1]
    if not d:
        raise _syntax(kind, "Syntax: empty domain")
    for label in d.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            raise _syntax(kind, "Syntax: bad domain")
        for ch in label:
            if ch not in _LDH:
                raise _syntax(kind, "Syntax: bad domain")
    return d.lower()


def _parse_literal(inner: str, kind: str) -> str:
    """RFC 5321 §4.1.3 address literals: IPv4, ``IPv6:...``; general literals are refused."""
    try:
        if inner[:5].lower() == "ipv6:":
            addr6 = ipaddress.IPv6Address(inner[5:])
            return "IPv6:" + addr6.compressed
        if not inner or not all(c in "0123456789." for c in inner):
            raise ValueError(inner)
        return str(ipaddress.IPv4Address(inner))
    except ValueError:
        raise _syntax(kind, "Syntax: bad address literal") from None


def parse_params(text: str, kind: str) -> dict[str, str]:
    """``esmtp-param *(SP esmtp-param)`` (RFC 5321 §4.1.2) with per-keyword validation.

    Unknown keywords -> 555 5.5.4 (RFC 5321 §4.1.1.11); bad values or duplicates -> 501 5.5.4.
    """
    if len(text) > MAX_PARAMS:
        raise MailError(501, "5.5.4", "Parameters too long")
    allowed = MAIL_PARAMS if kind == "mail" else RCPT_PARAMS
    out: dict[str, str] = {}
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if (
            not key
            or not (key[0].isascii() and key[0].isalnum())
            or any(c not in _KEYWORD for c in key)
        ):
            raise MailError(501, "5.5.4", "Syntax error in parameters")
        key = key.upper()
        if eq and (not value or any(not 33 <= ord(c) <= 126 or c == "=" for c in value)):
            raise MailError(501, "5.5.4", f"Bad value for {key}")
        if key not in allowed:
            raise MailError(555, "5.5.4", f"Unsupported parameter {key}")
        if key in out:
            raise MailError(501, "5.5.4", f"Duplicate parameter {key}")
        out[key] = _check_param(key, value if eq else None)
    return out


def _check_param(key: str, value: Optional[str]) -> str:
    def bad() -> MailError:
        return MailError(501, "5.5.4", f"Bad value for {key}")

    if value is None:
        raise bad()
    if key == "SIZE":  # RFC 1870: size-value = 1*20DIGIT
        if not value.isdigit() or not value.isascii() or len(value) > 20:
            raise bad()
        return str(int(value))
    if key == "BODY":  # RFC 6152
        v = value.upper()
        if v not in ("7BIT", "8BITMIME"):
            raise MailError(555, "5.5.4", "Unsupported BODY type")
        return v
    if key == "RET":  # RFC 3461 §4.3
        v = value.upper()
        if v not in ("FULL", "HDRS"):
            raise bad()
        return v
    if key == "ENVID":  # RFC 3461 §4.4: xtext, at most 100 characters
        if len(value) > MAX_ENVID or not _is_xtext(value):
            raise bad()
        return value
    if key == "NOTIFY":  # RFC 3461 §4.1
        parts = [p.upper() for p in value.split(",")]
        if parts == ["NEVER"]:
            return "NEVER"
        if (
            not parts
            or len(set(parts)) != len(parts)
            or any(p not in ("SUCCESS", "FAILURE", "DELAY") for p in parts)
        ):
            raise bad()
        return ",".join(parts)
    if key == "ORCPT":  # RFC 3461 §4.2: addr-type ";" xtext
        atype, semi, addr = value.partition(";")
        if not semi or not atype or not addr or any(c not in _KEYWORD for c in atype):
            raise bad()
        if not _is_xtext(addr):
            raise bad()
        return f"{atype.lower()};{addr}"
    if key == "AUTH":  # RFC 4954 §5: accepted and ignored (we do not relay the identity)
        return value
    raise bad()


def _is_xtext(s: str) -> bool:
    """RFC 3461 §4: xchar except '+' and '=', or '+' followed by two upper-case hex digits."""
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch == "+":
            h = s[i + 1 : i + 3]
            if len(h) != 2 or any(c not in "0123456789ABCDEF" for c in h):
                return False
            i += 3
            continue
        if not 33 <= ord(ch) <= 126 or ch == "=":
            return False
        i += 1
    return True
