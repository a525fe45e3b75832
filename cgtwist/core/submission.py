"""The single way into the queue: admission checks, then durable spooling.

Owns the decision whether new mail may enter at all (CommuniGate's queue limit: 452 4.3.1 when
``queue.max_messages`` are queued; Postfix's ``queue_minfree``: 452 4.3.1 when free space under
the spool is below 1.5 x ``smtp.max_message_size``), and the order store-then-enqueue: the
Deferred fires with the message id only once the spool made the message durable, so the caller
may answer 250 then (RFC 5321 §6.1). Scheduling is not its business: the spool announces each
stored message to its subscriber (the queue manager in the server, the link to the server in an
SMTP worker process). It never delivers and never talks to a client.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.errors import MailError
from cgtwist.interfaces import ISubmission
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder
from cgtwist.types import Envelope

MINFREE_FACTOR = 1.5  # Postfix queue_minfree: 1.5 x message_size_limit
_SPACE_TTL = 1.0  # seconds a free-space reading is reused


def insufficient_storage(detail: str) -> MailError:
    return MailError(452, "4.3.1", "Insufficient system storage", detail)


@implementer(ISubmission)
class Submission:
    """``Submission(spool, settings_holder, clock=None)``.

    ``spool`` needs ``store``, ``message_count()`` and ``free_space()`` (cgtwist.spool.Spool).
    ``clock`` (seconds()) paces the free-space check; without one it runs for every message.
    """

    log = Logger()

    def __init__(
        self, spool: Any, settings_holder: SettingsHolder, clock: Optional[IReactorTime] = None
    ) -> None:
        self.spool = spool
        self.settings = settings_holder
        self.clock = clock
        self._space: Optional[int] = None
        self._space_at = float("-inf")

    def _free_space(self) -> defer.Deferred[int]:
        now = self.clock.seconds() if self.clock is not None else None
        if now is not None and self._space is not None and now - self._space_at < _SPACE_TTL:
            return defer.succeed(self._space)

        def got(free: int) -> int:
            self._space = free
            if now is not None:
                self._space_at = now
            return free

        return defer.maybeDeferred(self.spool.free_space).addCallback(got)

    def check_capacity(self, size: int = 0) -> defer.Deferred[None]:
        """Fire None if a message of ``size`` octets may be accepted now, else errback
        MailError 452 4.3.1. SMTP may call it at MAIL FROM (Postfix does) as well."""
        limit = self.settings.current.queue.max_messages
        count = int(self.spool.message_count())
        if limit and count >= limit:
            self.log.warn(
                "submission: refused, {count} messages queued (limit {limit})",
                count=count,
                limit=limit,
            )
            return defer.fail(insufficient_storage(f"queue full: {count} >= {limit}"))
        need = int(MINFREE_FACTOR * self.settings.current.smtp.max_message_size) + max(0, size)

        def check(free: int) -> None:
            if free < need:
                self.log.warn(
                    "submission: refused, {free} octets free under the spool, {need} needed",
                    free=free,
                    need=need,
                )
                raise insufficient_storage(f"free space {free} < {need}")

        def unknown(f: Failure) -> None:
            if not isinstance(f.value, OSError):
                f.raiseException()  # what f.trap(OSError) does, typed
            self.log.error("submission: cannot read free space: {error}", error=f.getErrorMessage())
            raise MailError(451, "4.3.0", "Temporary local problem, try again later")

        return self._free_space().addCallbacks(check, unknown)

    def submit(self, envelope: Envelope, data: bytes) -> defer.Deferred[str]:
        """Spool the message (the spool announces it to the queue); fire with the id once
        durable."""
        d: defer.Deferred[Any] = self.check_capacity(len(data))
        d.addCallback(lambda _: self.spool.store(envelope, data))

        def stored(msg_id: str) -> str:
            self.log.debug(
                "submission: {msg_id} from <{sender}> to {n} recipient(s) via {proto}",
                msg_id=msg_id,
                sender=envelope.sender,
                n=len(envelope.recipients),
                proto=envelope.submit.get("protocol", "?"),
            )
            return msg_id

        return d.addCallback(stored)
