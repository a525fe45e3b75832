"""Reporting and completion: failure reports (bounces), delay warnings, NOTIFY=SUCCESS reports,
and removing a message from the spool once every recipient is done and reported.

Owns the rule "a message leaves the spool only when every recipient is delivered or failed and
every failure was handed to the bouncer"; a report that cannot be sent is retried on the
scheduler's timer, never dropped. A mixin of QueueManager, whose state it uses.
"""

from __future__ import annotations

import copy
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist import retry
from cgtwist.logs import Logger
from cgtwist.queue.state import FAILED, PENDING, Msg
from cgtwist.types import Recipient

_log = Logger(namespace="cgtwist.queue.manager.QueueManager")


class QueueReports:
    """Mixin: ``_check_done`` and what it sets in motion."""

    def _notify_success(self: Any, m: Msg, recipients: list[Recipient]) -> None:
        """NOTIFY=SUCCESS (RFC 3461 §4.1): best effort, the message stays until it is sent."""
        notifier = self.on_delivered
        assert notifier is not None
        m.running += 1
        d = self._data(m).addCallback(lambda data: notifier(m.msg_id, m.envelope, data, recipients))

        def done(result: Any) -> None:
            m.running -= 1
            if isinstance(result, Failure):
                _log.error(
                    "queue: success report for {msg_id} failed: {error}",
                    msg_id=m.msg_id,
                    error=result.getErrorMessage(),
                )
            self._check_done(m)

        self._track(d.addBoth(done))

    # -- completion -------------------------------------------------------------------------
    def _check_done(self: Any, m: Msg) -> None:
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

    def _report(self: Any, m: Msg, failed: list[int]) -> None:
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
            d = self._data(m).addCallback(
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
                    self._schedule_list(), m.report_failures
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
            self._check_done(m)

        self._track(d.addBoth(done))

    def _warn_due(self: Any, m: Msg) -> bool:
        after = float(self.settings.current.queue.delay_warning)
        if not after or self.delay_warning is None:
            return False
        return self.clock.seconds() - m.queued >= after and any(
            r.state == PENDING for r in m.envelope.recipients
        )

    def _warn(self: Any, m: Msg) -> None:
        m.reporting = True
        pending = [copy.copy(r) for r in m.envelope.recipients if r.state == PENDING]
        warner = self.delay_warning
        assert warner is not None
        until = m.queued + self._lifetime()
        d = self._data(m).addCallback(
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
            self._check_done(m)

        self._track(d.addBoth(done))

    def _remove(self: Any, m: Msg, why: str) -> None:
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
            self._msgs.pop(m.msg_id, None)
            self._drop(m)
            _log.info("queue: {msg_id} left the queue ({why})", msg_id=m.msg_id, why=why)
            self._refill()

        self._track(self.spool.remove(m.msg_id).addBoth(gone))
