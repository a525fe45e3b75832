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
from collections import deque
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional

from twisted.internet import defer
from twisted.internet.task import Cooperator
from twisted.python.failure import Failure

from cgtwist import retry
from cgtwist.errors import MailError
from cgtwist.logs import Logger
from cgtwist.queue.admin import QueueAdmin
from cgtwist.queue.logical import LogicalQueue
from cgtwist.queue.reports import QueueReports
from cgtwist.queue.scheduler import Scheduler
from cgtwist.queue.state import DELIVERED, FAILED, PENDING, Job, Msg
from cgtwist.settings import SettingsHolder
from cgtwist.spool.format import SpoolCorrupt, SpoolEntry
from cgtwist.types import Envelope, QueueName, Recipient, Route

Bouncer = Callable[[str, Envelope, bytes, list[Recipient]], Any]
_LOADERS = 8  # spool reads in flight while filling the active window


class QueueManager(QueueReports, QueueAdmin):
    """``QueueManager(spool, router, agents, settings, clock, bouncer=None, cooperator=None,
    delay_warning=None, on_delivered=None, server_rules=None, data_cache=64 MiB)``.

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

    def __init__(
        self,
        spool: Any,
        router: Any,
        agents: Mapping[str, Any],
        settings: SettingsHolder,
        clock: Any,
        bouncer: Optional[Bouncer] = None,
        cooperator: Optional[Cooperator] = None,
        delay_warning: Optional[Callable[..., Any]] = None,
        on_delivered: Optional[Bouncer] = None,
        server_rules: Optional[Callable[[str, Envelope, Optional[bytes]], Any]] = None,
        data_cache: int = 64 << 20,
    ) -> None:
        self.spool = spool
        self.router = router
        self.agents: dict[str, Any] = dict(agents)
        self.settings = settings
        self.clock = clock
        self.bouncer = bouncer
        self.delay_warning = delay_warning
        self.on_delivered = on_delivered
        self.server_rules = server_rules
        self.data_cache = data_cache  # octets of message data kept in memory at most (roughly)
        self._cached = 0
        self.scheduler = Scheduler(
            clock,
            self._try_start,
            self._on_event,
            self._per_queue,
            self._module_limit,
            lambda module: module in self.agents,
            cooperator,
        )
        self._queues = self.scheduler.queues
        self._msgs: dict[str, Msg] = {}
        self._backlog: deque[str] = deque()
        self._loading = 0
        self._inflight: set[defer.Deferred[Any]] = set()
        self._stopped = False
        self._refilling = False

    # -- settings (read at use time) --------------------------------------------------------
    def _per_queue(self, module: str) -> int:
        """Deliveries at once in one logical queue of ``module``: the module's own
        ``queue.<module>_destination_concurrency`` when the settings declare one (LOCAL: an
        account's Maildir takes many writers, where a remote domain wants few connections),
        else the general ``queue.destination_concurrency``."""
        return max(1, self.settings.current.queue.destination_concurrency_of(module))

    def _module_limit(self, module: str) -> int:
        return max(1, self.settings.current.queue.concurrency(module))

    def _schedule_list(self) -> list[float]:
        return list(self.settings.current.queue.retry_schedule or retry.DEFAULT_SCHEDULE)

    def _lifetime(self) -> float:
        return float(self.settings.current.queue.max_lifetime)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> defer.Deferred[int]:
        """Recover the spool and queue every message found; fires with their number.

        The start-up scan checks each file's structure only (header, length, trailer: cheap even
        for 100,000 files); the checksum is verified when a message is loaded, before any
        delivery, and a damaged file is quarantined then."""
        d = self.spool.recover(deep=False)

        def recovered(ids: list[str]) -> int:
            self._backlog.extend(ids)
            self._refill()
            self.log.info("queue: started with {n} message(s) in the spool", n=len(ids))
            return len(ids)

        return d.addCallback(recovered)

    def stop(self) -> defer.Deferred[None]:
        """Start nothing new; fire when the deliveries in flight have finished."""
        self._stopped = True
        self.scheduler.stop()
        pending = list(self._inflight)
        return defer.DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)

    def set_agent(self, module: str, agent: Any) -> None:
        """Add or replace the delivery agent of ``module``; its waiting queues start."""
        self.agents[module] = agent
        self.scheduler.agent_added(module)

    def _track(self, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
        self._inflight.add(d)

        def untrack(result: Any) -> Any:
            self._inflight.discard(d)
            return result

        return d.addBoth(untrack)

    # -- entry ------------------------------------------------------------------------------
    def enqueue(
        self, msg_id: str, envelope: Envelope, data: Optional[bytes] = None
    ) -> defer.Deferred[None]:
        """Take a newly spooled message (``data`` saves reading it back for the first try)."""
        if msg_id in self._msgs:
            return defer.succeed(None)
        if len(self._msgs) + self._loading >= self._window():
            self._backlog.append(msg_id)
            return defer.succeed(None)
        own = Envelope(
            envelope.sender,
            [replace(r) for r in envelope.recipients],
            dict(envelope.submit),
            dict(envelope.params),
        )
        m = Msg(msg_id, own, self.clock.seconds())
        self._keep(m, data)
        if self.server_rules is None:
            return self._activate(m)
        # CommuniGate's order: Server Rules before the logical queues. They may settle
        # recipients (state delivered = discarded, failed = rejected) on our copy.
        rules = self.server_rules
        d = defer.maybeDeferred(lambda: rules(msg_id, own, data))

        def ruled(result: Any) -> defer.Deferred[None]:
            if isinstance(result, Failure):
                self.log.failure(
                    "queue: server rules failed for {msg_id}; delivering as is",
                    result,
                    msg_id=msg_id,
                )
            return self._activate(m)

        return d.addBoth(ruled)

    def adopt(self, msg_id: str) -> defer.Deferred[bool]:
        """Take a message an SMTP worker process stored in ``Queue/incoming/`` (it answered
        250 already): move it into the spool proper and queue it like a new one. Fires True if
        it was adopted now, False if it was not there (adopted before) or the queue is stopping
        (it waits in ``Queue/incoming/`` for the next start)."""
        if self._stopped:
            return defer.succeed(False)
        d = self.spool.adopt(msg_id)

        def adopted(entry: Optional[SpoolEntry]) -> Any:
            if entry is None:
                return False
            d2 = self.enqueue(msg_id, entry.envelope, entry.data)
            return d2.addCallback(lambda _: True)

        return d.addCallback(adopted)

    def _window(self) -> int:
        return max(1, self.settings.current.queue.active_window)

    def _activate(self, m: Msg) -> defer.Deferred[None]:
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
        while (
            self._backlog
            and self._loading < _LOADERS
            and len(self._msgs) + self._loading < self._window()
            and not self._stopped
        ):
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

    def _from_entry(self, entry: SpoolEntry) -> Msg:
        m = Msg(entry.msg_id, entry.envelope, entry.queued, None, entry.held, set(entry.bounced))
        m.warned = any(h.get("res") == "warned" for h in entry.history)
        return m

    def _load_failed(self, f: Failure, msg_id: str) -> None:
        self._loading -= 1
        if f.check(SpoolCorrupt, KeyError):
            self.log.warn(
                "queue: {msg_id} could not be loaded ({why}); skipped",
                msg_id=msg_id,
                why=f.getErrorMessage(),
            )
        else:
            self.log.failure("queue: loading {msg_id} failed", f, msg_id=msg_id)
        self._refill()

    # -- routing (CommuniGate's Enqueuer: Router, then logical queues) ----------------------
    def _route(self, m: Msg) -> defer.Deferred[None]:
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
                        self.log.failure(
                            "queue: routing {rcpt} of {msg_id} failed",
                            value,
                            rcpt=r.address,
                            msg_id=m.msg_id,
                        )
            if temp_error:
                self._route_later(m, temp_error)
            return self.spool.update(m.msg_id, m.envelope)

        def done(result: Any) -> None:
            m.running -= 1
            if isinstance(result, Failure):
                self.log.error(
                    "queue: journal write for {msg_id} failed: {error}",
                    msg_id=m.msg_id,
                    error=result.getErrorMessage(),
                )
            self._place(m)

        return self._track(d.addCallback(routed).addBoth(done))

    def _route_later(self, m: Msg, error: str) -> None:
        m.route_failures += 1
        now = self.clock.seconds()
        when = retry.next_attempt(
            m.queued, now, m.route_failures, self._schedule_list(), self._lifetime()
        )
        if when is None:
            for i, r in enumerate(m.envelope.recipients):
                if r.state == PENDING and i not in m.routes:
                    self._set(m, i, FAILED, f"4.4.7 message expired; routing failed: {error}", "")
            return
        self.log.warn("queue: {msg_id} routing deferred: {error}", msg_id=m.msg_id, error=error)
        m.route_due = when
        self.scheduler.at(when, "route", m.msg_id)

    def _set(self, m: Msg, i: int, state: str, detail: str, how: str) -> None:
        r = m.envelope.recipients[i]
        r.state, r.detail = state, detail
        m.routes.pop(i, None)
        self.log.info(
            "queue: {msg_id} <{rcpt}> {state} {how}: {detail}",
            msg_id=m.msg_id,
            rcpt=r.address,
            state=state,
            how=how or r.route,
            detail=detail,
        )

    def _place(self, m: Msg) -> None:
        """Put the routed pending recipients into their logical queues' jobs."""
        groups: dict[QueueName, list[int]] = {}
        for i, route in sorted(m.routes.items()):
            if m.envelope.recipients[i].state == PENDING:
                groups.setdefault(route.queue_name, []).append(i)
        for qn, idx in groups.items():
            job = m.jobs.get(qn)
            if job is None:
                job = m.jobs[qn] = Job(qn, idx)
                self._make_due(m, job)
            elif not job.running:
                job.indexes = idx
        self._check_done(m)
        self._kick()

    def _queue(self, qn: QueueName) -> LogicalQueue:
        return self.scheduler.queue(qn)

    def _kick(self) -> None:
        self.scheduler.kick()

    def _make_due(self, m: Msg, job: Job) -> None:
        if not (m.held or m.dropped):
            self.scheduler.make_due(job.queue, m.msg_id)

    def _wait(self, m: Msg, job: Job, when: float) -> None:
        job.due = when
        self.scheduler.wait(job.queue, m.msg_id, when)

    # -- deliveries ---------------------------------------------------------------------------
    def _try_start(self, lq: LogicalQueue, msg_id: str) -> None:
        """The scheduler's pick: start this message's delivery in ``lq`` if still wanted."""
        m = self._msgs.get(msg_id)
        job = m.jobs.get(lq.name) if m is not None else None
        if m is None or job is None or job.running or m.held or m.dropped:
            return
        try:
            self._start(lq, m, job)
        except Exception:
            # A bug must not stop the scheduler nor spin it: park the job for a retry.
            self.log.failure(
                "queue: cannot start {queue} for {msg_id}", queue=str(lq.name), msg_id=msg_id
            )
            self._wait(m, job, self.clock.seconds() + retry.retry_delay(self._schedule_list(), 1))

    def _start(self, lq: LogicalQueue, m: Msg, job: Job) -> None:
        module = lq.name.module
        rcpts = m.envelope.recipients
        copies = [
            replace(
                rcpts[i],
                address=m.routes[i].address if i in m.routes else rcpts[i].address,
                state=PENDING,
            )
            for i in job.indexes
        ]
        agent = self.agents[module]
        job.running = True
        m.running += 1
        self.scheduler.started(lq)
        d = self._data(m)
        d.addCallback(lambda data: agent.deliver(m.msg_id, m.envelope, data, copies))
        d.addBoth(self._delivered, lq, m, job, copies)
        self._track(d)

    def _keep(self, m: Msg, data: Optional[bytes]) -> None:
        """Keep a new message's bytes for its first attempt while the memory budget allows
        (a burst of large messages is read back from the spool instead)."""
        if data is not None and self._cached + len(data) <= self.data_cache:
            m.data = data
            self._cached += len(data)

    def _drop(self, m: Msg) -> None:
        if m.data is not None:
            self._cached -= len(m.data)
            m.data = None

    def _data(self, m: Msg) -> defer.Deferred[bytes]:
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
                self._cached += len(result[1])
            for w in waiters:
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(result[1])

        self.spool.load(m.msg_id).addBoth(fire)
        return d

    def _delivered(
        self, result: Any, lq: LogicalQueue, m: Msg, job: Job, copies: list[Recipient]
    ) -> defer.Deferred[None]:
        now = self.clock.seconds()
        if isinstance(result, Failure):
            if result.check(SpoolCorrupt, KeyError):
                self.log.error(
                    "queue: {msg_id} vanished from the spool ({why}); forgotten",
                    msg_id=m.msg_id,
                    why=result.getErrorMessage(),
                )
                m.dropped = True
            else:
                self.log.failure(
                    "queue: {queue} delivery of {msg_id} failed",
                    result,
                    queue=str(lq.name),
                    msg_id=m.msg_id,
                )
            for c in copies:
                if c.state != DELIVERED:
                    c.state, c.detail = PENDING, "4.3.0 internal error during delivery"
        elif (
            isinstance(result, list)
            and len(result) == len(copies)
            and all(isinstance(r, Recipient) for r in result)
        ):
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
            self.log.info(
                "queue: {msg_id} <{rcpt}> {queue} {state}: {detail}",
                msg_id=m.msg_id,
                rcpt=rcpts[i].address,
                queue=str(lq.name),
                state=state,
                detail=c.detail,
            )
            if state == PENDING:
                pending.append(i)
            else:
                m.routes.pop(i, None)
        when: Optional[float] = None
        if pending:
            job.failures += 1
            when = retry.next_attempt(
                m.queued, now, job.failures, self._schedule_list(), self._lifetime()
            )
            if when is None:
                for i in pending:
                    last = rcpts[i].detail
                    self._set(
                        m,
                        i,
                        FAILED,
                        f"4.4.7 message expired after {int(now - m.queued)}s; last error: {last}",
                        str(lq.name),
                    )
                pending = []
        if delivered or not pending:
            lq.succeeded()
        elif lq.failed(
            now,
            self.settings.current.queue.suspend_after or 3,
            retry.retry_delay(self._schedule_list(), lq.failures + 1),
            rcpts[pending[0]].detail,
        ):
            self.log.warn(
                "queue: {queue} suspended until {until} after {n} failures: {error}",
                queue=str(lq.name),
                until=lq.resume_at,
                n=lq.failures,
                error=lq.last_error,
            )
            self.scheduler.suspend(lq)
        history = {
            "k": "a",
            "t": now,
            "q": str(lq.name),
            "r": [[rcpts[i].address, rcpts[i].state, rcpts[i].detail] for i in job.indexes],
        }

        def journaled(res: Any) -> None:
            if isinstance(res, Failure):
                self.log.error(
                    "queue: journal write for {msg_id} failed: {error}",
                    msg_id=m.msg_id,
                    error=res.getErrorMessage(),
                )
            job.running = False
            m.running -= 1
            # Recipients routed into this queue while the attempt ran join the job too.
            idx = sorted(
                i
                for i, r in m.routes.items()
                if r.queue_name == lq.name and rcpts[i].state == PENDING
            )
            if idx and not m.dropped:
                job.indexes = idx
                if pending:
                    self._wait(m, job, when if when is not None else now)
                else:
                    self._make_due(m, job)
            else:
                m.jobs.pop(lq.name, None)
            self.scheduler.finished(lq)
            wanted = [
                copy.copy(rcpts[i])
                for i in job.indexes
                if rcpts[i].state == DELIVERED and "SUCCESS" in (rcpts[i].notify or "").upper()
            ]
            if wanted and self.on_delivered is not None and not m.dropped:
                self._notify_success(m, wanted)
            if m.running == 0 and not any(
                m.msg_id in q.due for q in (self._queues.get(j.queue) for j in m.jobs.values()) if q
            ):
                self._drop(m)  # keep memory bounded: read back from the spool at the next try
            self._check_done(m)
            self._kick()

        if m.dropped or all(r.state == DELIVERED for r in rcpts):
            # Nothing left to remember: the message is removed next, and the removal names it
            # durably in the spool's done log first (Spool.remove, a group commit), so a crash
            # after that does not deliver it again; one before it does, as at-least-once allows.
            m.attempts.clear()
            return defer.succeed(None).addBoth(journaled)
        extra, m.attempts = m.attempts + [history], []
        return self.spool.update(m.msg_id, m.envelope, extra).addBoth(journaled)

    def _on_event(self, kind: str, key: Any, when: float) -> None:
        """Timer events from the scheduler (stale ones are recognised and ignored)."""
        if kind == "retry":
            msg_id, qn = key
            m = self._msgs.get(msg_id)
            job = m.jobs.get(qn) if m is not None else None
            if m is not None and job is not None and not job.running and job.due == when:
                self._make_due(m, job)
            return
        m = self._msgs.get(key)
        if m is None:
            return
        if kind == "route" and m.route_due == when:
            m.route_due = None
            self._route(m)
        elif kind == "report" and m.report_due == when:
            m.report_due = None
            self._check_done(m)
