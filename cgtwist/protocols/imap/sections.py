"""The MIME tree of a raw message as byte ranges, and IMAP section numbers resolved on it.

Pure: bytes in, offsets out; never reads a file. RFC 3501 §6.4.5 addresses parts by number:
``BODY[2.1]`` is the first part of the second part, and inside a ``message/rfc822`` part the
numbers continue into the encapsulated message (``BODY[1.1]``, ``BODY[1.HEADER]``). Slicing
the original octets (rather than re-serialising a parse tree) gives the client exactly the
bytes that BODY[] holds, and one linear scan per multipart level bounds the work: every
delimiter search is a ``bytes.find`` inside the parent's range, and nesting stops at
MAX_DEPTH (deeper parts are opaque leaves, as in Dovecot).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Optional

MAX_DEPTH = 50  # MIME nesting followed; deeper content is one leaf part
MAX_PARTS = 10000  # parts in one message; further parts are left inside their parent's epilogue

_FOLD = re.compile(r"\r?\n(?=[ \t])")


class _Unfolding(email.policy.Compat32):
    """compat32, but a header value read from a message is unfolded first (RFC 5322 §2.2.3):
    ``boundary="foo\\r\\n bar"`` is the boundary ``foo bar``. The stored text (what BODY[]
    and HEADER return) keeps its folding."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        return super().header_fetch_parse(name, _FOLD.sub("", value))


UNFOLDING = _Unfolding()


def parse_header(raw: bytes) -> Message:
    """A header block as an email Message (no body), unfolded when read."""
    msg: Message = email.parser.BytesHeaderParser(policy=UNFOLDING).parsebytes(raw)
    return msg


@dataclass
class Part:
    """One MIME entity: ``raw[start:body]`` is its header (blank line included) and
    ``raw[body:end]`` its body. A multipart has ``children``; a message/rfc822 part has the
    encapsulated message as ``message`` (which starts at this part's body)."""

    start: int
    body: int
    end: int
    header: Message
    children: list[Part] = field(default_factory=list)
    message: Optional[Part] = None

    @property
    def content_type(self) -> str:
        return str(self.header.get_content_type())


def _header_end(raw: bytes, start: int, end: int) -> int:
    """Offset of the body: after the first empty line, or ``end`` when there is none."""
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    # The CRLF form first; the bare-LF form only before it (a search for "\n\n" through a
    # large CRLF body would scan all of it for nothing).
    i = _find(raw, b"\r\n\r\n", start, end)
    best = end if i < 0 else i + 4
    j = _find(raw, b"\n\n", start, best)
    return best if j < 0 else min(best, j + 2)


_WINDOW = 1 << 20


def _find(raw: bytes, needle: bytes, start: int, end: int) -> int:
    """``raw.find(needle, start, end)`` a megabyte at a time: one call over a 50 MB attachment
    holds the GIL for tens of milliseconds, and with it a reactor waiting to run."""
    while start < end:
        stop = min(end, start + _WINDOW + len(needle) - 1)
        i = raw.find(needle, start, stop)
        if i >= 0 or stop == end:
            return i
        start += _WINDOW
    return -1


class _Budget:
    def __init__(self) -> None:
        self.parts = 0


def parse(raw: bytes) -> Part:
    """The MIME tree of a whole message."""
    return _parse(raw, 0, len(raw), "text/plain", 0, _Budget())


def _parse(raw: bytes, start: int, end: int, default: str, depth: int, budget: _Budget) -> Part:
    budget.parts += 1
    body = _header_end(raw, start, end)
    header = parse_header(raw[start:body])
    if header.get("content-type") is None and default != "text/plain":
        header.set_default_type(default)
    part = Part(start, body, end, header)
    if depth >= MAX_DEPTH:
        return part
    maintype = header.get_content_maintype()
    if maintype == "multipart":
        boundary = header.get_boundary()
        if boundary:
            child_default = (
                "message/rfc822" if header.get_content_subtype() == "digest" else "text/plain"
            )
            for s, e in _split(raw, body, end, boundary.encode("latin-1", "replace")):
                if budget.parts >= MAX_PARTS:
                    break
                part.children.append(_parse(raw, s, e, child_default, depth + 1, budget))
    elif header.get_content_type() == "message/rfc822":
        part.message = _parse(raw, body, end, "text/plain", depth + 1, budget)
    return part


def _split(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The body ranges between ``--boundary`` lines (RFC 2046 §5.1.1: the line break before
    a delimiter belongs to it), up to the close delimiter ``--boundary--``."""
    marker = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    current: Optional[int] = None  # where the open part's body starts
    pos = start
    while True:
        i = _find(raw, marker, pos, end)
        if i < 0:
            break
        pos = i + len(marker)
        if i != start and raw[i - 1 : i] != b"\n":
            continue  # not at the start of a line
        eol = _find(raw, b"\n", pos, end)
        line_end = end if eol < 0 else eol + 1
        tail = raw[pos:line_end]
        closing = tail.startswith(b"--")
        if not closing and tail.strip(b" \t\r\n"):
            continue  # "--boundaryX": some other line
        if current is not None:
            stop = i
            if stop > current and raw[stop - 1 : stop] == b"\n":
                stop -= 2 if stop - 2 >= current and raw[stop - 2 : stop] == b"\r\n" else 1
            ranges.append((current, stop))
        if closing:
            return ranges
        current = line_end
        pos = line_end
    if current is not None:  # no close delimiter: the last part runs to the end
        ranges.append((current, end))
    return ranges


def resolve(root: Part, path: list[int]) -> Optional[Part]:
    """The part a section number names (``path`` 1-based), or None when there is none.

    A number applies to a message: a multipart's n-th child, or 1 for the body of a
    single-part one. Within a message/rfc822 part the next number applies to the
    encapsulated message (RFC 3501 §6.4.5)."""
    node = root
    for i, n in enumerate(path):
        if i > 0 and node.message is not None:
            node = node.message
        if node.children:
            if not 1 <= n <= len(node.children):
                return None
            node = node.children[n - 1]
        elif n != 1:
            return None
    return node


def message_of(root: Part, node: Part, path: list[int]) -> Optional[Part]:
    """The message that HEADER, HEADER.FIELDS and TEXT of ``path`` refer to: the whole
    message for an empty path, else the one a message/rfc822 part encapsulates."""
    if not path:
        return root
    return node.message
