"""The outbound workers' line protocol and the server's side of it (no processes started)."""

from __future__ import annotations

import os
from typing import Optional

from twisted.internet import defer
from twisted.internet.error import ProcessTerminated
from twisted.internet.process import ProcessWriter
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from cgtwist.delivery.agent import DeliveryAgent
from cgtwist.delivery.smtp import Attempt
from cgtwist.outworker import wire
from cgtwist.outworker.agent import WORKER_ENDED, WorkerSMTPDelivery
from cgtwist.outworker.child import OutboundWorker
from cgtwist.outworker.supervisor import OutboundWorkers
from cgtwist.runtime import fastwrite
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, QueueName, Recipient
from cgtwist.workers.supervisor import WorkerProcess
from tests.test_workers import CONFIG


def envelope() -> Envelope:
    rcpts = [Recipient("a@remote.test", notify="SUCCESS"), Recipient("b@remote.test")]
    return Envelope("alice@example.test", rcpts, params={"BODY": "8BITMIME"})


class WireTests(unittest.TestCase):
    def test_an_attempt_crosses_whole_even_in_pieces(self) -> None:
        """Header and data arrive in any cut; the worker gets the same envelope and octets."""
        env = envelope()
        data = b"Subject: x\r\n\r\nline\r\n.dot\r\n" * 3
        frame = wire.encode_settings({"smtp.remote_port": 2525}) + wire.encode_request(
            7, "m1", "remote.test", env, data, env.recipients
        )
        reader = wire.RequestReader()
        got = []
        for i in range(len(frame)):
            got += reader.feed(frame[i : i + 1])
        self.assertEqual(got[0], wire.SettingsLine({"smtp.remote_port": 2525}))
        req = got[1]
        assert isinstance(req, wire.Request)
        self.assertEqual((req.n, req.msg_id, req.queue, req.data), (7, "m1", "remote.test", data))
        self.assertEqual(req.envelope.sender, "alice@example.test")
        self.assertEqual(dict(req.envelope.params), {"BODY": "8BITMIME"})
        self.assertEqual(
            [(r.address, r.notify) for r in req.recipients],
            [
                ("a@remote.test", "SUCCESS"),
                ("b@remote.test", ""),
            ],
        )

    def test_a_result_round_trips(self) -> None:
        rcpts = [
            Recipient("a@x", state="delivered", detail="250 ok"),
            Recipient("b@x", state="failed", detail="550 no"),
        ]
        line = wire.encode_result(
            3, rcpts, [wire.HostAttempt(1.5, "mx.x", "127.0.0.1", "250 ok", None)]
        )
        r = wire.decode_result(line.rstrip(b"\n"))
        self.assertEqual(r.n, 3)
        self.assertEqual(r.states, [("delivered", "250 ok"), ("failed", "550 no")])
        self.assertEqual(r.attempts[0].host, "mx.x")

    def test_bad_results_are_refused_whole(self) -> None:
        for line in (
            b"D not json",
            b"D []",
            b'D {"n": "1", "r": []}',
            b'D {"n": 1, "r": [["sent", "x"]]}',
            b'D {"n": 1, "r": [["delivered", 5]]}',
            b'D {"n": 1, "r": [], "a": [[1, "h"]]}',
            b"X 1",
            b"D \xff\xfe",
        ):
            self.assertRaises(wire.BadFrame, wire.decode_result, line)

    def test_bad_lines_to_the_worker_are_reported_and_the_stream_goes_on(self) -> None:
        env = envelope()
        reader = wire.RequestReader()
        got = reader.feed(
            b"Z what\nA {}\nS [1]\n" + wire.encode_request(1, "m", "q", env, b"x", env.recipients)
        )
        self.assertEqual(
            [type(f) for f in got], [wire.BadLine, wire.BadLine, wire.BadLine, wire.Request]
        )


class _Transport:
    def __init__(self) -> None:
        self.pid = 4242
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def signalProcess(self, sig: int) -> None:
        pass


class SupervisorTests(unittest.TestCase):
    """What the server does with a worker's lines and its death."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.settings = SettingsHolder(Settings({"smtp.remote_port": 2525}))
        self.addCleanup(lambda: self.workers.stop() and None)  # its timers; nothing to wait for
        self.workers = OutboundWorkers(self.clock, CONFIG, self.settings)  # type: ignore[arg-type]
        self.workers.wanted = 2
        self.procs = {}
        for i in (1, 2):
            p = WorkerProcess(self.workers, i)
            t = _Transport()
            p.makeConnection(t)  # type: ignore[arg-type]
            self.workers.procs[i] = p
            p.outReceived(b"H\n")  # ready
            self.procs[i] = (p, t)
        self.warnings: list[str] = []
        globalLogPublisher.addObserver(self._observe)
        self.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event: dict[str, object]) -> None:
        if "outbound worker" not in str(event.get("log_format", "")):
            return
        level = event.get("log_level")
        if level is not None and getattr(level, "name", "") in (
            "warn",
            "error",
            "critical",
        ):
            self.warnings.append(str(event.get("log_format", "")))

    def submit(
        self, queue: str = "remote.test"
    ) -> tuple[defer.Deferred[Optional[wire.Result]], WorkerProcess, int]:
        env = envelope()
        d = self.workers.submit(queue, "m1", env, b"data", env.recipients)
        assert d is not None
        proc = self.workers.pick(queue)
        assert proc is not None
        n = self.workers._next
        return d, proc, n

    def test_the_same_destination_goes_to_the_same_worker(self) -> None:
        picks = {self.workers.pick(f"dest{i}.test").index for i in range(50)}  # type: ignore[union-attr]
        self.assertEqual(picks, {1, 2})
        self.assertIs(self.workers.pick("Remote.Test"), self.workers.pick("remote.test"))

    def test_a_worker_being_stopped_gets_no_new_attempts(self) -> None:
        """At a reload to fewer workers the ones stopping finish (abort) their own attempts;
        every destination goes to the workers that stay."""
        self.workers.configure(1)
        self.assertTrue(self.procs[2][0].retired)
        for i in range(50):
            proc = self.workers.pick(f"dest{i}.test")
            assert proc is not None
            self.assertEqual(proc.index, 1)
        self.procs[1][0].processEnded(Failure(ProcessTerminated(signal=9)))  # restarting
        self.assertIsNone(self.workers.pick("remote.test"))  # the server delivers itself

    def test_an_attempt_too_big_for_a_worker_line_is_delivered_by_the_server(self) -> None:
        """A worker refuses an attempt line over wire.MAX_HEADER (and reads the rest of it as
        lines): such an attempt (thousands of one destination's recipients, a big list's
        post) would wait for an answer for ever. The server delivers it itself instead."""
        rcpts = [
            Recipient(f"subscriber{i:05}@remote.test", orcpt="rfc822;" + "x" * 200)
            for i in range(5000)
        ]
        env = Envelope("list-bounces@example.test", rcpts)
        frame = wire.encode_request(1, "m1", "remote.test", env, b"data", rcpts)
        self.assertGreater(len(frame), wire.MAX_HEADER)  # the case this test is about
        reader = wire.RequestReader()
        frames = [f for i in range(0, len(frame), 65536) for f in reader.feed(frame[i : i + 65536])]
        self.assertFalse(any(isinstance(f, wire.Request) for f in frames))  # what a worker does
        self.assertIsNone(self.workers.submit("remote.test", "m1", env, b"data", rcpts))
        for _proc, t in self.procs.values():
            self.assertEqual(t.written[1:], [])  # nothing sent after the settings line
        small = envelope()
        self.assertIsNotNone(
            self.workers.submit("remote.test", "m2", small, b"x", small.recipients)
        )

    def test_an_answer_fires_the_attempt(self) -> None:
        d, proc, n = self.submit()
        rcpts = [
            Recipient("a", state="delivered", detail="250 ok"),
            Recipient("b", state="pending", detail="451 later"),
        ]
        proc.outReceived(wire.encode_result(n, rcpts, []))
        result = self.successResultOf(d)
        assert result is not None
        self.assertEqual(result.states, [("delivered", "250 ok"), ("pending", "451 later")])

    def test_bad_lines_are_logged_and_dropped_never_raised(self) -> None:
        d, proc, n = self.submit()
        proc.outReceived(b'garbage\nD {"n": 99999, "r": []}\n' + b"D \xff\n")
        self.assertNoResult(d)
        self.assertEqual(len(self.warnings), 3)
        # the right number but the wrong count of states: retried, not believed
        proc.outReceived(b'D {"n": %d, "r": [["delivered", "250"]]}\n' % n)
        self.assertIsNone(self.successResultOf(d))

    def test_an_answer_from_another_worker_is_not_believed(self) -> None:
        d, proc, n = self.submit()
        other = self.procs[1 if proc.index == 2 else 2][0]
        rcpts = [Recipient("a", state="delivered"), Recipient("b", state="delivered")]
        other.outReceived(wire.encode_result(n, rcpts, []))
        self.assertNoResult(d)

    def test_a_worker_that_dies_leaves_its_attempts_unanswered_none(self) -> None:
        d, proc, n = self.submit()
        proc.processEnded(Failure(ProcessTerminated(signal=9)))
        self.assertIsNone(self.successResultOf(d))
        # while it restarts its destinations go to the other worker
        again = self.workers.pick("remote.test")
        assert again is not None
        self.assertNotEqual(again.index, proc.index)

    def test_a_worker_that_leaves_its_probe_unanswered_is_killed(self) -> None:
        """A worker whose reactor is stuck would hold its attempts for ever: once it has left
        the probe unanswered for smtp.delivery_worker_stall seconds it gets SIGKILL; one that
        answers is left alone however long its attempts take."""
        self.settings.replace(Settings({"smtp.delivery_worker_stall": 30}))
        signals: dict[int, list[int]] = {1: [], 2: []}
        for i in (1, 2):
            self.procs[i][1].signalProcess = signals[i].append  # type: ignore[method-assign]
        d, _proc, _n = self.submit()
        self.workers._start_prober()
        p1 = self.procs[1][0]
        for _ in range(6):  # 60 s: worker 1 answers each probe, worker 2 never does
            self.clock.advance(10)
            p1.outReceived(b"P\n")
        self.assertEqual(signals[1], [])
        self.assertEqual(signals[2], [9])
        self.assertIn(b"P\n", self.procs[2][1].written)

    def test_a_new_worker_hears_the_settings_first(self) -> None:
        p = WorkerProcess(self.workers, 1)
        t = _Transport()
        p.makeConnection(t)  # type: ignore[arg-type]
        self.workers.child_started(p)
        self.assertEqual(t.written, [b'S {"smtp.remote_port":2525}\n'])


class _Proc:
    def childConnectionLost(self, name: object) -> None:
        pass


class _PipeTransport:
    """A worker process's transport over a real pipe for its standard input."""

    def __init__(self, writer: ProcessWriter) -> None:
        self.pid = 4243
        self.pipes = {0: writer}

    def write(self, data: bytes) -> None:
        self.pipes[0].write(data)

    def signalProcess(self, sig: int) -> None:
        pass


class DirectWriteTests(unittest.TestCase):
    def setUp(self) -> None:
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        os.set_blocking(r, False)
        self.r = r
        writer = ProcessWriter(MemoryReactor(), _Proc(), 0, w)  # never turns
        writer.connected = 1
        self.assertIsNone(fastwrite.enable(True))
        self.addCleanup(fastwrite.enable, False)
        self.clock = Clock()
        self.workers = OutboundWorkers(self.clock, CONFIG, SettingsHolder())  # type: ignore[arg-type]
        self.workers.wanted = 1
        self.proc = WorkerProcess(self.workers, 1)
        self.proc.makeConnection(_PipeTransport(writer))  # type: ignore[arg-type]
        self.workers.procs[1] = self.proc
        self.proc.outReceived(b"H\n")

    def test_a_turns_attempts_reach_the_worker_in_one_write_at_its_end(self) -> None:
        """The attempts handed to a worker in one reactor turn go into its pipe together when
        the turn ends, with one write (``[server] runtime = tuned``: straight into the pipe,
        not at the reactor's next wait for it): one wake-up of the worker per turn, not one
        per attempt, each of which could preempt the server's reactor on a busy machine."""
        writes: list[int] = []
        real = os.write

        def counting(fd: int, data: bytes) -> int:
            writes.append(fd)
            return real(fd, data)

        self.patch(fastwrite.os, "write", counting)
        env = envelope()
        for i in range(3):
            d = self.workers.submit(f"remote{i}.test", f"m{i}", env, b"data%d" % i, env.recipients)
            self.assertIsNotNone(d)
        self.assertEqual(writes, [])
        self.clock.advance(0)
        self.assertEqual(len(writes), 1)
        frames = wire.RequestReader().feed(os.read(self.r, 65536))
        self.assertEqual([f.data for f in frames], [b"data0", b"data1", b"data2"])  # type: ignore[union-attr]

    def test_attempts_of_a_worker_that_ended_before_the_write_are_answered_none(self) -> None:
        """A worker that ends in the turn its attempts were handed over never gets them: they
        are answered None (pending, retried), never delivered by it nor lost."""
        env = envelope()
        d = self.workers.submit("remote.test", "m1", env, b"data", env.recipients)
        assert d is not None
        self.proc.processEnded(Failure(ProcessTerminated(signal=9)))
        self.assertIsNone(self.successResultOf(d))
        self.clock.advance(0)
        self.assertRaises(BlockingIOError, os.read, self.r, 65536)


class _Local(DeliveryAgent):
    """The in-process agent, for the fallback."""

    module = "SMTP"

    def __init__(self) -> None:
        self.calls = 0

    async def attempt(self, msg_id, envelope, data, recipients, queue):  # type: ignore[no-untyped-def]
        self.calls += 1
        for r in recipients:
            r.state, r.detail = "delivered", "250 in process"
        return recipients


class AgentTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.workers = OutboundWorkers(self.clock, CONFIG, SettingsHolder())  # type: ignore[arg-type]
        self.local = _Local()
        self.noted: list[tuple[str, Attempt]] = []
        self.agent = WorkerSMTPDelivery(
            self.workers, self.local, on_attempt=lambda m, a: self.noted.append((m, a))
        )  # type: ignore[arg-type]

    def deliver_through_a_worker(
        self,
    ) -> tuple[WorkerProcess, defer.Deferred[list[Recipient]]]:
        """One running worker, and an attempt handed to it."""
        self.workers.wanted = 1
        p = WorkerProcess(self.workers, 1)
        p.makeConnection(_Transport())  # type: ignore[arg-type]
        self.workers.procs[1] = p
        p.outReceived(b"H\n")  # ready
        env = envelope()
        d = self.agent.deliver("m", env, b"x", env.recipients, QueueName("SMTP", "remote.test"))
        return p, d

    def test_until_a_worker_is_ready_the_server_delivers_itself(self) -> None:
        """A worker still importing its modules (no H yet) gets no attempt: the server
        delivers itself instead of leaving the attempt in a pipe nobody reads yet."""
        self.workers.wanted = 1
        p = WorkerProcess(self.workers, 1)
        t = _Transport()
        p.makeConnection(t)  # type: ignore[arg-type]
        self.workers.procs[1] = p
        env = envelope()
        self.successResultOf(
            self.agent.deliver("m", env, b"x", env.recipients, QueueName("SMTP", "remote.test"))
        )
        self.assertEqual((self.local.calls, t.written), (1, []))
        p.outReceived(b"H\n")
        env = envelope()
        self.agent.deliver("m2", env, b"x", env.recipients, QueueName("SMTP", "remote.test"))
        self.clock.advance(0)  # the turn's attempts go at its end
        self.assertEqual(self.local.calls, 1)
        self.assertTrue(t.written[0].startswith(b"A "))

    def test_without_workers_the_server_delivers_itself(self) -> None:
        env = envelope()
        got = self.successResultOf(
            self.agent.deliver("m", env, b"x", env.recipients, QueueName("SMTP", "remote.test"))
        )
        self.assertEqual({r.state for r in got}, {"delivered"})
        self.assertEqual(self.local.calls, 1)

    def test_answers_become_states_and_history(self) -> None:
        p, d = self.deliver_through_a_worker()
        rcpts = [
            Recipient("a", state="failed", detail="550 no"),
            Recipient("b", state="delivered", detail="250 ok"),
        ]
        p.outReceived(
            wire.encode_result(
                1, rcpts, [wire.HostAttempt(2.0, "mx", "127.0.0.1", "250 ok", "TLSv1.3")]
            )
        )
        got = self.successResultOf(d)
        self.assertEqual(
            [(r.state, r.detail) for r in got], [("failed", "550 no"), ("delivered", "250 ok")]
        )
        self.assertEqual(self.noted[0][0], "m")
        self.assertEqual(self.noted[0][1].tls, "TLSv1.3")
        self.assertEqual(self.local.calls, 0)

    def test_a_killed_worker_leaves_recipients_pending(self) -> None:
        p, d = self.deliver_through_a_worker()
        p.processEnded(Failure(ProcessTerminated(signal=9)))
        got = self.successResultOf(d)
        self.assertEqual([(r.state, r.detail) for r in got], [("pending", WORKER_ENDED)] * 2)

    def test_a_bug_in_the_hand_off_leaves_recipients_pending_with_a_traceback(self) -> None:
        """The agent's guard (DeliveryAgent's) holds without its coroutine too: an exception
        while handing the attempt over is logged and the recipients are retried, not lost."""

        def broken(*args: object) -> None:
            raise RuntimeError("bug")

        self.workers.submit = broken  # type: ignore[method-assign, assignment]
        env = envelope()
        got = self.successResultOf(
            self.agent.deliver("m", env, b"x", env.recipients, QueueName("SMTP", "remote.test"))
        )
        self.assertEqual({r.state for r in got}, {"pending"})
        self.assertIn("internal error during delivery (RuntimeError)", got[0].detail)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class _FakeAgent:
    """Stands in for SMTPDelivery in the worker: answers each attempt when told to."""

    def __init__(self, worker: OutboundWorker) -> None:
        self.worker = worker
        self.calls: list[tuple[str, defer.Deferred[list[Recipient]], list[Recipient]]] = []
        self.aborted = False

    def deliver(self, msg_id, envelope, data, recipients, queue=None):  # type: ignore[no-untyped-def]
        d: defer.Deferred[list[Recipient]] = defer.Deferred()
        self.calls.append((msg_id, d, recipients))
        return d

    def finish(self, i: int, state: str, detail: str) -> None:
        msg_id, d, rcpts = self.calls[i]
        self.worker.note(msg_id, Attempt(1.0, "mx.remote.test", "127.0.0.1", detail, None))
        for r in rcpts:
            r.state, r.detail = state, detail
        d.callback(rcpts)

    def abort_all(self) -> None:
        self.aborted = True
        for i, (_m, d, _r) in enumerate(self.calls):
            if not d.called:
                self.finish(i, "pending", "4.3.2 server shutting down")

    def close_idle(self) -> None:
        pass


class ChildTests(unittest.TestCase):
    """The worker's side: frames in, answers out, nothing the server sends can stop it."""

    def setUp(self) -> None:
        self.settings = SettingsHolder()
        self.worker = OutboundWorker(self.settings, Clock(), 1)  # type: ignore[arg-type]
        self.agent = _FakeAgent(self.worker)
        self.worker.agent = self.agent  # type: ignore[assignment]
        self.transport = StringTransport()
        self.worker.makeConnection(self.transport)

    def test_settings_then_an_attempt_answered_with_its_hosts(self) -> None:
        env = envelope()
        self.worker.dataReceived(
            wire.encode_settings({"smtp.remote_port": 2525})
            + wire.encode_request(5, "m9", "remote.test", env, b"body\r\n", env.recipients)
        )
        self.assertEqual(self.settings.current.smtp.remote_port, 2525)
        self.assertEqual(self.agent.calls[0][0], "m9")
        self.agent.finish(0, "delivered", "250 ok")
        r = wire.decode_result(self.transport.value().rstrip(b"\n"))
        self.assertEqual((r.n, r.states), (5, [("delivered", "250 ok")] * 2))
        self.assertEqual([a.host for a in r.attempts], ["mx.remote.test"])

    def test_it_says_when_it_is_ready(self) -> None:
        self.worker.ready()
        self.assertEqual(self.transport.value(), b"H\n")

    def test_a_probe_is_answered_at_once(self) -> None:
        self.worker.dataReceived(b"P\n")
        self.assertEqual(self.transport.value(), b"P\n")

    def test_bad_lines_from_the_server_are_dropped_and_the_link_stays(self) -> None:
        self.worker.dataReceived(b'nonsense\nS [1]\nA {"n": 1}\nS {"smtp.remote_port": "x"}\n')
        self.assertTrue(self.transport.connected)
        self.assertEqual(self.agent.calls, [])

    def test_stop_answers_what_runs_pending(self) -> None:
        env = envelope()
        self.worker.dataReceived(
            wire.encode_request(1, "m1", "remote.test", env, b"x", env.recipients)
        )
        self.successResultOf(defer.ensureDeferred(self.worker.stop()))
        self.assertTrue(self.agent.aborted)
        r = wire.decode_result(self.transport.value().rstrip(b"\n"))
        self.assertEqual({s for s, _ in r.states}, {"pending"})
