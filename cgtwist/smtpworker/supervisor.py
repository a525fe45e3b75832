"""The server's side of SMTP worker processes (``smtp.workers``): start, watch, restart, stop.

Owns the child processes of cgtwist.smtpworker.child and the pipes to them: it gives each the SMTP
listening sockets (``childFDs``), adopts every message a worker names (``Q <id>``) through the
queue manager, relays the worker's log lines into the server's log, forwards reloads (``R``)
and the queue size (``C <n>``), and sweeps ``Queue/incoming/`` whenever a worker ends (a
worker killed between its 250 and its notice leaves the message there) and once a minute.
A worker that dies is restarted after a delay that grows while it keeps dying at start.
Stopping never waits for ever: SIGTERM, SIGKILL once the grace and a margin have passed, and
a worker still not seen to end KILL_WAIT seconds later is given up (logged).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from typing import Any, Callable, Optional

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from cgtwist.config import BootstrapConfig
from cgtwist.logs import Logger
from cgtwist.types import ListenerSpec

SWEEP_INTERVAL = 60.0
COUNT_INTERVAL = 1.0
STOP_MARGIN = 5.0  # after its own drain grace, a stopping worker closes its store and pools
KILL_WAIT = 5.0  # after SIGKILL, how long the server waits to see the worker end
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class _WorkerProcess(ProcessProtocol):
    """One worker: its pipes, its pid, and the Deferred that fires when it has exited."""

    def __init__(self, owner: SMTPWorkers, index: int) -> None:
        self.owner = owner
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.started_at = owner.reactor.seconds()
        self._out = b""
        self._err = b""
        self.pid: Optional[int] = None  # while it runs
        self.os_pid: Optional[int] = None  # for the log line after it ended
        self.retired = False  # stopped on purpose (reconfigured or shutting down): no restart

    def connectionMade(self) -> None:
        self.pid = self.os_pid = self.transport.pid  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            if line.startswith(b"Q "):
                self.owner.adopt(line[2:].decode("ascii", "replace"))
            elif line.startswith(b"S "):
                self.owner.counted(self.index, line[2:])
            elif line:
                self.owner.log.warn(
                    "smtp worker {index}: unexpected output {line!r}",
                    index=self.index,
                    line=line[:200],
                )
        if len(self._out) > 4096:
            self._out = b""

    def errReceived(self, data: bytes) -> None:
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        for line in lines:
            self.owner.relay_log(self.index, line)
        if len(self._err) > 1 << 20:
            self.owner.relay_log(self.index, self._err)
            self._err = b""

    def send(self, line: bytes) -> None:
        if self.transport is not None and self.pid is not None:
            try:
                self.transport.write(line + b"\n")
            except Exception:
                pass

    def processEnded(self, reason: Failure) -> None:
        if self._err:
            self.owner.relay_log(self.index, self._err)
        self.pid = None
        self.owner.ended(self, reason)
        self.ended.callback(None)


class SMTPWorkers:
    """``SMTPWorkers(reactor, cfg, adopt, sweep, count, grace)``.

    ``adopt(msg_id)`` -> Deferred: take one message from Queue/incoming/ (the queue manager);
    ``sweep(live_pids)`` -> Deferred[list of ids] waiting there (the spool); ``count()`` the
    number of queued messages; ``grace()`` the seconds a stopping worker gets to finish its
    transactions (``server.shutdown_grace``, which the worker reads too); ``counted(text)``
    adds what a worker counted (its ``S`` lines: cgtwist.stats.Statistics.add_forwarded).
    ``configure(n, sockets)`` starts, restarts or stops workers.
    """

    log = Logger(namespace="cgtwist.workers")

    def __init__(
        self,
        reactor: Any,
        cfg: BootstrapConfig,
        adopt: Callable[[str], defer.Deferred[Any]],
        sweep: Callable[[frozenset[int]], defer.Deferred[list[str]]],
        count: Callable[[], int],
        grace: Callable[[], float] = lambda: 30.0,
        executable: str = sys.executable,
        counted: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.reactor = reactor
        self._counted = counted
        self.cfg = cfg
        self._adopt = adopt
        self._sweep = sweep
        self._count = count
        self._grace = grace
        self.executable = executable
        self.wanted = 0
        self.sockets: list[tuple[int, ListenerSpec]] = []
        self.procs: dict[int, _WorkerProcess] = {}
        self._failures: dict[int, int] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._last_count: Optional[int] = None
        self._timers: list[LoopingCall] = []
        self.stopping = False

    # -- configuration ----------------------------------------------------------------------
    def configure(self, n: int, sockets: list[tuple[int, ListenerSpec]]) -> defer.Deferred[None]:
        """Run ``n`` workers over ``sockets`` (fd, listener); restart them all when either
        changed, else just forward a reload."""
        n = max(0, int(n))
        key = [(fd, dataclasses.astuple(s)) for fd, s in sockets]
        same = n == self.wanted and key == [(fd, dataclasses.astuple(s)) for fd, s in self.sockets]
        if same:
            self.reload()
            return defer.succeed(None)
        old = list(self.procs.values())
        self.wanted, self.sockets = n, list(sockets)
        self._cancel_restarts()
        d = self._stop_procs(old)

        def start(_: Any) -> None:
            if self.stopping:
                return
            for i in range(1, self.wanted + 1):
                if i not in self.procs:
                    self._spawn(i)
            self._start_timers()

        return d.addCallback(start)

    def reload(self) -> None:
        for p in self.procs.values():
            p.send(b"R")

    # -- processes --------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        if not self.sockets or index > self.wanted or self.stopping:
            return
        fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        listeners = []
        for child_fd, (fd, spec) in enumerate(self.sockets, start=3):
            fds[child_fd] = fd
            listeners.append(dict(dataclasses.asdict(spec), fd=child_fd))
        spec_json = json.dumps(
            {"config": dataclasses.asdict(self.cfg), "listeners": listeners, "index": index}
        )
        env = dict(os.environ)
        env["CGTWIST_WORKER"] = spec_json
        proto = _WorkerProcess(self, index)
        self.procs[index] = proto
        self._last_count = None  # the new worker hears the queue size at the next tick
        self.reactor.spawnProcess(
            proto,
            self.executable,
            [self.executable, "-m", "cgtwist.smtpworker.child"],
            env=env,
            childFDs=fds,
        )
        self.log.info("smtp worker {index} started (pid {pid})", index=index, pid=proto.pid)

    def ended(self, proto: _WorkerProcess, reason: Failure) -> None:
        if self.procs.get(proto.index) is proto:
            del self.procs[proto.index]
        status = reason.value
        clean = isinstance(status, error.ProcessDone)
        how = (
            "exited"
            if clean
            else f"ended ({getattr(status, 'exitCode', None)}, signal {getattr(status, 'signal', None)})"
        )
        planned = self.stopping or proto.index > self.wanted or proto.retired
        (self.log.info if planned else self.log.error)(
            "smtp worker {index} (pid {pid}) {how}", index=proto.index, pid=proto.os_pid, how=how
        )
        self.sweep()
        if planned:
            return
        lived = self.reactor.seconds() - proto.started_at
        failures = 0 if lived > 60 else self._failures.get(proto.index, 0) + 1
        self._failures[proto.index] = failures
        delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
        self._restarts[proto.index] = self.reactor.callLater(delay, self._respawn, proto.index)

    def _respawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if index not in self.procs:
            self._spawn(index)

    def _cancel_restarts(self) -> None:
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()

    def _stop_procs(self, procs: list[_WorkerProcess]) -> defer.Deferred[None]:
        """SIGTERM each (they finish their transactions), SIGKILL after the grace and a
        margin; fires when all have ended or been given up."""
        kill_after = self._grace() + STOP_MARGIN
        ds = []
        for p in procs:
            p.retired = True
            self._signal(p, signal.SIGTERM)
            ds.append(self._until_ended(p, kill_after))
        return defer.gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)

    def _until_ended(self, p: _WorkerProcess, kill_after: float) -> defer.Deferred[None]:
        """Fires when ``p`` has ended, or KILL_WAIT seconds after its SIGKILL if it still has
        not: a server that is stopping must not hang on a child it cannot see end (a lost
        SIGCHLD, a pipe some other process keeps open)."""
        done: defer.Deferred[None] = defer.Deferred()

        def kill() -> None:
            self.log.warn(
                "smtp worker {index} (pid {pid}) still running {s:.0f}s after SIGTERM; killing it",
                index=p.index,
                pid=p.os_pid,
                s=kill_after,
            )
            self._signal(p, signal.SIGKILL)

        def give_up() -> None:
            self.log.error(
                "smtp worker {index} (pid {pid}) not seen to end {s:.0f}s after "
                "SIGKILL; not waiting for it",
                index=p.index,
                pid=p.os_pid,
                s=KILL_WAIT,
            )
            if self.procs.get(p.index) is p:  # its index may be started again (configure)
                del self.procs[p.index]
            done.callback(None)

        timers = [
            self.reactor.callLater(kill_after, kill),
            self.reactor.callLater(kill_after + KILL_WAIT, give_up),
        ]

        def ended(result: Any) -> Any:
            for t in timers:
                if t.active():
                    t.cancel()
            if not done.called:
                done.callback(None)
            return result

        p.ended.addBoth(ended)
        return done

    def _signal(self, p: _WorkerProcess, sig: int) -> None:
        try:
            if p.transport is not None and p.pid is not None:
                p.transport.signalProcess(sig)
        except (error.ProcessExitedAlready, OSError):
            pass

    def stop(self) -> defer.Deferred[None]:
        """Stop every worker (graceful, as ``configure`` does) and the timers."""
        self.stopping = True
        self._cancel_restarts()
        for t in self._timers:
            if t.running:
                t.stop()
        self._timers = []
        return self._stop_procs(list(self.procs.values()))

    # -- messages ---------------------------------------------------------------------------
    def adopt(self, msg_id: str) -> None:
        d = defer.maybeDeferred(self._adopt, msg_id)
        d.addErrback(
            lambda f: self.log.failure(
                "adopting {msg_id} from Queue/incoming failed; the next sweep tries again",
                f,
                msg_id=msg_id,
            )
        )

    def counted(self, index: int, line: bytes) -> None:
        """A worker's ``S`` line: its counts since the last one, for the server's figures."""
        if self._counted is None:
            return
        try:
            self._counted(line.decode("ascii"))
        except ValueError:  # UnicodeDecodeError too
            self.log.warn(
                "smtp worker {index}: bad counts line {line!r}", index=index, line=line[:200]
            )

    def sweep(self) -> defer.Deferred[None]:
        """Adopt whatever waits in Queue/incoming/ (a notice lost with its worker)."""
        live = frozenset(p.pid for p in self.procs.values() if p.pid is not None)
        d = defer.maybeDeferred(self._sweep, live)

        def found(ids: list[str]) -> None:
            # Each adoption only queues a move for the spool's threads (Spool.adopt), which
            # take them at most 32 to a job: many at once do not hold up the reactor.
            for msg_id in ids:
                self.adopt(msg_id)

        done: defer.Deferred[None] = d.addCallback(found)
        done.addErrback(lambda f: self.log.failure("sweeping Queue/incoming failed", f))
        return done

    def _send_count(self) -> None:
        n = self._count()
        if n != self._last_count:
            self._last_count = n
            for p in self.procs.values():
                p.send(b"C %d" % n)

    def _start_timers(self) -> None:
        if self._timers or not self.wanted:
            return
        for fn, every in ((self._send_count, COUNT_INTERVAL), (self.sweep, SWEEP_INTERVAL)):
            loop = LoopingCall(fn)
            loop.clock = self.reactor
            loop.start(every, now=False).addErrback(
                lambda f: self.log.failure("smtp worker timer failed", f)
            )
            self._timers.append(loop)

    # -- logs -------------------------------------------------------------------------------
    def relay_log(self, index: int, line: bytes) -> None:
        """A worker's JSON log line, into this process's log with the worker named."""
        try:
            level_name, namespace, text = json.loads(line)
            level = LogLevel.levelWithName(level_name)
        except Exception:
            level, namespace, text = (
                LogLevel.warn,
                "cgtwist.worker",
                line.decode("utf-8", "replace"),
            )
        if not text:
            return
        self.log.emit(
            level, "{text}", text=text, log_namespace=namespace, log_system=f"smtp-worker-{index}"
        )
