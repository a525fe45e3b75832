"""SEARCH RETURN options: ESEARCH (RFC 4731) results and the SEARCHRES ``$`` (RFC 5182).

Pure: splits ``RETURN (...)`` off the search tokens, decides what a search saves in ``$`` and
renders the ``* ESEARCH`` line. Matching is cgtwist.protocols.imap.search's job, running the
search and keeping ``$`` is the protocol's (cgtwist.protocols.imap.messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cgtwist.protocols.imap.parse import Literal, ParseError, Token

# RFC 4731 §3.1 search-return-opt; RFC 5182 §2 adds SAVE, RFC 9394 §3 PARTIAL, RFC 5267 §4
# UPDATE (CONTEXT=SEARCH).
OPTIONS = frozenset((b"MIN", b"MAX", b"ALL", b"COUNT", b"SAVE", b"PARTIAL", b"UPDATE"))
_MAX_POSITION = 4294967295  # RFC 9394 §3.1 partial-range: nz-number (or its negative)


@dataclass(frozen=True)
class Return:
    """The result options of one SEARCH; an empty ``RETURN ()`` means ALL (RFC 4731 §3.1).
    ``partial``: the (first, last) positions of RFC 9394's PARTIAL, negative from the end."""

    options: frozenset[bytes]
    partial: Optional[tuple[int, int]] = None

    @property
    def save(self) -> bool:
        return b"SAVE" in self.options

    @property
    def update(self) -> bool:
        """RFC 5267 §4.2: keep the result up to date (ADDTO/REMOVEFROM) until CANCELUPDATE."""
        return b"UPDATE" in self.options

    @property
    def answers(self) -> bool:
        """RFC 5182 §2.4: SAVE alone saves the result and sends no ESEARCH response."""
        return bool(self.options - {b"SAVE"})

    def saved(self, found: list[int]) -> list[int]:
        """What ``$`` holds afterwards (RFC 5182 §2.4): with MIN and/or MAX and neither ALL nor
        COUNT, only those messages; otherwise every match."""
        if self.options & {b"ALL", b"COUNT"} or not self.options & {b"MIN", b"MAX"} or not found:
            return list(found)
        out = []
        if b"MIN" in self.options:
            out.append(found[0])
        if b"MAX" in self.options and found[-1] not in out:
            out.append(found[-1])
        return out


ALL = Return(frozenset((b"ALL",)))
"""What an IMAP4rev2 SEARCH without RETURN asks for (RFC 9051 §6.4.4: ``* ESEARCH ... ALL``)."""


def split_return(tokens: list[Token]) -> tuple[Optional[Return], list[Token]]:
    """``RETURN (opts) rest`` -> (Return, rest); without RETURN, (None, tokens) for the
    RFC 3501 ``* SEARCH`` answer. Raises ParseError (BAD) for an unknown option."""
    first = tokens[0] if tokens else None
    if not isinstance(first, bytes) or isinstance(first, Literal) or first.upper() != b"RETURN":
        return None, tokens
    if len(tokens) < 2 or not isinstance(tokens[1], list):
        raise ParseError("RETURN needs a parenthesised list")
    opts = set()
    partial: Optional[tuple[int, int]] = None
    items = tokens[1]
    i = 0
    while i < len(items):
        t = items[i]
        i += 1
        if isinstance(t, list) or isinstance(t, Literal) or t.upper() not in OPTIONS:
            raise ParseError("Unknown SEARCH RETURN option")
        if t.upper() == b"PARTIAL":
            if partial is not None or i >= len(items):
                raise ParseError("PARTIAL takes one range")
            partial = partial_range(items[i])
            i += 1
        opts.add(t.upper())
    if partial is not None and b"ALL" in opts:
        raise ParseError("PARTIAL and ALL exclude each other")  # RFC 9394 §3.1
    if b"UPDATE" in opts and (partial is not None or b"SAVE" in opts):
        raise ParseError("UPDATE is not offered with PARTIAL or SAVE")
    return Return(frozenset(opts) or frozenset((b"ALL",)), partial), tokens[2:]


def partial_range(t: Token) -> tuple[int, int]:
    """RFC 9394 §3.1 ``first:last`` positions, both positive or both negative (from the end),
    in either order; ``*`` and a single number are errors."""
    if isinstance(t, list) or isinstance(t, Literal):
        raise ParseError("Bad PARTIAL range")
    lo, sep, hi = bytes(t).partition(b":")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        raise ParseError("Bad PARTIAL range") from None
    if not sep or a == 0 or b == 0 or (a < 0) != (b < 0) or max(abs(a), abs(b)) > _MAX_POSITION:
        raise ParseError("Bad PARTIAL range")
    if a < 0:
        return max(a, b), min(a, b)  # -1:-5
    return min(a, b), max(a, b)


def partial_of(found: list[int], span: tuple[int, int]) -> list[int]:
    """The results at positions ``span`` (1-based; negative counts from the end)."""
    a, b = span
    if a > 0:
        return found[a - 1 : b]
    n = len(found)
    return found[max(0, n + b) : n + a + 1]


def sequence_set(numbers: list[int]) -> bytes:
    """Ascending numbers as a compact sequence-set: ``1:3,7`` (RFC 4731 §3.1 ALL)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return b",".join(b"%d" % a if a == b else b"%d:%d" % (a, b) for a, b in runs)


def response(
    tag: bytes, uid: bool, ret: Return, found: list[int], modseqs: Optional[list[int]] = None
) -> bytes:
    """The untagged ``ESEARCH`` line (without ``* ``), RFC 4731 §3.1: MIN, MAX and ALL are
    left out when nothing matched; COUNT is always given when asked for. ``modseqs`` (the
    MODSEQ of each match, when the search had a MODSEQ key) adds ``MODSEQ``: the highest of
    the messages returned (RFC 7162 §3.1.5, RFC 4731 §3.2)."""
    quoted = b'"' + tag.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    out = [b"ESEARCH (TAG " + quoted + b")"]
    if uid:
        out.append(b"UID")
    opts = ret.options
    if found:
        if b"MIN" in opts:
            out.append(b"MIN %d" % found[0])
        if b"MAX" in opts:
            out.append(b"MAX %d" % found[-1])
        if b"ALL" in opts:
            out.append(b"ALL " + sequence_set(found))
    if b"COUNT" in opts:
        out.append(b"COUNT %d" % len(found))
    if ret.partial is not None:
        # RFC 9394 §3.1: the range as normalised, then those results or NIL.
        part = partial_of(found, ret.partial)
        out.append(
            b"PARTIAL (%d:%d %s)"
            % (ret.partial[0], ret.partial[1], sequence_set(part) if part else b"NIL")
        )
    if modseqs and found:
        if opts & {b"ALL", b"COUNT"}:
            out.append(b"MODSEQ %d" % max(modseqs))
        elif opts & {b"MIN", b"MAX"}:
            ends = ([modseqs[0]] if b"MIN" in opts else []) + (
                [modseqs[-1]] if b"MAX" in opts else []
            )
            out.append(b"MODSEQ %d" % max(ends))
    return b" ".join(out)
