"""IMAP SEARCH: compile search keys into a predicate and evaluate it against one message.

Pure: works on tokens from cgtwist.protocols.imap.parse and on one message as
cgtwist.protocols.imap.messagetext's ``MessageText`` reads it (that module owns decoding the
headers and text); never imports twisted.internet. Replaces Twisted's evaluator, which loses headers in
TEXT, answers KEYWORD with False, compares dates of different types and recurses without bound
(RFC 3501 §6.4.4 lists the keys implemented here).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Callable, Optional

from cgtwist.protocols.imap.messagetext import MessageText
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

    def key(self, depth: int) -> Predicate:
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
            preds = sub.all(depth + 1)
            self.terms = sub.terms
            self.modseq = self.modseq or sub.modseq
            return lambda m, c: all(p(m, c) for p in preds)
        if isinstance(tok, Literal):
            raise SearchError("Expected a search key")
        word = tok.upper()
        if word == b"ALL":
            return lambda m, c: True
        if word in _FLAG_KEYS:
            flag, want = _FLAG_KEYS[word]
            low = flag.lower()
            return lambda m, c: (low in m.flags()) == want
        if word == b"NEW":
            return lambda m, c: "\\recent" in m.flags() and "\\seen" not in m.flags()
        if word in (b"KEYWORD", b"UNKEYWORD"):
            kw = self.string().decode("utf-8", "replace").lower()
            want = word == b"KEYWORD"
            return lambda m, c: (kw in m.flags()) == want
        if word in _ADDRESS_HEADERS:
            name, folded = _ADDRESS_HEADERS[word], _folded(self.string())
            return lambda m, c: folded in m.address_text(name).casefold()
        if word == b"SUBJECT":
            folded = _folded(self.string())
            return lambda m, c: folded in m.header("subject").casefold()
        if word == b"HEADER":
            field = self.string().decode("ascii", "replace").lower()
            needle = self.string()
            if not needle:  # RFC 3501 §6.4.4: empty string matches any message with the field
                return lambda m, c: m.has_header(field)
            folded = _folded(needle)
            return lambda m, c: any(folded in v.casefold() for v in m.header_all(field))
        if word == b"BODY":
            folded = _folded(self.string())
            return lambda m, c: folded in m.folded("body")
        if word == b"TEXT":
            folded = _folded(self.string())
            return lambda m, c: folded in m.folded("full")
        if word in (b"LARGER", b"SMALLER"):
            n = self.number()
            if word == b"LARGER":
                return lambda m, c: m.msg.getSize() > n
            return lambda m, c: m.msg.getSize() < n
        if word in _DATE_KEYS:
            day = parse_date(self.string())
            get: Callable[[MessageText], Optional[datetime.date]] = (
                MessageText.sent_date if word.startswith(b"SENT") else MessageText.internal_date
            )
            op = word[4:] if word.startswith(b"SENT") else word
            if op == b"BEFORE":
                return lambda m, c: (d := get(m)) is not None and d < day
            if op == b"ON":
                return lambda m, c: (d := get(m)) is not None and d == day
            return lambda m, c: (d := get(m)) is not None and d >= day  # SINCE: on or after
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
            return lambda m, c: (getattr(m.msg, "modseq", 0) or 0) >= value
        if word == b"NOT":
            inner = self.key(depth + 1)
            return lambda m, c: not inner(m, c)
        if word == b"OR":
            a = self.key(depth + 1)
            b = self.key(depth + 1)
            return lambda m, c: a(m, c) or b(m, c)
        if word == b"$" or (word == b"UID" and self.tokens[self.pos : self.pos + 1] == [b"$"]):
            # RFC 5182 §2.1: the messages the last SEARCH ... RETURN (SAVE) saved.
            self.pos += word == b"UID"
            saved = self.saved
            return lambda m, c: c.uid in saved
        if word == b"UID":
            try:
                return _set_matcher(self.string(), "uid")
            except ParseError:
                raise SearchError("Bad UID set") from None
        if tok[:1].isdigit() or tok[:1] == b"*":
            try:
                return _set_matcher(bytes(tok), "seq")
            except ParseError:
                raise SearchError("Bad message set") from None
        raise SearchError("Unknown search key " + word[:40].decode("ascii", "replace"))

    def all(self, depth: int) -> list[Predicate]:
        preds = []
        while self.pos < len(self.tokens):
            preds.append(self.key(depth))
        if not preds:
            raise SearchError("Empty search")
        return preds


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
    preds = comp.all(0)
    if comp.modseq and used is not None:
        used.add(b"MODSEQ")
    if len(preds) == 1:
        return charset, preds[0]
    return charset, lambda m, c: all(p(m, c) for p in preds)
