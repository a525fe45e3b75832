"""IMAP SORT and THREAD arguments and keys (RFC 5256, RFC 5957 SORT=DISPLAY).

Pure: tokens from cgtwist.protocols.imap.parse in, criteria out; one message's sort keys or
``ThreadMessage`` from its cached headers (through imap_messagetext's ``MessageText``: the
mailstore keeps Date, Subject, From, To, Cc, Message-ID, References and In-Reply-To in its
metadata, so no message file is read); the final ordering. Never imports twisted.internet.
"""

from __future__ import annotations

import email.utils
import functools
from typing import Any, Callable, Optional

from cgtwist.protocols.imap import address as imap_address
from cgtwist.protocols.imap import thread as imap_thread
from cgtwist.protocols.imap.messagetext import MessageText, header_text
from cgtwist.protocols.imap.parse import Literal, ParseError, Token
from cgtwist.protocols.imap.search import BadCharset

# RFC 5256 §3 sort-key, plus RFC 5957 §3 DISPLAYFROM and DISPLAYTO.
KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
ALGORITHMS = ("REFERENCES", "ORDEREDSUBJECT")
CHARSETS = ("US-ASCII", "UTF-8")

Criterion = tuple[str, bool]  # (key, reverse)
Key = Any  # a str, float or int, compared only with the same criterion's keys


def _word(tok: Token, what: str) -> str:
    if isinstance(tok, list):
        raise ParseError(f"Expected {what}")
    return bytes(tok).decode("ascii", "replace").upper()


def parse_criteria(tok: Token) -> list[Criterion]:
    """``(REVERSE SUBJECT DATE)`` -> [("SUBJECT", True), ("DATE", False)] (RFC 5256 §3:
    sort-criteria = "(" sort-criterion *(SP sort-criterion) ")")."""
    if not isinstance(tok, list) or not tok:
        raise ParseError("Sort criteria must be a parenthesised list")
    out: list[Criterion] = []
    reverse = False
    for t in tok:
        if isinstance(t, Literal):
            raise ParseError("Expected a sort key")
        word = _word(t, "a sort key")
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in KEYS:
            raise ParseError("Unknown sort key " + word[:40])
        out.append((word, reverse))
        reverse = False
    if reverse:
        raise ParseError("REVERSE without a sort key")
    return out


def check_charset(tok: Token) -> str:
    """The mandatory charset of SORT and THREAD: US-ASCII or UTF-8, else BadCharset."""
    charset = _word(tok, "a charset")
    if charset not in CHARSETS:
        raise BadCharset(charset)
    return charset


def parse_algorithm(tok: Token) -> str:
    word = _word(tok, "a threading algorithm")
    if word not in ALGORITHMS:
        raise ParseError("Unknown threading algorithm " + word[:40])
    return word


def internal_date(text: MessageText) -> float:
    """INTERNALDATE as epoch seconds, from the store's metadata when it has it."""
    when = getattr(getattr(text.msg, "meta", None), "date", None)
    if isinstance(when, (int, float)):
        return float(when)
    return _epoch(text.msg.getInternalDate()) or 0.0


def _epoch(value: Any) -> Optional[float]:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not value:
        return None
    try:
        t = email.utils.parsedate_tz(value)
        return float(email.utils.mktime_tz(t)) if t is not None else None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _memo(text: MessageText, name: str, compute: Callable[[], str]) -> str:
    """A key derived from the message's cached header fields, computed once: the mailstore
    keeps it with the message's facts in the folder index (``memo_text``), so a later SORT
    or THREAD of the folder parses no Date:, Subject: or address again (issue 19: parsing
    them was most of a SORT's time). ``name`` carries a version: change it with ``compute``."""
    memo = getattr(text.msg, "memo_text", None)
    return compute() if memo is None else str(memo(name, compute))


def sent_date(text: MessageText) -> float:
    """RFC 5256 §2.2: the Date: header as an instant; INTERNALDATE when it is missing or
    cannot be parsed."""

    def parse() -> str:
        when = _epoch(text.header("date"))
        return repr(internal_date(text) if when is None else when)

    return float(_memo(text, "sort-date-1", parse))


def subject_key(text: MessageText) -> tuple[str, bool]:
    """RFC 5256 §2.1: the message's base subject as compared (casemapped), and whether the
    subject said it is a reply or a forward (THREAD REFERENCES step 5 wants that)."""

    def extract() -> str:
        base, reply = imap_thread.base_subject(text.header("subject"))
        return ("R" if reply else "-") + imap_thread.casemap(base)

    value = _memo(text, "sort-subject-1", extract)
    return value[1:], value[:1] == "R"


def _first_address(text: MessageText, name: str) -> Optional[imap_address.Address]:
    addrs = imap_address.parse(text.raw_header(name))
    return addrs[0] if addrs else None


def address_key(text: MessageText, name: str) -> str:
    """RFC 5256 §3 FROM/TO/CC: the addr-mailbox of the field's first address (a group's
    name when it starts with a group, as in its ENVELOPE), "" without one."""

    def key() -> str:
        a = _first_address(text, name)
        return imap_thread.casemap(header_text(a.mailbox or "")) if a is not None else ""

    return _memo(text, f"sort-{name}-1", key)


def display_key(text: MessageText, name: str) -> str:
    """RFC 5957 §3 DISPLAYFROM/DISPLAYTO: the first address's display name, decoded; its
    addr-spec when it has none; a group's name for a group."""

    def key() -> str:
        a = _first_address(text, name)
        if a is None:
            return ""
        if a.name:
            shown = header_text(a.name)
        elif a.host:
            shown = f"{a.mailbox or ''}@{a.host}"
        else:
            shown = a.mailbox or ""
        return imap_thread.casemap(shown)

    return _memo(text, f"sort-display{name}-1", key)


def sort_keys(text: MessageText, criteria: list[Criterion]) -> tuple[Key, ...]:
    """One message's key for each criterion, in order."""
    out: list[Key] = []
    for key, _reverse in criteria:
        if key == "ARRIVAL":
            out.append(internal_date(text))
        elif key == "DATE":
            out.append(sent_date(text))
        elif key == "SIZE":
            out.append(text.msg.getSize())
        elif key == "SUBJECT":
            out.append(subject_key(text)[0])
        elif key in ("FROM", "TO", "CC"):
            out.append(address_key(text, key.lower()))
        else:  # DISPLAYFROM, DISPLAYTO
            out.append(display_key(text, key[7:].lower()))
    return tuple(out)


@functools.total_ordering
class _Reversed:
    """One REVERSE criterion's key in a ``rank``: orders as its key turned around."""

    __slots__ = ("key",)

    def __init__(self, key: Key) -> None:
        self.key = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.key == other.key

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.key < self.key)

    def __hash__(self) -> int:
        return hash(self.key)


def rank(number: int, keys: tuple[Key, ...], criteria: list[Criterion]) -> tuple[Any, ...]:
    """One message's place in the sort order as a single comparable value: its keys (those of
    REVERSE criteria turned around), then its ``number`` (UID or sequence number), so that
    messages equal on every key stay in mailbox order as ``ordered`` leaves them. Lets an
    updating SORT (CONTEXT=SORT) insert and remove with bisect instead of sorting anew."""
    return (
        *(
            _Reversed(k) if reverse else k
            for k, (_name, reverse) in zip(keys, criteria, strict=True)
        ),
        number,
    )


def _nth_key(i: int) -> Callable[[tuple[int, tuple[Key, ...]]], Key]:
    """The sort key of a row by its ``i``-th criterion."""

    def key(row: tuple[int, tuple[Key, ...]]) -> Key:
        return row[1][i]

    return key


def ordered(rows: list[tuple[int, tuple[Key, ...]]], criteria: list[Criterion]) -> list[int]:
    """The numbers of ``rows`` ((number, keys), in mailbox order) sorted by the criteria.
    REVERSE turns one key's order around; messages equal on every key stay in mailbox order
    (RFC 5256 §3, and what Dovecot answers): one stable sort per criterion, last first."""
    rows = list(rows)
    for i in range(len(criteria) - 1, -1, -1):
        rows.sort(key=_nth_key(i), reverse=criteria[i][1])
    return [n for n, _ in rows]


def thread_message(text: MessageText, number: int, seq: int) -> imap_thread.ThreadMessage:
    """What THREAD needs of one message (RFC 5256 §3 step 1: References, else the first
    msg-id of In-Reply-To)."""

    def ids() -> str:  # msg-ids hold no white space: "id\nref ref ..."
        refs = imap_thread.message_ids(text.raw_header("references"))
        if not refs:
            refs = imap_thread.message_ids(text.raw_header("in-reply-to"))[:1]
        own = imap_thread.message_ids(text.raw_header("message-id"))
        return (own[0] if own else "") + "\n" + " ".join(refs)

    own, _, refs = _memo(text, "thread-ids-1", ids).partition("\n")
    return imap_thread.ThreadMessage(
        number, seq, sent_date(text), own or None, refs.split(), "", subject_key(text)
    )
