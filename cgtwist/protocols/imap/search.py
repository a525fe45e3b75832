"""IMAP SEARCH: compile search keys into a predicate and evaluate it against one message.

Pure: works on tokens from cgtwist.protocols.imap.parse and on one message as
cgtwist.protocols.imap.messagetext's ``MessageText`` reads it (that module owns decoding the
headers and text); never imports twisted.internet. Replaces Twisted's evaluator, which loses headers in
TEXT, answers KEYWORD with False, compares dates of different types and recurses without bound
(RFC 3501 §6.4.4 lists the keys implemented here).
"""

from __future__ import annotations

import datetime
import operator
import re
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, cast

from cgtwist.protocols.imap.messagetext import MessageText, header_text
from cgtwist.protocols.imap.parse import Literal, ParseError, SequenceSet, Token, parse_sequence_set

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DATE_RE = re.compile(r"\A(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")

_FLAG_KEYS = {
    b"ANSWERED": ("\\Answered", True),
    b"UNANSWERED": ("\\Answered", False),
    b"DELETED": ("\\Deleted", True),
    b"UNDELETED": ("\\Deleted", False),
    b"DRAFT": ("\\Draft", True),
    b"UNDRAFT": ("\\Draft", False),
    b"FLAGGED": ("\\Flagged", True),
    b"UNFLAGGED": ("\\Flagged", False),
    b"SEEN": ("\\Seen", True),
    b"UNSEEN": ("\\Seen", False),
    b"RECENT": ("\\Recent", True),
    b"OLD": ("\\Recent", False),
}
_ADDRESS_HEADERS = {b"BCC": "bcc", b"CC": "cc", b"FROM": "from", b"TO": "to"}
_TEXT_KEYS = {b"BODY", b"TEXT"}
_DATE_KEYS = {b"BEFORE", b"ON", b"SINCE", b"SENTBEFORE", b"SENTON", b"SENTSINCE"}


class SearchError(ParseError):
    """A search key we do not understand; answered with BAD."""


class BadCharset(ParseError):
    """CHARSET other than US-ASCII or UTF-8; answered NO [BADCHARSET] (RFC 3501 §6.4.4)."""


@dataclass
class Context:
    """What evaluation needs besides the message: numbers and the mailbox's highest ids."""

    seq: int
    uid: int
    max_seq: int
    max_uid: int


def parse_date(token: bytes) -> datetime.date:
    """RFC 3501 §9 date: ``d-Mon-yyyy`` (optionally quoted)."""
    m = _DATE_RE.match(token.decode("ascii", "replace"))
    if not m or m.group(2).lower() not in _MONTHS:
        raise SearchError("Bad date")
    try:
        return datetime.date(
            int(m.group(3)), _MONTHS.index(m.group(2).lower()) + 1, int(m.group(1))
        )
    except ValueError:
        raise SearchError("Bad date") from None


def _contains(haystack: str, needle: bytes) -> bool:
    """Case-insensitive substring match (RFC 3501 §6.4.4); the needle is UTF-8 or ASCII."""
    return _folded(needle) in haystack.casefold()


def _folded(needle: bytes) -> str:
    return needle.decode("utf-8", "replace").casefold()


def _set_matcher(spec: bytes, which: str) -> Predicate:
    """Membership in a sequence-set; resolved once per highest number, then bisected."""
    ranges = parse_sequence_set(spec)
    cache: dict[int, SequenceSet] = {}

    def pred(m: MessageText, c: Context) -> bool:
        highest, value = (c.max_uid, c.uid) if which == "uid" else (c.max_seq, c.seq)
        if highest not in cache:
            cache.clear()
            cache[highest] = SequenceSet(ranges, highest)
        return value in cache[highest]

    return pred


Predicate = Callable[[MessageText, Context], bool]


class NotIndexed(Exception):
    """A column asked the index for a fact it does not keep (a header field not cached):
    the search is matched message by message instead."""


class Facts(Protocol):
    """A mailbox's indexed facts as columns, one entry per message in sequence order (the
    mailstore's ``SearchFacts``): what a search over the whole mailbox can match without a
    message object per message."""

    def __len__(self) -> int: ...
    def uids(self) -> list[int]: ...
    def uid(self, i: int) -> int: ...
    def flag_test(self, test: Callable[[frozenset[str]], bool]) -> list[bool]: ...
    def part(self, start: int, end: int) -> Facts: ...
    def sizes(self) -> list[int]: ...
    def dates(self) -> list[float]: ...
    def modseqs(self) -> list[int]: ...
    def header(self, name: str) -> Optional[list[Optional[str]]]: ...
    def derived(self, name: str) -> list[Optional[str]]: ...
    def row(self, i: int) -> object: ...


@dataclass
class Span:
    """Where a column evaluation stands: ``facts`` are the messages with sequence numbers
    ``first + 1`` on; the mailbox's highest numbers, for ``*``."""

    facts: Facts
    first: int
    max_seq: int
    max_uid: int


# A search key over a Span: one truth value per message of its facts.
Column = Callable[[Span], list[bool]]

# INTERNALDATE as SEARCH reads it is the UTC day of the index's epoch seconds
# (MaildirMessage.internal_day); outside the dates a ``datetime.date`` holds, 1 Jan 1970.
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_FIRST_T = (1 - _EPOCH_ORDINAL) * 86400.0
_END_T = (datetime.date.max.toordinal() + 1 - _EPOCH_ORDINAL) * 86400.0


def _date_column(op: bytes, day: datetime.date) -> Column:
    """BEFORE, ON or SINCE ``day`` over INTERNALDATE as epoch seconds, a comparison or two
    per message (the same days as ``MessageText.internal_date``)."""
    lo = (day.toordinal() - _EPOCH_ORDINAL) * 86400.0
    hi = lo + 86400.0
    first, end = _FIRST_T, _END_T
    # A date outside what a ``datetime.date`` holds (or NaN) reads as 1 Jan 1970: epoch 0.
    if op == b"BEFORE":
        odd = 0.0 < lo
        return lambda s: [t < lo if first <= t < end else odd for t in s.facts.dates()]
    if op == b"ON":
        odd = lo <= 0.0 < hi
        return lambda s: [lo <= t < hi if first <= t < end else odd for t in s.facts.dates()]
    odd = 0.0 >= lo
    return lambda s: [t >= lo if first <= t < end else odd for t in s.facts.dates()]


def _contains_each(folded: str, texts: list[str]) -> list[bool]:
    """``folded in text.casefold()`` for each of ``texts``."""
    return [folded in t.casefold() for t in texts]


def _address_column(name: str, folded: str) -> Column:
    """FROM/TO/CC/BCC: the searchable text the index keeps for each message (``memo_text``),
    built through the message where it is not kept yet, and kept then."""
    memo = "search-" + name + "-1"

    def col(s: Span) -> list[bool]:
        facts = s.facts
        texts = facts.derived(memo)
        if None not in texts:  # the index keeps every message's text
            return _contains_each(folded, cast(list[str], texts))
        raws = facts.header(name)
        out = []
        for i, text in enumerate(texts):
            if text is None:
                if raws is not None and not raws[i]:
                    text = ""
                else:
                    msg = facts.row(i)
                    text = MessageText(msg, lambda: b"").address_text(name)
            out.append(folded in text.casefold())
        return out

    return col


def _header_column(name: str, folded: Optional[str], absent: bool = False) -> Column:
    """A header field (NotIndexed when the index does not keep it): ``folded`` in its text (``absent``: a message
    without the field counts as an empty one, as SUBJECT reads it), or with ``folded``
    None whether it is there at all (HEADER <field> "")."""

    def col(s: Span) -> list[bool]:
        values = s.facts.header(name)
        if values is None:
            raise NotIndexed(name)
        if folded is None:
            return [v is not None for v in values]
        if None not in values:
            texts = cast(list[str], values)
            # Plain ASCII without encoded words reads as itself (header_text): no call each.
            if all(map(str.isascii, texts)) and "=?" not in "".join(texts):
                return _contains_each(folded, texts)
        if absent:
            return [folded in header_text(v or "").casefold() for v in values]
        return [v is not None and folded in header_text(v).casefold() for v in values]

    return col


def _set_column(spec: bytes, which: str) -> Column:
    ranges = parse_sequence_set(spec)

    def col(s: Span) -> list[bool]:
        if which == "uid":
            uids = SequenceSet(ranges, s.max_uid)
            return [u in uids for u in s.facts.uids()]
        seqs = SequenceSet(ranges, s.max_seq)
        return [n in seqs for n in range(s.first + 1, s.first + 1 + len(s.facts))]

    return col


def _all_columns(cols: Sequence[Column]) -> Column:
    if len(cols) == 1:
        return cols[0]

    def col(s: Span) -> list[bool]:
        out = cols[0](s)
        for c in cols[1:]:
            out = list(map(operator.and_, out, c(s)))
        return out

    return col


# What a key compiles to: its test of one message, and its column form when the index
# answers it for every message (None: the message text or an unkept header is needed).
_Key = tuple[Predicate, Optional[Column]]


class _Compiler:
    def __init__(
        self,
        tokens: list[Token],
        max_terms: int,
        max_depth: int,
        saved: frozenset[int] = frozenset(),
    ) -> None:
        self.tokens = tokens
        self.pos = 0
        self.terms = 0
        self.max_terms = max_terms
        self.max_depth = max_depth
        self.saved = saved  # UIDs of the SEARCHRES ``$`` (RFC 5182)
        self.modseq = False  # a MODSEQ key was met (RFC 7162 §3.1.5)

    def string(self) -> bytes:
        if self.pos >= len(self.tokens):
            raise SearchError("Missing search argument")
        tok = self.tokens[self.pos]
        self.pos += 1
        if isinstance(tok, list):
            raise SearchError("Expected a string")
        return bytes(tok)

    def number(self) -> int:
        tok = self.string()
        if not tok.isdigit() or len(tok) > 20:
            raise SearchError("Expected a number")
        return int(tok)

    def key(self, depth: int) -> _Key:
        if depth > self.max_depth:
            raise SearchError("Search too deeply nested")
        self.terms += 1
        if self.terms > self.max_terms:
            raise SearchError("Too many search terms")
        if self.pos >= len(self.tokens):
            raise SearchError("Missing search key")
        tok = self.tokens[self.pos]
        self.pos += 1
        if isinstance(tok, list):
            sub = _Compiler(tok, self.max_terms, self.max_depth, self.saved)
            sub.terms = self.terms
            keys = sub.all(depth + 1)
            self.terms = sub.terms
            self.modseq = self.modseq or sub.modseq
            preds = [p for p, _c in keys]
            return lambda m, c: all(p(m, c) for p in preds), _conjunction(keys)
        if isinstance(tok, Literal):
            raise SearchError("Expected a search key")
        word = tok.upper()
        if word == b"ALL":
            return lambda m, c: True, lambda s: [True] * len(s.facts)
        if word in _FLAG_KEYS:
            flag, want = _FLAG_KEYS[word]
            low = flag.lower()
            return (
                lambda m, c: (low in m.flags()) == want,
                lambda s: s.facts.flag_test(lambda f: (low in f) == want),
            )
        if word == b"NEW":
            return (
                lambda m, c: "\\recent" in m.flags() and "\\seen" not in m.flags(),
                lambda s: s.facts.flag_test(lambda f: "\\recent" in f and "\\seen" not in f),
            )
        if word in (b"KEYWORD", b"UNKEYWORD"):
            kw = self.string().decode("utf-8", "replace").lower()
            want = word == b"KEYWORD"
            return (
                lambda m, c: (kw in m.flags()) == want,
                lambda s: s.facts.flag_test(lambda f: (kw in f) == want),
            )
        if word in _ADDRESS_HEADERS:
            name, folded = _ADDRESS_HEADERS[word], _folded(self.string())
            return (
                lambda m, c: folded in m.address_text(name).casefold(),
                _address_column(name, folded),
            )
        if word == b"SUBJECT":
            folded = _folded(self.string())
            return (
                lambda m, c: folded in m.header("subject").casefold(),
                _header_column("subject", folded, absent=True),
            )
        if word == b"HEADER":
            field = self.string().decode("ascii", "replace").lower()
            needle = self.string()
            if not needle:  # RFC 3501 §6.4.4: empty string matches any message with the field
                return lambda m, c: m.has_header(field), _header_column(field, None)
            folded = _folded(needle)
            return (
                lambda m, c: any(folded in v.casefold() for v in m.header_all(field)),
                _header_column(field, folded),
            )
        if word == b"BODY":
            folded = _folded(self.string())
            return lambda m, c: folded in m.folded("body"), None
        if word == b"TEXT":
            folded = _folded(self.string())
            return lambda m, c: folded in m.folded("full"), None
        if word in (b"LARGER", b"SMALLER"):
            n = self.number()
            if word == b"LARGER":
                return (
                    lambda m, c: m.msg.getSize() > n,
                    lambda s: [size > n for size in s.facts.sizes()],
                )
            return (
                lambda m, c: m.msg.getSize() < n,
                lambda s: [size < n for size in s.facts.sizes()],
            )
        if word in _DATE_KEYS:
            day = parse_date(self.string())
            sent = word.startswith(b"SENT")
            get: Callable[[MessageText], Optional[datetime.date]] = (
                MessageText.sent_date if sent else MessageText.internal_date
            )
            op = word[4:] if sent else word
            col = None if sent else _date_column(op, day)
            if op == b"BEFORE":
                return lambda m, c: (d := get(m)) is not None and d < day, col
            if op == b"ON":
                return lambda m, c: (d := get(m)) is not None and d == day, col
            return lambda m, c: (d := get(m)) is not None and d >= day, col  # SINCE: on or after
        if word == b"MODSEQ":
            # RFC 7162 §3.1.5: MODSEQ [entry-name entry-type-req] value. Every flag of a
            # message shares its MODSEQ, so the entry names one of them and changes nothing.
            if self.pos < len(self.tokens) and isinstance(self.tokens[self.pos], Literal):
                self.string()
                kind = self.string().lower()
                if kind not in (b"priv", b"shared", b"all"):
                    raise SearchError("Bad MODSEQ entry type")
            value = self.number()
            self.modseq = True
            return (
                lambda m, c: (getattr(m.msg, "modseq", 0) or 0) >= value,
                lambda s: [(x or 0) >= value for x in s.facts.modseqs()],
            )
        if word == b"NOT":
            inner, inner_col = self.key(depth + 1)
            return lambda m, c: not inner(m, c), (
                None if inner_col is None else lambda s: list(map(operator.not_, inner_col(s)))
            )
        if word == b"OR":
            a, a_col = self.key(depth + 1)
            b, b_col = self.key(depth + 1)
            either: Optional[Column] = None
            if a_col is not None and b_col is not None:
                ac, bc = a_col, b_col
                either = lambda s: list(map(operator.or_, ac(s), bc(s)))  # noqa: E731
            return lambda m, c: a(m, c) or b(m, c), either
        if word == b"$" or (word == b"UID" and self.tokens[self.pos : self.pos + 1] == [b"$"]):
            # RFC 5182 §2.1: the messages the last SEARCH ... RETURN (SAVE) saved.
            self.pos += word == b"UID"
            saved = self.saved
            return lambda m, c: c.uid in saved, lambda s: list(
                map(saved.__contains__, s.facts.uids())
            )
        if word == b"UID":
            try:
                spec = self.string()
                return _set_matcher(spec, "uid"), _set_column(spec, "uid")
            except ParseError:
                raise SearchError("Bad UID set") from None
        if tok[:1].isdigit() or tok[:1] == b"*":
            try:
                return _set_matcher(bytes(tok), "seq"), _set_column(bytes(tok), "seq")
            except ParseError:
                raise SearchError("Bad message set") from None
        raise SearchError("Unknown search key " + word[:40].decode("ascii", "replace"))

    def all(self, depth: int) -> list[_Key]:
        keys = []
        while self.pos < len(self.tokens):
            keys.append(self.key(depth))
        if not keys:
            raise SearchError("Empty search")
        return keys


def _conjunction(keys: list[_Key]) -> Optional[Column]:
    """The column of keys that must all hold; None unless every key has one."""
    cols = [c for _p, c in keys]
    if any(c is None for c in cols):
        return None
    return _all_columns([c for c in cols if c is not None])


def text_needed(tokens: list[Token]) -> set[str]:
    """Which message texts (``"body"``, ``"full"``) a search may match against: those are
    worth building off the reactor for a large message. An argument spelled BODY or TEXT
    counts too, which costs only the early build."""
    out: set[str] = set()
    stack: list[Token] = list(tokens)
    while stack:
        t = stack.pop()
        if isinstance(t, list):
            stack.extend(t)
        elif not isinstance(t, Literal) and t.upper() in _TEXT_KEYS:
            out.add("body" if t.upper() == b"BODY" else "full")
    return out


@dataclass
class Query:
    """A compiled search: its charset, its test of one message and, when the index answers
    every key, its column form (``Span`` -> one truth value per message)."""

    charset: Optional[str]
    pred: Predicate
    column: Optional[Column]


def compile_search(
    tokens: list[Token],
    max_terms: int = 1000,
    max_depth: int = 64,
    saved: frozenset[int] = frozenset(),
    used: Optional[set[bytes]] = None,
) -> tuple[Optional[str], Predicate]:
    """Compile ``[CHARSET name] key...`` into (charset, predicate); raise SearchError/BadCharset.

    ``max_terms`` bounds the work per message; ``max_depth`` bounds recursion (OR/NOT/parens);
    ``saved`` is what ``$`` stands for (UIDs); ``used`` gets ``b"MODSEQ"`` when a MODSEQ key
    is in the search (its results then carry a MODSEQ, RFC 7162 §3.1.5).
    """
    q = compile_query(tokens, max_terms, max_depth, saved, used)
    return q.charset, q.pred


def compile_query(
    tokens: list[Token],
    max_terms: int = 1000,
    max_depth: int = 64,
    saved: frozenset[int] = frozenset(),
    used: Optional[set[bytes]] = None,
) -> Query:
    """``compile_search`` with the column form as well (``Query``)."""
    charset = None
    if (
        len(tokens) >= 2
        and isinstance(tokens[0], bytes)
        and not isinstance(tokens[0], Literal)
        and tokens[0].upper() == b"CHARSET"
    ):
        cs = tokens[1]
        if isinstance(cs, list):
            raise SearchError("Bad charset")
        charset = bytes(cs).decode("ascii", "replace").upper()
        if charset not in ("US-ASCII", "UTF-8"):
            raise BadCharset(charset)
        tokens = tokens[2:]
    comp = _Compiler(tokens, max_terms, max_depth, saved)
    keys = comp.all(0)
    if comp.modseq and used is not None:
        used.add(b"MODSEQ")
    preds = [p for p, _c in keys]
    if len(preds) == 1:
        return Query(charset, preds[0], keys[0][1])
    return Query(charset, lambda m, c: all(p(m, c) for p in preds), _conjunction(keys))
