"""IMAP SEARCH: compile search keys into a predicate and evaluate it against one message.

Pure: works on tokens from cgtwist.protocols.imap.parse and on duck-typed Twisted IMessage
objects; never imports twisted.internet. Replaces Twisted's evaluator, which loses headers in
TEXT, answers KEYWORD with False, compares dates of different types and recurses without bound
(RFC 3501 §6.4.4 lists the keys implemented here).
"""

from __future__ import annotations

import binascii
import datetime
import email
import email.header
import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass
from typing import AbstractSet, Any, Callable, Optional

from cgtwist.protocols.imap import address as imap_address
from cgtwist.protocols.imap import sections as imap_sections
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
_FOLD_SLICE = 256 * 1024
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


class MessageText:
    """Lazy access to one message's flags, dates, headers and text for matching."""

    def __init__(self, msg: Any, raw: Callable[[], bytes]) -> None:
        self.msg = msg
        self._raw = raw
        self._raw_cache: Optional[bytes] = None
        self._headers: Optional[dict[str, Optional[str]]] = None
        self._body: Optional[str] = None
        self._folded: dict[str, str] = {}
        self._flags: Optional[AbstractSet[str]] = None

    def flags(self) -> AbstractSet[str]:
        if self._flags is None:
            quick = getattr(self.msg, "search_flags", None)  # the mailstore's, shared
            self._flags = quick() if quick is not None else {f.lower() for f in self.msg.getFlags()}
        return self._flags

    def raw(self) -> bytes:
        if self._raw_cache is None:
            self._raw_cache = self._raw()
        return self._raw_cache

    @property
    def bytes_read(self) -> int:
        """Octets of the message file matching has read so far (0 when none was needed)."""
        return len(self._raw_cache) if self._raw_cache is not None else 0

    def _lookup(self, name: str) -> Optional[str]:
        """One header's value via the message's own (cached) header access; None if absent."""
        if self._headers is None:
            self._headers = {}
        if name not in self._headers:
            quick = getattr(self.msg, "header_value", None)
            if quick is not None:
                value = quick(name)
            else:
                heads = self.msg.getHeaders(False, name)
                value = next((v for k, v in heads.items() if k.lower() == name), None)
            self._headers[name] = value
        return self._headers[name]

    def raw_header(self, name: str) -> Optional[str]:
        """The header's value as stored (octets as latin-1 code points, folding kept); None
        when the message has no such field."""
        return self._lookup(name)

    def header(self, name: str) -> str:
        """The header's text for matching: 8-bit octets as UTF-8, RFC 2047 words decoded."""
        return _header_text(self._lookup(name) or "")

    def has_header(self, name: str) -> bool:
        return self._lookup(name) is not None

    def header_all(self, name: str) -> list[str]:
        """Every instance of the field as text (SEARCH HEADER matches any of them)."""
        many = getattr(self.msg, "header_values", None)
        if many is None:
            value = self._lookup(name)
            return [] if value is None else [_header_text(value)]
        return [_header_text(v) for v in many(name)]

    def address_text(self, name: str) -> str:
        """An address field as written and as its addresses read plainly (comments, routes
        and group syntax aside), so FROM user@domain finds ``<user (c)@ (c) domain>``."""
        raw = self._lookup(name)
        if not raw:
            return ""
        memo = getattr(self.msg, "memo_text", None)  # kept in the mailstore's index

        def build() -> str:
            return _header_text(raw) + "\n" + _header_text(imap_address.search_text(raw))

        return build() if memo is None else str(memo("search-" + name + "-1", build))

    def body_text(self) -> str:
        """The body as text: MIME text parts decoded (base64, quoted-printable, charset)."""
        if self._body is None:
            self._body = _decoded_body(self.raw())
        return self._body

    def folded(self, which: str) -> str:
        """``body_text()`` or ``full_text()`` (``which``), case-folded, computed once."""
        hit = self._folded.get(which)
        if hit is None:
            hit = self._folded[which] = fold(
                self.body_text() if which == "body" else self.full_text()
            )
        return hit

    def prepare(self, which: set[str]) -> None:
        """(any thread) Read the message and build the folded texts named, so matching on
        the reactor afterwards costs only the substring searches."""
        for w in which:
            self.folded(w)

    def full_text(self) -> str:
        """TEXT searches the header and the body (RFC 3501 §6.4.4)."""
        raw = self.raw()
        head = raw[: _header_end(raw)]
        return _header_text(head.decode("latin-1")) + "\n" + self.body_text()

    def internal_date(self) -> Optional[datetime.date]:
        quick = getattr(self.msg, "internal_day", None)  # from the mailstore's index
        if quick is not None:
            day: datetime.date = quick()
            return day
        meta = getattr(self.msg, "meta", None)
        when = getattr(meta, "date", None)
        if isinstance(when, (int, float)):
            # The store's internal date as epoch: its UTC day, as getInternalDate() would say
            # it, without formatting and re-parsing a date string per message.
            try:
                return datetime.datetime.fromtimestamp(when, datetime.UTC).date()
            except (OverflowError, OSError, ValueError):
                pass
        return _rfc2822_date(self.msg.getInternalDate())

    def sent_date(self) -> Optional[datetime.date]:
        return _rfc2822_date(self.header("date"))


def _rfc2822_date(value: Any) -> Optional[datetime.date]:
    """The date part in the value's own time zone (RFC 3501 §6.4.4 disregards time and zone)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not value:
        return None
    try:
        t = email.utils.parsedate_tz(value)
    except (TypeError, ValueError, IndexError):
        return None
    if t is None:
        return None
    try:
        return datetime.date(t[0], t[1], t[2])
    except ValueError:
        return None


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


def _header_end(raw: bytes) -> int:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if i >= 0:
            return i + len(sep)
    return len(raw)


def header_text(value: str) -> str:
    """A header value as text (see ``_header_text``): for SORT's display names and keys."""
    return _header_text(value)


def _header_text(value: str) -> str:
    """Header octets (kept as latin-1 code points by the store) as text: raw 8-bit read as
    UTF-8, then RFC 2047 encoded words decoded."""
    if value.isascii() and "=?" not in value:
        return value  # the common case: nothing to decode
    try:
        value = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass  # already text, or 8-bit that is not UTF-8: keep as is
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value


def _decoded_body(raw: bytes) -> str:
    """Text of the body for BODY/TEXT: plain bodies as is, MIME text parts decoded."""
    end = _header_end(raw)
    head = raw[:end].lower()
    if b"content-type" not in head and b"content-transfer-encoding" not in head:
        return raw[end:].decode("utf-8", "replace")
    if b"multipart/" not in head and b"message/" not in head:
        quick = _single_part_text(raw, end)
        if quick is not None:
            return quick
    return _parsed_body(raw)


def _single_part_text(raw: bytes, end: int) -> Optional[str]:
    """A single-part body decoded from its header alone (the parse of a large body line by
    line is most of a SEARCH BODY's cost); None when the full parse is needed. The same
    result as ``_parsed_body``."""
    simple = _simple_text_charset(raw[:end])
    if simple is not None:
        try:
            return raw[end:].decode(simple or "utf-8", "replace")
        except LookupError:
            return raw[end:].decode("utf-8", "replace")
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw[:end])
    if msg.is_multipart() or msg.defects:
        return None
    if msg.get_content_maintype() != "text":
        return None if msg.get_content_maintype() == "message" else ""
    cte = str(msg.get("content-transfer-encoding", "")).strip().lower()
    if cte not in ("", "7bit", "8bit", "binary"):
        return None
    charset = msg.get_content_charset() or "utf-8"
    payload = raw[end:]
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


_FIELD_RE = re.compile(
    rb"^(content-type|content-transfer-encoding)[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)",
    re.I | re.M,
)
_SIMPLE_CT_RE = re.compile(
    rb'\A\s*text/[a-z0-9.+-]+\s*(?:;\s*charset\s*=\s*("?)([a-z0-9_.:+-]+)\1\s*)?;?\s*\Z'
)


def _simple_text_charset(head: bytes) -> Optional[str]:
    """For the everyday header (one ``Content-Type: text/...; charset=x``, identity
    transfer encoding): the charset ("" when none); None for anything else."""
    seen: dict[bytes, bytes] = {}
    for m in _FIELD_RE.finditer(head):
        name = m.group(1).lower()
        if name in seen:
            return None
        seen[name] = b" ".join(m.group(2).split()).lower()
    if seen.get(b"content-transfer-encoding", b"7bit") not in (b"7bit", b"8bit", b"binary", b""):
        return None
    ct = _SIMPLE_CT_RE.match(seen.get(b"content-type", b""))
    if ct is None:
        return None
    return (ct.group(2) or b"").decode("ascii")


def _parsed_body(raw: bytes) -> str:
    """The text parts of a MIME message, decoded, one after another. The parts are found by
    imap_sections (a bytes.find per boundary) so attachments are skipped, not parsed: the
    email package's parser walked every line of a 20 MB attachment in Python."""
    out = []
    stack = [imap_sections.parse(raw)]
    while stack:
        node = stack.pop()
        if node.children:
            stack.extend(reversed(node.children))
            continue
        if node.message is not None:
            stack.append(node.message)
            continue
        if node.header.get_content_maintype() not in ("text", "message"):
            continue
        payload = _decode_transfer(raw[node.body : node.end], node.header)
        charset = node.header.get_content_charset() or "utf-8"
        try:
            out.append(payload.decode(charset, "replace"))
        except LookupError:
            out.append(payload.decode("utf-8", "replace"))
    return "\n".join(out)


def _decode_transfer(body: bytes, header: Any) -> bytes:
    """A part's body with its Content-Transfer-Encoding undone (RFC 2045 §6); as it is when
    the encoding is unknown or broken."""
    cte = str(header.get("content-transfer-encoding", "")).strip().lower()
    try:
        if cte == "base64":
            return binascii.a2b_base64(body)
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)
    except (binascii.Error, ValueError):
        pass
    return body


def fold(text: str) -> str:
    """``text.casefold()`` a slice at a time: on a large body one call would hold the GIL
    (and the reactor thread waiting for it) for its whole length."""
    if len(text) <= _FOLD_SLICE:
        return text.casefold()
    return "".join(text[i : i + _FOLD_SLICE].casefold() for i in range(0, len(text), _FOLD_SLICE))


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
