"""LOCAL's answer for a message that does not fit its account's quota: defer, then bounce.

Owns the grace clock of issue 14: a recipient whose message does not fit is deferred with
``452 4.2.2`` (RFC 3463: mailbox full, temporary) while its message has waited less than
``quota.grace`` seconds, then fails with ``552 5.2.2`` and the queue sends the sender a DSN.
Whether a message fits is the mailstore's count and ``QuotaLimits.exceeded``; this module
only keeps the clock and words the answer. No I/O.

The wait is counted per message and account, from the first deferral of that message for
lack of room, not from when the account went over quota: every sender gets the same grace
for the owner to make room, whatever arrived before (an account a day over quota would
otherwise bounce a message on its first attempt, with no chance of it fitting after a
clean-up), and a big message deferred beside small ones that still fit is not held past
the grace because the account never counted as "over". The clock is kept in memory: a
restart starts the wait of a deferred message again, so the grace can grow by the time the
server ran before it, bounded by ``queue.max_lifetime`` (the queue's expiry bounces it
then). Entries go when the message is delivered or fails; at most ``MAX_KEPT`` are kept
(the oldest go first, and their messages start a new wait).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

MAX_KEPT = 100_000


def deferral(resource: str) -> str:
    """The detail of a deferred recipient (RFC 3463 §3.3 X.2.2; RFC 5321 452)."""
    what = "storage" if resource == "STORAGE" else "message count"
    return f"452 4.2.2 mailbox full: the account's {what} quota is reached; will retry"


def failure(resource: str, grace: float) -> str:
    """The detail of a recipient that failed after the grace period (RFC 5321 552)."""
    what = "storage" if resource == "STORAGE" else "message count"
    return (
        f"552 5.2.2 mailbox full: the account's {what} quota is still reached after "
        f"{int(grace)} seconds"
    )


class GraceClock:
    """``GraceClock(now)``: when each (message, account) was first deferred for quota.

    ``now`` is the clock (the reactor's ``seconds``; a task.Clock in tests)."""

    def __init__(self, now: Callable[[], float], max_kept: int = MAX_KEPT) -> None:
        self._now = now
        self._max = max_kept
        self._first: OrderedDict[tuple[str, str], float] = OrderedDict()

    def waited(self, msg_id: str, account: str) -> float:
        """Seconds since ``msg_id`` was first deferred for ``account``'s quota (0 the
        first time, which starts the clock)."""
        key = (msg_id, account.lower())
        now = self._now()
        first = self._first.get(key)
        if first is None:
            while len(self._first) >= self._max:
                self._first.popitem(last=False)
            self._first[key] = first = now
        return max(0.0, now - first)

    def done(self, msg_id: str, account: str) -> None:
        """The message was stored or failed for ``account``: its clock goes."""
        self._first.pop((msg_id, account.lower()), None)

    def __len__(self) -> int:
        return len(self._first)
