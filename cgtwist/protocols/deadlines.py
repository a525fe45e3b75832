"""Deadlines of one connection: named one-shot timers on the passed-in clock, and the rule that
stretches a transfer's deadline with the octets it has moved.

Owns timer bookkeeping only (arm, re-arm, cancel, cancel all at disconnect); what a deadline
means and what to say when it passes is the protocol's. An idle timer that every byte resets
cannot stop a client that trickles one byte every few seconds (slowloris); a deadline is armed
once and only cancelled by progress the protocol recognises (a complete line, the end of DATA).
Written for SMTP, usable as is by POP3 and IMAP.
"""

from __future__ import annotations

from typing import Any, Callable


class Deadlines:
    """A connection's named deadlines; each name has at most one pending timer."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock  # IReactorTime
        self._calls: dict[str, Any] = {}  # name -> IDelayedCall

    def arm(self, name: str, seconds: float, expired: Callable[[], None]) -> None:
        """(Re)arm ``name`` to call ``expired`` after ``seconds``; 0 or less only cancels."""
        self.cancel(name)
        if seconds > 0:
            self._calls[name] = self.clock.callLater(seconds, self._fire, name, expired)

    def _fire(self, name: str, expired: Callable[[], None]) -> None:
        self._calls.pop(name, None)
        expired()

    def armed(self, name: str) -> bool:
        return name in self._calls

    def cancel(self, name: str) -> None:
        call = self._calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def cancel_all(self) -> None:
        """The connection is gone: no deadline may fire on it any more."""
        for name in list(self._calls):
            self.cancel(name)


def transfer_allowance(base: float, min_rate: float, octets: int) -> float:
    """Seconds a transfer of ``octets`` so far may have taken: ``base`` plus the time those
    octets take at ``min_rate`` octets per second (0 = a fixed ``base``).

    A large message on a slow link keeps earning time as long as it moves at least
    ``min_rate``; a client that trickles runs out after about ``base`` seconds.
    """
    return base + (octets / min_rate if min_rate > 0 else 0.0)
