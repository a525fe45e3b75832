"""Reporting and completion: failure reports (bounces), delay warnings, NOTIFY=SUCCESS reports,
and removing a message from the spool once every recipient is done and reported.

Owns the rule "a message leaves the spool only when every recipient is delivered or failed and
every failure was handed to the bouncer"; a report that cannot be sent is retried on the
scheduler's timer, never dropped. It reads the manager's per-message records (``Msg``) and
tells the manager, through the callables it was built with, when a message is gone.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from cgtwist import retry
from cgtwist.logs import Logger
from cgtwist.queue.config import QueueConfig
from cgtwist.queue.data import MessageData
from cgtwist.queue.scheduler import Scheduler
from cgtwist.queue.state import DELIVERED, FAILED, PENDING, Msg
from cgtwist.spool.spool import Spool
from cgtwist.types import Envelope, Recipient

_log = Logger(namespace="cgtwist.queue.manager.QueueManager")

# bouncer(msg_id, envelope, data, failed) and on_delivered(msg_id, envelope, data, delivered)
Report = Callable[[str, Envelope, bytes, list[Recipient]], Any]


class Reports:
    """``Reports(spool, clock, scheduler, settings, data, track, current, removed,
    bouncer=None, delay_warning=None, on_delivered=None)``.

    ``bouncer(msg_id, envelope, data, failed_recipients)`` and ``delay_warning(msg_id,
    envelope, data, recipients, retry_until)`` return Deferreds; ``on_delivered(msg_id,
    envelope, data, recipients)`` gets delivered recipients that asked for NOTIFY=SUCCESS
    (these three fit ``cgtwist.delivery.bounce.Bouncer``). From the manager: ``track(d)`` keeps
    a Deferred in flight until it fires (for ``stop``), ``current(m)`` says whether ``m`` is
    still the manager's record of its id, ``removed(m)`` is told once ``m`` left the spool.
    """

    def __init__(
        self,
        spool: Spool,
        clock: IReactorTime,
        scheduler: Scheduler,
        settings: QueueConfig,
        data: MessageData,
        track: Callable[[defer.Deferred[Any]], Any],
        current: Callable[[Msg], bool],
        removed: Callable[[Msg], None],
        bouncer: Optional[Report] = None,
        delay_warning: Optional[Callable[..., Any]] = None,
        on_delivered: Optional[Report] = None,
    ) -> None:
        self.spool = spool
        self.clock = clock
        self.scheduler = scheduler
        self.settings = settings
        self.data = data
        self.track = track
        self.current = current
        self.removed = removed
        self.bouncer = bouncer
        self.delay_warning = delay_warning
        self.on_delivered = on_delivered

    def notify_success(self, m: Msg, recipients: list[Recipient]) -> None:
        """NOTIFY=SUCCESS (RFC 3461 §4.1): best effort, the message stays until it is sent."""
        notifier = self.on_delivered
        if notifier is None or not recipients:
            return
        m.running += 1
        d = self.data.load(m)
        d.addCallback(lambda data: notifier(m.msg_id, m.envelope, data, recipients))

        def done(result: Any) -> None:
            m.running -= 1
            if isinstance(result, Failure):
                _log.error(
                    "queue: success report for {msg_id} failed: {error}",
                    msg_id=m.msg_id,
                    error=result.getErrorMessage(),
                )
            self.check_done(m)

        self.track(d.addBoth(done))

    # -- completion -------------------------------------------------------------------------
    def check_done(self, m: Msg) -> None:
        """Report new failures (and a due delay warning); remove the message once all is done."""
        if m.running or m.reporting or m.removing or not self.current(m):
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

    def due(self, m: Msg, when: float) -> None:
        """The scheduler's ``report`` timer of ``m`` (stale ones are ignored)."""
        if m.report_due == when:
            m.report_due = None
            self.check_done(m)

    def _report(self, m: Msg, failed: list[int]) -> None:
        m.reporting = True
        rcpts = m.envelope.recipients
        if self.bouncer is None:
            _log.warn(
                "queue: {msg_id} failed for {rcpts}; no bouncer configured",
                msg_id=m.msg_id,
                rcpts=", ".join(rcpts[i].address for i in failed),
            )
            d: defer.Deferred[Any] = defer.succeed(None)
        else:
            bouncer = self.bouncer
            d = self.data.load(m).addCallback(
                lambda data: bouncer(
                    m.msg_id, m.envelope, data, [copy.copy(rcpts[i]) for i in failed]
                )
            )
        d.addCallback(lambda _: self.spool.record(m.msg_id, [{"k": "b", "i": failed}]))

        def done(result: Any) -> None:
            m.reporting = False
            if isinstance(result, Failure):
                m.report_failures += 1
                when = self.clock.seconds() + retry.retry_delay(
                    self.settings.schedule(), m.report_failures
                )
                _log.error(
                    "queue: reporting failures of {msg_id} failed ({error}); retry at {when}",
                    msg_id=m.msg_id,
                    error=result.getErrorMessage(),
                    when=when,
                )
                m.report_due = when
                self.scheduler.at(when, "report", m.msg_id)
                return
            m.bounced.update(failed)
            self.check_done(m)

        self.track(d.addBoth(done))

    def _warn_due(self, m: Msg) -> bool:
        after = self.settings.delay_warning()
        if not after or self.delay_warning is None:
            return False
        return self.clock.seconds() - m.queued >= after and any(
            r.state == PENDING for r in m.envelope.recipients
        )

    def _warn(self, m: Msg) -> None:
        m.reporting = True
        pending = [copy.copy(r) for r in m.envelope.recipients if r.state == PENDING]
        warner = self.delay_warning
        assert warner is not None
        until = m.queued + self.settings.lifetime()
        d = self.data.load(m).addCallback(
            lambda data: warner(m.msg_id, m.envelope, data, pending, until)
        )
        d.addCallback(
            lambda _: self.spool.record(
                m.msg_id, [{"k": "a", "t": self.clock.seconds(), "q": "", "res": "warned"}]
            )
        )

        def done(result: Any) -> None:
            m.reporting = False
            m.warned = True  # at most one warning per run, even if sending it failed
            if isinstance(result, Failure):
                _log.error(
                    "queue: delay warning for {msg_id} failed: {error}",
                    msg_id=m.msg_id,
                    error=result.getErrorMessage(),
                )
            self.check_done(m)

        self.track(d.addBoth(done))

    def _remove(self, m: Msg, why: str) -> None:
        m.removing = True
        for qn in list(m.jobs):
            self.scheduler.discard(qn, m.msg_id)

        def gone(result: Any) -> None:
            if isinstance(result, Failure):
                _log.error(
                    "queue: removing {msg_id} failed: {error}",
                    msg_id=m.msg_id,
                    error=result.getErrorMessage(),
                )
            # A message delivered to every recipient has said so in each recipient's delivery
            # line: its leaving is a debug line (one info line per delivery, not one more per
            # message). One that failed somewhere, or was dropped, says it left.
            everyone = why == "done" and all(r.state == DELIVERED for r in m.envelope.recipients)
            (_log.debug if everyone else _log.info)(
                "queue: {msg_id} left the queue ({why})", msg_id=m.msg_id, why=why
            )
            self.removed(m)

        self.track(self.spool.remove(m.msg_id).addBoth(gone))
