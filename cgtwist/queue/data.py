"""The message bytes the queue manager keeps in memory, within a budget.

Owns the cache of message data for the active window: a new message's bytes are kept for its
first attempts while the budget allows, later ones are read back from the spool (one read
shared by every attempt that waits for it), and dropped when the message has nothing running.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.queue.state import Msg
from cgtwist.spool.spool import Spool


class MessageData:
    """``MessageData(spool, budget)``: ``budget`` octets of message data at most (roughly)."""

    def __init__(self, spool: Spool, budget: int = 64 << 20) -> None:
        self.spool = spool
        self.budget = budget
        self.cached = 0  # octets held now

    def keep(self, m: Msg, data: Optional[bytes]) -> None:
        """Keep a new message's bytes for its first attempt while the memory budget allows
        (a burst of large messages is read back from the spool instead)."""
        if data is not None and self.cached + len(data) <= self.budget:
            m.data = data
            self.cached += len(data)

    def drop(self, m: Msg) -> None:
        if m.data is not None:
            self.cached -= len(m.data)
            m.data = None

    def load(self, m: Msg) -> defer.Deferred[bytes]:
        """The message's bytes: from memory, or one spool read shared by every caller."""
        if m.data is not None:
            return defer.succeed(m.data)
        d: defer.Deferred[bytes] = defer.Deferred()
        if m.waiters is not None:
            m.waiters.append(d)
            return d
        m.waiters = [d]

        def fire(result: Any) -> None:
            waiters, m.waiters = m.waiters or [], None
            if not isinstance(result, Failure) and m.data is None:
                m.data = result[1]
                self.cached += len(result[1])
            for w in waiters:
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(result[1])

        self.spool.load(m.msg_id).addBoth(fire)
        return d
