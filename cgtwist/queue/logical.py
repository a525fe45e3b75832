"""One CommuniGate logical queue (``LOCAL(account)``, ``SMTP(domain)``, ...) and its state.

Owns the per-destination bookkeeping the scheduler needs: which messages are due now, which wait
for a retry time, how many deliveries run, and the destination's state, Postfix-style:

* ``ready``: up to the per-queue concurrency limit at once;
* ``throttled``: after a failed attempt, one delivery at a time (a probe);
* ``suspended``: after ``suspend_after`` consecutive failures, or when no delivery agent exists
  for the module, nothing starts until ``resume_at`` (then one probe).

Any delivery makes the queue ready again. Pure bookkeeping: no I/O, no clock of its own.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from cgtwist.types import QueueName

READY = "ready"
THROTTLED = "throttled"
SUSPENDED = "suspended"


class LogicalQueue:
    def __init__(self, name: QueueName) -> None:
        self.name = name
        # Message ids to try now, oldest first; an ordered set (O(1) add, pop, member, remove).
        self.due: OrderedDict[str, None] = OrderedDict()
        self.waiting: dict[str, float] = {}  # message id -> next attempt time
        self.active = 0
        self.state = READY
        self.failures = 0  # consecutive attempts that delivered nothing and deferred something
        self.resume_at = 0.0
        self.no_agent = False
        self.last_error = ""
        self.in_ring = False

    def limit(self, per_queue: int) -> int:
        if self.state == SUSPENDED or self.no_agent:
            return 0
        if self.state == THROTTLED:
            return 1
        return max(1, per_queue)

    def startable(self, per_queue: int) -> bool:
        return bool(self.due) and self.active < self.limit(per_queue)

    def idle(self) -> bool:
        """Nothing due, waiting or running: the queue object can be forgotten."""
        return not self.due and not self.waiting and self.active == 0

    def succeeded(self) -> None:
        self.failures = 0
        self.state = READY
        self.last_error = ""

    def failed(self, now: float, suspend_after: int, delay: float, error: str) -> bool:
        """Record a failed attempt; True when the queue became suspended until ``resume_at``."""
        self.failures += 1
        self.last_error = error
        if self.failures >= max(1, suspend_after):
            self.state = SUSPENDED
            self.resume_at = now + delay
            return True
        self.state = THROTTLED
        return False

    def push_due(self, msg_id: str) -> None:
        self.waiting.pop(msg_id, None)
        self.due[msg_id] = None

    def pop_due(self) -> str:
        return self.due.popitem(last=False)[0]

    def discard(self, msg_id: str) -> None:
        self.waiting.pop(msg_id, None)
        self.due.pop(msg_id, None)

    def describe(self) -> dict[str, Any]:
        return {
            "queue": str(self.name),
            "state": "no-agent" if self.no_agent else self.state,
            "due": len(self.due),
            "waiting": len(self.waiting),
            "active": self.active,
            "failures": self.failures,
            "resume_at": self.resume_at if self.state == SUSPENDED else None,
            "last_error": self.last_error,
        }
