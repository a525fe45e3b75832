"""What one delivery attempt decided, recorded on the message: results, then retry or expiry.

Owns the first two steps after an agent answers (as Postfix's qmgr_deliver records and
qmgr_defer reschedules): the recipients' new states copied onto the message with one log line
each, and when the still-pending ones are tried again (``cgtwist.retry``) or fail because the
message outlived ``queue.max_lifetime``. Functions of the manager's records (``Msg``, ``Job``)
and the settings; no I/O. Feeding the outcome back (journal, scheduler, reports) is the
manager's.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.python.failure import Failure

from cgtwist import retry
from cgtwist.logs import Logger
from cgtwist.queue.config import QueueConfig
from cgtwist.queue.state import DELIVERED, FAILED, PENDING, Job, Msg
from cgtwist.spool.format import SpoolCorrupt
from cgtwist.types import QueueName, Recipient

log = Logger(namespace="cgtwist.queue.manager.QueueManager")


def settle(m: Msg, i: int, state: str, detail: str, how: str) -> None:
    """Set recipient ``i`` of ``m`` to ``state`` outside an attempt (Router, expiry, admin)."""
    r = m.envelope.recipients[i]
    r.state, r.detail = state, detail
    m.routes.pop(i, None)
    log.info(
        "queue: {msg_id} <{rcpt}> {state} {how}: {detail}",
        msg_id=m.msg_id,
        rcpt=r.address,
        state=state,
        how=how or r.route,
        detail=detail,
    )


def crashed(failure: Failure, queue: QueueName, m: Msg, copies: list[Recipient]) -> list[Recipient]:
    """The attempt itself failed (an agent's bug): its traceback logged, every undelivered
    recipient pending, so the message is retried, never lost or bounced."""
    log.failure(
        "queue: {queue} delivery of {msg_id} failed",
        failure,
        queue=str(queue),
        msg_id=m.msg_id,
    )
    for c in copies:
        if c.state != DELIVERED:
            c.state, c.detail = PENDING, "4.3.0 internal error during delivery"
    return copies


def outcome(result: Any, queue: QueueName, m: Msg, copies: list[Recipient]) -> list[Recipient]:
    """The recipients as the agent left them. ``result`` is a Failure when the message
    could not be read from the spool (it vanished or is corrupt: forgotten) or the attempt
    failed otherwise (``crashed``); an agent's own failure reaches here through ``crashed``
    already, so its exception type never reads as a vanished message."""
    if isinstance(result, Failure):
        if not isinstance(result.value, (SpoolCorrupt, KeyError)):
            return crashed(result, queue, m, copies)
        log.error(
            "queue: {msg_id} vanished from the spool ({why}); forgotten",
            msg_id=m.msg_id,
            why=result.getErrorMessage(),
        )
        m.dropped = True
        for c in copies:
            if c.state != DELIVERED:
                c.state, c.detail = PENDING, "4.3.0 internal error during delivery"
    elif (
        isinstance(result, list)
        and len(result) == len(copies)
        and all(isinstance(r, Recipient) for r in result)
    ):
        copies = result  # an agent that answered with new objects instead of updating ours
    return copies


def record(
    queue: QueueName, m: Msg, job: Job, copies: list[Recipient], agent_logged: bool = False
) -> tuple[list[int], int]:
    """Copy each result onto the message's recipients (one log line each: a debug line for
    one delivered when the agent logged that delivery itself, ``agent_logged``); returns the
    indexes still pending and how many were delivered."""
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
        (log.debug if agent_logged and state == DELIVERED else log.info)(
            "queue: {msg_id} <{rcpt}> {queue} {state}: {detail}",
            msg_id=m.msg_id,
            rcpt=rcpts[i].address,
            queue=str(queue),
            state=state,
            detail=c.detail,
        )
        if state == PENDING:
            pending.append(i)
        else:
            m.routes.pop(i, None)
    return pending, delivered


def retry_or_expire(
    settings: QueueConfig, queue: QueueName, m: Msg, job: Job, pending: list[int], now: float
) -> Optional[float]:
    """When to try the pending recipients again; None (and they fail) once the message
    is past ``queue.max_lifetime``, or when nothing is pending."""
    if not pending:
        return None
    job.failures += 1
    when = retry.next_attempt(m.queued, now, job.failures, settings.schedule(), settings.lifetime())
    if when is None:
        rcpts = m.envelope.recipients
        for i in pending:
            last = rcpts[i].detail
            settle(
                m,
                i,
                FAILED,
                f"4.4.7 message expired after {int(now - m.queued)}s; last error: {last}",
                str(queue),
            )
    return when
