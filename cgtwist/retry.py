"""The retry schedule: when to try a deferred delivery again and when to give up. Pure.

RFC 5321 §4.5.4.1: the sender MUST delay retrying a destination after a failure, the parameters
MUST be configurable, and the give-up time should be at least 4-5 days. The schedule is a list of
delays in seconds (``queue.retry_schedule``); the n-th failed attempt waits the n-th value and the
last value repeats. A message older than ``queue.max_lifetime`` fails for good.
"""

from __future__ import annotations

from typing import Optional, Sequence

DEFAULT_SCHEDULE = (60.0, 300.0, 900.0, 1800.0, 3600.0)


def retry_delay(schedule: Sequence[float], failures: int) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (1-based); last value repeats.

    An empty or invalid schedule falls back to DEFAULT_SCHEDULE; negative values count as 0.
    """
    sched = [max(0.0, float(x)) for x in schedule if isinstance(x, (int, float))] or list(
        DEFAULT_SCHEDULE
    )
    n = max(1, failures)
    return sched[min(n, len(sched)) - 1]


def expired(queued: float, now: float, max_lifetime: float) -> bool:
    """True when a message queued at ``queued`` has outlived ``max_lifetime`` at ``now``."""
    return now - queued >= max_lifetime


def next_attempt(
    queued: float, now: float, failures: int, schedule: Sequence[float], max_lifetime: float
) -> Optional[float]:
    """When to try again after the ``failures``-th failure at ``now``; None = give up now.

    The last attempt is placed exactly at the end of the lifetime, so a message is tried once more
    at expiry instead of being failed a whole retry interval late (or early).
    """
    if expired(queued, now, max_lifetime):
        return None
    return min(now + retry_delay(schedule, failures), queued + max_lifetime)
