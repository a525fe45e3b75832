"""Deadlines of one connection: named one-shot timers on the passed-in clock, and the rule that
stretches a transfer's deadline with the octets it has moved.

Owns timer bookkeeping only (arm, re-arm, cancel, cancel all at disconnect); what a deadline
means and what to say when it passes is the protocol's. An idle timer that every byte resets
cannot stop a client that trickles one byte every few seconds (slowloris); a deadline is armed
once and only cancelled by progress the protocol recognises (a complete line, the end of DATA).
Written for SMTP, usable as is by POP3 and IMAP.

The deadlines of all the connections of a listener share one ``DeadlineTimers``: a heap of
due times under a single reactor timer set for the earliest. Almost every deadline is
cancelled long before it is due (a message's DATA deadline at its end, the session deadline
at QUIT), and a reactor timer per deadline cost two DelayedCalls, their pushes into the
reactor's heap (compared by a Python ``__lt__``) and two cancellations per message: 3% of an
SMTP worker's instructions per message (bench/smtp-receive-instructions.sh). Here arming
pushes a tuple, cancelling marks it dead, and the one timer moves only when a deadline
earlier than all others is armed.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

# A heap entry: [due, sequence, expired callback or None once cancelled or fired]. A list, so
# that cancelling can clear the callback in place; the sequence keeps entries with the same
# due time in arming order and never lets the comparison reach the callback.
_Entry = list[Any]


class DeadlineTimers:
    """Due times of many connections' deadlines under one timer of ``clock`` (IReactorTime).

    ``add(seconds, expired)`` returns a handle for ``discard``. Dead entries stay in the heap
    until they reach its top or outnumber the live ones (then the heap is rebuilt); when no
    live deadline is left the timer is cancelled, so an idle listener holds no timer."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._heap: list[_Entry] = []
        self._live = 0
        self._seq = itertools.count()
        self._call: Optional[IDelayedCall] = None  # the timer for the earliest due time
        self._call_due = 0.0
        self._firing = False

    def add(self, seconds: float, expired: Callable[[], None]) -> _Entry:
        due = self.clock.seconds() + seconds
        entry = [due, next(self._seq), expired]
        heapq.heappush(self._heap, entry)
        self._live += 1
        if not self._firing and (self._call is None or due < self._call_due):
            self._schedule(due)
        return entry

    def discard(self, entry: _Entry) -> None:
        if entry[2] is None:
            return
        entry[2] = None
        self._live -= 1
        if self._live == 0:
            self._heap.clear()
            self._unschedule()
        elif len(self._heap) > 64 and len(self._heap) > 2 * self._live:
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)

    def _schedule(self, due: float) -> None:
        self._unschedule()
        self._call_due = due
        self._call = self.clock.callLater(max(0.0, due - self.clock.seconds()), self._fire)

    def _unschedule(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _fire(self) -> None:
        """The timer: run every live deadline due by now, earliest first, then wait for the
        next. An expired callback may arm or cancel others (on any connection) meanwhile."""
        self._call = None
        # Only what was due at the time the timer was set for: a late timer (a stalled
        # reactor, a test clock advanced past several timers) leaves later deadlines to a new
        # timer, ordered among the reactor's other timers as their own timers would be.
        now = self._call_due
        self._firing = True
        try:
            while self._heap:
                entry = self._heap[0]
                expired = entry[2]
                if expired is not None and entry[0] > now:
                    break
                heapq.heappop(self._heap)
                if expired is not None:
                    entry[2] = None
                    self._live -= 1
                    expired()
        finally:
            self._firing = False
            if self._heap and self._live:
                self._schedule(self._heap[0][0])


class Deadlines:
    """A connection's named deadlines; each name has at most one pending.

    ``timers``: the listener's shared DeadlineTimers; without one, the deadlines get their own
    on ``clock``."""

    def __init__(self, clock: Any, timers: Optional[DeadlineTimers] = None) -> None:
        self.clock = clock  # IReactorTime
        self._timers = timers if timers is not None else DeadlineTimers(clock)
        self._entries: dict[str, _Entry] = {}  # name -> its entry in the timers' heap

    def arm(self, name: str, seconds: float, expired: Callable[[], None]) -> None:
        """(Re)arm ``name`` to call ``expired`` after ``seconds``; 0 or less only cancels."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._timers.discard(entry)
        if seconds > 0:
            self._entries[name] = self._timers.add(seconds, lambda: self._fire(name, expired))

    def _fire(self, name: str, expired: Callable[[], None]) -> None:
        self._entries.pop(name, None)
        expired()

    def armed(self, name: str) -> bool:
        return name in self._entries

    def cancel(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._timers.discard(entry)

    def cancel_all(self) -> None:
        """The connection is gone: no deadline may fire on it any more."""
        entries, self._entries = self._entries, {}
        for entry in entries.values():
            self._timers.discard(entry)


def transfer_allowance(base: float, min_rate: float, octets: int) -> float:
    """Seconds a transfer of ``octets`` so far may have taken: ``base`` plus the time those
    octets take at ``min_rate`` octets per second (0 = a fixed ``base``).

    A large message on a slow link keeps earning time as long as it moves at least
    ``min_rate``; a client that trickles runs out after about ``base`` seconds.
    """
    return base + (octets / min_rate if min_rate > 0 else 0.0)
