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
the grace because the account never counted as "over". The clock's start survives a
restart (clean or ``kill -9``) in the queue's own per-recipient state: the deferral's detail,
which the queue journals durably with the attempt, names it (``(over quota since
2026-12-07T18:00:00Z)``, whole seconds), and LOCAL keeps that mark on any other temporary
answer for the recipient while the clock runs; a message's next attempt after a restart
reads it back (``since_in``). So the message fails when the original grace ends, not a full
grace after the restart, and nothing is stored twice: no store of its own, one timestamp per
recipient. In memory at most ``MAX_KEPT`` clocks are kept (the oldest go first, and their
messages' next attempt reads the start back from their detail); entries go when the message
is delivered or fails.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import OrderedDict
from typing import Callable, Iterable, Optional

MAX_KEPT = 100_000
_SINCE = re.compile(r" \(over quota since (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\)$")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def deferral(resource: str, since: float) -> str:
    """The detail of a deferred recipient (RFC 3463 §3.3 X.2.2; RFC 5321 452), naming when
    the message was first deferred for lack of room (the clock kept in the queue)."""
    what = "storage" if resource == "STORAGE" else "message count"
    return marked(
        f"452 4.2.2 mailbox full: the account's {what} quota is reached; will retry", since
    )


def marked(detail: str, since: float) -> str:
    """``detail`` with the grace clock's start: ``(over quota since <UTC time>)`` at its end,
    replacing an earlier mark."""
    stamp = time.strftime(_STAMP, time.gmtime(max(0, int(since))))
    return f"{_SINCE.sub('', detail)} (over quota since {stamp})"


def since_in(details: Iterable[str]) -> Optional[float]:
    """The earliest grace clock start named in the recipients' ``details`` (the last answers
    the queue kept for them), None when none names one."""
    found = []
    for detail in details:
        m = _SINCE.search(detail or "")
        if m is not None:
            try:
                found.append(float(calendar.timegm(time.strptime(m.group(1), _STAMP))))
            except ValueError:
                continue
    return min(found) if found else None


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

    def start(self, msg_id: str, account: str, since: Optional[float] = None) -> float:
        """When ``msg_id`` was first deferred for ``account``'s quota: the clock in memory,
        else ``since`` (what the queue kept, after a restart; never later than now), else
        now, which starts the clock."""
        key = (msg_id, account.lower())
        first = self._first.get(key)
        if first is None:
            now = self._now()
            first = now if since is None else min(since, now)
            while len(self._first) >= self._max:
                self._first.popitem(last=False)
            self._first[key] = first
        return first

    def started(self, msg_id: str, account: str) -> Optional[float]:
        """The clock's start if it runs for ``msg_id`` and ``account``; never starts it."""
        return self._first.get((msg_id, account.lower()))

    def waited(self, msg_id: str, account: str, since: Optional[float] = None) -> float:
        """Seconds since ``msg_id`` was first deferred for ``account``'s quota (0 the
        first time, which starts the clock; ``since`` as for ``start``)."""
        return max(0.0, self._now() - self.start(msg_id, account, since))

    def done(self, msg_id: str, account: str) -> None:
        """The message was stored or failed for ``account``: its clock goes."""
        self._first.pop((msg_id, account.lower()), None)

    def __len__(self) -> int:
        return len(self._first)
