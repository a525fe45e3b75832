"""CONDSTORE and QRESYNC (RFC 7162) on the wire: their command parameters and responses.

Pure: parses the SELECT/EXAMINE parameters ``(CONDSTORE)`` and ``(QRESYNC (...))``, the FETCH
modifiers ``(CHANGEDSINCE n [VANISHED])``, the STORE modifier ``(UNCHANGEDSINCE n)`` and the
``MODSEQ`` FETCH item, and renders ``VANISHED`` UID sets. What the session has enabled, and
running the commands, is the protocol's (cgtwist.protocols.imap.selection and .messages);
MODSEQ values and tombstones are the mailstore's.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from cgtwist.protocols.imap import esearch as imap_esearch
from cgtwist.protocols.imap.parse import (
    Literal,
    ParseError,
    Range,
    SequenceSet,
    Token,
    parse_sequence_set,
)

# RFC 7162 §7 mod-sequence-value: 1*DIGIT, up to 2^63 - 1.
MAX_MODSEQ = (1 << 63) - 1
_FETCH_MODIFIERS = re.compile(
    rb"\A(.*?)\s+\(\s*((?:CHANGEDSINCE|VANISHED)\b[^()\[\]]*)\)\s*\Z", re.I | re.S
)


class ModseqItem:
    """The ``MODSEQ`` FETCH data item (RFC 7162 §3.1.4), beside Twisted's parsed items."""

    type = "modseq"

    def __repr__(self) -> str:
        return "<MODSEQ>"


@dataclass(frozen=True)
class Qresync:
    """``QRESYNC (uidvalidity modseq [known-uids [seq-match]])`` (RFC 7162 §3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: Optional[list[Range]] = None  # None: 1:* (every UID)


@dataclass(frozen=True)
class SelectParams:
    condstore: bool = False
    qresync: Optional[Qresync] = None


@dataclass(frozen=True)
class FetchModifiers:
    changedsince: Optional[int] = None
    vanished: bool = False


def _word(t: Token) -> bytes:
    if isinstance(t, list) or isinstance(t, Literal):
        raise ParseError("Expected an atom")
    return t.upper()


def _number(t: Token, what: str, zero: bool = False) -> int:
    """A mod-sequence-value (or with ``zero`` a mod-sequence-valzer) or nz-number."""
    if isinstance(t, list) or isinstance(t, Literal) or not t.isdigit() or len(t) > 19:
        raise ParseError(f"Bad {what}")
    n = int(t)
    if n > MAX_MODSEQ or (n == 0 and not zero):
        raise ParseError(f"Bad {what}")
    return n


def modseq_number(t: Token, zero: bool = False) -> int:
    return _number(t, "mod-sequence value", zero)


def select_params(tokens: list[Token]) -> SelectParams:
    """The parameter list after the mailbox name of SELECT/EXAMINE (RFC 4466 §2.1)."""
    if not tokens:
        return SelectParams()
    if len(tokens) != 1 or not isinstance(tokens[0], list) or not tokens[0]:
        raise ParseError("Bad SELECT parameters")
    params = tokens[0]
    condstore = False
    qresync: Optional[Qresync] = None
    i = 0
    while i < len(params):
        name = _word(params[i])
        i += 1
        if name == b"CONDSTORE" and not condstore:
            condstore = True
        elif name == b"QRESYNC" and qresync is None:
            if i >= len(params) or not isinstance(params[i], list):
                raise ParseError("QRESYNC needs a parenthesised list")
            arg = params[i]
            i += 1
            assert isinstance(arg, list)
            qresync = _qresync(arg)
        else:
            raise ParseError("Unknown SELECT parameter")
    return SelectParams(condstore, qresync)


def _qresync(arg: list[Token]) -> Qresync:
    if not 2 <= len(arg) <= 4:
        raise ParseError("QRESYNC takes (uidvalidity modseq [known-uids [seq-match]])")
    uidvalidity = _number(arg[0], "UIDVALIDITY")
    if uidvalidity > 0xFFFFFFFF:
        raise ParseError("Bad UIDVALIDITY")
    modseq = modseq_number(arg[1])
    known: Optional[list[Range]] = None
    rest = arg[2:]
    if rest and not isinstance(rest[0], list):
        known = _uid_set(rest[0])
        rest = rest[1:]
    if rest:
        # seq-match-data (RFC 7162 §3.2.5): checked, then not needed (the tombstones answer).
        pair = rest[0]
        if len(rest) != 1 or not isinstance(pair, list) or len(pair) != 2:
            raise ParseError("Bad QRESYNC sequence match data")
        _uid_set(pair[0])
        _uid_set(pair[1])
    return Qresync(uidvalidity, modseq, known)


def _uid_set(t: Token) -> list[Range]:
    if isinstance(t, list) or isinstance(t, Literal):
        raise ParseError("Expected a UID set")
    return parse_sequence_set(bytes(t))


def split_fetch_modifiers(text: bytes) -> tuple[bytes, bytes]:
    """(FETCH items, modifier list text) of what follows the sequence set of FETCH."""
    m = _FETCH_MODIFIERS.match(text)
    if m is None:
        return text, b""
    return m.group(1), m.group(2)


def fetch_modifiers(text: bytes) -> FetchModifiers:
    """``CHANGEDSINCE n [VANISHED]`` in either order (RFC 7162 §3.1.4, §3.2.6)."""
    words = text.split()
    changedsince: Optional[int] = None
    vanished = False
    i = 0
    while i < len(words):
        w = words[i].upper()
        i += 1
        if w == b"CHANGEDSINCE" and changedsince is None and i < len(words):
            changedsince = modseq_number(words[i], zero=True)
            i += 1
        elif w == b"VANISHED" and not vanished:
            vanished = True
        else:
            raise ParseError("Bad FETCH modifier")
    if vanished and changedsince is None:
        raise ParseError("VANISHED needs CHANGEDSINCE")  # RFC 7162 §3.2.6
    return FetchModifiers(changedsince, vanished)


def store_modifiers(tokens: list[Token]) -> Optional[int]:
    """``(UNCHANGEDSINCE n)`` before the STORE data item (RFC 7162 §3.1.3): n, or None."""
    if len(tokens) != 2 or _word(tokens[0]) != b"UNCHANGEDSINCE":
        raise ParseError("Bad STORE modifier")
    return modseq_number(tokens[1], zero=True)


def take_modseq_items(piece: bytes) -> tuple[bytes, int]:
    """FETCH item text without its top-level ``MODSEQ`` items, and how many there were;
    a ``MODSEQ`` inside ``BODY[HEADER.FIELDS (...)]`` is a header name and stays."""
    kept: list[bytes] = []
    found = 0
    depth = 0
    start = 0
    for i, c in enumerate(piece + b" "):
        if c in b"[(":
            depth += 1
        elif c in b"])":
            depth -= 1
        elif c == 0x20 and depth <= 0:
            word = piece[start:i]
            if word.upper() == b"MODSEQ":
                found += 1
            elif word:
                kept.append(word)
            start = i + 1
    return b" ".join(kept), found


def uids_in(known: Optional[list[Range]], uids: Iterable[int]) -> list[int]:
    """Those of ``uids`` that ``known`` (None: every UID) names; by bisection, so a long
    known-uids list costs log(ranges) per UID."""
    if known is None:
        return list(uids)
    spans = SequenceSet(known, 0xFFFFFFFF)
    return [u for u in uids if u in spans]


def _spans(ranges: list[Range]) -> list[tuple[int, int]]:
    big = 0xFFFFFFFF
    return sorted(
        (min(a, b), max(a, b))
        for a, b in ((big if x is None else x, big if y is None else y) for x, y in ranges)
    )


def missing(
    present: list[int], uidnext: int, known: Optional[list[Range]]
) -> list[tuple[int, int]]:
    """UID ranges below ``uidnext`` (within ``known``) that no present message has: what
    VANISHED (EARLIER) reports when the tombstones do not reach back far enough (RFC 7162
    §3.2.5.1 lets a server name UIDs that never existed; the client ignores those)."""
    out: list[tuple[int, int]] = []
    for lo, hi in _spans(known if known is not None else [(1, None)]):
        hi = min(hi, uidnext - 1)
        i = bisect.bisect_left(present, lo)
        at = lo
        while at <= hi:
            if i < len(present) and present[i] <= hi:
                if present[i] > at:
                    out.append((at, present[i] - 1))
                at = present[i] + 1
                i += 1
            else:
                out.append((at, hi))
                break
    return out


def range_set(ranges: list[tuple[int, int]]) -> bytes:
    """``(lo, hi)`` ranges as a sequence-set."""
    return b",".join(b"%d" % a if a == b else b"%d:%d" % (a, b) for a, b in ranges)


def vanished(uids: list[int], earlier: bool) -> bytes:
    """The untagged ``VANISHED [(EARLIER)] uid-set`` line without ``* `` (RFC 7162 §3.2.10)."""
    return (b"VANISHED (EARLIER) " if earlier else b"VANISHED ") + imap_esearch.sequence_set(
        sorted(uids)
    )
