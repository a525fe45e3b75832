"""SMTP worker processes without processes: the server's side (SMTPWorkers' sweep of
Queue/incoming/) and the worker's start (cgtwist.smtpworker.child.Worker on a fake reactor)."""

from __future__ import annotations

import os
import signal
import socket
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.error import ProcessDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from cgtwist import app
from cgtwist.config import BootstrapConfig
from cgtwist.smtpworker.child import Worker
from cgtwist.smtpworker.supervisor import KILL_WAIT, STOP_MARGIN, SMTPWorkers, _WorkerProcess
from cgtwist.types import Envelope, ListenerSpec

# A frozen bootstrap configuration the tests share; nothing here reads base_dir.
CONFIG = BootstrapConfig(
    base_dir="/nonexistent",
    main_domain="example.test",
    hostname="mx.example.test",
    database_url="sqlite:",
    certificate="",
    key="",
    generated_certificate=True,
)


class SweepTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.adopted: list[str] = []
        self.waiting: list[str] = []
        self.workers = SMTPWorkers(self.clock, CONFIG, self.adopt, self.sweep, lambda: 0)

    def adopt(self, msg_id: str) -> defer.Deferred[Any]:
        self.adopted.append(msg_id)
        return defer.succeed(True)

    def sweep(self, live: frozenset[int]) -> defer.Deferred[list[str]]:
        return defer.succeed(list(self.waiting))

    def test_a_sweep_adopts_what_it_finds(self) -> None:
        """Messages a worker left in Queue/incoming/ without its notice are all adopted."""
        self.waiting = ["0000000000000001-4242-1", "0000000000000002-4242-2"]
        self.successResultOf(self.workers.sweep())
        self.assertEqual(self.adopted, self.waiting)


class _SignalledTransport:
    """A worker's process transport that records signals; the process never ends."""

    def __init__(self) -> None:
        self.pid = 4242
        self.signals: list[int] = []

    def signalProcess(self, sig: int) -> None:
        self.signals.append(sig)


class StopTests(unittest.TestCase):
    """Stopping workers ends in bounded time, whatever the workers do."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.workers = SMTPWorkers(
            self.clock,
            CONFIG,
            lambda m: defer.succeed(True),
            lambda live: defer.succeed([]),
            lambda: 0,
            grace=lambda: 2.0,
        )
        self.proc = _WorkerProcess(self.workers, 1)
        self.transport = _SignalledTransport()
        self.proc.makeConnection(self.transport)  # type: ignore[arg-type]
        self.workers.procs[1] = self.proc

    def test_a_worker_that_ends_after_sigterm(self) -> None:
        """SIGTERM, and the stop is done when the worker has ended; no SIGKILL later."""
        stopped = self.workers.stop()
        self.assertEqual(self.transport.signals, [signal.SIGTERM])
        self.assertNoResult(stopped)
        self.proc.processEnded(Failure(ProcessDone(0)))
        self.successResultOf(stopped)
        self.clock.advance(60)
        self.assertEqual(self.transport.signals, [signal.SIGTERM])

    def test_sigkill_after_the_grace_and_never_waiting_for_ever(self) -> None:
        """A worker that does not end is killed once ``server.shutdown_grace`` and a margin
        have passed; if its end is still not seen (a lost SIGCHLD, a pipe held open) the
        stop gives up on it instead of hanging the server's SIGTERM for ever."""
        stopped = self.workers.stop()
        self.clock.advance(2.0 + STOP_MARGIN - 0.1)
        self.assertEqual(self.transport.signals, [signal.SIGTERM])
        self.clock.advance(0.1)
        self.assertEqual(self.transport.signals, [signal.SIGTERM, signal.SIGKILL])
        self.assertNoResult(stopped)
        self.clock.advance(KILL_WAIT)
        self.successResultOf(stopped)
        self.assertEqual(self.workers.procs, {})  # its index is free for a new worker


class FakeSpool:
    def __init__(self) -> None:
        self.count: Optional[int] = None

        self.subscribers: list[Any] = []
        self.reserved = False  # the worker filled its reserve of pool files once open

    def set_count(self, count: int) -> None:
        self.count = count

    def subscribe(self, on_stored: Any) -> None:
        self.subscribers.append(on_stored)

    def reserve(self) -> None:
        self.reserved = True


class FakeComponents:
    """Stands in for cgtwist.app.Components: ``open`` waits for the test's ``gate``; what a
    real one lacks before it is open (``spool``, a store to reload from) is lacking here."""

    built: list[FakeComponents] = []

    def __init__(self, cfg: Any, reactor: Any, settings: Any, tls: Any, stats: Any = None) -> None:
        self.gate: defer.Deferred[None] = defer.Deferred()
        self.opened = False
        self.reloads = 0
        self.events: list[str] = []
        FakeComponents.built.append(self)

    async def open_reception(self) -> None:
        await self.gate
        self.spool = FakeSpool()
        self.opened = True
        self.events.append("open")

    async def reload_settings(self) -> None:
        if not self.opened:
            raise AttributeError("'NoneType' object has no attribute 'get_settings'")
        self.reloads += 1

    def factory_for(self, spec: ListenerSpec) -> Any:
        return object()

    def abort_sessions(self) -> int:
        return 0

    async def drain(self) -> None:
        self.events.append("drain")

    async def close(self) -> None:
        self.events.append("close")


class WorkerStartTests(unittest.TestCase):
    """Lines from the server that arrive while a worker still opens its components (the
    server sends the queue size once a second; opening the store can take longer)."""

    def setUp(self) -> None:
        FakeComponents.built = []
        self.patch(app, "Components", FakeComponents)
        self.reactor = MemoryReactorClock()
        sock = socket.socket()
        self.addCleanup(sock.close)
        spec = ListenerSpec(protocol="smtp", address="127.0.0.1", port=0, tls="starttls")
        self.worker = Worker(CONFIG, [(os.dup(sock.fileno()), spec)], 1, self.reactor)
        self.patch(self.worker.tls, "reload", lambda: True)
        self.link = self.worker.link
        self.link.makeConnection(StringTransport())
        self.started = defer.ensureDeferred(self.worker.start())  # old code: a coroutine

    def components(self) -> FakeComponents:
        [c] = FakeComponents.built
        return c

    def test_queue_size_before_open_applies_once_open(self) -> None:
        """``C <n>`` before the components are open neither kills the worker's link to the
        server nor is lost: the spool hears it once it exists."""
        self.link.dataReceived(b"C 7\n")
        self.assertTrue(self.link.transport.connected)  # type: ignore[union-attr]
        self.components().gate.callback(None)
        self.successResultOf(self.started)
        self.assertEqual(self.components().spool.count, 7)
        self.assertEqual(len(self.reactor.adoptedPorts), 1)
        self.link.dataReceived(b"C 9\n")
        self.assertEqual(self.components().spool.count, 9)

    def test_stored_mail_is_named_to_the_server(self) -> None:
        """The worker opens only the receiving half and subscribes its link to the spool: a
        message the spool made durable is named to the server on the pipe (``Q <id>``)."""
        self.components().gate.callback(None)
        self.successResultOf(self.started)
        [on_stored] = self.components().spool.subscribers
        self.assertTrue(self.components().spool.reserved)  # its first message in place too
        on_stored("0000000000000001-1-1", None, b"")
        self.reactor.advance(0)  # the link's lines go out at the end of the turn
        self.assertEqual(self.link.transport.value(), b"Q 0000000000000001-1-1\n")  # type: ignore[union-attr]

    def test_reload_before_open_is_done_once_open(self) -> None:
        """``R`` while opening is not tried on half-built components (a logged failure) but
        done after open, since the settings may have changed after open read them."""
        self.link.dataReceived(b"R\n")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.components().gate.callback(None)
        self.successResultOf(self.started)
        self.assertEqual(self.components().reloads, 1)

    def test_sigterm_while_opening_waits_and_never_accepts(self) -> None:
        """A stop during start waits for open, closes what it opened, adopts no socket."""
        stopped = defer.ensureDeferred(self.worker.stop())
        self.assertNoResult(stopped)
        self.components().gate.callback(None)
        self.successResultOf(self.started)
        self.successResultOf(stopped)
        self.assertEqual(self.components().events, ["open", "drain", "close"])
        self.assertEqual(self.reactor.adoptedPorts, [])

    def test_sigterm_before_start_ran_does_not_wait(self) -> None:
        """A worker told to stop before its start ran (the reactor stopping during start-up)
        stops at once instead of waiting for a start that never comes."""
        worker = Worker(CONFIG, [], 2, MemoryReactor())
        self.successResultOf(defer.ensureDeferred(worker.stop()))


class LogRelayTests(unittest.TestCase):
    """A worker's log line on its way into the server's log: the worker's observer writes
    JSON (cgtwist.smtpworker.child.StderrObserver), the server's relay_log re-emits it."""

    TEXTS = (
        "accepted msg_id=1-2-3 peer=127.0.0.1 sender=a@b.test recipients=['c@d.test'] size=5",
        'quotes " and \\ backslash, tab\t and a line\nbreak',
        "non-ASCII: Grüße, 日本, \U0001f600, and a lone \ud800",
        "",
    )

    def lines(self, batched: bool) -> list[bytes]:
        from twisted.logger import LogLevel

        from cgtwist.smtpworker.child import StderrObserver

        out = _Lines()
        observer = StderrObserver(out, MemoryReactor(), batched)
        for text in self.TEXTS:
            observer(
                dict(
                    log_level=LogLevel.warn,
                    log_namespace="cgtwist.x",
                    log_format=text.replace("{", "{{"),
                )
            )
        observer(dict(log_level=LogLevel.info, log_namespace=None, log_format="no namespace"))
        observer.flush()
        return out.getvalue().split(b"\n")[:-1]

    def test_worker_lines_are_json_as_before(self) -> None:
        """Each line is what json.dumps([level, namespace, text]) writes, so a server of the
        previous version reads the worker's lines and the other way round."""
        import json

        expected = [json.dumps(["warn", "cgtwist.x", t]) for t in self.TEXTS]
        expected.append(json.dumps(["info", None, "no namespace"]))
        for batched in (True, False):
            self.assertEqual([line.decode("ascii") for line in self.lines(batched)], expected)

    def test_the_server_logs_the_workers_text_level_and_name(self) -> None:
        from twisted.logger import LogLevel

        from cgtwist.logs import Logger

        seen: list[dict[str, Any]] = []

        class Relay(SMTPWorkers):
            log = Logger(namespace="cgtwist.workers", observer=seen.append)

        relay = Relay.__new__(Relay)
        for line in self.lines(batched=True) + [
            b"not json",
            b'["loud", "x", "bad level"]',
            b'["info", "x", "\xff"]',
        ]:
            relay.relay_log(2, line)
        texts = [e["text"] for e in seen]
        self.assertEqual(
            texts,
            [t for t in self.TEXTS if t]
            + ["no namespace", "not json", '["loud", "x", "bad level"]', '["info", "x", "\ufffd"]'],
        )
        self.assertEqual([e["log_level"] for e in seen][:3], [LogLevel.warn] * 3)
        self.assertEqual(seen[3]["log_level"], LogLevel.info)
        self.assertEqual(seen[4]["log_level"], LogLevel.warn)  # unreadable: shown, as a warning
        self.assertEqual({e["log_system"] for e in seen}, {"smtp-worker-2"})


class _Lines:
    """A text stream that keeps what is written, as bytes."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, data: str) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        pass

    def getvalue(self) -> bytes:
        return "".join(self.parts).encode("ascii")


class _CountingTransport(StringTransport):
    """A pipe to the server that counts the writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


class LinkTests(unittest.TestCase):
    """The worker's lines to the server (cgtwist.smtpworker.child.MasterLink): a message's
    ``Q`` and its ``accepted`` log line go out in one write at the end of the turn."""

    def setUp(self) -> None:
        from twisted.logger import LogLevel

        from cgtwist.smtpworker.child import MasterLink, StderrObserver

        self.reactor = MemoryReactorClock()
        worker = Worker(CONFIG, [], 1, self.reactor)
        self.link: MasterLink = worker.link
        self.pipe = _CountingTransport()
        self.link.makeConnection(self.pipe)
        self.stderr = _Lines()
        self.observer = StderrObserver(self.stderr, self.reactor, True, self.link)
        self.info = LogLevel.info

    def log(self, text: str) -> None:
        self.observer(dict(log_level=self.info, log_namespace="cgtwist.x", log_format=text))

    def test_q_and_its_log_line_in_one_write(self) -> None:
        self.link.stored("0000000000000001-1-1", Envelope(""), b"")
        self.log("accepted msg_id=0000000000000001-1-1")
        self.assertEqual(self.pipe.value(), b"")  # not before the turn ends
        self.reactor.advance(0)
        self.assertEqual(
            self.pipe.value(),
            b"Q 0000000000000001-1-1\n"
            b'L ["info", "cgtwist.x", "accepted msg_id=0000000000000001-1-1"]\n',
        )
        self.assertEqual(self.pipe.writes, 1)
        self.observer.flush()
        self.assertEqual(self.stderr.getvalue(), b"")

    def test_a_long_line_or_no_link_goes_to_standard_error(self) -> None:
        self.log("x" * 5000)
        self.observer.flush()
        self.reactor.advance(0)
        self.assertEqual(self.pipe.value(), b"")
        self.assertIn(b"x" * 5000, self.stderr.getvalue())
        self.link.connectionLost(None)  # the server is gone: the worker's own lines remain
        self.log("after")
        self.observer.flush()
        self.assertIn(b'"after"', self.stderr.getvalue())

    def test_after_the_reactor_stopped_lines_go_at_once(self) -> None:
        self.link.stored("0000000000000001-1-2", Envelope(""), b"")
        self.link.unbuffer()  # the reactor's "after shutdown"
        self.assertEqual(self.pipe.value(), b"Q 0000000000000001-1-2\n")
        self.log("Main loop terminated.")
        self.assertEqual(self.pipe.value().count(b"\n"), 2)

    def test_the_server_relays_an_l_line(self) -> None:
        from cgtwist.logs import Logger

        seen: list[dict[str, Any]] = []

        class Relay(SMTPWorkers):
            log = Logger(namespace="cgtwist.workers", observer=seen.append)

        relay = Relay.__new__(Relay)
        proc = _WorkerProcess.__new__(_WorkerProcess)
        proc.index = 3
        relay.line(proc, b'L ["warn", "cgtwist.x", "hello"]')
        self.assertEqual(
            [(e["text"], e["log_level"].name, e["log_system"]) for e in seen],
            [("hello", "warn", "smtp-worker-3")],
        )
