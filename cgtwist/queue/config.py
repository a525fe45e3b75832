"""The queue's dynamic settings, read at each use so that ``cgtwist-admin`` changes apply at once.

Owns the reading of ``queue.*`` settings for the manager and its reports (a missing key falls
back to the default in cgtwist.settings). No state, no I/O.
"""

from __future__ import annotations

from typing import Any

from cgtwist import retry
from cgtwist.settings import DEFAULTS, SettingsHolder


class QueueSettings:
    """``QueueSettings(holder)``: typed readers over the shared settings holder."""

    def __init__(self, holder: SettingsHolder) -> None:
        self.holder = holder

    def get(self, key: str) -> Any:
        try:
            return self.holder.current[key]
        except KeyError:
            return DEFAULTS[key][0] if key in DEFAULTS else None

    def per_queue(self, module: str) -> int:
        """Deliveries at once in one logical queue of ``module``: the module's own
        ``queue.<module>_destination_concurrency`` when the settings declare one (LOCAL: an
        account's Maildir takes many writers, where a remote domain wants few connections),
        else the general ``queue.destination_concurrency``."""
        v = self.get(f"queue.{module.lower()}_destination_concurrency")
        if v is None:
            v = self.get("queue.destination_concurrency") or 5
        return max(1, int(v))

    def module_limit(self, module: str) -> int:
        """Deliveries at once of ``module`` across all its queues."""
        v = self.get(f"queue.{module.lower()}_concurrency")
        if v is None:
            v = self.get("queue.default_concurrency") or 10
        return max(1, int(v))

    def schedule(self) -> list[float]:
        """The retry schedule (seconds after each failure; the last one repeats)."""
        return list(self.get("queue.retry_schedule") or retry.DEFAULT_SCHEDULE)

    def lifetime(self) -> float:
        """Seconds a message may stay queued before its pending recipients fail."""
        return float(self.get("queue.max_lifetime"))

    def window(self) -> int:
        """Messages held in memory at once; the rest wait in the backlog as ids."""
        return max(1, int(self.get("queue.active_window")))

    def suspend_after(self) -> int:
        """Failures in a row after which a logical queue is suspended."""
        return int(self.get("queue.suspend_after") or 3)

    def delay_warning(self) -> float:
        """Seconds after which the sender is warned of a delay (0: never)."""
        return float(self.get("queue.delay_warning") or 0)
