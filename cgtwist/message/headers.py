"""The project's one header-field parser: the fields of a header block, in order.

Owns splitting a header section into (name, value) pairs the way every reader must agree on:
IMAP's cached metadata and SEARCH HEADER (cgtwist.mailstore), the Rules' message facts and hop
markers (cgtwist.rules). Pure and linear in the block; a caller that reads untrusted mail
bounds the block it passes. It must not decode encoded words or parse addresses: callers do
that with the values it returns.
"""

from __future__ import annotations

from typing import Iterator, Optional


def header_fields(block: bytes) -> Iterator[tuple[str, str]]:
    """(lower-case name, value) of every field of a header block, in order, up to its blank
    line; folded lines joined with CRLF, outer white space stripped. Values are decoded
    latin-1 so every octet round-trips (``.encode("latin-1")``); lines that are not a field
    (no colon, a name with white space around it) are skipped with their continuations."""
    name: Optional[str] = None
    value: list[str] = []
    for raw in block.split(b"\n"):
        line = raw.rstrip(b"\r").decode("latin-1")
        if not line:
            break
        if line[0] in " \t":
            if name is not None:
                value.append(line)
            continue
        if name is not None:
            yield name, "\r\n".join(value).strip()
        n, sep, v = line.partition(":")
        if not sep or not n or n != n.strip():
            name, value = None, []
            continue
        name, value = n.lower(), [v.lstrip()]
    if name is not None:
        yield name, "\r\n".join(value).strip()
