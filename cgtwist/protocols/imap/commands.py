"""The IMAP command table: which handler and argument parsers serve a command in a state.

Twisted's IMAP4Server finds a command as the class attribute ``<state>_<COMMAND>``, a tuple of
the handler and its argument parsers (and constants passed on). Our command modules declare
theirs in a ``CommandTable`` instead, so they never re-bind Twisted's attributes with other
types (mypy rightly refuses a mixin's ``auth_LIST`` that differs from IMAP4Server's), and
CgIMAP4Server's ``lookupCommand`` reads the table before Twisted's attributes. Pure data: no
I/O, no Twisted.
"""

from __future__ import annotations

from typing import Optional

CommandEntry = tuple[object, ...]
"""(handler, argument parsers and constants...) as ``IMAP4Server.dispatchCommand`` takes it; a
handler of None names a command that ``CgIMAP4Server._special_command`` runs itself."""

STATES = ("unauth", "auth", "select", "logout")


class CommandTable:
    """Command entries by state and name; a table may start from the entries of others (later
    ones win, as a subclass's attribute would)."""

    def __init__(self, *bases: CommandTable) -> None:
        self._entries: dict[tuple[str, str], CommandEntry] = {}
        for base in bases:
            self._entries.update(base._entries)

    def add(self, states: str, name: str, *entry: object) -> None:
        """Serve ``name`` in each of the space-separated ``states`` with ``entry``."""
        for state in states.split():
            if state not in STATES:
                raise ValueError(f"unknown IMAP state {state!r}")
            self._entries[(state, name.upper())] = entry

    def lookup(self, state: str, name: str) -> Optional[CommandEntry]:
        return self._entries.get((state, name.upper()))
