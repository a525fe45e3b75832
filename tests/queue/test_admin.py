"""Tests for queue administration (list, show, retry, hold, release, drop, bounce) and the
delivery history kept per message."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from cgtwist.queue.admin import QueueAdmin
from cgtwist.types import Envelope, Recipient
from tests.queue.helpers import QueueTestCase, env


class AdminTests(QueueTestCase):
    overrides = {"queue.retry_schedule": [600], "queue.suspend_after": 100}

    def setUp(self) -> None:
        super().setUp()
        self.smtp.behaviour = lambda q, r: ("pending", "451 4.4.1 no answer")
        self.admin = QueueAdmin(self.manager)

    def test_list_filters(self) -> None:
        """Queued messages can be listed and filtered by queue, sender, recipient and age."""
        a = self.submit(env("x@one.example", sender="s1@example.org"))
        self.clock.advance(100)
        b = self.submit(env("y@two.example", sender="s2@example.org"))
        self.pump()

        def ids(**kw):
            return [m["id"] for m in self.successResultOf(self.admin.list(**kw))["messages"]]

        self.assertEqual(ids(), [a, b])
        self.assertEqual(ids(queue="SMTP(one.example)"), [a])
        self.assertEqual(ids(sender="s2@"), [b])
        self.assertEqual(ids(recipient="y@two"), [b])
        self.assertEqual(ids(min_age=50), [a])
        info = self.successResultOf(self.admin.list(queue="two"))["messages"][0]
        self.assertEqual(info["recipients"][0]["detail"], "451 4.4.1 no answer")
        self.assertEqual(info["queues"][0]["state"], "waiting")

    def test_show_has_history(self) -> None:
        """show lists each delivery attempt (time, queue, result) and host-level attempts."""
        msg_id = self.submit(env("x@one.example"))
        self.pump()
        self.pump(600)

        class Attempt:
            time, host, ip, reply, tls = 5.0, "mx.one.example", "192.0.2.7", "451 busy", "TLSv1.3"

        self.manager.note_attempt(msg_id, Attempt())
        info = self.successResultOf(self.admin.show(msg_id))
        attempts = [h for h in info["history"] if h.get("q") == "SMTP(one.example)"]
        self.assertEqual(len(attempts), 2)
        self.assertEqual(attempts[0]["r"], [["x@one.example", "pending", "451 4.4.1 no answer"]])
        self.assertEqual([h["host"] for h in info["history"] if "host" in h], ["mx.one.example"])
        self.assertEqual(info["submit"]["peer"], "192.0.2.1")

    def test_show_unknown(self) -> None:
        """An unknown or malformed id is a clear error, never a path."""
        self.failureResultOf(self.admin.show("0000000000000001-1-1"), KeyError)
        self.failureResultOf(self.admin.show("../../etc/passwd"), KeyError)

    def test_retry_now(self) -> None:
        """retry makes a waiting message due at once instead of at its retry time."""
        msg_id = self.submit(env("x@one.example"))
        self.pump()
        self.assertEqual(len(self.smtp.calls), 1)
        self.assertEqual(self.successResultOf(self.admin.retry(msg_id))["retried"], 1)
        self.pump()
        self.assertEqual(len(self.smtp.calls), 2)
        self.successResultOf(self.admin.retry("all"))
        self.pump()
        self.assertEqual(len(self.smtp.calls), 3)

    def test_hold_and_release(self) -> None:
        """A held message is not tried, even at its retry time, until it is released; the hold
        survives a restart."""
        msg_id = self.submit(env("x@one.example"))
        self.pump()
        self.successResultOf(self.admin.hold(msg_id))
        self.pump(1200)
        self.assertEqual(len(self.smtp.calls), 1)
        from cgtwist.spool.spool import Spool
        from tests.queue.helpers import SyncPool

        entry = self.successResultOf(Spool(self.base, self.clock, SyncPool()).load_entry(msg_id))  # type: ignore[arg-type]
        self.assertTrue(entry.held)
        self.smtp.behaviour = lambda q, r: ("delivered", "250 ok")
        self.successResultOf(self.admin.release(msg_id))
        self.pump()
        self.assertEqual(len(self.smtp.calls), 2)
        self.assertEqual(self.spooled(), [])

    def test_drop(self) -> None:
        """drop deletes the message without a bounce."""
        msg_id = self.submit(env("x@one.example"))
        self.pump()
        self.successResultOf(self.admin.drop(msg_id))
        self.pump(1200)
        self.assertEqual(self.spooled(), [])
        self.assertEqual(self.bounced, [])
        self.assertEqual(len(self.smtp.calls), 1)

    def test_bounce(self) -> None:
        """bounce fails every undelivered recipient, reports them once and removes the message."""
        msg_id = self.submit(env("x@one.example", "y@two.example", "a@example.com"))
        self.pump()
        res = self.successResultOf(self.admin.bounce(msg_id))
        self.assertEqual(res["bounced"], 2)
        self.pump()
        self.assertEqual(len(self.bounced), 1)
        self.assertEqual(
            sorted(a for a, _ in self.bounced[0][1]), ["x@one.example", "y@two.example"]
        )
        self.assertEqual(self.spooled(), [])

    def test_bounce_while_delivery_runs(self) -> None:
        """A bounce during a running attempt turns that attempt's deferral into a failure."""
        self.smtp.behaviour = lambda q, r: None
        msg_id = self.submit(env("x@one.example"))
        self.pump()
        self.successResultOf(self.admin.bounce(msg_id))
        self.smtp.release("pending", "451 later")
        self.pump()
        self.assertEqual(len(self.bounced), 1)
        self.assertEqual(self.spooled(), [])

    def test_control_handlers(self) -> None:
        """The control-channel handlers answer JSON-ready dicts."""
        import json

        msg_id = self.submit(env("x@one.example"))
        self.pump()
        h = self.admin.control_handlers()
        out = self.successResultOf(
            defer.maybeDeferred(h["queue-list"], {"cmd": "queue-list", "queue": "one"})
        )
        self.assertEqual(out["messages"][0]["id"], msg_id)
        json.dumps(out)
        json.dumps(self.successResultOf(h["queue-queues"]({})))
        json.dumps(self.successResultOf(h["queue-show"]({"id": msg_id})))


class DelayWarningTests(QueueTestCase):
    overrides = {
        "queue.retry_schedule": [600],
        "queue.delay_warning": 1000,
        "queue.suspend_after": 100,
    }

    def test_one_delay_warning(self) -> None:
        """After queue.delay_warning seconds still undelivered, the sender is warned once."""
        warned: list[Any] = []

        def warn(
            msg_id: str, envelope: Envelope, data: bytes, rcpts: list[Recipient], until: float
        ) -> None:
            warned.append((msg_id, [r.address for r in rcpts], until))

        self.manager = self.make_manager(delay_warning=warn)
        self.smtp.behaviour = lambda q, r: ("pending", "451 later")
        msg_id = self.submit(env("x@one.example"))
        t0 = self.clock.seconds()
        for _ in range(5):
            self.pump(600)
        self.assertEqual(len(warned), 1)
        self.assertEqual(warned[0][:2], (msg_id, ["x@one.example"]))
        self.assertEqual(warned[0][2], t0 + 432000)


class SuccessNotifyTests(QueueTestCase):
    def test_notify_success_reported(self) -> None:
        """Recipients that asked for NOTIFY=SUCCESS are reported once delivered; others not."""
        got: list[Any] = []
        self.manager = self.make_manager(
            on_delivered=lambda i, e, d, rs: got.append((i, [r.address for r in rs], d))
        )
        e = env("a@example.com", "b@example.com")
        e.recipients[0].notify = "SUCCESS,FAILURE"
        msg_id = self.submit(e, b"data\r\n")
        self.pump()
        self.assertEqual(got, [(msg_id, ["a@example.com"], b"data\r\n")])
        self.assertEqual(self.spooled(), [])
