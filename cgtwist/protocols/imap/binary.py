"""BINARY (RFC 3516): the decoded content of a MIME part, the FETCH items that ask for it, and
binary content APPENDed as a literal8 made storable as base64.

Pure: bytes in, bytes out; never reads a file or touches a transport. Parts are found with
cgtwist.protocols.imap.sections; the FETCH response is rendered by
cgtwist.protocols.imap.fetch, which runs these functions in a thread for a large message.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Optional, Union

from cgtwist.protocols.imap import sections as imap_sections

# BINARY[section-binary]<partial>, BINARY.PEEK[...], BINARY.SIZE[...] (RFC 3516 §4.2, §6):
# section-binary is only part numbers, no HEADER/TEXT/MIME.
_ITEM = re.compile(
    rb"BINARY(\.PEEK|\.SIZE)?\[((?:[1-9][0-9]{0,8})(?:\.[1-9][0-9]{0,8})*)?\]"
    rb"(?:<([0-9]{1,10})\.([0-9]{1,10})>)?(?=[ )]|\Z)",
    re.I,
)
_CTE_FIELD = re.compile(
    rb"^content-transfer-encoding[ \t]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", re.I | re.M
)
_IDENTITY = ("", "7bit", "8bit", "binary")


class UnknownCTE(Exception):
    """A part's Content-Transfer-Encoding we cannot decode: NO [UNKNOWN-CTE] (RFC 3516 §4.3)."""


@dataclass
class BinaryItem:
    """One BINARY FETCH item, shaped like Twisted's FETCH items (``type``, ``part`` 0-based,
    ``peek``, ``partialBegin``/``partialLength``) so the FETCH code treats it alike."""

    part: list[int]
    peek: bool
    size: bool  # BINARY.SIZE
    partialBegin: Optional[int] = None
    partialLength: Optional[int] = None

    @property
    def type(self) -> str:
        return "binarysize" if self.size else "binary"

    def name(self) -> bytes:
        """The item as echoed in the response: ``BINARY[1.2]`` / ``BINARY.SIZE[1.2]``."""
        spec = b".".join(b"%d" % (p + 1) for p in self.part)
        return (b"BINARY.SIZE[" if self.size else b"BINARY[") + spec + b"]"


def split_items(line: bytes) -> list[Union[bytes, BinaryItem]]:
    """The FETCH attribute text with each BINARY item taken out as a ``BinaryItem``; the text
    between them (for Twisted's parser) as bytes, in order. A partial on BINARY.SIZE is a
    syntax error, left in the text for the parser to refuse."""
    out: list[Union[bytes, BinaryItem]] = []
    pos = 0
    for m in _ITEM.finditer(line):
        if m.start() > 0 and line[m.start() - 1 : m.start()] not in (b" ", b"("):
            continue
        kind = (m.group(1) or b"").upper()
        if kind == b".SIZE" and m.group(3) is not None:
            continue
        out.append(line[pos : m.start()])
        part = [int(p) - 1 for p in m.group(2).split(b".")] if m.group(2) else []
        item = BinaryItem(part, kind == b".PEEK", kind == b".SIZE")
        if m.group(3) is not None:
            item.partialBegin, item.partialLength = int(m.group(3)), int(m.group(4))
        out.append(item)
        pos = m.end()
    out.append(line[pos:])
    return out


def decode_qp(body: bytes) -> bytes:
    """Quoted-printable (RFC 2045 §6.7): trailing whitespace of each line dropped, ``=`` at
    the end of a line (whitespace after it allowed) joins it to the next, ``=XX`` decoded, a
    malformed ``=`` kept as it is; line ends come out as CRLF."""
    out = bytearray()
    lines = body.split(b"\n")
    for i, line in enumerate(lines):
        line = line.rstrip(b"\r").rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        j = 0
        while True:
            k = line.find(b"=", j)
            if k < 0:
                out += line[j:]
                break
            out += line[j:k]
            pair = line[k + 1 : k + 3]
            try:
                if len(pair) != 2:
                    raise ValueError
                out.append(int(pair, 16))
                j = k + 3
            except ValueError:
                out.append(0x3D)
                j = k + 1
        if not soft and i < len(lines) - 1:
            out += b"\r\n"
    return bytes(out)


def decode(body: bytes, cte: str) -> bytes:
    """A body with its transfer encoding undone; UnknownCTE for an encoding we do not know."""
    cte = cte.strip().lower()
    if cte in _IDENTITY:
        return body
    if cte == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            return binascii.a2b_base64(re.sub(rb"[^A-Za-z0-9+/]", b"", body) + b"==")
    if cte == "quoted-printable":
        return decode_qp(body)
    raise UnknownCTE(cte)


def section(raw: bytes, part: list[int]) -> Optional[bytes]:
    """``BINARY[part]`` of a message (``part`` 0-based): the whole message for ``[]``, a
    part's body decoded, None when the section names no part. A multipart or message/rfc822
    part is its body as it is (only leaves carry an encoding to undo)."""
    if not part:
        return raw
    node = imap_sections.resolve(imap_sections.parse(raw), [p + 1 for p in part])
    if node is None:
        return None
    body = raw[node.body : node.end]
    if node.children or node.message is not None:
        return body
    return decode(body, str(node.header.get("content-transfer-encoding", "")))


def binary_to_base64(raw: bytes) -> bytes:
    """The message with every leaf part whose body is binary (transfer encoding ``binary``, or
    NUL octets in it) re-encoded as base64: what a literal8 APPEND brings in stays readable
    through BODY[], and BINARY[] gives the same octets back (RFC 3516 §4.4)."""
    root = imap_sections.parse(raw)
    edits: list[tuple[int, int, bytes]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.children:
            stack.extend(node.children)
            continue
        if node.message is not None:
            stack.append(node.message)
            continue
        body = raw[node.body : node.end]
        cte = str(node.header.get("content-transfer-encoding", "")).strip().lower()
        if cte != "binary" and b"\x00" not in body:
            continue
        if cte not in _IDENTITY:
            continue  # already encoded in some way: leave it
        header = raw[node.start : node.body]
        if not header.endswith(b"\n"):
            continue  # no blank line ends this header: nothing safe to rewrite
        if _CTE_FIELD.search(header):
            header = _CTE_FIELD.sub(b"Content-Transfer-Encoding: base64", header, count=1)
        else:
            blank = 2 if header.endswith(b"\r\n") else 1
            header = header[:-blank] + b"Content-Transfer-Encoding: base64\r\n" + header[-blank:]
        encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
        edits.append((node.start, node.end, header + encoded))
    if not edits:
        return raw
    out = []
    pos = 0
    for start, end, text in sorted(edits):
        out.append(raw[pos:start])
        out.append(text)
        pos = end
    out.append(raw[pos:])
    return b"".join(out)
