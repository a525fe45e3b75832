"""SEARCH RETURN options: ESEARCH (RFC 4731) results and the SEARCHRES ``$`` (RFC 5182).

Pure: splits ``RETURN (...)`` off the search tokens, decides what a search saves in ``$`` and
renders the ``* ESEARCH`` line. Matching is cgtwist.protocols.imap.search's job, running the
search and keeping ``$`` is the protocol's (cgtwist.protocols.imap.messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cgtwist.protocols.imap.parse import Literal, ParseError, Token

# RFC 4731 §3.1 search-return-opt; RFC 5182 §2 adds SAVE.
OPTIONS = frozenset((b"MIN", b"MAX", b"ALL", b"COUNT", b"SAVE"))


@dataclass(frozen=True)
class Return:
    """The result options of one SEARCH; an empty ``RETURN ()`` means ALL (RFC 4731 §3.1)."""

    options: frozenset[bytes]

    @property
    def save(self) -> bool:
        return b"SAVE" in self.options

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


def split_return(tokens: list[Token]) -> tuple[Optional[Return], list[Token]]:
    """``RETURN (opts) rest`` -> (Return, rest); without RETURN, (None, tokens) for the
    RFC 3501 ``* SEARCH`` answer. Raises ParseError (BAD) for an unknown option."""
    first = tokens[0] if tokens else None
    if not isinstance(first, bytes) or isinstance(first, Literal) or first.upper() != b"RETURN":
        return None, tokens
    if len(tokens) < 2 or not isinstance(tokens[1], list):
        raise ParseError("RETURN needs a parenthesised list")
    opts = set()
    for t in tokens[1]:
        if isinstance(t, list) or isinstance(t, Literal) or t.upper() not in OPTIONS:
            raise ParseError("Unknown SEARCH RETURN option")
        opts.add(t.upper())
    return Return(frozenset(opts) or frozenset((b"ALL",))), tokens[2:]


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
    if modseqs and found:
        if opts & {b"ALL", b"COUNT"}:
            out.append(b"MODSEQ %d" % max(modseqs))
        elif opts & {b"MIN", b"MAX"}:
            ends = ([modseqs[0]] if b"MIN" in opts else []) + (
                [modseqs[-1]] if b"MAX" in opts else []
            )
            out.append(b"MODSEQ %d" % max(ends))
    return b" ".join(out)
