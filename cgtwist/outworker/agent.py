"""The SMTP delivery agent when outbound sessions run in worker processes.

Owns the queue manager's side of the hand-off: the attempt the manager chose (message,
destination, recipients) goes to a worker (cgtwist.outworker.supervisor), and the worker's
per-recipient answer comes back as the recipients' states and the host-level attempts for the
queue's history, exactly as the in-process agent (cgtwist.delivery.smtp) gives them, so the
manager journals them as it always did. No worker running (``smtp.delivery_workers`` = 0, or
all restarting): the in-process agent delivers. A worker that ended before answering leaves
its recipients pending: retried later, never taken as delivered (a worker killed after the
remote's 250 and before its answer reached us is the classic duplicate of RFC 5321 §6.1:
the message is sent again).
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer
from zope.interface import implementer

from cgtwist.delivery.agent import DeliveryAgent, settle
from cgtwist.delivery.smtp import Attempt, SMTPDelivery, domain_of
from cgtwist.interfaces import IDeliveryAgent
from cgtwist.logs import Logger
from cgtwist.outworker.supervisor import OutboundWorkers
from cgtwist.outworker.wire import Result
from cgtwist.typedtwisted import current_failure
from cgtwist.types import Envelope, QueueName, Recipient

log = Logger(namespace="cgtwist.delivery.smtp")

WORKER_ENDED = "4.3.0 the outbound delivery worker ended during the attempt"


@implementer(IDeliveryAgent)
class WorkerSMTPDelivery(DeliveryAgent):
    """IDeliveryAgent for module "SMTP": ``workers`` when they run, else ``local``;
    ``on_attempt(msg_id, Attempt)`` as SMTPDelivery's (the AttemptLog's ``note``)."""

    module = "SMTP"
    logs_deliveries = True  # the worker's (or the local agent's) status= line, relayed

    def __init__(
        self,
        workers: OutboundWorkers,
        local: SMTPDelivery,
        on_attempt: Optional[Callable[[str, Attempt], None]] = None,
    ) -> None:
        self.workers = workers
        self.local = local
        self.on_attempt = on_attempt

    def start(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> defer.Deferred[list[Recipient]]:
        """The hand-off to the destination's worker, then one callback for its answer (no
        coroutine per message on the server's reactor); the server's own SMTPDelivery while
        no worker takes it. An exception while handing over or reading the answer goes to
        the base's guard: the recipients stay pending, with a traceback."""
        try:
            domain = domain_of(queue, recipients[0])
            answer = self.workers.submit(domain, msg_id, envelope, data, recipients)
        except Exception:
            return defer.succeed(self.crashed(current_failure(), msg_id, queue, recipients))
        if answer is None:
            return self.local.start(msg_id, envelope, data, recipients, queue)
        d = answer.addCallback(self._answered, msg_id, domain, recipients)
        d.addErrback(self.crashed, msg_id, queue, recipients)
        return d

    def _answered(
        self, result: Optional[Result], msg_id: str, domain: str, recipients: list[Recipient]
    ) -> list[Recipient]:
        """The worker's answer (None: it ended first) as the recipients' states, and its hosts
        tried as the queue's history (``on_attempt``)."""
        if result is None:
            log.info(
                "{msg_id}: SMTP({queue}) deferred: {detail}",
                msg_id=msg_id,
                queue=domain,
                detail=WORKER_ENDED,
            )
            return settle(recipients, "pending", WORKER_ENDED)
        for r, (state, detail) in zip(recipients, result.states, strict=True):
            r.state, r.detail = state, detail
        if self.on_attempt is not None:
            for a in result.attempts:
                try:
                    self.on_attempt(msg_id, Attempt(a.time, a.host, a.ip, a.reply, a.tls))
                except Exception:
                    log.failure("attempt recorder failed")
        return recipients
