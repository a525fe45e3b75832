"""ENVELOPE and BODYSTRUCTURE for IMAP FETCH (RFC 3501 §7.4.2), built from raw message bytes.

Pure: bytes and header dicts in, the wire form out; no I/O beyond the message object given.
Replaces Twisted's builders, which lower-case parameter values (breaking ``boundary``), give
NIL types for messages without Content-Type (RFC 2045 §5.2 says text/plain; us-ascii), count
the whole message as the body size and fail on 8-bit headers or addresses without ``@``.
"""

from __future__ import annotations

import email.parser
import email.utils
import re
from email.message import Message
from typing import Any, Optional

from cgtwist.protocols.imap import address as imap_address
from cgtwist.protocols.imap import sections as imap_sections

_ENVELOPE_HEADERS = (
    "date",
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "in-reply-to",
    "message-id",
)


def _b(value: Optional[str]) -> Optional[bytes]:
    """Header text to octets: latin-1 round-trips what the mailstore decoded; else UTF-8."""
    if value is None:
        return None
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def _addresses(value: Optional[str]) -> Optional[list[list[Optional[bytes]]]]:
    """RFC 3501 address list: (name adl mailbox host) per address, group start and end
    markers around a group's members (§7.4.2), NIL when there is none."""
    out = [[_b(a.name), _b(a.adl), _b(a.mailbox), _b(a.host)] for a in imap_address.parse(value)]
    return out or None


def envelope(headers: dict[str, str]) -> list[Any]:
    """The ENVELOPE structure from lower-cased header names (sender/reply-to default to from)."""

    def h(name: str) -> Optional[str]:
        v = headers.get(name)
        return " ".join(v.split()) if v is not None else None

    frm = _addresses(h("from"))
    return [
        _b(h("date")),
        _b(h("subject")),
        frm,
        _addresses(h("sender")) or frm,
        _addresses(h("reply-to")) or frm,
        _addresses(h("to")),
        _addresses(h("cc")),
        _addresses(h("bcc")),
        _b(h("in-reply-to")),
        _b(h("message-id")),
    ]


def envelope_of(msg: Any) -> bytes:
    """ENVELOPE on the wire; kept with the message by a store that offers ``memo``."""
    memo = getattr(msg, "memo", None)
    if memo is not None:
        return bytes(memo("envelope-2", lambda: _envelope_wire(msg)))
    return _envelope_wire(msg)


def _envelope_wire(msg: Any) -> bytes:
    heads = msg.getHeaders(False, *_ENVELOPE_HEADERS)
    heads = {k.lower(): v for k, v in heads.items()}
    return wire(envelope(heads))


_QUOTE_SAFE = re.compile(rb"\A[\x20-\x7e]{0,1000}\Z")


def wire(item: Any) -> bytes:
    """An IMAP value: None as NIL, ints as numbers, bytes quoted (or as a literal when they hold
    CR, LF, NUL, 8-bit or are long), lists parenthesised (RFC 3501 §4)."""
    if item is None:
        return b"NIL"
    if isinstance(item, bytes):
        if _QUOTE_SAFE.match(item):
            return b'"' + item.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return b"{%d}\r\n" % len(item) + item
    if isinstance(item, int):
        return b"%d" % item
    if isinstance(item, str):
        return wire(item.encode("utf-8"))
    return b"(" + b" ".join(wire(x) for x in item) + b")"


def _params(part: Message, header: str) -> Optional[list[bytes]]:
    out: list[bytes] = []
    for k, v in (part.get_params(header=header, failobj=[]) or [])[1:]:
        if isinstance(v, tuple):
            v = email.utils.collapse_rfc2231_value(v)
        out += [_b(str(k)) or b"", _b(email.utils.unquote(str(v))) or b""]
    return out or None


def _disposition(part: Message) -> Optional[list[Any]]:
    if part.get("content-disposition") is None:
        return None
    value = part.get_params(header="content-disposition", failobj=[])
    if not value:
        return None
    return [_b(str(value[0][0])), _params(part, "content-disposition")]


def _header(part: Message, name: str) -> Optional[bytes]:
    v = part.get(name)
    return _b(" ".join(str(v).split())) if v is not None else None


def _lines(body: bytes) -> int:
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def structure(
    part: Message, extended: bool, raw: bytes = b"", node: Optional[imap_sections.Part] = None
) -> list[Any]:
    """BODYSTRUCTURE (``extended``) or BODY of one MIME part: ``part`` is its header, ``node``
    where it lies in ``raw`` (None: a header alone, sizes left 0 for the caller to fill)."""
    if node is not None and node.children:
        kids = [structure(c.header, extended, raw, c) for c in node.children]
        out: list[Any] = kids + [_b(part.get_content_subtype())]
        if extended:
            out += [
                _params(part, "content-type"),
                _disposition(part),
                _header(part, "content-language"),
                _header(part, "content-location"),
            ]
        return out
    maintype, subtype = part.get_content_maintype(), part.get_content_subtype()
    params = _params(part, "content-type")
    if maintype == "text" and not (params and b"charset" in [p.lower() for p in params[::2]]):
        params = (params or []) + [b"charset", b"us-ascii"]  # RFC 2045 §5.2 default
    body = raw[node.body : node.end] if node is not None else b""
    out = [
        _b(maintype),
        _b(subtype),
        params,
        _header(part, "content-id"),
        _header(part, "content-description"),
        _b(str(part.get("content-transfer-encoding", "7bit")).strip().lower()) or b"7bit",
        len(body),
    ]
    if node is not None and node.message is not None:
        inner = node.message
        heads = {k.lower(): str(v) for k, v in inner.header.items()}
        out += [envelope(heads), structure(inner.header, extended, raw, inner), _lines(body)]
    elif maintype == "text":
        out.append(_lines(body))
    if extended:
        out += [
            _header(part, "content-md5"),
            _disposition(part),
            _header(part, "content-language"),
            _header(part, "content-location"),
        ]
    return out


def body_structure(raw: bytes, extended: bool) -> bytes:
    """The wire form of BODYSTRUCTURE/BODY for a whole raw message, sizes and line counts
    from the octets each part spans (so they agree with what BODY[section] returns)."""
    root = imap_sections.parse(raw)
    return wire(structure(root.header, extended, raw, root))


_MIME_HEADERS = (
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "content-md5",
    "content-disposition",
    "content-language",
    "content-location",
)


def cached_structure(msg: Any, extended: bool) -> Optional[bytes]:
    """BODYSTRUCTURE of a single-part message from the store's cached headers and body size
    and line count (``msg.meta``), without reading the file; None when that is not possible."""
    meta = getattr(msg, "meta", None)
    if meta is None or not hasattr(meta, "body_size") or not hasattr(meta, "body_lines"):
        return None
    heads = {k.lower(): v for k, v in msg.getHeaders(False, *_MIME_HEADERS).items()}
    ctype = heads.get("content-type", "").strip().lower()
    if ctype.startswith(("multipart/", "message/")):
        return None
    part = email.parser.HeaderParser(policy=imap_sections.UNFOLDING).parsestr(
        "".join(f"{k}: {v}\r\n" for k, v in heads.items()) + "\r\n"
    )
    out = structure(part, extended)
    out[6] = int(meta.body_size)
    if part.get_content_maintype() == "text":
        out[7] = int(meta.body_lines)
    return wire(out)
