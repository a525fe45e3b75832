"""What every delivery agent shares: the attempt's logical queue, a crash guard, settling.

Owns the part of ``IDeliveryAgent.deliver`` that is the same for LOCAL, SMTP, PIPE, GROUP and
LIST: an empty attempt answers at once, the logical queue is read from the first recipient's
route when the caller gave none, the agent's ``attempt`` coroutine runs as a Deferred, and an
exception escaping it leaves the recipients pending (the queue retries) with one logged
traceback instead of reaching the queue manager as a failure. It decides nothing about a
delivery: that is each agent's ``attempt``.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.logs import Logger
from cgtwist.typedtwisted import current_failure
from cgtwist.types import Envelope, QueueName, Recipient

log = Logger(namespace="cgtwist.delivery")


def settle(recipients: list[Recipient], state: str, detail: str) -> list[Recipient]:
    """Give every one of ``recipients`` ``state`` and ``detail``; returns them (an agent's
    answer for an attempt decided as a whole)."""
    for r in recipients:
        r.state, r.detail = state, detail
    return recipients


class DeliveryAgent:
    """Base of the IDeliveryAgent implementations: subclasses set ``module`` and write
    ``attempt``; ``deliver`` is this class's (declare ``@implementer(IDeliveryAgent)`` on the
    subclass)."""

    module = ""
    # The agent logs each recipient it delivered itself, with more than the queue knows (the
    # SMTP agent's ``to=<...> relay=... status=delivered`` line): the queue manager's own
    # line for those recipients is then debug, so a delivery costs one line (Postfix's
    # smtp status=sent), not two. Failures and deferrals keep the queue's line.
    logs_deliveries = False

    def deliver(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName] = None,
    ) -> defer.Deferred[list[Recipient]]:
        """One attempt for ``recipients`` (one logical queue); fires with them, states set.

        ``queue`` is the logical queue (read from the first recipient's route without one)."""
        if not recipients:
            return defer.succeed(recipients)
        if queue is None:
            queue = QueueName.parse(recipients[0].route)
        return self.start(msg_id, envelope, data, recipients, queue)

    def start(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> defer.Deferred[list[Recipient]]:
        """The attempt (``recipients`` never empty, ``queue`` known): the ``attempt``
        coroutine under the crash guard. An agent whose attempt is a hand-off and one
        callback (the outbound workers') overrides this instead of ``attempt``, sparing the
        coroutine's Deferreds per message, and puts ``crashed`` on its chain."""
        return defer.Deferred.fromCoroutine(
            self._guarded(msg_id, envelope, data, recipients, queue)
        )

    async def _guarded(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> list[Recipient]:
        try:
            return await self.attempt(msg_id, envelope, data, recipients, queue)
        except Exception:
            return self.crashed(current_failure(), msg_id, queue, recipients)

    def crashed(
        self, f: Failure, msg_id: str, queue: Optional[QueueName], recipients: list[Recipient]
    ) -> list[Recipient]:
        """The guard: a bug never lets the recipients be lost; one traceback in the log,
        and they stay pending (the queue retries them)."""
        log.failure(
            "{msg_id}: {module} delivery to {queue} crashed",
            f,
            msg_id=msg_id,
            module=self.module,
            queue=str(queue) if queue is not None else "-",
        )
        name = f.type.__name__ if isinstance(f.type, type) else "error"
        return settle(recipients, "pending", f"4.3.0 internal error during delivery ({name})")

    async def attempt(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> list[Recipient]:
        """Deliver to ``recipients`` (never empty) of ``queue``; set each one's state."""
        raise NotImplementedError
