"""The queue manager: routes spooled messages into logical queues and drains them.

Owns the in-memory view of the spool (a bounded active window, the rest in a backlog of ids),
routing each pending recipient through the injected IRouter (CommuniGate's Enqueuer), grouping
recipients into logical queues (one spool file, many queues), the scheduler (one
``task.Cooperator`` that starts deliveries round-robin across ready queues, driven by ONE timer
to the next due event plus a kick on new mail; never polling), retries by ``cgtwist.retry``,
expiry, and handing failed recipients to the bouncer. A message leaves the spool only when every
recipient is delivered or failed and every failure was reported. It never talks to a client and
never delivers by itself: agents (``IDeliveryAgent`` per module) do. Admin operations live in
``cgtwist.queue.admin``.
"""

from __future__ import annotations

import copy
import heapq
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Optional

from twisted.internet import defer
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure

from cgtwist import retry
from cgtwist.errors import MailError
from cgtwist.queue.admin import QueueAdmin
from cgtwist.queue.logical import SUSPENDED, THROTTLED, LogicalQueue
from cgtwist.settings import DEFAULTS, SettingsHolder
from cgtwist.spool.format import SpoolCorrupt, SpoolEntry
from cgtwist.types import Envelope, QueueName, Recipient, Route

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
Bouncer = Callable[[str, Envelope, bytes, list[Recipient]], Any]
_LOADERS = 8  # spool reads in flight while filling the active window


@dataclass(eq=False)
class _Job:
    """One message in one logical queue: its recipients there and its retry state."""

    queue: QueueName
    indexes: list[int]
    failures: int = 0
    due: float = 0.0
    running: bool = False


@dataclass(eq=False)
class _Msg:
    msg_id: str
    envelope: Envelope
    queued: float
    data: Optional[bytes] = None
    held: bool = False
    bounced: set[int] = field(default_factory=set)
    warned: bool = False
    routes: dict[int, Route] = field(default_factory=dict)
    jobs: dict[QueueName, _Job] = field(default_factory=dict)
    running: int = 0  # deliveries, routing or reports in flight
    route_failures: int = 0
    route_due: Optional[float] = None
    report_failures: int = 0
    report_due: Optional[float] = None
    reporting: bool = False
    dropped: bool = False
    bounce_all: str = ""
    removing: bool = False
    waiters: Optional[list[defer.Deferred[bytes]]] = None


class QueueManager(QueueAdmin):
    """``QueueManager(spool, router, agents, settings, clock, bouncer=None, cooperator=None,
    delay_warning=None, on_delivered=None, server_rules=None)``.

    ``spool`` is a ``cgtwist.spool.Spool``; ``agents`` maps module name -> IDeliveryAgent (more
    can be added with ``set_agent``); ``bouncer(msg_id, envelope, data, failed_recipients)``
    and ``delay_warning(msg_id, envelope, data, recipients, retry_until)`` return Deferreds;
    ``on_delivered(msg_id, envelope, data, recipients)`` gets delivered recipients that asked
    for NOTIFY=SUCCESS (fits ``Bouncer.delivered``). ``server_rules(msg_id, envelope, data)``
    is the Server Rules hook, run once per new message before routing; it may set recipient
    states on the envelope it is given (the queue's own copy).
    Call ``start()`` once (recovers the spool), ``enqueue`` for each new message, ``stop()`` at
    shutdown.
    """

    log = Logger()

    def __init__(self, spool: Any, router: Any, agents: Mapping[str, Any], settings: SettingsHolder,
                 clock: Any, bouncer: Optional[Bouncer] = None,
                 cooperator: Optional[Cooperator] = None,
                 delay_warning: Optional[Callable[..., Any]] = None,
                 on_delivered: Optional[Bouncer] = None,
                 server_rules: Optional[Callable[[str, Envelope, Optional[bytes]], Any]] = None) -> None:
        self.spool = spool
        self.router = router
        self.agents: dict[str, Any] = dict(agents)
        self.settings = settings
        self.clock = clock
        self.bouncer = bouncer
        self.delay_warning = delay_warning
        self.on_delivered = on_delivered
        self.server_rules = server_rules
        self._coop = cooperator or Cooperator(scheduler=lambda f: clock.callLater(0, f))
        self._msgs: dict[str, _Msg] = {}
        self._backlog: deque[str] = deque()
        self._loading = 0
        self._queues: dict[QueueName, LogicalQueue] = {}
        self._ring: deque[QueueName] = deque()
        self._starved: dict[str, OrderedDict[QueueName, None]] = {}
        self._module_active: dict[str, int] = {}
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._timer: Any = None
        self._timer_at = 0.0
        self._task: Optional[defer.Deferred[Any]] = None
        self._inflight: set[defer.Deferred[Any]] = set()
        self._warned_modules: set[str] = set()
        self._stopped = False
        self._refilling = False

    # -- settings (read at use time) --------------------------------------------------------
    def _get(self, key: str) -> Any:
        try:
            return self.settings.current[key]
        except KeyError:
            return DEFAULTS[key][0] if key in DEFAULTS else None

    def _per_queue(self) -> int:
        return int(self._get("queue.destination_concurrency") or 5)

    def _module_limit(self, module: str) -> int:
        v = self._get(f"queue.{module.lower()}_concurrency")
        if v is None:
            v = self._get("queue.default_concurrency") or 10
        return max(1, int(v))

    def _schedule_list(self) -> list[float]:
        return list(self._get("queue.retry_schedule") or retry.DEFAULT_SCHEDULE)

    def _lifetime(self) -> float:
        return float(self._get("queue.max_lifetime"))

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> defer.Deferred[int]:
        """Recover the spool and queue every message found; fires with their number."""
        d = self.spool.recover()

        def recovered(ids: list[str]) -> int:
            self._backlog.extend(ids)
            self._refill()
            self.log.info("queue: started with {n} message(s) in the spool", n=len(ids))
            return len(ids)

        return d.addCallback(recovered)

    def stop(self) -> defer.Deferred[None]:
        """Start nothing new; fire when the deliveries in flight have finished."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        pending = list(self._inflight)
        return defer.DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)

    def set_agent(self, module: str, agent: Any) -> None:
        """Add or replace the delivery agent of ``module``; its waiting queues start."""
        self.agents[module] = agent
        self._warned_modules.discard(module)
        for lq in self._queues.values():
            if lq.name.module == module and lq.no_agent:
                lq.no_agent = False
                self._offer(lq)
        self._kick()

    def _track(self, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
        self._inflight.add(d)

        def untrack(result: Any) -> Any:
            self._inflight.discard(d)
            return result

        return d.addBoth(untrack)

    # -- entry ------------------------------------------------------------------------------
    def enqueue(self, msg_id: str, envelope: Envelope, data: Optional[bytes] = None) -> defer.Deferred[None]:
        """Take a newly spooled message (``data`` saves reading it back for the first try)."""
        if msg_id in self._msgs:
            return defer.succeed(None)
        if len(self._msgs) + self._loading >= self._window():
            self._backlog.append(msg_id)
            return defer.succeed(None)
        own = Envelope(envelope.sender, [replace(r) for r in envelope.recipients],
                       dict(envelope.submit), dict(envelope.params))
        m = _Msg(msg_id, own, self.clock.seconds(), data)
        if self.server_rules is None:
            return self._activate(m)
        # CommuniGate's order: Server Rules before the logical queues. They may settle
        # recipients (state delivered = discarded, failed = rejected) on our copy.
        rules = self.server_rules
        d = defer.maybeDeferred(lambda: rules(msg_id, own, data))

        def ruled(result: Any) -> defer.Deferred[None]:
            if isinstance(result, Failure):
                self.log.failure("queue: server rules failed for {msg_id}; delivering as is",
                                 result, msg_id=msg_id)
            return self._activate(m)

        return d.addBoth(ruled)

    def _window(self) -> int:
        return max(1, int(self._get("queue.active_window")))

    def _activate(self, m: _Msg) -> defer.Deferred[None]:
        submit = dict(m.envelope.submit)
        if not any(k in submit for k in ("arrival", "time", "received")):
            submit["arrival"] = repr(m.queued)
        m.envelope.submit = submit
        self._msgs[m.msg_id] = m
        return self._route(m)

    def _refill(self) -> None:
        """Load messages from the backlog while the active window has room."""
        if self._refilling:
            return  # a load that completed synchronously; the running loop continues
        self._refilling = True
        try:
            self._refill_loop()
        finally:
            self._refilling = False

    def _refill_loop(self) -> None:
        while self._backlog and self._loading < _LOADERS and \
                len(self._msgs) + self._loading < self._window() and not self._stopped:
            msg_id = self._backlog.popleft()
            if msg_id in self._msgs:
                continue
            self._loading += 1
            d = defer.maybeDeferred(self.spool.load_entry, msg_id, with_data=False)
            d.addCallbacks(self._loaded, self._load_failed, errbackArgs=(msg_id,))

    def _loaded(self, entry: SpoolEntry) -> Any:
        self._loading -= 1
        d = self._activate(self._from_entry(entry))
        self._refill()
        return d

    def _from_entry(self, entry: SpoolEntry) -> _Msg:
        m = _Msg(entry.msg_id, entry.envelope, entry.queued, None, entry.held, set(entry.bounced))
        m.warned = any(h.get("res") == "warned" for h in entry.history)
        return m

    def _load_failed(self, f: Failure, msg_id: str) -> None:
        self._loading -= 1
        if f.check(SpoolCorrupt, KeyError):
            self.log.warn("queue: {msg_id} could not be loaded ({why}); skipped",
                          msg_id=msg_id, why=f.getErrorMessage())
        else:
            self.log.failure("queue: loading {msg_id} failed", f, msg_id=msg_id)
        self._refill()

    # -- routing (CommuniGate's Enqueuer: Router, then logical queues) ----------------------
    def _route(self, m: _Msg) -> defer.Deferred[None]:
        rcpts = m.envelope.recipients
        todo = [i for i, r in enumerate(rcpts) if r.state == PENDING and i not in m.routes]
        if not todo:
            self._place(m)
            return defer.succeed(None)
        m.running += 1
        ds = [defer.maybeDeferred(self.router.route, rcpts[i].address) for i in todo]
        d = defer.DeferredList(ds, consumeErrors=True)

        def routed(results: list[tuple[bool, Any]]) -> defer.Deferred[None]:
            temp_error = ""
            for i, (ok, value) in zip(todo, results, strict=True):
                r = rcpts[i]
                if ok and isinstance(value, Route):
                    if value.module == "ERROR":
                        self._set(m, i, FAILED, value.error or "5.1.1 address rejected", "ERROR")
                    elif value.module == "NULL":
                        self._set(m, i, DELIVERED, "2.0.0 discarded by the Router (NULL)", "NULL")
                    else:
                        m.routes[i] = value
                        r.route = str(value.queue_name)
                elif not ok and value.check(MailError) and not value.value.temporary:
                    self._set(m, i, FAILED, value.value.reply(), "")
                else:
                    temp_error = value.getErrorMessage() if not ok else "router returned no route"
                    if not ok and not value.check(MailError):
                        self.log.failure("queue: routing {rcpt} of {msg_id} failed", value,
                                         rcpt=r.address, msg_id=m.msg_id)
            if temp_error:
                self._route_later(m, temp_error)
            return self.spool.update(m.msg_id, m.envelope)

        def done(result: Any) -> None:
            m.running -= 1
            if isinstance(result, Failure):
                self.log.error("queue: journal write for {msg_id} failed: {error}",
                               msg_id=m.msg_id, error=result.getErrorMessage())
            self._place(m)

        return self._track(d.addCallback(routed).addBoth(done))

    def _route_later(self, m: _Msg, error: str) -> None:
        m.route_failures += 1
        now = self.clock.seconds()
        when = retry.next_attempt(m.queued, now, m.route_failures, self._schedule_list(), self._lifetime())
        if when is None:
            for i, r in enumerate(m.envelope.recipients):
                if r.state == PENDING and i not in m.routes:
                    self._set(m, i, FAILED, f"4.4.7 message expired; routing failed: {error}", "")
            return
        self.log.warn("queue: {msg_id} routing deferred: {error}", msg_id=m.msg_id, error=error)
        m.route_due = when
        self._at(when, "route", m.msg_id)

    def _set(self, m: _Msg, i: int, state: str, detail: str, how: str) -> None:
        r = m.envelope.recipients[i]
        r.state, r.detail = state, detail
        m.routes.pop(i, None)
        self.log.info("queue: {msg_id} <{rcpt}> {state} {how}: {detail}", msg_id=m.msg_id,
                      rcpt=r.address, state=state, how=how or r.route, detail=detail)

    def _place(self, m: _Msg) -> None:
        """Put the routed pending recipients into their logical queues' jobs."""
        groups: dict[QueueName, list[int]] = {}
        for i, route in sorted(m.routes.items()):
            if m.envelope.recipients[i].state == PENDING:
                groups.setdefault(route.queue_name, []).append(i)
        for qn, idx in groups.items():
            job = m.jobs.get(qn)
            if job is None:
                job = m.jobs[qn] = _Job(qn, idx)
                self._make_due(m, job)
            elif not job.running:
                job.indexes = idx
        self._check_done(m)
        self._kick()

    def _queue(self, qn: QueueName) -> LogicalQueue:
        lq = self._queues.get(qn)
        if lq is None:
            lq = self._queues[qn] = LogicalQueue(qn)
            if qn.module not in self.agents:
                lq.no_agent = True
                if qn.module not in self._warned_modules:
                    self._warned_modules.add(qn.module)
                    self.log.warn("queue: no delivery agent for module {module}; its recipients "
                                  "stay queued", module=qn.module)
        return lq

    def _make_due(self, m: _Msg, job: _Job) -> None:
        if m.held or m.dropped:
            return
        lq = self._queue(job.queue)
        lq.push_due(m.msg_id)
        self._offer(lq)

    def _wait(self, m: _Msg, job: _Job, when: float) -> None:
        job.due = when
        lq = self._queue(job.queue)
        lq.waiting[m.msg_id] = when
        self._at(when, "retry", (m.msg_id, job.queue))

    # -- scheduler --------------------------------------------------------------------------
    def _offer(self, lq: LogicalQueue) -> None:
        """Put a queue in the round-robin ring if it could start a delivery now."""
        if not lq.in_ring and lq.startable(self._per_queue()):
            lq.in_ring = True
            self._ring.append(lq.name)

    def _kick(self) -> None:
        if self._task is None and self._ring and not self._stopped:
            self._task = self._coop.coiterate(self._work())

            def finished(result: Any) -> None:
                self._task = None
                if isinstance(result, Failure):
                    self.log.failure("queue: scheduler stopped", result)
                self._kick()

            self._task.addBoth(finished)

    def _work(self) -> Iterator[None]:
        """Start one delivery per step, round-robin over ready queues (fairness)."""
        while self._ring and not self._stopped:
            qn = self._ring.popleft()
            lq = self._queues.get(qn)
            if lq is None:
                continue
            lq.in_ring = False
            if not lq.startable(self._per_queue()):
                continue
            module = qn.module
            if self._module_active.get(module, 0) >= self._module_limit(module):
                self._starved.setdefault(module, OrderedDict())[qn] = None
                continue
            msg_id = lq.pop_due()
            m = self._msgs.get(msg_id)
            job = m.jobs.get(qn) if m is not None else None
            if m is not None and job is not None and not job.running and not m.held and not m.dropped:
                try:
                    self._start(lq, m, job)
                except Exception:
                    # A bug must not stop the scheduler nor spin it: park the job for a retry.
                    self.log.failure("queue: cannot start {queue} for {msg_id}",
                                     queue=str(qn), msg_id=msg_id)
                    self._wait(m, job, self.clock.seconds() + retry.retry_delay(self._schedule_list(), 1))
            self._offer(lq)
            yield None

    def _start(self, lq: LogicalQueue, m: _Msg, job: _Job) -> None:
        module = lq.name.module
        rcpts = m.envelope.recipients
        copies = [replace(rcpts[i], address=m.routes[i].address if i in m.routes else rcpts[i].address,
                          state=PENDING) for i in job.indexes]
        agent = self.agents[module]
        job.running = True
        lq.active += 1
        m.running += 1
        self._module_active[module] = self._module_active.get(module, 0) + 1
        d = self._data(m)
        d.addCallback(lambda data: agent.deliver(m.msg_id, m.envelope, data, copies))
        d.addBoth(self._delivered, lq, m, job, copies)
        self._track(d)

    def _data(self, m: _Msg) -> defer.Deferred[bytes]:
        if m.data is not None:
            return defer.succeed(m.data)
        d: defer.Deferred[bytes] = defer.Deferred()
        if m.waiters is not None:
            m.waiters.append(d)
            return d
        m.waiters = [d]

        def fire(result: Any) -> None:
            waiters, m.waiters = m.waiters or [], None
            if not isinstance(result, Failure):
                m.data = result[1]
            for w in waiters:
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(result[1])

        self.spool.load(m.msg_id).addBoth(fire)
        return d

    def _delivered(self, result: Any, lq: LogicalQueue, m: _Msg, job: _Job,
                   copies: list[Recipient]) -> defer.Deferred[None]:
        now = self.clock.seconds()
        if isinstance(result, Failure):
            if result.check(SpoolCorrupt, KeyError):
                self.log.error("queue: {msg_id} vanished from the spool ({why}); forgotten",
                               msg_id=m.msg_id, why=result.getErrorMessage())
                m.dropped = True
            else:
                self.log.failure("queue: {queue} delivery of {msg_id} failed", result,
                                 queue=str(lq.name), msg_id=m.msg_id)
            for c in copies:
                if c.state != DELIVERED:
                    c.state, c.detail = PENDING, "4.3.0 internal error during delivery"
        elif isinstance(result, list) and len(result) == len(copies) and \
                all(isinstance(r, Recipient) for r in result):
            copies = result  # an agent that answered with new objects instead of updating ours
        rcpts = m.envelope.recipients
        pending: list[int] = []
        delivered = 0
        for i, c in zip(job.indexes, copies, strict=True):
            state = c.state if c.state in (DELIVERED, FAILED) else PENDING
            if state == PENDING and m.bounce_all:
                state, c.detail = FAILED, m.bounce_all
            if state == DELIVERED:
                delivered += 1
            rcpts[i].state, rcpts[i].detail = state, c.detail
            self.log.info("queue: {msg_id} <{rcpt}> {queue} {state}: {detail}", msg_id=m.msg_id,
                          rcpt=rcpts[i].address, queue=str(lq.name), state=state, detail=c.detail)
            if state == PENDING:
                pending.append(i)
            else:
                m.routes.pop(i, None)
        when: Optional[float] = None
        if pending:
            job.failures += 1
            when = retry.next_attempt(m.queued, now, job.failures, self._schedule_list(), self._lifetime())
            if when is None:
                for i in pending:
                    last = rcpts[i].detail
                    self._set(m, i, FAILED, f"4.4.7 message expired after {int(now - m.queued)}s; "
                              f"last error: {last}", str(lq.name))
                pending = []
        if delivered or not pending:
            lq.succeeded()
        elif lq.failed(now, int(self._get("queue.suspend_after") or 3),
                       retry.retry_delay(self._schedule_list(), lq.failures + 1), rcpts[pending[0]].detail):
            self.log.warn("queue: {queue} suspended until {until} after {n} failures: {error}",
                          queue=str(lq.name), until=lq.resume_at, n=lq.failures, error=lq.last_error)
            self._at(lq.resume_at, "resume", lq.name)
        history = {"k": "a", "t": now, "q": str(lq.name),
                   "r": [[rcpts[i].address, rcpts[i].state, rcpts[i].detail] for i in job.indexes]}

        def journaled(res: Any) -> None:
            if isinstance(res, Failure):
                self.log.error("queue: journal write for {msg_id} failed: {error}",
                               msg_id=m.msg_id, error=res.getErrorMessage())
            job.running = False
            lq.active -= 1
            m.running -= 1
            module = lq.name.module
            self._module_active[module] -= 1
            # Recipients routed into this queue while the attempt ran join the job too.
            idx = sorted(i for i, r in m.routes.items()
                         if r.queue_name == lq.name and rcpts[i].state == PENDING)
            if idx and not m.dropped:
                job.indexes = idx
                if pending:
                    self._wait(m, job, when if when is not None else now)
                else:
                    self._make_due(m, job)
            else:
                m.jobs.pop(lq.name, None)
            for qn in list(self._starved.pop(module, {})):
                q = self._queues.get(qn)
                if q is not None:
                    self._offer(q)
            self._offer(lq)
            self._forget_queue(lq)
            wanted = [copy.copy(rcpts[i]) for i in job.indexes if rcpts[i].state == DELIVERED
                      and "SUCCESS" in (rcpts[i].notify or "").upper()]
            if wanted and self.on_delivered is not None and not m.dropped:
                self._notify_success(m, wanted)
            if m.running == 0 and not any(m.msg_id in q.due for q in
                                          (self._queues.get(j.queue) for j in m.jobs.values()) if q):
                m.data = None  # keep memory bounded: read back from the spool at the next try
            self._check_done(m)
            self._kick()

        if m.dropped or all(r.state == DELIVERED for r in rcpts):
            # Nothing left to remember: the message is removed next. A crash before that
            # delivers again, exactly as a crash before the journal write would.
            return defer.succeed(None).addBoth(journaled)
        return self.spool.update(m.msg_id, m.envelope, [history]).addBoth(journaled)

    def _notify_success(self, m: _Msg, recipients: list[Recipient]) -> None:
        """NOTIFY=SUCCESS (RFC 3461 §4.1): best effort, the message stays until it is sent."""
        notifier = self.on_delivered
        assert notifier is not None
        m.running += 1
        d = self._data(m).addCallback(lambda data: notifier(m.msg_id, m.envelope, data, recipients))

        def done(result: Any) -> None:
            m.running -= 1
            if isinstance(result, Failure):
                self.log.error("queue: success report for {msg_id} failed: {error}",
                               msg_id=m.msg_id, error=result.getErrorMessage())
            self._check_done(m)

        self._track(d.addBoth(done))

    def _forget_queue(self, lq: LogicalQueue) -> None:
        if lq.idle() and lq.state != SUSPENDED and not lq.in_ring:
            self._queues.pop(lq.name, None)

    # -- the one timer ----------------------------------------------------------------------
    def _at(self, when: float, kind: str, key: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, key))
        self._arm()

    def _arm(self) -> None:
        if self._stopped or not self._heap:
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
            if kind == "retry":
                msg_id, qn = key
                m = self._msgs.get(msg_id)
                job = m.jobs.get(qn) if m is not None else None
                if m is not None and job is not None and not job.running and job.due == when:
                    self._make_due(m, job)
            elif kind == "resume":
                lq = self._queues.get(key)
                if lq is not None and lq.state == SUSPENDED and lq.resume_at == when:
                    lq.state = THROTTLED
                    self._offer(lq)
                    self._forget_queue(lq)
            elif kind == "route":
                m = self._msgs.get(key)
                if m is not None and m.route_due == when:
                    m.route_due = None
                    self._route(m)
            elif kind == "report":
                m = self._msgs.get(key)
                if m is not None and m.report_due == when:
                    m.report_due = None
                    self._check_done(m)
        self._arm()
        self._kick()

    # -- completion -------------------------------------------------------------------------
    def _check_done(self, m: _Msg) -> None:
        """Report new failures (and a due delay warning); remove the message once all is done."""
        if m.running or m.reporting or m.removing or self._msgs.get(m.msg_id) is not m:
            return
        if m.dropped:
            self._remove(m, "dropped")
            return
        rcpts = m.envelope.recipients
        if m.report_due is None:
            failed = [i for i, r in enumerate(rcpts) if r.state == FAILED and i not in m.bounced]
            if failed:
                self._report(m, failed)
                return
            if not m.warned and self._warn_due(m):
                self._warn(m)
                return
        if all(r.state != PENDING for r in rcpts) and not m.jobs and m.report_due is None:
            self._remove(m, "done")

    def _report(self, m: _Msg, failed: list[int]) -> None:
        m.reporting = True
        rcpts = m.envelope.recipients
        if self.bouncer is None:
            self.log.warn("queue: {msg_id} failed for {rcpts}; no bouncer configured",
                          msg_id=m.msg_id, rcpts=", ".join(rcpts[i].address for i in failed))
            d: defer.Deferred[Any] = defer.succeed(None)
        else:
            bouncer = self.bouncer
            d = self._data(m).addCallback(
                lambda data: bouncer(m.msg_id, m.envelope, data, [copy.copy(rcpts[i]) for i in failed]))
        d.addCallback(lambda _: self.spool.record(m.msg_id, [{"k": "b", "i": failed}]))

        def done(result: Any) -> None:
            m.reporting = False
            if isinstance(result, Failure):
                m.report_failures += 1
                when = self.clock.seconds() + retry.retry_delay(self._schedule_list(), m.report_failures)
                self.log.error("queue: reporting failures of {msg_id} failed ({error}); retry at {when}",
                               msg_id=m.msg_id, error=result.getErrorMessage(), when=when)
                m.report_due = when
                self._at(when, "report", m.msg_id)
                return
            m.bounced.update(failed)
            self._check_done(m)

        self._track(d.addBoth(done))

    def _warn_due(self, m: _Msg) -> bool:
        after = float(self._get("queue.delay_warning") or 0)
        if not after or self.delay_warning is None:
            return False
        return self.clock.seconds() - m.queued >= after and any(r.state == PENDING for r in m.envelope.recipients)

    def _warn(self, m: _Msg) -> None:
        m.reporting = True
        pending = [copy.copy(r) for r in m.envelope.recipients if r.state == PENDING]
        warner = self.delay_warning
        assert warner is not None
        until = m.queued + self._lifetime()
        d = self._data(m).addCallback(lambda data: warner(m.msg_id, m.envelope, data, pending, until))
        d.addCallback(lambda _: self.spool.record(m.msg_id, [{"k": "a", "t": self.clock.seconds(),
                                                              "q": "", "res": "warned"}]))

        def done(result: Any) -> None:
            m.reporting = False
            m.warned = True  # at most one warning per run, even if sending it failed
            if isinstance(result, Failure):
                self.log.error("queue: delay warning for {msg_id} failed: {error}",
                               msg_id=m.msg_id, error=result.getErrorMessage())
            self._check_done(m)

        self._track(d.addBoth(done))

    def _remove(self, m: _Msg, why: str) -> None:
        m.removing = True
        for qn in list(m.jobs):
            lq = self._queues.get(qn)
            if lq is not None:
                lq.discard(m.msg_id)
                self._forget_queue(lq)

        def gone(result: Any) -> None:
            if isinstance(result, Failure):
                self.log.error("queue: removing {msg_id} failed: {error}", msg_id=m.msg_id,
                               error=result.getErrorMessage())
            self._msgs.pop(m.msg_id, None)
            self.log.info("queue: {msg_id} left the queue ({why})", msg_id=m.msg_id, why=why)
            self._refill()

        self._track(self.spool.remove(m.msg_id).addBoth(gone))
