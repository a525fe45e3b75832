"""CommuniGate "pictures": ``*`` matches any run of characters, case-insensitively.

Owns matching one picture or a comma-separated list of them against a value. The match is
linear in the value's length (the picture is split at ``*`` and its pieces are found left to
right with ``str.find``): no regular expression, no backtracking, whatever a sender puts in
a header. It must not know about messages or rules.
"""

from __future__ import annotations

from functools import lru_cache


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


def split_list(param: str) -> list[str]:
    """The pictures of an ``in`` / ``not in`` parameter: comma-separated, blanks trimmed."""
    return [p.strip() for p in param.split(",") if p.strip()]


def matches_any(pictures: list[str], value: str) -> bool:
    return any(matches(p, value) for p in pictures)
