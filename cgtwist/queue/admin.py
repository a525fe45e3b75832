"""Queue administration: list, show, retry, hold, release, drop and bounce spooled messages.

Owns the operations behind ``cgtwist-admin queue ...`` (issue 5 part 7), as a mixin of the
QueueManager whose state it reads and changes. Every operation returns a Deferred firing with a
JSON-serialisable dict, so ``control_handlers()`` can be registered on the control channel as
is. Unknown ids raise KeyError("no such message ..."); ids are validated by the spool before
they touch a path.
"""

from __future__ import annotations

import builtins
import copy
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from twisted.internet import defer

from cgtwist.logs import Logger

if TYPE_CHECKING:
    from cgtwist.queue.state import Msg

_log = Logger(namespace="cgtwist.queue.admin")
ADMIN_BOUNCE = "5.0.0 returned to sender by the administrator"


class QueueAdmin:
    """Mixin for QueueManager; relies on its ``_msgs``, ``_backlog``, ``scheduler``, ``spool``."""

    # -- introspection ----------------------------------------------------------------------
    def describe(self, m: Msg, now: float) -> dict[str, Any]:
        self_: Any = self
        jobs = []
        for qn, job in m.jobs.items():
            lq = self_._queues.get(qn)
            state = (
                "running"
                if job.running
                else "held"
                if m.held
                else "due"
                if lq is not None and m.msg_id in lq.due
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
            "recipients": [
                {"address": r.address, "state": r.state, "route": r.route, "detail": r.detail}
                for r in m.envelope.recipients
            ],
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
        self_: Any = self
        now = self_.clock.seconds()
        out = []
        for m in sorted(self_._msgs.values(), key=lambda x: x.msg_id):
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
            {"messages": out, "backlog": len(self_._backlog), "active": len(self_._msgs)}
        )

    def queues(self) -> defer.Deferred[dict[str, Any]]:
        """Every logical queue with its state (ready/throttled/suspended/no-agent) and counts."""
        self_: Any = self
        qs = [lq.describe() for lq in sorted(self_._queues.values(), key=lambda q: str(q.name))]
        return defer.succeed({"queues": qs})

    def show(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """One message: envelope, recipient states, queues and its delivery history."""
        self_: Any = self
        d = self_.spool.load_entry(msg_id, with_data=False)

        def shown(entry: Any) -> dict[str, Any]:
            m = self_._msgs.get(msg_id)
            info = (
                self.describe(m, self_.clock.seconds())
                if m is not None
                else {
                    "id": msg_id,
                    "sender": entry.envelope.sender,
                    "queued": entry.queued,
                    "held": entry.held,
                    "state": "backlog",
                    "recipients": [
                        {
                            "address": r.address,
                            "state": r.state,
                            "route": r.route,
                            "detail": r.detail,
                        }
                        for r in entry.envelope.recipients
                    ],
                }
            )
            info["submit"] = dict(entry.envelope.submit)
            info["history"] = entry.history + (list(m.attempts) if m is not None else [])
            return info

        return d.addCallback(shown).addErrback(_no_such, msg_id)

    def note_attempt(self, msg_id: str, attempt: Any) -> None:
        """Keep one host-level attempt (time, host, ip, reply, TLS) in the message's history;
        fits SMTPDelivery's ``on_attempt`` hook."""
        self_: Any = self
        rec = {
            "k": "a",
            "t": getattr(attempt, "time", self_.clock.seconds()),
            "host": str(getattr(attempt, "host", "")),
            "ip": str(getattr(attempt, "ip", "")),
            "reply": str(getattr(attempt, "reply", "")),
            "tls": getattr(attempt, "tls", None),
        }
        m = self_._msgs.get(msg_id)
        if m is not None and not m.removing:
            # Journaled with the attempt's result (one fsync), or dropped with the message
            # once every recipient is delivered: an fsync per delivered message was the
            # outbound bottleneck (bench/outbound-vs-postfix.sh).
            m.attempts.append(rec)
            return
        d = self_.spool.record(msg_id, [rec])
        d.addErrback(
            lambda f: _log.warn(
                "queue: history for {msg_id} not kept: {error}",
                msg_id=msg_id,
                error=f.getErrorMessage(),
            )
        )

    # -- actions ----------------------------------------------------------------------------
    def _targets(self, msg_id: str) -> builtins.list[Msg]:
        self_: Any = self
        if msg_id == "all":
            return list(self_._msgs.values())
        m = self_._msgs.get(msg_id)
        if m is None:
            raise KeyError(f"no such message in the active queue: {msg_id}")
        return [m]

    def retry(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """Try now: every waiting delivery of the message (or of ``all``) becomes due, and its
        suspended queues get one probe."""
        self_: Any = self
        try:
            targets = self._targets(msg_id)
        except KeyError as e:
            return defer.fail(e)
        n = 0
        for m in targets:
            for job in m.jobs.values():
                if job.running or m.held:
                    continue
                job.due = 0.0
                self_._make_due(m, job)
                self_.scheduler.probe(self_._queue(job.queue))
                n += 1
            if m.route_due is not None:
                m.route_due = None
                self_._route(m)
        self_._kick()
        _log.info("queue: retry {target}: {n} deliveries due now", target=msg_id, n=n)
        return defer.succeed({"retried": n})

    def hold(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """Stop starting deliveries of this message until release (running ones finish)."""
        return self._set_hold(msg_id, True)

    def release(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """Undo hold: the message's deliveries are due at once."""
        return self._set_hold(msg_id, False)

    def _set_hold(self, msg_id: str, held: bool) -> defer.Deferred[dict[str, Any]]:
        self_: Any = self
        m = self_._msgs.get(msg_id)
        if m is None:
            # In the backlog (or unknown): journal it; it applies when the message is loaded.
            d = self_.spool.record(msg_id, [{"k": "h", "v": held}])
            return d.addCallback(lambda _: {"id": msg_id, "held": held}).addErrback(
                _no_such, msg_id
            )
        m.held = held
        for job in m.jobs.values():
            lq = self_._queues.get(job.queue)
            if held and lq is not None:
                lq.due.pop(m.msg_id, None)
            elif not held and not job.running:
                self_._make_due(m, job)
        self_._kick()
        _log.info(
            "queue: {msg_id} {what} by the administrator",
            msg_id=msg_id,
            what="held" if held else "released",
        )
        d = self_.spool.record(msg_id, [{"k": "h", "v": held}])
        return d.addCallback(lambda _: {"id": msg_id, "held": held})

    def drop(self, msg_id: str) -> defer.Deferred[dict[str, Any]]:
        """Delete the message without any notification (after running deliveries finish)."""
        self_: Any = self
        m = self_._msgs.get(msg_id)
        _log.warn("queue: {msg_id} dropped by the administrator", msg_id=msg_id)
        if m is None:
            if msg_id in self_._backlog:
                self_._backlog.remove(msg_id)
            d = self_.spool.load_entry(msg_id, with_data=False)
            d.addCallback(lambda _: self_.spool.remove(msg_id))
            return d.addCallback(lambda _: {"id": msg_id, "dropped": True}).addErrback(
                _no_such, msg_id
            )
        m.dropped = True
        for qn in list(m.jobs):
            self_.scheduler.discard(qn, msg_id)
        self_._check_done(m)
        return defer.succeed({"id": msg_id, "dropped": True})

    def bounce(self, msg_id: str, reason: str = ADMIN_BOUNCE) -> defer.Deferred[dict[str, Any]]:
        """Fail every undelivered recipient now and report it to the sender (a DSN)."""
        self_: Any = self
        d = self._ensure_active(msg_id)

        def got(m: Msg) -> dict[str, Any]:
            m.bounce_all = reason
            n = 0
            for qn, job in list(m.jobs.items()):
                if job.running:
                    continue  # its result is turned into a failure when it comes back
                self_.scheduler.discard(qn, msg_id)
                for i in job.indexes:
                    self_._set(m, i, "failed", reason, "admin")
                    n += 1
                del m.jobs[qn]
            for i, r in enumerate(m.envelope.recipients):
                if r.state == "pending" and i not in m.routes:
                    self_._set(m, i, "failed", reason, "admin")
                    n += 1
            m.route_due = None
            upd = self_.spool.update(m.msg_id, m.envelope)
            upd.addBoth(lambda _: self_._check_done(m))
            return {"id": msg_id, "bounced": n}

        return d.addCallback(got)

    def _ensure_active(self, msg_id: str) -> defer.Deferred[Msg]:
        self_: Any = self
        m = self_._msgs.get(msg_id)
        if m is not None:
            return defer.succeed(m)
        if msg_id in self_._backlog:
            self_._backlog.remove(msg_id)
        d = self_.spool.load_entry(msg_id, with_data=False)

        def loaded(entry: Any) -> Any:
            m2 = self_._from_entry(entry)
            return self_._activate(m2).addCallback(lambda _: m2)

        return d.addCallback(loaded).addErrback(_no_such, msg_id)

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


def _no_such(f: Any, msg_id: str) -> Any:
    if f.check(KeyError):
        raise KeyError(f"no such message: {msg_id}")
    return f
