"""The arguments of an extended LIST: LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and the
SPECIAL-USE selection option (RFC 6154 §3).

Pure: tokens from cgtwist.protocols.imap.parse in, a ``ListRequest`` or ``ParseError`` (BAD)
out. Which mailboxes a request selects is the account's business
(``MaildirAccount.list_extended``); running it is cgtwist.protocols.imap.mailboxes'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cgtwist.protocols.imap.parse import Literal, ParseError, Token

# RFC 5258 §3.1 (REMOTE: we have no remote mailboxes, so it changes nothing), RFC 6154 §3.
SELECTION = frozenset((b"SUBSCRIBED", b"REMOTE", b"RECURSIVEMATCH", b"SPECIAL-USE"))
# RFC 5258 §3.2, RFC 5819 (STATUS), RFC 6154 §3 (SPECIAL-USE).
RETURN = frozenset((b"SUBSCRIBED", b"CHILDREN", b"STATUS", b"SPECIAL-USE"))
# RFC 3501 §6.3.10, RFC 8438 SIZE, RFC 9051 §6.3.11 and RFC 9208 §4.3 DELETED, RFC 9208 §4.3
# DELETED-STORAGE (QUOTA=RES-STORAGE) and RFC 7889 APPENDLIMIT.
STATUS_ITEMS = frozenset(
    (
        b"MESSAGES",
        b"RECENT",
        b"UIDNEXT",
        b"UIDVALIDITY",
        b"UNSEEN",
        b"DELETED",
        b"SIZE",
        b"APPENDLIMIT",
        b"HIGHESTMODSEQ",  # RFC 7162 §3.1.9
        b"DELETED-STORAGE",
    )
)
MAX_PATTERNS = 64


@dataclass(frozen=True)
class ListRequest:
    """One LIST command: selection options, reference, patterns and return options."""

    selection: frozenset[bytes]
    ref: bytes
    patterns: tuple[bytes, ...]
    returns: frozenset[bytes]
    status: tuple[bytes, ...]  # STATUS items asked for by RETURN (STATUS (...)), upper case

    @property
    def subscribed(self) -> bool:
        return b"SUBSCRIBED" in self.selection

    @property
    def recursive(self) -> bool:
        return b"RECURSIVEMATCH" in self.selection

    @property
    def special_use(self) -> bool:
        return b"SPECIAL-USE" in self.selection


def is_extended(tokens: list[Token]) -> bool:
    """Whether LIST's arguments use the RFC 5258 syntax: a selection list first, a list of
    patterns, or anything after the pattern (RETURN)."""
    return bool(tokens) and (
        isinstance(tokens[0], list) or len(tokens) != 2 or isinstance(tokens[1], list)
    )


def _string(tok: Token, what: str) -> bytes:
    if isinstance(tok, list):
        raise ParseError(f"Expected {what}")
    return bytes(tok)


def _words(tok: Token, allowed: frozenset[bytes], what: str) -> list[Token]:
    if not isinstance(tok, list):
        raise ParseError(f"Expected a list of {what}")
    for t in tok:
        if not isinstance(t, list) and (isinstance(t, Literal) or t.upper() not in allowed):
            raise ParseError(f"Unknown LIST {what}")
    return tok


def status_items(tok: Token) -> tuple[bytes, ...]:
    """A STATUS item list, upper case, each once; ParseError for an unknown item or none."""
    if not isinstance(tok, list) or not tok:
        raise ParseError("STATUS needs a list of items")
    out: list[bytes] = []
    for t in tok:
        if isinstance(t, list) or isinstance(t, Literal) or t.upper() not in STATUS_ITEMS:
            raise ParseError("Unknown STATUS item")
        if t.upper() not in out:
            out.append(t.upper())
    return tuple(out)


def parse(tokens: list[Token]) -> ListRequest:
    """``[(selection)] ref (pattern | (patterns)) [RETURN (options)]`` (RFC 5258 §6)."""
    rest = list(tokens)
    selection: set[bytes] = set()
    if rest and isinstance(rest[0], list):
        for t in _words(rest.pop(0), SELECTION, "selection option"):
            if isinstance(t, list):
                raise ParseError("Unknown LIST selection option")
            selection.add(t.upper())
        # RFC 5258 §3.1: RECURSIVEMATCH needs another option that selects (REMOTE does not).
        if b"RECURSIVEMATCH" in selection and not selection - {b"RECURSIVEMATCH", b"REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option")
    if len(rest) < 2:
        raise ParseError("LIST needs a reference and a pattern")
    ref = _string(rest.pop(0), "a reference name")
    pat = rest.pop(0)
    patterns = (
        tuple(_string(p, "a pattern") for p in pat) if isinstance(pat, list) else (bytes(pat),)
    )
    if not patterns or len(patterns) > MAX_PATTERNS:
        raise ParseError(f"LIST needs one to {MAX_PATTERNS} patterns")
    returns: set[bytes] = set()
    status: tuple[bytes, ...] = ()
    if rest:
        word = rest.pop(0)
        if (
            isinstance(word, list)
            or isinstance(word, Literal)
            or word.upper() != b"RETURN"
            or len(rest) != 1
        ):
            raise ParseError("Invalid LIST arguments")
        opts = _words(rest[0], RETURN, "return option")
        i = 0
        while i < len(opts):
            opt = opts[i]
            if isinstance(opt, list):  # a list only as STATUS's argument
                raise ParseError("Unknown LIST return option")
            name = opt.upper()
            returns.add(name)
            if name == b"STATUS":
                if i + 1 >= len(opts):
                    raise ParseError("STATUS needs a list of items")
                status = status_items(opts[i + 1])
                i += 1
            i += 1
    return ListRequest(frozenset(selection), ref, patterns, frozenset(returns), status)


def status_body(items: tuple[bytes, ...], values: dict[str, int]) -> bytes:
    """``MESSAGES 3 UNSEEN 1`` for the items the mailbox reported, in the order asked."""
    return b" ".join(b"%s %d" % (k, values[k.decode()]) for k in items if k.decode() in values)


def childinfo(extended: Optional[list[str]]) -> bytes:
    """The mbox-list-extended part of a LIST row (RFC 5258 §3.5 CHILDINFO), or b""."""
    if not extended:
        return b""
    return b' ("CHILDINFO" (%s))' % b" ".join(b'"%s"' % e.encode("ascii") for e in extended)
