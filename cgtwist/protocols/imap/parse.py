"""IMAP command assembly and tokenising under hard limits: literals, line length, nesting.

Pure: bytes in, values or ``ParseError`` out; never touches a transport or a reactor. The
protocol (cgtwist.protocols.imap.server) asks this module, before it sends any ``+`` continuation,
whether a literal announced at the end of a line is acceptable (RELIABILITY.md a8: twisted
#12763 negative literal hang, greenmail #1038 ``{400000000}`` before login).
"""

from __future__ import annotations

import bisect
import datetime
import re
from dataclasses import dataclass
from typing import Optional, Union

# RFC 3501 §9: literal = "{" number "}" CRLF *CHAR8 ; number = 1*DIGIT (fits in 32 bits)
# RFC 7888 §3: literal+ adds "+" before "}" (non-synchronising literal).
_LITERAL_AT_END = re.compile(rb"\{([^{}]*)\}\Z")
_LITERAL_SPEC = re.compile(rb"\A(\d{1,10})(\+?)\Z")
MAX_NUMBER = 4294967295  # RFC 3501 §9 number: unsigned 32-bit

# Default caps when the caller does not pass its own.
SMALL_LITERAL_MAX = 8192  # non-APPEND literals (swift-nio-imap uses 4 KiB; passwords fit)
MAX_DEPTH = 64  # parenthesis nesting in any command
MAX_SEARCH_TERMS = 1000  # search keys in one SEARCH


class ParseError(ValueError):
    """Malformed input; the text is safe to show the client after ``BAD``."""


@dataclass(frozen=True)
class LiteralSpec:
    """A literal announced at the end of a command line."""

    size: int
    sync: bool  # False for a LITERAL+ ``{n+}`` (RFC 7888): no ``+`` continuation is sent
    start: int  # offset of ``{`` in the line


def literal_at_end(line: bytes) -> Optional[LiteralSpec]:
    """Return the literal announced at the end of ``line``, None if there is none.

    Raises ParseError for malformed announcements (``{-1}``, ``{}``, ``{abc}``, more than 32
    bits): an unquoted ``{`` can only open a literal (it is not an ATOM-CHAR, RFC 3501 §9), and a
    quoted string cannot end a line with ``}``.
    """
    m = _LITERAL_AT_END.search(line)
    if m is None:
        if line.endswith(b"}") and b"{" in line:
            raise ParseError("Malformed literal")
        return None
    if line.count(b'"', 0, m.start()) % 2:
        return None  # inside an unfinished quoted string: not a literal
    spec = _LITERAL_SPEC.match(m.group(1))
    if spec is None:
        raise ParseError("Malformed literal size")
    size = int(spec.group(1))
    if size > MAX_NUMBER:
        raise ParseError("Literal size out of range")
    return LiteralSpec(size=size, sync=not spec.group(2), start=m.start())


def split_command(first_line: bytes) -> tuple[bytes, bytes, bytes]:
    """Split ``tag SP command [SP rest]``; the command upper-cased (UID folds its sub-command).

    Returns (tag, command, rest); command may be b"" when missing.
    """
    parts = first_line.split(b" ", 2)
    tag = parts[0]
    cmd = parts[1].upper() if len(parts) > 1 else b""
    rest = parts[2] if len(parts) > 2 else b""
    if cmd == b"UID" and rest:
        sub = rest.split(b" ", 1)
        cmd = b"UID " + sub[0].upper()
    return tag, cmd, rest


def nesting_depth(text: bytes) -> int:
    """Deepest parenthesis nesting outside quoted strings (literal contents are not passed in)."""
    depth = best = 0
    quoted = False
    escaped = False
    for c in text:
        if quoted:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x28:  # (
            depth += 1
            best = max(best, depth)
        elif c == 0x29:  # )
            depth -= 1
    return best


class Literal(bytes):
    """A string that arrived as a literal (so it is never mistaken for an atom or a list)."""


Token = Union[bytes, "list[Token]"]


def tokenize(
    pieces: list[bytes],
    literals: list[bytes],
    max_depth: int = MAX_DEPTH,
    max_tokens: int = MAX_SEARCH_TERMS * 4,
) -> list[Token]:
    """Tokenise command text into atoms, strings and nested lists.

    ``pieces`` are the text segments between literals (``len(pieces) == len(literals) + 1``);
    each segment except the last ends with the literal announcement, which is dropped. Quoted
    strings lose their quotes and escapes; ``Literal`` values keep their bytes verbatim.
    """
    if len(pieces) != len(literals) + 1:
        raise ParseError("Literal mismatch")
    stack: list[list[Token]] = [[]]
    count = 0
    for idx, text in enumerate(pieces):
        if idx < len(literals):
            spec = literal_at_end(text)
            text = text[: spec.start] if spec else text
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c == 0x20:
                i += 1
                continue
            count += 1
            if count > max_tokens:
                raise ParseError("Too many arguments")
            if c == 0x28:  # (
                if len(stack) > max_depth:
                    raise ParseError("Too deeply nested")
                stack.append([])
                i += 1
            elif c == 0x29:  # )
                if len(stack) == 1:
                    raise ParseError("Unbalanced parenthesis")
                done = stack.pop()
                stack[-1].append(done)
                i += 1
            elif c == 0x22:  # quoted string, RFC 3501 §9 quoted-specials
                out = bytearray()
                i += 1
                while True:
                    if i >= n:
                        raise ParseError("Unterminated quoted string")
                    ch = text[i]
                    if ch == 0x5C and i + 1 < n and text[i + 1] in (0x5C, 0x22):
                        out.append(text[i + 1])
                        i += 2
                    elif ch == 0x22:
                        i += 1
                        break
                    else:
                        out.append(ch)
                        i += 1
                stack[-1].append(Literal(bytes(out)))
            else:
                j = i
                while j < n and text[j] not in (0x20, 0x28, 0x29):
                    j += 1
                stack[-1].append(text[i:j])
                i = j
        if idx < len(literals):
            count += 1
            stack[-1].append(Literal(literals[idx]))
    if len(stack) != 1:
        raise ParseError("Unbalanced parenthesis")
    return stack[0]


Range = tuple[Optional[int], Optional[int]]  # None stands for "*"


def _seq_number(tok: bytes) -> Optional[int]:
    if tok == b"*":
        return None
    if not tok.isdigit() or len(tok) > 10:
        raise ParseError("Bad message number")
    n = int(tok)
    if not 0 < n <= MAX_NUMBER:  # RFC 3501 §9 nz-number
        raise ParseError("Bad message number")
    return n


def parse_sequence_set(spec: bytes) -> list[Range]:
    """RFC 3501 §9 sequence-set -> [(low, high)] with None for ``*``, in linear time (Twisted's
    parseIdList re-sorts on every range: 80 s for a 70 KiB set)."""
    if not spec:
        raise ParseError("Missing message set")
    out: list[Range] = []
    for part in spec.split(b","):
        lo, sep, hi = part.partition(b":")
        a = _seq_number(lo)
        out.append((a, _seq_number(hi) if sep else a))
    return out


class SequenceSet:
    """A sequence-set resolved against the highest number in use: membership by bisection."""

    def __init__(self, ranges: list[Range], highest: int) -> None:
        spans = sorted(
            (min(x, y), max(x, y))
            for x, y in (
                (highest if a is None else a, highest if b is None else b) for a, b in ranges
            )
        )
        self.starts: list[int] = []
        self.ends: list[int] = []
        for lo, hi in spans:
            if self.ends and lo <= self.ends[-1] + 1:
                self.ends[-1] = max(self.ends[-1], hi)
            else:
                self.starts.append(lo)
                self.ends.append(hi)

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self.starts, value) - 1
        return i >= 0 and value <= self.ends[i]


# -- APPEND arguments (RFC 3501 §6.3.11) ----------------------------------------------------------
SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft"})
_FLAG_RE = re.compile(rb"\A\\?[!#$&'+-.0-9:<-Z^-z|~]+\Z")  # atom chars minus ] and specials
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# RFC 3501 §9 date-time: DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
_DATE_TIME_RE = re.compile(
    rb"\A([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})\Z"
)


def check_flag(flag: object) -> str:
    """One flag of APPEND or STORE: a system flag or a keyword atom (never \\Recent, RFC 3501
    §2.3.2); raises ParseError otherwise."""
    if not isinstance(flag, bytes) or isinstance(flag, Literal) or not _FLAG_RE.match(flag):
        raise ParseError("Invalid flag")
    text = flag.decode("ascii")
    if text.startswith("\\") and text.lower() not in SYSTEM_FLAGS:
        raise ParseError("Invalid system flag")
    return text


def parse_date_time(value: bytes) -> float:
    """RFC 3501 §9 date-time (without its quotes) -> epoch seconds.

    Only dates that exist: ``30-Feb-2021``, ``99-Jan-2020``, hour 24 or a zone of +2500 are a
    ParseError, never a different date stored in their place.
    """
    m = _DATE_TIME_RE.match(value)
    if m is None:
        raise ParseError("Invalid date-time")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    if mon.lower().decode() not in _MONTHS:
        raise ParseError("Invalid month in date-time")
    try:
        when = datetime.datetime(
            int(year),
            _MONTHS.index(mon.lower().decode()) + 1,
            int(day.strip() or b"0"),
            int(hh),
            int(mm),
            int(ss),
            tzinfo=datetime.UTC,
        )
    except ValueError:
        raise ParseError("Invalid date-time: no such date or time") from None
    if int(zh) > 23 or int(zm) > 59:
        raise ParseError("Invalid time zone in date-time")
    offset = (int(zh) * 3600 + int(zm) * 60) * (1 if sign == b"+" else -1)
    return when.timestamp() - offset


def append_arguments(tokens: list[Token]) -> tuple[list[str], Optional[float]]:
    """The optional flag list and date-time of APPEND, between the mailbox and the message
    literal: (flags, epoch or None). Raises ParseError for anything else (nested lists,
    strings as flags, impossible dates, extra arguments)."""
    flags: list[str] = []
    date: Optional[float] = None
    rest = list(tokens)
    first = rest.pop(0) if rest and isinstance(rest[0], list) else None
    if isinstance(first, list):
        flags = [check_flag(f) for f in first]
    second = rest.pop(0) if rest and isinstance(rest[0], Literal) else None
    if isinstance(second, Literal):
        date = parse_date_time(bytes(second))
    if rest:
        raise ParseError("Invalid APPEND arguments")
    return flags, date
