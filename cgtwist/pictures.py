"""CommuniGate "pictures": ``*`` matches any run of characters, case-insensitively.

Owns matching one picture or a list of them against a value, for every place an administrator
writes one: Rules conditions (cgtwist.rules), the ``smtp.send_as`` patterns of the sender rule
(cgtwist.core.senders). The match is linear in the value's length (the picture is split at
``*`` and its pieces are found left to right with ``str.find``): no regular expression, no
backtracking, whatever a sender puts in a header. Pure: it must not know about messages, rules
or settings. (The Router table's ``*`` is a capture substituted into the right side, not a
picture: cgtwist.router_table.)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Union


@lru_cache(maxsize=4096)
def pieces(picture: str) -> tuple[str, ...]:
    """A picture compiled for ``fits``: casefolded and split at ``*``."""
    return tuple(picture.casefold().split("*"))


def matches(picture: str, value: str) -> bool:
    """True when ``value`` fits ``picture`` (``*`` = zero or more characters, any case)."""
    return fits(pieces(picture), value.casefold())


def fits(compiled: tuple[str, ...], text: str) -> bool:
    """``matches`` for a compiled picture and a casefolded value.

    Leftmost placement of each middle piece is always safe for ``*``-only patterns: a later
    piece can only gain room by an earlier piece matching as early as possible.
    """
    if len(compiled) == 1:
        return text == compiled[0]
    first, last = compiled[0], compiled[-1]
    if len(text) < len(first) + len(last):
        return False
    if not text.startswith(first) or not text.endswith(last):
        return False
    pos, end = len(first), len(text) - len(last)
    for piece in compiled[1:-1]:
        if not piece:
            continue
        found = text.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


def split_list(value: Union[str, Iterable[str], None]) -> list[str]:
    """The items of a list an administrator wrote: text separated by commas or line ends (a
    Rules ``in`` parameter, an ``smtp.send_as`` value), or a list of such texts; blanks
    trimmed, empty items dropped."""
    if not value:
        return []
    lines = value.splitlines() if isinstance(value, str) else [str(x) for x in value]
    return [item.strip() for line in lines for item in line.split(",") if item.strip()]


def matches_any(pictures: Iterable[str], value: str) -> bool:
    """True when ``value`` fits at least one of ``pictures``."""
    text = value.casefold()
    return any(fits(pieces(p), text) for p in pictures)
