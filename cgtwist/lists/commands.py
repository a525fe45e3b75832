"""Mail commands to a list: what a message to ``-on``, ``-off`` or ``-request`` asks for.

Owns reading the command from the Subject or, failing that, the first non-empty lines of a
plain-text body (as Majordomo and Mailman do), and finding a token there (a reply to a
confirmation or to a moderation notice keeps it in the Subject). It decides nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cgtwist.lists.addresses import OFF, ON

COMMANDS = ("subscribe", "unsubscribe", "confirm", "approve", "reject", "help")
_ALIASES = {
    "join": "subscribe",
    "signoff": "unsubscribe",
    "leave": "unsubscribe",
    "remove": "unsubscribe",
    "sub": "subscribe",
    "unsub": "unsubscribe",
}
_BODY_LINES = 5
_MAX_BODY = 8192


@dataclass(frozen=True)
class Command:
    action: str  # one of COMMANDS; "help" when nothing is recognised
    text: str  # the line it came from (tokens are looked for in it)


def _word(line: str) -> str:
    words = line.strip().split()
    while words and words[0].lower().rstrip(":") in ("re", "aw", "fwd", "fw", "sv"):
        words = words[1:]
    if not words:
        return ""
    w = words[0].lower().strip(":.,;")
    return _ALIASES.get(w, w)


def automatic(auto_submitted: Optional[str], precedence: Optional[str]) -> bool:
    """Is a message automatic (RFC 3834 ``Auto-Submitted`` other than ``no``, or
    ``Precedence: bulk/list/junk``)? A list answers no such message: two robots would
    answer each other for ever."""
    auto = (auto_submitted or "no").split(";")[0].strip().lower()
    return auto != "no" or (precedence or "").strip().lower() in ("bulk", "list", "junk")


def parse(role: str, subject: str, body: bytes) -> Command:
    """The command of a message to the ``role`` address (on, off, request)."""
    lines = [subject] + [
        line
        for line in body[:_MAX_BODY].decode("utf-8", "replace").splitlines()
        if line.strip() and not line.startswith(">")
    ][:_BODY_LINES]
    for line in lines:
        w = _word(line)
        if w in COMMANDS:
            return Command(w, line)
    if role == ON:
        return Command("subscribe", subject)
    if role == OFF:
        return Command("unsubscribe", subject)
    return Command("help", subject)
