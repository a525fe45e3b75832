"""What a message file is, measured once: ``Meta`` and the one reading that computes it.

Owns the facts the IMAP and POP3 layers serve without opening a message again: its size as
served (bare LF counted as CRLF), where its body starts, the body's octets and lines, and the
headers ENVELOPE and BODYSTRUCTURE need (``CACHED_HEADERS``), with their cached form (``to_json``).
``measure`` reads a file once, in pieces, on a thread. It sits apart from cgtwist.mailstore.maildir,
which owns the Maildir's names and writes: what a message says is not where it is kept.
No Twisted, no state.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from cgtwist.message.headers import header_fields

# Headers kept in the metadata cache: enough for ENVELOPE and BODYSTRUCTURE of the top level.
CACHED_HEADERS = frozenset(
    {
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
        "references",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-language",
        "content-location",
        "content-id",
        "content-description",
        "content-md5",
        "mime-version",
        "list-id",
        "x-priority",
        "importance",
    }
)


@dataclass(slots=True)
class Meta:
    """Facts about one message file, computed once and cached.

    ``size`` is RFC822.SIZE as served (bare LF counted as CRLF); ``crlf`` says the file already
    has only CRLF line ends; ``body_offset`` is the raw offset of the body; ``body_size`` and
    ``body_lines`` are the served body's octets and lines; ``headers`` holds CACHED_HEADERS.
    """

    size: int
    date: float
    crlf: bool
    body_offset: int
    body_size: int
    body_lines: int
    headers: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)  # derived values, see MaildirMessage.cached

    def to_json(self) -> list[object]:
        return [
            self.size,
            self.date,
            int(self.crlf),
            self.body_offset,
            self.body_size,
            self.body_lines,
            self.headers,
            dict(self.extra),
        ]

    @classmethod
    def from_json(cls, v: list[object]) -> Meta:
        size, date, crlf, off, bsize, blines, headers, *rest = v
        extra = rest[0] if rest else {}
        if not isinstance(headers, dict) or not isinstance(extra, dict):
            raise ValueError("bad cached headers")
        nums: list[float] = []
        for x in (size, date, off, bsize, blines):
            if not isinstance(x, (int, float)):
                raise ValueError("bad cached numbers")
            nums.append(x)
        return cls(
            int(nums[0]),
            float(nums[1]),
            bool(crlf),
            int(nums[2]),
            int(nums[3]),
            int(nums[4]),
            {sys.intern(str(k)): str(x) for k, x in headers.items()},
            {str(k): str(x) for k, x in extra.items()},
        )


def split_header(data: bytes) -> int:
    """Offset where the body starts (after the blank line), or len(data) with no body."""
    off = _body_start(data)
    return len(data) if off is None else off


def _body_start(data: bytes) -> Optional[int]:
    if data.startswith(b"\r\n"):
        return 2
    if data.startswith(b"\n"):
        return 1
    a = data.find(b"\r\n\r\n")
    b = data.find(b"\n\n")
    cands = [x + 4 for x in (a,) if x >= 0] + [x + 2 for x in (b,) if x >= 0]
    return min(cands) if cands else None


def parse_headers(block: bytes, only: Optional[frozenset[str]] = None) -> dict[str, str]:
    """Header block -> {lower-case name: value} (``header_fields``); the first occurrence
    wins; ``only`` keeps just those names."""
    out: dict[str, str] = {}
    for name, value in header_fields(block):
        if (only is None or name in only) and name not in out:
            out[sys.intern(name)] = value
    return out


class _LineCounter:
    """Octets, LFs and CRLFs of a byte stream fed in pieces (a CRLF may span two pieces)."""

    __slots__ = ("octets", "lf", "crlf", "last")

    def __init__(self) -> None:
        self.octets = self.lf = self.crlf = 0
        self.last = b""

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.octets += len(data)
        self.lf += data.count(b"\n")
        self.crlf += data.count(b"\r\n") + (1 if self.last == b"\r" and data[:1] == b"\n" else 0)
        self.last = data[-1:]

    @property
    def served(self) -> int:
        """Octets once every bare LF is sent as CRLF."""
        return self.octets + self.lf - self.crlf


def measure(fpath: str, chunk_size: int = 1 << 20) -> Meta:
    """Read a message file once, in pieces (a 50 MB message is never held whole), and
    compute its Meta."""
    whole, body = _LineCounter(), _LineCounter()
    head = b""
    off: Optional[int] = None
    with open(fpath, "rb") as f:
        st = os.fstat(f.fileno())
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            whole.feed(chunk)
            if off is None:
                head += chunk
                off = _body_start(head)
                if off is not None:
                    body.feed(head[off:])
                    head = head[:off]
            else:
                body.feed(chunk)
    if off is None:
        off = len(head)
    return Meta(
        size=whole.served,
        date=st.st_mtime,
        crlf=whole.lf == whole.crlf,
        body_offset=off,
        body_size=body.served,
        body_lines=body.lf + (1 if body.octets and body.last != b"\n" else 0),
        headers=parse_headers(head, CACHED_HEADERS),
    )
