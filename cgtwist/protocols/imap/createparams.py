"""CREATE's parameters (RFC 4466 §2.2): the list after the mailbox name, of which cgtwist
knows USE (RFC 6154 §5.1, CREATE-SPECIAL-USE).

Owns the syntax only: ``parse`` gives the USE attributes as written (which of them the
server honours is the mailstore's ``cgtwist.mailstore.specialuse``) or raises ParseError
(BAD). Pure: no I/O, no Twisted. Linear in the length of the line.
"""

from __future__ import annotations

import re

from cgtwist.protocols.imap.parse import ParseError

# create-param = create-param-name [SP create-param-value]; USE's value is a parenthesised
# list of use-attr ("\" atom), possibly empty.
_PARAM = re.compile(rb"([A-Za-z0-9._-]+)(?: \(([^()]*)\))?")
_USE_ATTR = re.compile(rb"\\[^\x00-\x20(){%*\"\\\]\x7f-\xff]+")


def parse(text: bytes) -> tuple[str, ...]:
    """The attributes of ``(USE (\\A \\B))`` (none for ``(USE ())``); ParseError for any
    other syntax, an unknown parameter or USE given twice."""
    if not (text.startswith(b"(") and text.endswith(b")")) or len(text) < 3:
        raise ParseError("CREATE parameters must be a parenthesised list")
    body = text[1:-1]
    attrs: list[str] = []
    seen_use = False
    pos = 0
    while True:
        m = _PARAM.match(body, pos)
        if m is None:
            raise ParseError("Malformed CREATE parameter")
        name = m.group(1).upper()
        if name != b"USE":
            raise ParseError(f"Unknown CREATE parameter {name[:40].decode('ascii')}")
        if m.group(2) is None:
            raise ParseError("USE needs a list of special-use attributes")
        if seen_use:
            raise ParseError("USE given twice")
        seen_use = True
        if m.group(2):
            for raw in m.group(2).split(b" "):
                if not _USE_ATTR.fullmatch(raw):
                    raise ParseError("Malformed special-use attribute")
                attrs.append(raw.decode("ascii"))
        pos = m.end()
        if pos == len(body):
            return tuple(attrs)
        if body[pos : pos + 1] != b" ":
            raise ParseError("Malformed CREATE parameters")
        pos += 1
