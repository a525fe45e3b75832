"""The host-level delivery attempts of queued messages, kept until their next journal write.

Owns SMTPDelivery's ``on_attempt`` records (time, host, ip, reply, TLS) between the moment an
agent reports them and the moment the queue manager journals the attempt's result with them
(one fsync for both), or forgets them when the message is delivered and removed (history
nobody can ask for costs no fsync: that fsync per message was the outbound bottleneck,
bench/outbound-vs-postfix.sh). Built before both the SMTP agent and the queue manager and
given to each, so neither needs the other: the agent notes, the manager opens, takes, closes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from cgtwist.logs import Logger
from cgtwist.spool.spool import Spool

_log = Logger(namespace="cgtwist.queue.manager.QueueManager")


class AttemptLog:
    """``AttemptLog(spool, clock)``: records per message id, for the messages the manager has
    opened; an attempt of any other message is journaled at once (``spool.record``)."""

    def __init__(self, spool: Spool, clock: IReactorTime) -> None:
        self.spool = spool
        self.clock = clock
        self._open: dict[str, list[dict[str, Any]]] = {}

    def note(self, msg_id: str, attempt: Any) -> None:
        """Keep one host-level attempt; fits SMTPDelivery's ``on_attempt`` hook."""
        rec = {
            "k": "a",
            "t": getattr(attempt, "time", self.clock.seconds()),
            "host": str(getattr(attempt, "host", "")),
            "ip": str(getattr(attempt, "ip", "")),
            "reply": str(getattr(attempt, "reply", "")),
            "tls": getattr(attempt, "tls", None),
        }
        kept = self._open.get(msg_id)
        if kept is not None:
            kept.append(rec)
            return
        d = self.spool.record(msg_id, [rec])
        d.addErrback(
            lambda f: _log.warn(
                "queue: history for {msg_id} not kept: {error}",
                msg_id=msg_id,
                error=f.getErrorMessage(),
            )
        )

    def open(self, msg_id: str) -> None:
        """The manager holds ``msg_id`` in memory: keep its attempts for its journal writes."""
        self._open.setdefault(msg_id, [])

    def take(self, msg_id: str) -> list[dict[str, Any]]:
        """The attempts kept since the last take (to journal, or to forget)."""
        kept = self._open.get(msg_id)
        if not kept:
            return []
        self._open[msg_id] = []
        return kept

    def kept(self, msg_id: str) -> list[dict[str, Any]]:
        """The attempts kept and not yet journaled (for ``cgtwist-admin queue show``)."""
        return list(self._open.get(msg_id, ()))

    def close(self, msg_id: str) -> None:
        """The message left the manager's memory (removed): its unjournaled attempts go."""
        self._open.pop(msg_id, None)
