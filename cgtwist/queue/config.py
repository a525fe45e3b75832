"""The queue's dynamic settings, read at each use so that ``cgtwist-admin`` changes apply at once.

Owns the few rules the manager and its reports apply on top of the typed ``queue`` section of
cgtwist.settings (floors of 1, the default schedule when the list is empty). No state, no I/O.
"""

from __future__ import annotations

from cgtwist import retry
from cgtwist.settings import SettingsHolder


class QueueConfig:
    """``QueueConfig(holder)``: readers over the shared settings holder's ``queue`` section."""

    def __init__(self, holder: SettingsHolder) -> None:
        self.holder = holder

    def per_queue(self, module: str) -> int:
        """Deliveries at once in one logical queue of ``module``: the module's own
        ``queue.<module>_destination_concurrency`` when the settings declare one (LOCAL: an
        account's Maildir takes many writers, where a remote domain wants few connections),
        else the general ``queue.destination_concurrency``."""
        return max(1, self.holder.current.queue.destination_concurrency_of(module))

    def module_limit(self, module: str) -> int:
        """Deliveries at once of ``module`` across all its queues."""
        return max(1, self.holder.current.queue.concurrency(module))

    def schedule(self) -> list[float]:
        """The retry schedule (seconds after each failure; the last one repeats)."""
        return list(self.holder.current.queue.retry_schedule or retry.DEFAULT_SCHEDULE)

    def lifetime(self) -> float:
        """Seconds a message may stay queued before its pending recipients fail."""
        return float(self.holder.current.queue.max_lifetime)

    def window(self) -> int:
        """Messages held in memory at once; the rest wait in the backlog as ids."""
        return max(1, self.holder.current.queue.active_window)

    def suspend_after(self) -> int:
        """Failures in a row after which a logical queue is suspended."""
        return self.holder.current.queue.suspend_after or 3

    def delay_warning(self) -> float:
        """Seconds after which the sender is warned of a delay (0: never)."""
        return float(self.holder.current.queue.delay_warning or 0)
