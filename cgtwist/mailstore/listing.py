"""LIST and LSUB (RFC 3501 §6.3.8, RFC 5258): a pattern matched without backtracking, and the
row each listed folder is answered with.

Owns how a LIST pattern matches a folder name (``*`` and ``%``, in time linear in the name
whatever the pattern) and the row handed to Twisted's IMAP server (its name attributes and
CHILDINFO). Which folders exist and what attributes they carry is
``cgtwist.mailstore.account``'s.
"""

from __future__ import annotations

from typing import Optional

from twisted.mail import imap4
from zope.interface import implementer

from cgtwist.mailstore import names


class WildcardPattern:
    """A LIST/LSUB pattern (RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the
    hierarchy delimiter) matched without backtracking.

    A regular expression built from the pattern (``*`` as ``.*``) backtracks exponentially on
    runs of wildcards: ``LIST "" "************x"`` held the reactor, and with it every
    protocol, for 38 s. Here the pattern is a bit-parallel automaton (shift-and): bit i set
    means "pattern position i reached", and each character of a name costs a few integer
    operations whatever the pattern, so a name is matched in time linear in its length.
    """

    def __init__(self, pattern: str) -> None:
        tokens: list[str] = []
        for ch in pattern:
            if ch in "*%" and tokens and tokens[-1] in ("*", "%"):
                # ** = *% = %* = *, %% = %: no two wildcards in a row, so one shift closes.
                tokens[-1] = "%" if (ch == "%" and tokens[-1] == "%") else "*"
                continue
            tokens.append(ch)
        self._literal: Optional[str] = None if any(t in "*%" for t in tokens) else "".join(tokens)
        self._chars: dict[str, int] = {}
        self._star = self._pct = 0
        for i, t in enumerate(tokens):
            if t == "*":
                self._star |= 1 << i
            elif t == "%":
                self._pct |= 1 << i
            else:
                self._chars[t] = self._chars.get(t, 0) | 1 << i
        self._wild = self._star | self._pct
        self._accept = 1 << len(tokens)

    def _close(self, state: int) -> int:
        """Also reach the position after each reached wildcard (it may match nothing)."""
        return state | (state & self._wild) << 1

    def matches(self, name: str) -> bool:
        if self._literal is not None:
            return name == self._literal
        chars, star, pct = self._chars, self._star, self._pct
        state = self._close(1)
        for ch in name:
            stay = state & (star if ch == names.DELIMITER else star | pct)
            state = self._close(stay | (state & chars.get(ch, 0)) << 1)
            if not state:
                return False
        return bool(state & self._accept)


@implementer(imap4.IMailboxInfo)
class MailboxInfo:
    """A LIST/LSUB row: ``getFlags()`` gives the name attributes (\\HasChildren, \\Noselect,
    \\Sent, ...), unlike a selected mailbox's getFlags (message flags)."""

    def __init__(
        self, name: str, attributes: list[str], childinfo: Optional[list[str]] = None
    ) -> None:
        self.name = name
        self.attributes = attributes
        self.childinfo = childinfo or []  # RFC 5258 §3.5 CHILDINFO: why a parent is listed

    def getFlags(self) -> list[str]:
        return list(self.attributes)

    def getHierarchicalDelimiter(self) -> str:
        return names.DELIMITER

    def __repr__(self) -> str:
        return f"<MailboxInfo {self.name!r} {self.attributes}>"
