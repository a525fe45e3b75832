"""The scheduler: which logical queue starts its next delivery, and when to wake up.

Owns the logical queues, the round-robin ring of queues that could start a delivery now, the
per-queue and per-module concurrency limits, one ``task.Cooperator`` that starts deliveries one
step at a time (fairness: one start per queue per turn, so a slow or dead destination never
starves the others), and ONE timer to the earliest due event (a retry, a suspended queue's
resume time, or any event the manager schedules). New mail kicks it; nothing polls.
It knows nothing about messages or recipients: the manager's ``start(lq, msg_id)`` does.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from typing import Any, Callable, Iterator, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import Cooperator
from twisted.python.failure import Failure

from cgtwist.logs import Logger
from cgtwist.queue.logical import SUSPENDED, THROTTLED, LogicalQueue
from cgtwist.types import QueueName


class Scheduler:
    """``Scheduler(clock, start, on_event, per_queue, module_limit, has_agent, cooperator=None)``.

    ``start(lq, msg_id)`` starts one delivery (the scheduler has already taken ``msg_id`` off
    ``lq.due``); ``on_event(kind, key, when)`` receives the timer events it does not handle
    itself; the three callables give the current limits (``per_queue(module)``,
    ``module_limit(module)``) and whether a module has an agent.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        start: Callable[[LogicalQueue, str], None],
        on_event: Callable[[str, Any, float], None],
        per_queue: Callable[[str], int],
        module_limit: Callable[[str], int],
        has_agent: Callable[[str], bool],
        cooperator: Optional[Cooperator] = None,
    ) -> None:
        self.clock = clock
        self._start = start
        self._on_event = on_event
        self._per_queue = per_queue
        self._module_limit = module_limit
        self._has_agent = has_agent
        self._coop = cooperator or Cooperator(scheduler=lambda f: clock.callLater(0, f))
        self.queues: dict[QueueName, LogicalQueue] = {}
        self._ring: deque[QueueName] = deque()
        self._starved: dict[str, OrderedDict[QueueName, None]] = {}
        self._module_active: dict[str, int] = {}
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._timer: Optional[IDelayedCall] = None
        self._timer_at = 0.0
        self._task: Optional[defer.Deferred[Any]] = None
        self._warned_modules: set[str] = set()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- queues -----------------------------------------------------------------------------
    def queue(self, qn: QueueName) -> LogicalQueue:
        """The logical queue ``qn``, created on first use."""
        lq = self.queues.get(qn)
        if lq is None:
            lq = self.queues[qn] = LogicalQueue(qn)
            if not self._has_agent(qn.module):
                lq.no_agent = True
                if qn.module not in self._warned_modules:
                    self._warned_modules.add(qn.module)
                    self.log.warn(
                        "queue: no delivery agent for module {module}; its recipients stay queued",
                        module=qn.module,
                    )
        return lq

    def agent_added(self, module: str) -> None:
        self._warned_modules.discard(module)
        for lq in self.queues.values():
            if lq.name.module == module and lq.no_agent:
                lq.no_agent = False
                self.offer(lq)
        self.kick()

    def make_due(self, qn: QueueName, msg_id: str) -> None:
        lq = self.queue(qn)
        lq.push_due(msg_id)
        self.offer(lq)

    def wait(self, qn: QueueName, msg_id: str, when: float) -> None:
        self.queue(qn).waiting[msg_id] = when
        self.at(when, "retry", (msg_id, qn))

    def discard(self, qn: QueueName, msg_id: str) -> None:
        lq = self.queues.get(qn)
        if lq is not None:
            lq.discard(msg_id)
            self.forget(lq)

    def forget(self, lq: LogicalQueue) -> None:
        """Drop an idle queue object (its state is not worth memory once nothing waits)."""
        if lq.idle() and lq.state != SUSPENDED and not lq.in_ring:
            self.queues.pop(lq.name, None)

    def suspend(self, lq: LogicalQueue) -> None:
        self.at(lq.resume_at, "resume", lq.name)

    def probe(self, lq: LogicalQueue) -> None:
        """Let a suspended queue try one delivery now (admin retry)."""
        if lq.state == SUSPENDED:
            lq.state = THROTTLED
        self.offer(lq)

    # -- running deliveries -----------------------------------------------------------------
    def started(self, lq: LogicalQueue) -> None:
        lq.active += 1
        module = lq.name.module
        self._module_active[module] = self._module_active.get(module, 0) + 1

    def finished(self, lq: LogicalQueue) -> None:
        lq.active -= 1
        module = lq.name.module
        self._module_active[module] -= 1
        for qn in list(self._starved.pop(module, {})):
            q = self.queues.get(qn)
            if q is not None:
                self.offer(q)
        self.offer(lq)
        self.forget(lq)

    # -- the cooperator ---------------------------------------------------------------------
    def offer(self, lq: LogicalQueue) -> None:
        """Put a queue in the round-robin ring if it could start a delivery now."""
        if not lq.in_ring and lq.startable(self._per_queue(lq.name.module)):
            lq.in_ring = True
            self._ring.append(lq.name)

    def kick(self) -> None:
        if self._task is None and self._ring and not self.stopped:
            self._task = self._coop.coiterate(self._work())

            def finished(result: Any) -> None:
                self._task = None
                if isinstance(result, Failure):
                    self.log.failure("queue: scheduler stopped", result)
                self.kick()

            self._task.addBoth(finished)

    def _work(self) -> Iterator[None]:
        """Start one delivery per step, round-robin over ready queues (fairness)."""
        while self._ring and not self.stopped:
            qn = self._ring.popleft()
            lq = self.queues.get(qn)
            if lq is None:
                continue
            lq.in_ring = False
            if not lq.startable(self._per_queue(qn.module)):
                continue
            module = qn.module
            if self._module_active.get(module, 0) >= self._module_limit(module):
                self._starved.setdefault(module, OrderedDict())[qn] = None
                continue
            self._start(lq, lq.pop_due())
            self.offer(lq)
            yield None

    # -- the one timer ----------------------------------------------------------------------
    def at(self, when: float, kind: str, key: Any) -> None:
        """Wake up at ``when`` for ``(kind, key)``; stale events are checked by the receiver."""
        heapq.heappush(self._heap, (when, next(self._seq), kind, key))
        self._arm()

    def _arm(self) -> None:
        if self.stopped or not self._heap:
            return
        when = self._heap[0][0]
        if self._timer is not None and self._timer.active():
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        while self._heap and self._heap[0][0] <= now:
            when, _seq, kind, key = heapq.heappop(self._heap)
            if kind == "resume":
                lq = self.queues.get(key)
                if lq is not None and lq.state == SUSPENDED and lq.resume_at == when:
                    lq.state = THROTTLED
                    self.offer(lq)
                    self.forget(lq)
            else:
                try:
                    self._on_event(kind, key, when)
                except Exception:
                    self.log.failure("queue: timer event {kind} failed", kind=kind)
        self._arm()
        self.kick()
