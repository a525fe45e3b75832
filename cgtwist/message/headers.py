"""The project's one header-field parser: the fields of a header block, in order.

Owns splitting a header section into (name, value) pairs the way every reader must agree on:
IMAP's cached metadata and SEARCH HEADER (cgtwist.mailstore), the Rules' message facts, the
hop markers (cgtwist.message.loops), the LIST agent's fields (cgtwist.lists) and the From:
a sender must own (cgtwist.core.senders); and turning a value into text (folding undone,
UTF-8, RFC 2047 encoded words). Pure and linear in the block; a caller that reads untrusted
mail bounds the block it passes (``MAX_HEADER_BYTES``). It must not parse addresses: callers
do that with the values it returns.
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Iterator, Optional

# The header section a reader of untrusted mail looks at (Postfix header_size_limit is 100k;
# ours is more generous): a longer one is read only this far.
MAX_HEADER_BYTES = 256 * 1024

# RFC 5322 §3.6.8: a field name is printable US-ASCII but the colon; §4.5.3 (obs-optional):
# white space may stand between it and the colon ("From :"), which a receiver must accept.
_NAME = re.compile(r"([!-9;-~]+)[ \t]*\Z")


def header_block(data: bytes) -> bytes:
    """The header section of a message, up to (not including) its blank line and at most
    MAX_HEADER_BYTES: found with two fast searches, so a cheap test on it (is a field name
    there at all?) does not read the body."""
    if data[:1] == b"\n" or data[:2] == b"\r\n":
        return b""
    crlf = data.find(b"\n\r\n", 0, MAX_HEADER_BYTES)
    limit = crlf if crlf >= 0 else MAX_HEADER_BYTES
    lf = data.find(b"\n\n", 0, limit)  # only a bare-LF end before the CRLF one counts
    end = lf if lf >= 0 else crlf
    return data[: end + 1] if end >= 0 else data[:MAX_HEADER_BYTES]


def header_fields(block: bytes) -> Iterator[tuple[str, str]]:
    """(lower-case name, value) of every field of a header block, in order, up to its blank
    line; folded lines joined with CRLF, outer white space stripped. Values are decoded
    latin-1 so every octet round-trips (``.encode("latin-1")``); lines that are not a field
    (no colon, a name that is not one) are skipped with their continuations."""
    name: Optional[str] = None
    value: list[str] = []
    pos, size = 0, len(block)
    while pos < size:  # line by line: the body after the blank line is never split
        nl = block.find(b"\n", pos)
        if nl < 0:
            nl = size
        line = block[pos:nl].rstrip(b"\r").decode("latin-1")
        pos = nl + 1
        if not line:
            break
        if line[0] in " \t":
            if name is not None:
                value.append(line)
            continue
        if name is not None:
            yield name, "\r\n".join(value).strip()
        n, sep, v = line.partition(":")
        m = _NAME.match(n) if sep else None
        if m is None:
            name, value = None, []
            continue
        name, value = m.group(1).lower(), [v.lstrip()]
    if name is not None:
        yield name, "\r\n".join(value).strip()


def unfolded(value: str) -> str:
    """A ``header_fields`` value as text: folding undone (each line's blanks trimmed, lines
    joined by a space, RFC 5322 §2.2.3) and its octets read as UTF-8 (RFC 6532)."""
    text = " ".join(part.strip() for part in value.split("\r\n"))
    return text if text.isascii() else text.encode("latin-1").decode("utf-8", "replace")


def decoded(value: str) -> str:
    """RFC 2047 encoded words of an unfolded value decoded; undecodable text (an unknown
    charset, broken base64: ``HeaderParseError``) is kept as it came."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, HeaderParseError):
        return value
