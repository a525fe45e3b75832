"""RFC 5322 address lists as IMAP sees them: ENVELOPE address structures and SEARCH text.

Pure: a header value (str, octets kept as latin-1 code points) in, values out. Unlike
``email.utils.getaddresses`` it keeps groups (``team: a@b, c@d;``), which RFC 3501 §7.4.2
gives as a start marker (NIL NIL "team" NIL) and an end marker (NIL NIL NIL NIL); it keeps
source routes (``<@route:user@domain>``) as the at-domain-list and takes a trailing comment
as the name when there is no phrase (``user@domain (Real Name)``), as Dovecot does. One
linear pass over the value, whatever its nesting of comments and quotes.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

_SPECIALS = '()<>@,;:\\".[]'
_FOLD = re.compile(r"\r?\n(?=[ \t])")


class Address(NamedTuple):
    """One RFC 3501 address structure; a group start has only ``mailbox`` (the group
    name), a group end has nothing at all."""

    name: Optional[str]
    adl: Optional[str]
    mailbox: Optional[str]
    host: Optional[str]


GROUP_END = Address(None, None, None, None)


class _Tok(NamedTuple):
    kind: str  # "atom", "quoted", "comment", "literal" ([domain literal]) or a special char
    text: str


def _tokens(value: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in " \t\r\n":
            i += 1
        elif c == '"':
            buf = []
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(value[i])
                i += 1
            out.append(_Tok("quoted", "".join(buf)))
            i += 1
        elif c == "(":
            depth, buf = 1, []
            i += 1
            while i < n and depth:
                ch = value[i]
                if ch == "\\" and i + 1 < n:
                    buf.append(value[i + 1])
                    i += 2
                    continue
                depth += (ch == "(") - (ch == ")")
                if depth:
                    buf.append(ch)
                i += 1
            out.append(_Tok("comment", " ".join("".join(buf).split())))
        elif c == "[":
            j = value.find("]", i)
            j = n if j < 0 else j + 1
            out.append(_Tok("literal", value[i:j]))
            i = j
        elif c in _SPECIALS:
            out.append(_Tok(c, c))
            i += 1
        else:
            j = i
            while j < n and value[j] not in _SPECIALS and value[j] not in " \t\r\n":
                j += 1
            out.append(_Tok("atom", value[i:j]))
            i = j
    return out


def _phrase(toks: list[_Tok]) -> Optional[str]:
    words = [t.text for t in toks if t.kind in ("atom", "quoted", ".")]
    text = " ".join(words).replace(" . ", ".")
    return text or None


def _joined(toks: list[_Tok]) -> str:
    """A local part or domain: atoms, quoted strings and dots run together."""
    return "".join(t.text for t in toks if t.kind in ("atom", "quoted", ".", "literal"))


def _comment(toks: list[_Tok]) -> Optional[str]:
    texts = [t.text for t in toks if t.kind == "comment" and t.text]
    return texts[-1] if texts else None


def _mailbox(toks: list[_Tok]) -> Optional[Address]:
    """One mailbox (name-addr or addr-spec) from the tokens between two separators."""
    if not any(t.kind not in ("comment",) for t in toks):
        return None
    kinds = [t.kind for t in toks]
    if "<" in kinds:
        lt = kinds.index("<")
        gt = kinds.index(">", lt) if ">" in kinds[lt:] else len(toks)
        name = _phrase(toks[:lt]) or _comment(toks[:lt] + toks[gt + 1 :])
        inner = [t for t in toks[lt + 1 : gt] if t.kind != "comment"]
        adl = None
        ikinds = [t.kind for t in inner]
        if inner and inner[0].kind == "@" and ":" in ikinds:
            colon = ikinds.index(":")
            adl = "".join(t.text for t in inner[:colon]) or None
            inner = inner[colon + 1 :]
        spec = inner
    else:
        name = _comment(toks)
        adl = None
        spec = [t for t in toks if t.kind != "comment"]
    skinds = [t.kind for t in spec]
    if "@" in skinds:
        at = len(skinds) - 1 - skinds[::-1].index("@")
        local, host = _joined(spec[:at]), _joined(spec[at + 1 :])
    else:
        local, host = _joined(spec), ""
    if not local and not host and not name:
        return None
    return Address(name, adl, local or None, host or None)


def parse(value: Optional[str]) -> list[Address]:
    """The address structures of one address-list header (unfolded first)."""
    if not value:
        return []
    toks = _tokens(_FOLD.sub("", value))
    out: list[Address] = []
    i, n = 0, len(toks)
    in_group = False
    while i < n:
        j = i
        # One element: up to the next top-level ',' or ';' (inside <...> they do not count).
        angle = False
        while j < n:
            k = toks[j].kind
            if k == "<":
                angle = True
            elif k == ">":
                angle = False
            elif not angle and (
                k in (",", ";")
                or (k == ":" and not in_group and "<" not in [t.kind for t in toks[i:j]])
            ):
                break
            j += 1
        piece = toks[i:j]
        sep = toks[j].kind if j < n else ""
        if sep == ":":
            out.append(Address(None, None, _phrase(piece) or "", None))
            in_group = True
        else:
            addr = _mailbox(piece)
            if addr is not None:
                out.append(addr)
            if sep == ";" and in_group:
                out.append(GROUP_END)
                in_group = False
        i = j + 1
    if in_group:
        out.append(GROUP_END)
    return out


def search_text(value: Optional[str]) -> str:
    """The addresses written out plainly for SEARCH FROM/TO/CC/BCC: ``Name <local@host>``,
    groups as ``name: ...;``, comments and routes dropped, so a search for
    ``user@domain.org`` finds ``<user (comment)@ (comment) domain.org>``."""
    parts: list[str] = []
    for a in parse(value):
        if a == GROUP_END:
            parts.append(";")
        elif a.host is None and a.name is None and a.adl is None:
            parts.append((a.mailbox or "") + ":")
        else:
            spec = f"{a.mailbox or ''}@{a.host}" if a.host else (a.mailbox or "")
            parts.append(f"{a.name} <{spec}>" if a.name else spec)
    return ", ".join(parts)
