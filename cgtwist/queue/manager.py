"""The queue manager: routes spooled messages into logical queues and drains them.

Owns the in-memory view of the spool (a bounded active window, the rest in a backlog of ids),
having each pending recipient routed (``cgtwist.queue.enqueuer``, CommuniGate's Enqueuer),
grouping recipients into logical queues (one spool file, many queues), starting deliveries when the
scheduler (``cgtwist.queue.scheduler``: one timer plus a kick on new mail, never polling) picks
them, and feeding each attempt's outcome back: results and retry or expiry are recorded
(``cgtwist.queue.outcome``), journaled, the job rescheduled, and ``cgtwist.queue.reports``
asked whether the message is complete (it owns "a message leaves the spool only when every
failure was reported"). New mail arrives through the spool's subscription (``enqueue``). It
never talks to a client and never delivers by itself: agents (``IDeliveryAgent`` per module)
do. Its public operations (list, retry, hold, release, bounce, drop) are what
``cgtwist.queue.admin`` offers the administrator.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import replace
from typing import Any, Callable, Mapping, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist import retry
from cgtwist.interfaces import IDeliveryAgent, IQueue, IRouter, IStatistics
from cgtwist.logs import Logger
from cgtwist.queue.attempts import AttemptLog
from cgtwist.queue.config import QueueConfig
from cgtwist.queue.data import MessageData
from cgtwist.queue.enqueuer import Enqueuer
from cgtwist.queue.logical import LogicalQueue
from cgtwist.queue.outcome import crashed, outcome, record, retry_or_expire, settle
from cgtwist.queue.reports import Report, Reports
from cgtwist.queue.scheduler import Scheduler
from cgtwist.queue.state import DELIVERED, FAILED, PENDING, HistoryRecord, Job, JournalBatch, Msg
from cgtwist.settings import SettingsHolder
from cgtwist.spool.format import SpoolCorrupt, SpoolEntry
from cgtwist.spool.spool import Spool
from cgtwist.types import Envelope, QueueName, Recipient

# While filling the active window: batches of spool reads in flight (one thread job each,
# Spool.load_entries), and messages per batch.
_LOADERS = 2
_LOAD_BATCH = 32


@implementer(IQueue)
class QueueManager:
    """``QueueManager(spool, router, agents, settings, clock, bouncer=None, cooperator=None,
    delay_warning=None, on_delivered=None, server_rules=None, data_cache=64 MiB)``.

    ``spool`` is a ``cgtwist.spool.Spool``; ``agents`` maps module name -> IDeliveryAgent (more
    can be added with ``set_agent``); ``attempts`` is the AttemptLog the SMTP agent notes its
    host-level attempts in (``on_attempt=attempts.note``); ``bouncer``, ``delay_warning`` and ``on_delivered`` are
    the reports (``cgtwist.queue.reports.Reports``). ``server_rules(msg_id, envelope, data)``
    is the Server Rules hook, run once per new message before routing; it may set recipient
    states on the envelope it is given (the queue's own copy). ``stats`` counts each new
    message as received and each recipient's attempt as delivered, deferred or bounced.
    Call ``start()`` once (recovers the spool), ``enqueue`` for each new message (the spool's
    subscription does), ``stop()`` at shutdown. ``messages``, ``retry``, ``hold``,
    ``release``, ``bounce`` and ``drop`` are the operations ``cgtwist.queue.admin`` offers
    the administrator.
    """

    log = Logger()

    def __init__(
        self,
        spool: Spool,
        router: IRouter,
        agents: Mapping[str, IDeliveryAgent],
        settings: SettingsHolder,
        clock: IReactorTime,
        bouncer: Optional[Report] = None,
        cooperator: Optional[Cooperator] = None,
        delay_warning: Optional[Callable[..., Any]] = None,
        on_delivered: Optional[Report] = None,
        server_rules: Optional[Callable[[str, Envelope, Optional[bytes]], Any]] = None,
        data_cache: int = 64 << 20,
        attempts: Optional[AttemptLog] = None,
        stats: Optional[IStatistics] = None,
    ) -> None:
        self.spool = spool
        self.router = router
        self.agents: dict[str, IDeliveryAgent] = dict(agents)
        self.settings = QueueConfig(settings)
        self.clock = clock
        self.server_rules = server_rules
        self.stats = stats
        self.data = MessageData(spool, data_cache)
        # One cooperator for starting deliveries (the scheduler) and routing big messages.
        self._coop = cooperator or Cooperator(scheduler=lambda f: clock.callLater(0, f))
        # host-level attempts (SMTPDelivery's on_attempt): shared with that agent when given
        self.attempts = attempts or AttemptLog(spool, clock)
        self.enqueuer = Enqueuer(router, self._coop, self.log)
        self.scheduler = Scheduler(
            clock,
            self._try_start,
            self._on_event,
            self.settings.per_queue,
            self.settings.module_limit,
            lambda module: module in self.agents,
            self._coop,
        )
        self.reports = Reports(
            spool,
            clock,
            self.scheduler,
            self.settings,
            self.data,
            self._track,
            lambda m: self._msgs.get(m.msg_id) is m,
            self._removed,
            bouncer=bouncer,
            delay_warning=delay_warning,
            on_delivered=on_delivered,
        )
        self._queues = self.scheduler.queues
        self._msgs: dict[str, Msg] = {}
        self._backlog: deque[str] = deque()
        self._loading = 0  # messages being read from the spool
        self._batches = 0  # their batches (thread jobs)
        self._inflight: set[defer.Deferred[Any]] = set()
        self._stopped = False
        self._refilling = False

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

    def set_agent(self, module: str, agent: IDeliveryAgent) -> None:
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
        if self.stats is not None:
            self.stats.message("received")
        if len(self._msgs) + self._loading >= self.settings.window():
            self._backlog.append(msg_id)
            return defer.succeed(None)
        own = Envelope(
            envelope.sender,
            [replace(r) for r in envelope.recipients],
            dict(envelope.submit),
            dict(envelope.params),
        )
        m = Msg(msg_id, own, self.clock.seconds())
        self.data.keep(m, data)
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

    def _activate(self, m: Msg) -> defer.Deferred[None]:
        submit = dict(m.envelope.submit)
        if not any(k in submit for k in ("arrival", "time", "received")):
            submit["arrival"] = repr(m.queued)
        m.envelope.submit = submit
        self._msgs[m.msg_id] = m
        self.attempts.open(m.msg_id)
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
        # Once the window is full, each message that leaves makes room for one: a batch is
        # only started when room for a whole one (or for the rest of the backlog) is free,
        # else a full window went back to one thread job per message. A small window
        # (tests, a tiny server) waits for a quarter of itself at most.
        window = self.settings.window()
        while self._backlog and self._batches < _LOADERS and not self._stopped:
            room = window - len(self._msgs) - self._loading
            if room < min(_LOAD_BATCH, max(1, window // 4), len(self._backlog)):
                break
            batch: list[str] = []
            while self._backlog and len(batch) < min(room, _LOAD_BATCH):
                msg_id = self._backlog.popleft()
                if msg_id not in self._msgs:
                    batch.append(msg_id)
            if not batch:
                continue
            self._loading += len(batch)
            self._batches += 1
            # The whole file is read either way: keep its bytes for the first attempt (within
            # the data budget) instead of reading the file a second time for it.
            d = self.spool.load_entries(batch)
            d.addCallbacks(
                self._loaded, self._load_failed, callbackArgs=(batch,), errbackArgs=(batch,)
            )

    def _loaded(self, results: list[Any], batch: list[str]) -> None:
        """A batch read: each message activated (routed and queued), each failure logged."""
        self._batches -= 1
        self._loading -= len(batch)
        for msg_id, result in zip(batch, results, strict=True):
            if isinstance(result, Failure):
                self._load_error(result, msg_id)
            elif msg_id not in self._msgs:  # (the administrator may have loaded it meanwhile)
                m = self._from_entry(result)
                if not m.held:  # a held message waits for its release: no bytes held meanwhile
                    self.data.keep(m, result.data)
                self._activate(m)
        self._refill()

    def _from_entry(self, entry: SpoolEntry) -> Msg:
        m = Msg(entry.msg_id, entry.envelope, entry.queued, None, entry.held, set(entry.bounced))
        m.warned = any(h.get("res") == "warned" for h in entry.history)
        return m

    def _load_failed(self, f: Failure, batch: list[str]) -> None:
        """The batch's thread job itself failed (the pool is stopping): its ids are not
        loaded now; the next start's recovery finds them."""
        self._batches -= 1
        self._loading -= len(batch)
        self._load_error(f, ", ".join(batch[:3]) + (" ..." if len(batch) > 3 else ""))
        self._refill()

    def _load_error(self, f: Failure, msg_id: str) -> None:
        if isinstance(f.value, (SpoolCorrupt, KeyError)):
            self.log.warn(
                "queue: {msg_id} could not be loaded ({why}); skipped",
                msg_id=msg_id,
                why=f.getErrorMessage(),
            )
        else:
            self.log.failure("queue: loading {msg_id} failed", f, msg_id=msg_id)

    # -- routing (CommuniGate's Enqueuer: Router, then logical queues) ----------------------
    def _route(self, m: Msg) -> defer.Deferred[None]:
        """Route the message's unrouted pending recipients (cgtwist.queue.enqueuer), then
        place them in their queues; those that failed temporarily are routed again later."""
        rcpts = m.envelope.recipients
        todo = [i for i, r in enumerate(rcpts) if r.state == PENDING and i not in m.routes]
        if not todo:
            self._place(m)
            return defer.succeed(None)
        m.running += 1

        def routed(temp: list[tuple[int, str]]) -> Optional[defer.Deferred[None]]:
            if temp:
                self._route_later(m, max(temp)[1])  # the last recipient's, as they were asked
            if all(r.state == PENDING for r in rcpts):
                return None  # nothing settled (a route alone is not journaled): no update
            return self.spool.update(m.msg_id, m.envelope)

        def done(result: object) -> None:
            m.running -= 1
            if isinstance(result, Failure):
                self.log.error(
                    "queue: journal write for {msg_id} failed: {error}",
                    msg_id=m.msg_id,
                    error=result.getErrorMessage(),
                )
            self._place(m)

        return self._track(self.enqueuer.route(m, todo).addCallback(routed).addBoth(done))

    def _route_later(self, m: Msg, error: str) -> None:
        m.route_failures += 1
        now = self.clock.seconds()
        when = retry.next_attempt(
            m.queued, now, m.route_failures, self.settings.schedule(), self.settings.lifetime()
        )
        if when is None:
            for i, r in enumerate(m.envelope.recipients):
                if r.state == PENDING and i not in m.routes:
                    settle(m, i, FAILED, f"4.4.7 message expired; routing failed: {error}", "")
            return
        self.log.warn("queue: {msg_id} routing deferred: {error}", msg_id=m.msg_id, error=error)
        m.route_due = when
        self.scheduler.at(when, "route", m.msg_id)

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
            else:  # joins the attempt after the running one (_feed_back)
                job.routed = idx
        self.reports.check_done(m)
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
            delay = retry.retry_delay(self.settings.schedule(), 1)
            self._wait(m, job, self.clock.seconds() + delay)

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

        def attempt(data: bytes) -> defer.Deferred[list[Recipient]]:
            # The agent's failure is told apart here: only the load below may say the
            # message is gone (a KeyError raised by an agent's bug is just a failed attempt).
            run = defer.maybeDeferred(
                agent.deliver, m.msg_id, m.envelope, data, copies, queue=lq.name
            )
            return run.addErrback(crashed, lq.name, m, copies)

        if m.data is not None:  # in memory (a new message's first attempts): no load step
            d = attempt(m.data)
        else:
            d = self.data.load(m).addCallback(attempt)
        d.addBoth(self._delivered, lq, m, job, copies)
        self._track(d)

    # -- what the administrator may see and do (cgtwist.queue.admin) ------------------------
    def messages(self) -> list[Msg]:
        """The messages of the active window, by id (read them, do not change them)."""
        return sorted(self._msgs.values(), key=lambda x: x.msg_id)

    def find(self, msg_id: str) -> Optional[Msg]:
        return self._msgs.get(msg_id)

    def backlog_size(self) -> int:
        """Messages beyond the active window, waiting as ids."""
        return len(self._backlog)

    def logical_queues(self) -> list[LogicalQueue]:
        return sorted(self._queues.values(), key=lambda q: str(q.name))

    def is_due(self, m: Msg, job: Job) -> bool:
        """The job waits in its queue's due list (starts when the queue has room)."""
        lq = self._queues.get(job.queue)
        return lq is not None and m.msg_id in lq.due

    def entry(self, msg_id: str) -> defer.Deferred[SpoolEntry]:
        """The spooled envelope and history of ``msg_id`` (KeyError if there is none)."""
        d: defer.Deferred[SpoolEntry] = self.spool.load_entry(msg_id, with_data=False)
        return d

    def _targets(self, msg_id: str) -> list[Msg]:
        if msg_id == "all":
            return list(self._msgs.values())
        m = self._msgs.get(msg_id)
        if m is None:
            raise KeyError(f"no such message in the active queue: {msg_id}")
        return [m]

    def retry(self, msg_id: str) -> int:
        """Try now: every waiting delivery of the message (or of ``all``) becomes due, and its
        suspended queues get one probe; returns how many deliveries were made due. KeyError
        for a message not in the active window."""
        n = 0
        for m in self._targets(msg_id):
            for job in m.jobs.values():
                if job.running or m.held:
                    continue
                job.due = 0.0
                self._make_due(m, job)
                self.scheduler.probe(self._queue(job.queue))
                n += 1
            if m.route_due is not None:
                m.route_due = None
                self._route(m)
        self._kick()
        return n

    def hold(self, msg_id: str) -> defer.Deferred[None]:
        """Stop starting deliveries of this message until release (running ones finish)."""
        return self._set_hold(msg_id, True)

    def release(self, msg_id: str) -> defer.Deferred[None]:
        """Undo hold: the message's deliveries are due at once."""
        return self._set_hold(msg_id, False)

    def _set_hold(self, msg_id: str, held: bool) -> defer.Deferred[None]:
        """Journaled, so it outlives a restart; for a message in the backlog (or unknown:
        KeyError) only journaled, and it applies when the message is loaded."""
        m = self._msgs.get(msg_id)
        if m is not None:
            m.held = held
            for job in m.jobs.values():
                lq = self._queues.get(job.queue)
                if held and lq is not None:
                    lq.due.pop(m.msg_id, None)
                elif not held and not job.running:
                    self._make_due(m, job)
            self._kick()
        d: defer.Deferred[None] = self.spool.record(msg_id, [{"k": "h", "v": held}])
        return d

    def drop(self, msg_id: str) -> defer.Deferred[None]:
        """Delete the message without any notification (after running deliveries finish);
        KeyError if there is no such message."""
        m = self._msgs.get(msg_id)
        if m is None:
            if msg_id in self._backlog:
                self._backlog.remove(msg_id)
            d = self.entry(msg_id)
            return d.addCallback(lambda _: self.spool.remove(msg_id))
        m.dropped = True
        for qn in list(m.jobs):
            self.scheduler.discard(qn, msg_id)
        self.reports.check_done(m)
        return defer.succeed(None)

    def bounce(self, msg_id: str, reason: str) -> defer.Deferred[int]:
        """Fail every undelivered recipient now with ``reason`` and report them to the sender
        (a DSN); fires with how many were failed (running attempts' recipients fail when they
        come back). A message in the backlog is loaded first; KeyError if there is none."""
        d = self._ensure_active(msg_id)

        def got(m: Msg) -> int:
            m.bounce_all = reason
            n = 0
            for qn, job in list(m.jobs.items()):
                if job.running:
                    continue  # its result is turned into a failure when it comes back
                self.scheduler.discard(qn, msg_id)
                for i in job.indexes:
                    settle(m, i, FAILED, reason, "admin")
                    n += 1
                del m.jobs[qn]
            for i, r in enumerate(m.envelope.recipients):
                if r.state == PENDING and i not in m.routes:
                    settle(m, i, FAILED, reason, "admin")
                    n += 1
            m.route_due = None
            upd = self.spool.update(m.msg_id, m.envelope)
            upd.addBoth(lambda _: self.reports.check_done(m))
            return n

        return d.addCallback(got)

    def _ensure_active(self, msg_id: str) -> defer.Deferred[Msg]:
        m = self._msgs.get(msg_id)
        if m is not None:
            return defer.succeed(m)
        if msg_id in self._backlog:
            self._backlog.remove(msg_id)

        def loaded(entry: SpoolEntry) -> Any:
            m2 = self._from_entry(entry)
            return self._activate(m2).addCallback(lambda _: m2)

        return self.entry(msg_id).addCallback(loaded)

    def note_attempt(self, msg_id: str, attempt: Mapping[str, object]) -> None:
        """Keep one host-level attempt in the message's history (``AttemptLog.note``)."""
        self.attempts.note(msg_id, attempt)

    # -- outcomes: record results -> retry/expiry -> feed back (Postfix's qmgr_deliver and
    # qmgr_defer) ------------------------------------------------------------------------------
    def _delivered(
        self, result: Any, lq: LogicalQueue, m: Msg, job: Job, copies: list[Recipient]
    ) -> Optional[defer.Deferred[None]]:
        """An attempt of ``job`` in ``lq`` came back: record each recipient's result, decide
        the retry (or expiry) of the rest, journal it, then feed the outcome back."""
        now = self.clock.seconds()
        copies = outcome(result, lq.name, m, copies)
        agent = self.agents.get(lq.name.module)
        pending, delivered = record(
            lq.name, m, job, copies, getattr(agent, "logs_deliveries", False)
        )
        when = retry_or_expire(self.settings, lq.name, m, job, pending, now)
        if when is None:
            pending = []
        if self.stats is not None:
            self._count(m, job)
        self._queue_health(lq, m, pending, delivered, now)
        written = self._journal(lq, m, job, now)
        if written is None:  # nothing to journal (delivered to everyone): on at once
            self._feed_back(None, lq, m, job, bool(pending), when, now)
            return None
        return written.addBoth(
            lambda res: self._feed_back(res, lq, m, job, bool(pending), when, now)
        )

    def _count(self, m: Msg, job: Job) -> None:
        """Each recipient of the attempt as delivered, deferred or bounced (expired ones
        are failed by now) in the statistics."""
        assert self.stats is not None
        states = [m.envelope.recipients[i].state for i in job.indexes]
        self.stats.message("delivered", states.count(DELIVERED))
        self.stats.message("bounced", states.count(FAILED))
        self.stats.message("deferred", states.count(PENDING))

    def _queue_health(
        self, lq: LogicalQueue, m: Msg, pending: list[int], delivered: int, now: float
    ) -> None:
        """A queue that delivered (or has nothing left to retry) is healthy; one that only
        failed counts towards its suspension (``queue.suspend_after``)."""
        if delivered or not pending:
            lq.succeeded()
        elif lq.failed(
            now,
            self.settings.suspend_after(),
            retry.retry_delay(self.settings.schedule(), lq.failures + 1),
            m.envelope.recipients[pending[0]].detail,
        ):
            self.log.warn(
                "queue: {queue} suspended until {until} after {n} failures: {error}",
                queue=str(lq.name),
                until=lq.resume_at,
                n=lq.failures,
                error=lq.last_error,
            )
            self.scheduler.suspend(lq)

    def _journal(
        self, lq: LogicalQueue, m: Msg, job: Job, now: float
    ) -> Optional[defer.Deferred[None]]:
        """Write the attempt's results (and the host attempts kept meanwhile) to the journal;
        None when there is nothing to write.

        While one write of the message is on its way, the results of its other attempts
        that come back meanwhile are written together after it, with one append and one
        fsync (a group commit): the spool writes a message's appends one after the other,
        and a list's 100 attempts, each waiting for the 99 before it, made the post wait
        for 100 thread round trips in a row after its last delivery."""
        rcpts = m.envelope.recipients
        if m.dropped or all(r.state == DELIVERED for r in rcpts):
            # Nothing left to remember: the message is removed next, its .msg renamed into
            # Queue/finished/ durably (Spool.remove, a group commit), so a crash after that
            # does not deliver it again; one before it does, as at-least-once allows.
            self.attempts.take(m.msg_id)
            return None
        history = {
            "k": "a",
            "t": now,
            "q": str(lq.name),
            "r": [[rcpts[i].address, rcpts[i].state, rcpts[i].detail] for i in job.indexes],
        }
        if m.journal is not None:  # a write is on its way: join the next one
            joined: defer.Deferred[None] = defer.Deferred()
            m.journal.changed.extend(job.indexes)
            m.journal.history.append(history)
            m.journal.waiters.append(joined)
            return joined
        m.journal = JournalBatch()  # the attempts that come back while this one is written
        return self._write_journal(m, list(job.indexes), [history])

    def _write_journal(
        self, m: Msg, changed: list[int], history: list[HistoryRecord]
    ) -> defer.Deferred[None]:
        extra = self.attempts.take(m.msg_id) + history
        d: defer.Deferred[None] = self.spool.update(m.msg_id, m.envelope, extra, changed=changed)

        def written(result: Any) -> Any:
            batch, m.journal = m.journal, None
            if batch is not None and batch.waiters:
                m.journal = JournalBatch()
                d2 = self._write_journal(m, batch.changed, batch.history)
                d2.addBoth(lambda res: _fire(batch.waiters, res))
            return result

        return d.addBoth(written)

    def _feed_back(
        self,
        res: Any,
        lq: LogicalQueue,
        m: Msg,
        job: Job,
        pending: bool,
        when: Optional[float],
        now: float,
    ) -> None:
        """The attempt is journaled: the job waits for its retry or is done, the queue may
        start another delivery, success reports go out, and the message may be complete."""
        if isinstance(res, Failure):
            self.log.error(
                "queue: journal write for {msg_id} failed: {error}",
                msg_id=m.msg_id,
                error=res.getErrorMessage(),
            )
        rcpts = m.envelope.recipients
        job.running = False
        m.running -= 1
        # The job's recipients still pending, and those routed into this queue while the
        # attempt ran (``Job.routed``): only this job's, not every route of the message.
        routed, job.routed = job.routed, None
        idx = [
            i
            for i in (job.indexes if routed is None else sorted(set(job.indexes).union(routed)))
            if rcpts[i].state == PENDING and i in m.routes
        ]
        if idx and not m.dropped:
            job.indexes = idx
            if pending:
                self._wait(m, job, when if when is not None else now)
            else:
                self._make_due(m, job)
        else:
            m.jobs.pop(lq.name, None)
        self.scheduler.finished(lq)
        if not m.dropped:
            self.reports.notify_success(
                m,
                [
                    copy.copy(rcpts[i])
                    for i in job.indexes
                    if rcpts[i].state == DELIVERED and "SUCCESS" in (rcpts[i].notify or "").upper()
                ],
            )
        if m.running == 0 and not any(
            m.msg_id in q.due for q in (self._queues.get(j.queue) for j in m.jobs.values()) if q
        ):
            self.data.drop(m)  # keep memory bounded: read back from the spool at the next try
        self.reports.check_done(m)
        self._kick()

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
        elif kind == "report":
            self.reports.due(m, when)

    def _removed(self, m: Msg) -> None:
        """``m`` left the spool (Reports): forget it and take the next from the backlog."""
        self._msgs.pop(m.msg_id, None)
        self.attempts.close(m.msg_id)
        self.data.drop(m)
        self._refill()


def _fire(waiters: list[defer.Deferred[None]], result: object) -> None:
    """Give each waiter of a journal batch the write's outcome (None or the Failure)."""
    for w in waiters:
        if isinstance(result, Failure):
            w.errback(result)
        else:
            w.callback(None)
