"""Tests for the queue manager and scheduler (cgtwist.queue): routing into logical queues,
retries on the schedule, fairness, suspension, expiry, the active window and no polling."""

from __future__ import annotations

import os
from typing import Any

from zope.interface.verify import verifyObject

from cgtwist.errors import MailError
from cgtwist.interfaces import IQueue
from cgtwist.queue.admin import QueueAdmin
from cgtwist.queue.enqueuer import ROUTE_SLICE
from cgtwist.queue.logical import SUSPENDED
from cgtwist.spool.spool import Spool
from cgtwist.types import Envelope, QueueName
from tests.queue.helpers import Agent, QueueTestCase, SyncPool, env


class DeliveryTests(QueueTestCase):
    def test_interface(self) -> None:
        """The manager provides IQueue, the seam the spool's subscription and the worker
        supervisor (adopt) use."""
        self.assertTrue(verifyObject(IQueue, self.manager))

    def test_delivered_to_each_queue_then_removed(self) -> None:
        """A message to two local accounts and a remote domain is delivered once per logical
        queue and then leaves the spool."""
        msg_id = self.submit(
            env("a@example.com", "b@example.com", "c@remote.example", "d@remote.example")
        )
        self.pump()
        self.assertEqual(
            sorted(c[2] for c in self.local.calls), ["LOCAL(a@example.com)", "LOCAL(b@example.com)"]
        )
        self.assertEqual(
            [(c[2], c[3]) for c in self.smtp.calls],
            [("SMTP(remote.example)", ["c@remote.example", "d@remote.example"])],
        )
        self.assertEqual(self.spooled(), [])
        self.assertNotIn(msg_id, self.manager._msgs)

    def test_a_delivery_the_agent_logged_is_not_logged_again_at_info(self) -> None:
        """An agent that logs each delivery itself (SMTP's to=<...> relay=... status= line,
        ``logs_deliveries``) makes the queue's line for a delivered recipient a debug one:
        one info line per delivery. A failure keeps the queue's info line, and an agent that
        logs nothing (LOCAL here) keeps it for its deliveries too."""
        from twisted.logger import LogLevel, globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.smtp.logs_deliveries = True  # type: ignore[attr-defined]
        self.smtp.behaviour = lambda q, r: (
            ("failed", "550 5.1.1 no") if r.address.startswith("x") else ("delivered", "250 ok")
        )
        self.submit(env("a@example.com", "c@remote.example", "x@remote.example"))
        self.pump()
        lines = {
            (e["rcpt"], e["state"]): e["log_level"]
            for e in events
            if "{rcpt}> {queue} {state}" in str(e.get("log_format"))
        }
        self.assertEqual(
            lines,
            {
                ("a@example.com", "delivered"): LogLevel.info,
                ("c@remote.example", "delivered"): LogLevel.debug,
                ("x@remote.example", "failed"): LogLevel.info,
            },
        )

    def test_a_message_delivered_to_everyone_leaves_with_a_debug_line(self) -> None:
        """Each delivery has its info line; a message delivered to every recipient leaves
        the queue with a debug line only, one that failed somewhere with an info line."""
        from twisted.logger import LogLevel, globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.smtp.behaviour = lambda q, r: (
            ("failed", "550 5.1.1 no") if r.address.startswith("x") else ("delivered", "250 ok")
        )
        ok = self.submit(env("a@remote.example", "b@example.com"))
        bad = self.submit(env("x@remote.example"))
        self.pump()
        left = {
            e["msg_id"]: e["log_level"]
            for e in events
            if "left the queue" in str(e.get("log_format"))
        }
        self.assertEqual(left, {ok: LogLevel.debug, bad: LogLevel.info})

    def test_agent_is_given_its_parsed_queue(self) -> None:
        """Each attempt names its logical queue as a QueueName (module + queue), so no agent
        parses it out of the recipients' route text."""
        self.submit(env("alias@example.com", "c@remote.example"))
        self.pump()
        self.assertEqual(self.local.queues, [QueueName("LOCAL", "bob@example.com")])
        self.assertEqual(self.smtp.queues, [QueueName("SMTP", "remote.example")])

    def test_router_rewrites_address_for_agent(self) -> None:
        """The agent sees the Router's final address (an alias becomes its target)."""
        self.submit(env("alias@example.com"))
        self.pump()
        self.assertEqual(self.local.calls[0][2:], ("LOCAL(bob@example.com)", ["bob@example.com"]))

    def test_error_route_fails_and_bounces(self) -> None:
        """A recipient the Router rejects fails at once and is reported; the others deliver."""
        msg_id = self.submit(env("error@example.com", "a@example.com"))
        self.pump()
        self.assertEqual(self.bounced, [(msg_id, [("error@example.com", "5.1.1 unknown user")])])
        self.assertEqual(len(self.local.calls), 1)
        self.assertEqual(self.spooled(), [])

    def test_null_route_discarded(self) -> None:
        """A NULL route counts as done without any delivery or bounce."""
        self.submit(env("null@example.com"))
        self.pump()
        self.assertEqual((self.local.calls, self.bounced, self.spooled()), ([], [], []))

    def test_permanent_agent_failure_bounced(self) -> None:
        """A 5xx from the destination fails that recipient and reports it once."""
        self.smtp.behaviour = lambda q, r: ("failed", "550 5.1.1 no such user")
        msg_id = self.submit(env("x@remote.example"))
        self.pump()
        self.assertEqual(self.bounced, [(msg_id, [("x@remote.example", "550 5.1.1 no such user")])])
        self.assertEqual(self.spooled(), [])

    def test_missing_agent_keeps_mail_queued(self) -> None:
        """Mail for a module without an agent stays queued (not lost, not bounced) and goes out
        once the agent is added."""
        msg_id = self.submit(env("prog@pipe"))
        self.pump(3600)
        self.assertEqual(self.spooled(), [msg_id + ".msg"])
        self.assertEqual(self.bounced, [])
        pipe = Agent("PIPE", self.clock)
        self.manager.set_agent("PIPE", pipe)
        self.pump()
        self.assertEqual(len(pipe.calls), 1)
        self.assertEqual(self.spooled(), [])

    def test_router_temporary_failure_retried(self) -> None:
        """A temporary routing failure keeps the recipient and routes it again later."""
        self.router.temp.add("a@example.com")
        self.submit(env("a@example.com"))
        self.pump()
        self.assertEqual(self.local.calls, [])
        self.router.temp.clear()
        self.pump(60)
        self.assertEqual(len(self.local.calls), 1)
        self.assertEqual(self.spooled(), [])

    def test_attempts_back_during_a_journal_write_are_journaled_together(self) -> None:
        """The results of a message's attempts that come back while a journal write of it is
        on its way are written after it with one append, not one each; every attempt is
        fed back only once its results are on disk, and all of them are there."""
        held: list[Any] = []
        pool = SyncPool()

        class HeldPool:
            def callInThreadWithCallback(self, *args: Any) -> None:
                held.append(args)

        self.smtp.behaviour = lambda q, r: ("pending", "451 4.3.0 later")
        msg_id = self.submit(env("a@d1.example", "b@d2.example", "c@d3.example"))
        self.spool._pool = HeldPool()  # type: ignore[assignment]
        self.pump()
        self.assertEqual(len(self.smtp.calls), 3)
        self.assertEqual(len(held), 1)  # the first attempt's write; the others wait for it
        appends = 0
        while held:
            pool.callInThreadWithCallback(*held.pop(0))
            appends += 1
            self.pump()
        self.assertEqual(appends, 2)
        m = self.manager.find(msg_id)
        assert m is not None
        self.assertTrue(all(job.due > 0 and not job.running for job in m.jobs.values()))
        self.spool._pool = pool  # type: ignore[assignment]
        entry = self.successResultOf(self.spool.load_entry(msg_id, with_data=False))
        self.assertEqual(
            [(r.state, r.detail) for r in entry.envelope.recipients],
            [("pending", "451 4.3.0 later")] * 3,
        )
        self.assertEqual(sum(1 for h in entry.history if h.get("q")), 3)

    def test_many_recipients_are_routed_a_slice_at_a_time(self) -> None:
        """A message to many recipients (a list's distribution) is routed a slice per turn
        of the reactor, not all in one, and then delivered once per destination with every
        recipient there, as a small one is."""
        rcpts = [f"u{n}@d{n % 3}.example" for n in range(300)]
        msg_id = self.submit(env(*rcpts))
        self.assertEqual(len(self.router.calls), ROUTE_SLICE)
        self.assertEqual(self.smtp.calls, [])
        self.pump()
        self.assertEqual(sorted(self.router.calls), sorted(rcpts))
        self.assertEqual(
            sorted((c[2], sorted(c[3])) for c in self.smtp.calls),
            [
                (f"SMTP(d{k}.example)", sorted(a for a in rcpts if a.endswith(f"@d{k}.example")))
                for k in range(3)
            ],
        )
        self.assertEqual(self.spooled(), [])
        self.assertNotIn(msg_id, self.manager._msgs)

    def test_recipient_routed_during_an_attempt_joins_the_next(self) -> None:
        """A recipient whose routing was deferred, routed into a queue while an attempt there
        runs, goes in that queue's next attempt (after the running one ends), and only the
        recipients still pending go again."""
        self.router.temp.add("b@remote.example")
        self.smtp.behaviour = lambda q, r: None  # the first attempt hangs
        msg_id = self.submit(env("a@remote.example", "b@remote.example", "c@remote.example"))
        self.pump()
        self.assertEqual(
            [c[3] for c in self.smtp.calls], [["a@remote.example", "c@remote.example"]]
        )
        self.router.temp.clear()
        self.pump(60)  # b is routed into SMTP(remote.example) while a and c are on the wire
        self.assertEqual(len(self.smtp.calls), 1)
        self.smtp.behaviour = lambda q, r: ("delivered", "250 ok")
        hanging, self.smtp.hanging = self.smtp.hanging, []
        ((d, rcpts),) = hanging
        rcpts[0].state, rcpts[0].detail = "delivered", "250 ok"  # a delivered
        rcpts[1].state, rcpts[1].detail = "pending", "451 try later"  # c deferred
        d.callback(rcpts)
        self.pump(3600)
        self.assertEqual(
            [c[3] for c in self.smtp.calls[1:]], [["b@remote.example", "c@remote.example"]]
        )
        self.assertEqual(self.spooled(), [])
        self.assertNotIn(msg_id, self.manager._msgs)

    def test_router_permanent_mailerror(self) -> None:
        """A permanent MailError from the Router fails the recipient with its reply."""

        def route(address: str, kind: str = "mail") -> object:
            raise MailError(554, "5.4.6", "routing loop")

        self.router.route = route  # type: ignore[method-assign]
        msg_id = self.submit(env("a@example.com"))
        self.pump()
        self.assertEqual(self.bounced, [(msg_id, [("a@example.com", "554 5.4.6 routing loop")])])


class RetryTests(QueueTestCase):
    overrides = {
        "queue.retry_schedule": [60, 300, 900],
        "queue.max_lifetime": 3000,
        "queue.suspend_after": 100,
    }

    def test_retries_follow_schedule_and_expire(self) -> None:
        """A deferred recipient is retried after 60, 300, 900, 900... seconds; at the lifetime
        it fails with 4.4.7 and the bouncer gets it; then the message leaves the spool."""
        self.smtp.behaviour = lambda q, r: ("pending", "451 4.4.1 try later")
        t0 = self.clock.seconds()
        msg_id = self.submit(env("x@remote.example"))
        self.pump()
        for _ in range(110):
            self.pump(30)
        times = [c[0] - t0 for c in self.smtp.calls]
        self.assertEqual(times, [0, 60, 360, 1260, 2160, 3000])
        self.assertEqual(len(self.bounced), 1)
        addr, detail = self.bounced[0][1][0]
        self.assertEqual((self.bounced[0][0], addr), (msg_id, "x@remote.example"))
        self.assertTrue(detail.startswith("4.4.7"), detail)
        self.assertIn("451 4.4.1 try later", detail)
        self.assertEqual(self.spooled(), [])

    def test_one_timer_no_polling(self) -> None:
        """While mail waits for a retry there is exactly one timer; an empty queue has none."""
        self.smtp.behaviour = lambda q, r: ("pending", "451 later")
        for i in range(5):
            self.submit(env(f"x{i}@remote{i}.example"))
        self.pump()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.smtp.behaviour = lambda q, r: ("delivered", "250 ok")
        self.pump(60)
        self.assertEqual(self.spooled(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_settings_read_at_use_time(self) -> None:
        """A retry schedule changed while mail waits applies to the next deferral."""
        from cgtwist.settings import Settings

        self.smtp.behaviour = lambda q, r: ("pending", "451 later")
        t0 = self.clock.seconds()
        self.submit(env("x@remote.example"))
        self.pump()
        self.settings.replace(
            Settings(
                {
                    "queue.retry_schedule": [10],
                    "queue.max_lifetime": 3000,
                    "queue.suspend_after": 100,
                }
            )
        )
        self.pump(60)
        self.pump(10)
        self.assertEqual([c[0] - t0 for c in self.smtp.calls], [0, 60, 70])


class ConcurrencyTests(QueueTestCase):
    def test_local_account_takes_more_writers_than_a_remote_domain(self) -> None:
        """By default one account's LOCAL queue runs 20 deliveries at once (a Maildir takes
        concurrent writers, each waiting on its fsyncs), one remote domain only 5."""
        self.local.behaviour = lambda q, r: None  # every delivery hangs
        self.smtp.behaviour = lambda q, r: None
        for i in range(30):
            self.submit(env("a@example.com"))
            self.submit(env(f"x{i}@remote.example"))
        self.pump()
        self.assertEqual(len(self.local.calls), 20)
        self.assertEqual(len(self.smtp.calls), 5)

    def test_local_destination_concurrency_setting(self) -> None:
        """``queue.local_destination_concurrency`` sets the per-account limit, read at use
        time; ``queue.local_concurrency`` still caps LOCAL as a whole."""
        from cgtwist.settings import Settings

        self.settings.replace(
            Settings({"queue.local_destination_concurrency": 3, "queue.local_concurrency": 4})
        )
        self.local.behaviour = lambda q, r: None
        for _ in range(10):
            self.submit(env("a@example.com"))
        self.pump()
        self.assertEqual(len(self.local.calls), 3)
        for _ in range(10):
            self.submit(env("b@example.com"))
        self.pump()
        self.assertEqual([c[2] for c in self.local.calls[3:]], ["LOCAL(b@example.com)"])


class FairnessTests(QueueTestCase):
    overrides = {"queue.destination_concurrency": 2, "queue.smtp_concurrency": 4}

    def test_stalled_destination_does_not_starve_others(self) -> None:
        """Deliveries hanging at one dead domain use at most its per-queue limit; mail to a
        healthy domain keeps flowing."""
        self.smtp.behaviour = lambda q, r: None if "stalled" in q else ("delivered", "250 ok")
        for i in range(10):
            self.submit(env(f"s{i}@stalled.example"))
        for i in range(10):
            self.submit(env(f"h{i}@healthy.example"))
        self.pump()
        stalled = [c for c in self.smtp.calls if "stalled" in c[2]]
        healthy = [c for c in self.smtp.calls if "healthy" in c[2]]
        self.assertEqual(len(stalled), 2)
        self.assertEqual(len(healthy), 10)
        self.assertEqual(len([n for n in self.spooled() if n.endswith(".msg")]), 10)
        self.smtp.behaviour = lambda q, r: ("delivered", "250 ok")
        self.smtp.release()
        self.pump()
        self.assertEqual(self.spooled(), [])

    def test_round_robin_between_queues(self) -> None:
        """With a module limit, queues take turns instead of one queue going first entirely."""
        self.smtp.behaviour = lambda q, r: None
        for d in ("a", "b", "c"):
            for i in range(4):
                self.submit(env(f"u{i}@{d}.example"))
        self.pump()
        started = sorted(c[2] for c in self.smtp.calls)
        self.assertEqual(len(started), 4)
        self.assertEqual(len(set(started)), 3)  # each domain got a turn within the limit

    def test_failing_queue_suspended_then_probed(self) -> None:
        """After repeated failures a destination is suspended (no attempts) until its next
        retry time, then gets a single probe; a success makes it ready again."""
        from cgtwist.settings import Settings

        self.settings.replace(
            Settings(
                {
                    "queue.destination_concurrency": 5,
                    "queue.suspend_after": 2,
                    "queue.retry_schedule": [60],
                }
            )
        )
        self.smtp.behaviour = lambda q, r: ("pending", "421 4.4.2 down")
        for i in range(6):
            self.submit(env(f"u{i}@down.example"))
        self.pump()
        first = len(self.smtp.calls)
        self.assertLessEqual(first, 2)  # suspended after the 2nd failure, the rest wait
        qinfo = self.successResultOf(QueueAdmin(self.manager).queues())["queues"]
        self.assertEqual(qinfo[0]["state"], SUSPENDED)
        self.smtp.behaviour = lambda q, r: ("delivered", "250 ok")
        self.pump(60)
        self.pump(60)
        self.assertEqual(self.spooled(), [])


class WindowTests(QueueTestCase):
    overrides = {"queue.active_window": 3}

    def test_active_window_bounds_memory(self) -> None:
        """Beyond the active window, messages wait as ids only; all are delivered in the end."""
        self.local.behaviour = lambda q, r: None
        for i in range(10):
            self.submit(env(f"u{i}@example.com"))
        self.pump()
        self.assertEqual(len(self.manager._msgs), 3)
        self.assertEqual(len(self.manager._backlog), 7)
        for _ in range(10):
            self.local.behaviour = lambda q, r: ("delivered", "250 ok")
            self.local.release()
            self.pump()
        self.assertEqual(self.spooled(), [])
        self.assertEqual(len(self.local.calls), 10)


class CountingPool(SyncPool):
    """SyncPool counting the thread jobs that read one message file or more (``reads`` is
    called by the test's wrapper of the spool's ``read_whole``)."""

    def __init__(self) -> None:
        self.loads = 0
        self._read = False

    @classmethod
    def patched(cls, test: Any) -> CountingPool:
        """A pool told of every message file the spool reads (``test`` patches the spool's
        ``read_whole`` for the test's duration)."""
        import cgtwist.spool.spool as spool_module

        pool = cls()
        real = spool_module.read_whole

        def counting(path: str) -> bytes:
            if path.endswith(".msg"):
                pool.reads()
            return real(path)

        test.patch(spool_module, "read_whole", counting)
        return pool

    def reads(self) -> None:
        self._read = True

    def callInThreadWithCallback(self, onResult: Any, func: Any, *args: Any, **kw: Any) -> None:
        self._read = False
        super().callInThreadWithCallback(onResult, func, *args, **kw)
        self.loads += self._read


class RoutingJournalTests(QueueTestCase):
    def test_routing_that_settles_nothing_writes_no_journal(self) -> None:
        """A new message whose recipients are all routed and still pending has nothing to
        journal (a route is worked out again after a restart): no journal update for it,
        where each new message used to cost one (an empty one: a Deferred and a diff of all
        its recipients on the reactor)."""
        updates: list[str] = []
        real = self.spool.update

        def counting(msg_id: str, *args: Any, **kw: Any) -> Any:
            updates.append(msg_id)
            return real(msg_id, *args, **kw)

        self.patch(self.spool, "update", counting)
        self.smtp.behaviour = lambda q, r: None  # the attempt hangs: only routing journals
        self.submit(env("a@remote.example", "b@other.example"))
        self.pump()
        self.assertEqual(updates, [])
        self.assertEqual(len(self.smtp.calls), 2)

    def test_recipients_settled_by_server_rules_or_the_router_are_journaled(self) -> None:
        """A recipient the Server Rules rejected, or the Router refused, is journaled with
        the routing of the others, so a restart does not try it again."""

        def rules(msg_id: str, envelope: Envelope, data: object) -> None:
            envelope.recipients[0].state = "failed"
            envelope.recipients[0].detail = "5.7.1 rejected by a rule"

        self.manager = self.make_manager(server_rules=rules)
        self.smtp.behaviour = lambda q, r: None
        msg_id = self.submit(env("a@remote.example", "b@remote.example", "error@example.com"))
        self.pump()
        entry = self.successResultOf(self.spool.load_entry(msg_id, with_data=False))
        self.assertEqual(
            [r.state for r in entry.envelope.recipients], ["failed", "pending", "failed"]
        )


class FullWindowRefillTests(QueueTestCase):
    overrides = {"queue.active_window": 64}

    def test_a_full_window_is_refilled_in_batches_not_one_read_per_message(self) -> None:
        """With the active window full, each message that leaves makes room for one more: the
        manager waits for room for a batch (a quarter of this window) before reading, so the
        backlog of 200 messages is read in about a dozen thread jobs, not one per message
        that left; every message is delivered."""

        ids = [
            self.successResultOf(self.spool.store(env(f"u{i}@example.org"), b"Subject: t\r\n\r\nx"))
            for i in range(200)
        ]
        pool = CountingPool.patched(self)
        manager2 = self.make_manager(Spool(self.base, self.clock, threadpool=pool))  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(manager2.start()), 200)
        self.pump()
        self.assertEqual(sorted(c[1] for c in self.smtp.calls), sorted(ids))
        self.assertTrue(0 < pool.loads <= 20, pool.loads)  # counted, and few


class RecoveryTests(QueueTestCase):
    def test_restart_resumes_only_unfinished_recipients(self) -> None:
        """After a crash mid-way, recipients already delivered are not delivered again."""
        self.local.behaviour = lambda q, r: (
            ("delivered", "250 ok") if r.address.startswith("a") else None
        )
        msg_id = self.submit(env("a@example.com", "b@example.com", "c@example.com"))
        self.pump()
        self.assertEqual(len(self.local.calls), 3)
        # Crash: the hanging deliveries never finish; a new manager starts over the same spool.
        from cgtwist.spool.spool import Spool
        from tests.queue.helpers import SyncPool

        spool2 = Spool(self.base, self.clock, threadpool=SyncPool())  # type: ignore[arg-type]
        self.local = Agent("LOCAL", self.clock)
        manager2 = self.make_manager(spool2)
        self.assertEqual(self.successResultOf(manager2.start()), 1)
        self.pump()
        self.assertEqual(
            sorted(c[3][0] for c in self.local.calls), ["b@example.com", "c@example.com"]
        )
        self.assertTrue(all(c[1] == msg_id for c in self.local.calls))
        self.assertEqual(self.spooled(), [])

    def test_recovered_message_read_once(self) -> None:
        """A message taken from the spool at start (or from the backlog) is read from disk once
        for its load and first attempt, not once to load and again to deliver (#17 lever 4);
        a held one keeps no bytes in memory."""
        import cgtwist.spool.spool as spool_module

        ids = [
            self.successResultOf(self.spool.store(env(f"u{i}@example.org"), b"Subject: t\r\n\r\nx"))
            for i in range(3)
        ]
        self.successResultOf(self.spool.record(ids[2], [{"k": "h", "v": True}]))
        reads: list[str] = []
        real = spool_module.read_whole

        def counting(path: str) -> bytes:
            if path.endswith(".msg"):
                reads.append(os.path.basename(path))
            return real(path)

        self.patch(spool_module, "read_whole", counting)
        manager2 = self.make_manager(Spool(self.base, self.clock, threadpool=SyncPool()))  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(manager2.start()), 3)
        self.pump()
        self.assertEqual(sorted(c[1] for c in self.smtp.calls), sorted(ids[:2]))
        self.assertEqual(sorted(reads), sorted(f"{i}.msg" for i in ids))
        self.assertIsNone(manager2.find(ids[2]).data)  # type: ignore[union-attr]

    def test_a_restarts_queue_is_read_in_few_thread_jobs(self) -> None:
        """After a restart the active window fills from the spool in batches, one thread job
        each (Spool.load_entries), not one per message: 70 messages in at most 3 jobs (each
        job's threads fought the reactor for the GIL, ~50 futex calls per message). A
        damaged file among them is quarantined and skipped; the others are delivered."""
        ids = [
            self.successResultOf(self.spool.store(env(f"u{i}@example.org"), b"Subject: t\r\n\r\nx"))
            for i in range(70)
        ]
        path = os.path.join(self.base, "Queue", ids[5] + ".msg")
        with open(path, "r+b") as f:
            f.seek(60)
            f.write(b"X")

        pool = CountingPool.patched(self)
        manager2 = self.make_manager(Spool(self.base, self.clock, threadpool=pool))  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(manager2.start()), 70)
        self.pump()
        self.assertEqual(sorted(c[1] for c in self.smtp.calls), sorted(ids[:5] + ids[6:]))
        self.assertTrue(0 < pool.loads <= 3, pool.loads)  # counted, and few
        self.assertTrue(
            os.path.exists(os.path.join(self.base, "Queue", "corrupt", ids[5] + ".msg"))
        )

    def test_bouncer_failure_retried_message_kept(self) -> None:
        """If the failure report cannot be sent, the message stays and the report is retried."""
        calls = []

        def bad_bouncer(*args: object) -> object:
            calls.append(args)
            if len(calls) == 1:
                raise MailError(452, "4.3.1", "disk full")
            return None

        self.manager = self.make_manager(bouncer=bad_bouncer)
        msg_id = self.submit(env("error@example.com"))
        self.pump()
        self.assertEqual(len(calls), 1)
        self.assertIn(msg_id + ".msg", self.spooled())
        self.pump(60)
        self.assertEqual(len(calls), 2)
        self.assertEqual(self.spooled(), [])


class ServerRulesTests(QueueTestCase):
    def test_rules_hook_runs_before_routing(self) -> None:
        """The Server Rules hook sees each new message once before routing and can discard a
        recipient; a failing hook does not stop delivery."""
        seen: list[str] = []

        def rules(msg_id: str, envelope: object, data: object) -> None:
            seen.append(msg_id)
            envelope.recipients[0].state = "delivered"  # type: ignore[attr-defined]
            envelope.recipients[0].detail = "discarded by rule"  # type: ignore[attr-defined]

        self.manager.server_rules = rules
        msg_id = self.submit(env("a@example.com", "b@example.com"))
        self.pump()
        self.assertEqual(seen, [msg_id])
        self.assertEqual([c[3] for c in self.local.calls], [["b@example.com"]])
        self.assertEqual(self.router.calls, ["b@example.com"])

        def broken(*a: object) -> None:
            raise RuntimeError("rule bug")

        self.manager.server_rules = broken
        self.submit(env("c@example.com"))
        self.pump()
        self.assertEqual(len(self.local.calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class RobustnessTests(QueueTestCase):
    def test_agent_exception_defers(self) -> None:
        """An agent that raises does not lose or bounce the mail: it is retried later."""

        def boom(q: str, r: object) -> None:
            raise RuntimeError("agent bug")

        self.local.behaviour = boom  # type: ignore[assignment]
        msg_id = self.submit(env("a@example.com"))
        self.pump()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.bounced, [])
        self.local.behaviour = lambda q, r: ("delivered", "250 ok")
        self.pump(60)
        self.assertEqual(self.spooled(), [])
        self.assertEqual([c[1] for c in self.local.calls], [msg_id, msg_id])

    def test_agent_keyerror_is_not_a_vanished_message(self) -> None:
        """An agent bug raising KeyError (or a spool error type) is a failed attempt, retried:
        only the spool's own load failing means the message is gone and may be forgotten."""

        def boom(q: str, r: object) -> None:
            raise KeyError("agent bug")

        self.local.behaviour = boom  # type: ignore[assignment]
        msg_id = self.submit(env("a@example.com"))
        self.pump()
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(self.bounced, [])
        self.assertIn(f"{msg_id}.msg", self.spooled())  # kept, not forgotten
        self.local.behaviour = lambda q, r: ("delivered", "250 ok")
        self.pump(60)
        self.assertEqual(self.spooled(), [])
        self.assertEqual([c[1] for c in self.local.calls], [msg_id, msg_id])

    def test_scheduler_survives_start_bug(self) -> None:
        """A bug while starting a delivery parks that job; the scheduler neither dies nor spins,
        and other mail still flows."""
        real_start = self.manager._start
        broken = {"x@bad.example"}

        def start(lq: object, m: object, job: object) -> None:
            if any(r.address in broken for r in m.envelope.recipients):  # type: ignore[attr-defined]
                raise KeyError("bug")
            real_start(lq, m, job)  # type: ignore[arg-type]

        self.manager._start = start  # type: ignore[method-assign]
        self.submit(env("x@bad.example"))
        self.submit(env("a@example.com"))
        self.pump()
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(len(self.local.calls), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the parked job's retry only
        broken.clear()
        self.pump(60)
        self.assertEqual(self.spooled(), [])


class CorruptAtStartTests(QueueTestCase):
    def test_damaged_file_quarantined_not_delivered(self) -> None:
        """A spooled message damaged while the server was down is never delivered: it goes to
        Queue/corrupt/; the good messages beside it are delivered."""
        import os

        self.manager.stop()
        bad = self.successResultOf(
            self.spool.store(env("a@example.com"), b"Subject: x\r\n\r\nbad\r\n")
        )
        good = self.successResultOf(
            self.spool.store(env("b@example.com"), b"Subject: y\r\n\r\ngood\r\n")
        )
        path = os.path.join(self.base, "Queue", bad + ".msg")
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) - 90)
            f.write(b"X")
        from cgtwist.spool.spool import Spool
        from tests.queue.helpers import SyncPool

        manager2 = self.make_manager(Spool(self.base, self.clock, threadpool=SyncPool()))  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(manager2.start()), 2)
        self.pump()
        self.assertEqual([(c[1], c[3]) for c in self.local.calls], [(good, ["b@example.com"])])
        self.assertEqual(os.listdir(os.path.join(self.base, "Queue", "corrupt")), [bad + ".msg"])
        self.assertEqual(self.spooled(), [])


class MemoryTests(QueueTestCase):
    def test_data_cache_bounded(self) -> None:
        """A burst of mail is not all held in memory: beyond the budget, message bytes are read
        back from the spool at delivery, and every byte arrives intact either way."""
        self.manager.data.budget = 250
        self.local.behaviour = lambda q, r: None
        seen: dict[str, bytes] = {}
        real_deliver = self.local.deliver

        def deliver(msg_id: str, envelope: object, data: bytes, rcpts: object, **kw: Any) -> object:
            seen[msg_id] = data
            return real_deliver(msg_id, envelope, data, rcpts, **kw)  # type: ignore[arg-type]

        self.local.deliver = deliver  # type: ignore[method-assign]
        bodies = {}
        for i in range(6):
            body = b"Subject: %d\r\n\r\n" % i + b"x" * 100
            bodies[self.submit(env(f"u{i}@example.com"), body)] = body
        self.assertLessEqual(self.manager.data.cached, 250)
        self.pump()
        self.assertEqual(seen, bodies)
        self.local.behaviour = lambda q, r: ("delivered", "250 ok")
        self.local.release()
        self.pump()
        self.assertEqual(self.spooled(), [])
        self.assertEqual(self.manager.data.cached, 0)


class AdoptionTests(QueueTestCase):
    """Messages an SMTP worker process stored in Queue/incoming/ (smtp.workers)."""

    def worker_store(self, envelope: Envelope) -> str:
        worker = Spool(self.base, self.clock, threadpool=SyncPool(), incoming=True)  # type: ignore[arg-type]
        msg_id: str = self.successResultOf(
            worker.store(envelope, b"Subject: w\r\n\r\nfrom a worker\r\n")
        )
        return msg_id

    def test_adopted_message_is_delivered_once(self) -> None:
        msg_id = self.worker_store(env("bob@example.com"))
        self.assertTrue(self.successResultOf(self.manager.adopt(msg_id)))
        self.assertFalse(
            self.successResultOf(self.manager.adopt(msg_id))
        )  # a sweep after the notice
        self.pump()
        self.assertEqual([c[2] for c in self.local.calls], ["LOCAL(bob@example.com)"])
        self.assertEqual(self.spooled(), [])

    def test_stopping_queue_leaves_it_for_the_next_start(self) -> None:
        msg_id = self.worker_store(env("bob@example.com"))
        self.successResultOf(self.manager.stop())
        self.assertFalse(self.successResultOf(self.manager.adopt(msg_id)))
        manager = self.make_manager(Spool(self.base, self.clock, threadpool=SyncPool()))  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(manager.start()), 1)
        self.pump()
        self.assertEqual([c[2] for c in self.local.calls], ["LOCAL(bob@example.com)"])
