"""Queue administration: list, show, retry, hold, release, drop and bounce spooled messages.

Owns the operations behind ``cgtwist-admin queue ...`` (issue 5 part 7): filters, the JSON
shape of the answers, the administrator's log lines and the "no such message" errors, over the
queue manager's public operations (``messages``, ``retry``, ``hold``, ``release``, ``drop``,
``bounce``). Every operation returns a Deferred firing with a JSON-serialisable dict, so
``control_handlers()`` can be registered on the control channel as is. Unknown ids raise
NoSuchMessage("no such message ..."), a KeyError; ids are validated by the spool before they
touch a path.
"""

from __future__ import annotations

import builtins
import copy
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.errors import NotFound
from cgtwist.logs import Logger
from cgtwist.queue.state import Msg
from cgtwist.spool.format import SpoolEntry

if TYPE_CHECKING:
    from cgtwist.queue.manager import QueueManager

_log = Logger(namespace="cgtwist.queue.admin")
ADMIN_BOUNCE = "5.0.0 returned to sender by the administrator"


def _recipients(m: Msg | SpoolEntry) -> builtins.list[dict[str, Any]]:
    return [
        {"address": r.address, "state": r.state, "route": r.route, "detail": r.detail}
        for r in m.envelope.recipients
    ]


class QueueAdmin:
    """``QueueAdmin(manager)``: the administrator's view of one ``QueueManager``."""

    def __init__(self, manager: QueueManager) -> None:
        self.manager = manager

    # -- introspection ----------------------------------------------------------------------
    def describe(self, m: Msg, now: float) -> dict[str, Any]:
        jobs = []
        for qn, job in m.jobs.items():
            state = (
                "running"
                if job.running
                else "held"
                if m.held
                else "due"
                if self.manager.is_due(m, job)
                else "waiting"
            )
            jobs.append(
                {
                    "queue": str(qn),
                    "state": state,
                    "attempts": job.failures,
                    "next_attempt": job.due if state == "waiting" else None,
                }
            )
        return {
            "id": m.msg_id,
            "sender": m.envelope.sender,
            "queued": m.queued,
            "age": max(0.0, now - m.queued),
            "held": m.held,
            "recipients": _recipients(m),
            "queues": jobs,
        }

    def list(
        self,
        queue: Optional[str] = None,
        sender: Optional[str] = None,
        recipient: Optional[str] = None,
        min_age: Optional[float] = None,
        max_age: Optional[float] = None,
        held: Optional[bool] = None,
        limit: int = 1000,
    ) -> defer.Deferred[dict[str, Any]]:
        """Messages in the active window matching every filter given (substring matches,
        case-insensitive; ages in seconds). The backlog beyond the window is only counted."""
        now = self.manager.clock.seconds()
        active = self.manager.messages()
        out = []
        for m in active:
            if queue and not any(queue.lower() in str(q).lower() for q in m.jobs):
                continue
            if sender is not None and sender.lower() not in m.envelope.sender.lower():
                continue
            if recipient and not any(
                recipient.lower() in r.address.lower() for r in m.envelope.recipients
            ):
                continue
            age = now - m.queued
            if (min_age is not None and age < min_age) or (max_age is not None and age > max_age):
                continue
            if held is not None and m.held != held:
                continue
            out.append(self.describe(m, now))
            if len(out) >= limit:
                break
        return defer.succeed(
            {"messages": out, "backlog": self.manager.backlog_size(), "active": len(active)}
        )

    def queues(self) -> defer.Deferred[dict[str, Any]]:
        """Every logical queue with its state (ready/throttled/suspended/no-agent) and counts."""
        return defer.succeed({"queues": [lq.describe() for lq in self.manager.logical_queues()]})

    def show(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """One message: envelope, recipient states, queues and its delivery history."""
        d = self.manager.entry(msg_id)

        def shown(entry: SpoolEntry) -> dict[str, Any]:
            m = self.manager.find(msg_id)
            info = (
                self.describe(m, self.manager.clock.seconds())
                if m is not None
                else {
                    "id": msg_id,
                    "sender": entry.envelope.sender,
                    "queued": entry.queued,
                    "held": entry.held,
                    "state": "backlog",
                    "recipients": _recipients(entry),
                }
            )
            info["submit"] = dict(entry.envelope.submit)
            info["history"] = entry.history + self.manager.attempts.kept(msg_id)
            return info

        return d.addCallback(shown).addErrback(_no_such, msg_id)

    # -- actions ----------------------------------------------------------------------------
    def retry(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """Try now: every waiting delivery of the message (or of ``all``) becomes due, and its
        suspended queues get one probe."""
        try:
            n = self.manager.retry(msg_id)
        except KeyError:
            return defer.fail(NoSuchMessage(f"no such message: {msg_id}"))
        _log.info("queue: retry {target}: {n} deliveries due now", target=msg_id, n=n)
        return defer.succeed({"retried": n})

    def hold(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """Stop starting deliveries of this message until release (running ones finish)."""
        return self._set_hold(msg_id, True)

    def release(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """Undo hold: the message's deliveries are due at once."""
        return self._set_hold(msg_id, False)

    def _set_hold(self, msg_id: str, held: bool) -> defer.Deferred[dict[str, Any]]:
        active = self.manager.find(msg_id) is not None
        d = self.manager.hold(msg_id) if held else self.manager.release(msg_id)
        if active:
            _log.info(
                "queue: {msg_id} {what} by the administrator",
                msg_id=msg_id,
                what="held" if held else "released",
            )
        return d.addCallback(lambda _: {"id": msg_id, "held": held}).addErrback(_no_such, msg_id)

    def drop(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """Delete the message without any notification (after running deliveries finish)."""
        _log.warn("queue: {msg_id} dropped by the administrator", msg_id=msg_id)
        d = self.manager.drop(msg_id)
        return d.addCallback(lambda _: {"id": msg_id, "dropped": True}).addErrback(_no_such, msg_id)

    def bounce(self, msg_id: str, reason: str = ADMIN_BOUNCE) -> defer.Deferred[dict[str, Any]]:
        """Fail every undelivered recipient now and report it to the sender (a DSN)."""
        d = self.manager.bounce(msg_id, reason)
        return d.addCallback(lambda n: {"id": msg_id, "bounced": n}).addErrback(_no_such, msg_id)

    def control_handlers(self) -> dict[str, Callable[[Mapping[str, Any]], Any]]:
        """Handlers for cgtwist.control: ``queue-list`` (filters: queue, sender, recipient,
        min_age, max_age, held), ``queue-queues``, ``queue-show``/``-retry``/``-hold``/
        ``-release``/``-drop``/``-bounce`` (``id``; retry also takes ``"all"``)."""

        def filters(req: Mapping[str, Any]) -> dict[str, Any]:
            keys = ("queue", "sender", "recipient", "min_age", "max_age", "held", "limit")
            return {k: copy.copy(req[k]) for k in keys if req.get(k) is not None}

        return {
            "queue-list": lambda req: self.list(**filters(req)),
            "queue-queues": lambda req: self.queues(),
            "queue-show": lambda req: self.show(str(req["id"])),
            "queue-retry": lambda req: self.retry(str(req.get("id", "all"))),
            "queue-hold": lambda req: self.hold(str(req["id"])),
            "queue-release": lambda req: self.release(str(req["id"])),
            "queue-drop": lambda req: self.drop(str(req["id"])),
            "queue-bounce": lambda req: self.bounce(str(req["id"])),
        }


class NoSuchMessage(NotFound, KeyError):
    """An id the queue does not hold: a KeyError for callers, a refusal (``NotFound``) for the
    control channel, which answers it without a traceback."""

    __str__ = Exception.__str__  # KeyError's would quote the text


def _no_such(f: Failure, msg_id: str) -> Failure:
    if isinstance(f.value, KeyError):
        raise NoSuchMessage(f"no such message: {msg_id}")
    return f
