"""One message as IMAP SEARCH and SORT read it: flags, dates, headers and text, decoded.

Owns the lazy access to a message's text for matching: header values with 8-bit UTF-8 and
RFC 2047 encoded words decoded, address headers with their display names, the body of a
single-part message or the text parts of a MIME message (attachments skipped, not parsed;
base64 and quoted-printable undone), internal and sent dates (RFC 3501 §6.4.4: the date
part only) and casefolding in slices, so a large body never holds the reactor long. Split
from ``cgtwist.protocols.imap.search``, which compiles the search keys into predicates over
a ``MessageText``; SORT's keys (``cgtwist.protocols.imap.sort``) read it too.

Pure: duck-typed Twisted IMessage objects in, text out; never imports twisted.internet.
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
from typing import AbstractSet, Any, Callable, Optional

from cgtwist.protocols.imap import address as imap_address
from cgtwist.protocols.imap import sections as imap_sections

_FOLD_SLICE = 256 * 1024


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
