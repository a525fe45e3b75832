"""The server's side of its worker processes: start, watch, restart with back-off, stop.

Owns what every kind of worker shares: one ``python -m <module>`` child per index, its pipes
(lines on standard output go to the kind's ``line``; JSON log lines on standard error are
written into the server's log with the worker named), restarting a worker that died after a
delay that grows while it keeps dying at start, and stopping that never waits for ever:
SIGTERM, SIGKILL once the grace and a margin have passed, and a worker still not seen to end
KILL_WAIT seconds later is given up (logged). What a worker is for (the sockets it gets, what
its lines mean, what its death leaves to clean up) belongs to the subclass:
cgtwist.smtpworker.supervisor for receiving, cgtwist.outworker.supervisor for delivering.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from typing import Callable, Mapping, Optional, Protocol, Sequence, Union

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IProcessProtocol, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from cgtwist.config import BootstrapConfig
from cgtwist.logs import Logger
from cgtwist.types import ListenerSpec

STOP_MARGIN = 5.0  # after its own drain grace, a stopping worker closes its store and pools
KILL_WAIT = 5.0  # after SIGKILL, how long the server waits to see the worker end
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A worker's log level by name (LogLevel.levelWithName walks Twisted's constants each time).
_LEVELS = {level.name: level for level in LogLevel.iterconstants()}
# What json.loads(line) does for a worker's (ASCII) log line, without its wrapper's type
# tests and encoding detection: a line per accepted message.
_DECODER = json.JSONDecoder()

ChildFDs = dict[int, Union[int, str]]
ChildSpec = tuple[list[str], dict[str, str], ChildFDs]  # argv, environment, childFDs


def listener_child(
    executable: str,
    module: str,
    cfg: BootstrapConfig,
    sockets: Sequence[tuple[int, ListenerSpec]],
    index: int,
    **extra: object,
) -> ChildSpec:
    """A worker child serving the server's listening ``sockets`` ([(fd, ListenerSpec)]):
    ``python -m module``, each socket passed as fd 3, 4, ... and described with the bootstrap
    config ``cfg``, the worker's ``index`` and ``extra`` fields in ``CGTWIST_WORKER`` (JSON,
    read by cgtwist.smtpworker.child.decode_spec). The one spec the SMTP and the IMAP/POP3
    workers share, so both children read what both supervisors write."""
    fds: ChildFDs = {0: "w", 1: "r", 2: "r"}
    listeners = []
    for child_fd, (fd, spec) in enumerate(sockets, start=3):
        fds[child_fd] = fd
        listeners.append(dict(dataclasses.asdict(spec), fd=child_fd))
    env = dict(os.environ)
    env["CGTWIST_WORKER"] = json.dumps(
        {"config": dataclasses.asdict(cfg), "listeners": listeners, "index": index, **extra}
    )
    return [executable, "-m", module], env, fds


class ProcessReactor(Protocol):
    """What a supervisor needs of the reactor: time, timers, child processes."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall: ...

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: str,
        args: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        path: Optional[str] = None,
        uid: Optional[int] = None,
        gid: Optional[int] = None,
        usePTY: bool = False,
        childFDs: Optional[Mapping[int, Union[int, str]]] = None,
    ) -> IProcessTransport: ...


class WorkerProcess(ProcessProtocol):
    """One worker: its pipes, its pid, and the Deferred that fires when it has exited."""

    def __init__(self, owner: Supervisor, index: int) -> None:
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
        transport = self.transport
        if transport is not None:
            self.pid = self.os_pid = transport.pid

    def outReceived(self, data: bytes) -> None:
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            self.owner.line(self, line)
        if len(self._out) > self.owner.max_line:
            self.owner.log.warn(
                "{kind} {index}: output line over {n} bytes dropped",
                kind=self.owner.kind,
                index=self.index,
                n=self.owner.max_line,
            )
            self._out = b""

    def errReceived(self, data: bytes) -> None:
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        for line in lines:
            self.owner.relay_log(self.index, line)
        if len(self._err) > 1 << 20:
            self.owner.relay_log(self.index, self._err)
            self._err = b""

    def send(self, data: bytes) -> bool:
        """Write ``data`` (framed by the caller) to the worker's standard input; False when
        the worker is not running."""
        if self.transport is not None and self.pid is not None:
            try:
                self.transport.write(data)
                return True
            except Exception:
                pass
        return False

    def processEnded(self, reason: Failure) -> None:
        if self._err:
            self.owner.relay_log(self.index, self._err)
        self.pid = None
        self.owner.ended(self, reason)
        self.ended.callback(None)


class Supervisor:
    """Base of the worker supervisors. Subclasses set ``kind`` (for log lines) and
    ``max_line``, and write ``child(index)`` (argv, environment, childFDs of a new worker, or
    None not to start it), ``line(proc, line)`` and optionally ``child_ended(proc)``.

    ``grace()`` is the seconds a stopping worker gets to finish (``server.shutdown_grace``,
    which the worker reads too).
    """

    kind = "worker"
    max_line = 4096
    log = Logger(namespace="cgtwist.workers")

    def __init__(
        self,
        reactor: ProcessReactor,
        grace: Callable[[], float] = lambda: 30.0,
        executable: str = sys.executable,
    ) -> None:
        self.reactor = reactor
        self._grace = grace
        self.executable = executable
        self.wanted = 0
        self.procs: dict[int, WorkerProcess] = {}
        self._failures: dict[int, int] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self.stopping = False

    # -- what a kind of worker says ------------------------------------------------------------
    def child(self, index: int) -> Optional[ChildSpec]:
        """argv, environment and childFDs of worker ``index``; None: do not start it."""
        raise NotImplementedError

    def line(self, proc: WorkerProcess, line: bytes) -> None:
        """One line of a worker's standard output."""
        raise NotImplementedError

    def child_started(self, proc: WorkerProcess) -> None:
        """A worker was just started (its standard input takes writes already)."""

    def child_ended(self, proc: WorkerProcess) -> None:
        """A worker ended (planned or not), after its process handling here."""

    def make_process(self, index: int) -> WorkerProcess:
        return WorkerProcess(self, index)

    # -- processes -------------------------------------------------------------------------------
    def send_all(self, data: bytes) -> None:
        for p in self.procs.values():
            p.send(data)

    def start_missing(self) -> None:
        """Start every wanted worker that is not running (nor waiting for its restart)."""
        if self.stopping:
            return
        for i in range(1, self.wanted + 1):
            if i not in self.procs and i not in self._restarts:
                self._spawn(i)

    def _spawn(self, index: int) -> None:
        if index > self.wanted or self.stopping:
            return
        spec = self.child(index)
        if spec is None:
            return
        argv, env, fds = spec
        proto = self.make_process(index)
        self.procs[index] = proto
        self.reactor.spawnProcess(proto, self.executable, argv, env=env, childFDs=fds)
        self.child_started(proto)
        self.log.info(
            "{kind} {index} started (pid {pid})", kind=self.kind, index=index, pid=proto.pid
        )

    def ended(self, proto: WorkerProcess, reason: Failure) -> None:
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
            "{kind} {index} (pid {pid}) {how}",
            kind=self.kind,
            index=proto.index,
            pid=proto.os_pid,
            how=how,
        )
        try:
            self.child_ended(proto)
        except Exception:
            self.log.failure(
                "{kind} {index}: cleaning up after it failed", kind=self.kind, index=proto.index
            )
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

    def _stop_procs(self, procs: list[WorkerProcess]) -> defer.Deferred[None]:
        """SIGTERM each (they finish their work), SIGKILL after the grace and a margin; fires
        when all have ended or been given up."""
        kill_after = self._grace() + STOP_MARGIN
        ds = []
        for p in procs:
            p.retired = True
            self._signal(p, signal.SIGTERM)
            ds.append(self._until_ended(p, kill_after))
        return defer.gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)

    def _until_ended(self, p: WorkerProcess, kill_after: float) -> defer.Deferred[None]:
        """Fires when ``p`` has ended, or KILL_WAIT seconds after its SIGKILL if it still has
        not: a server that is stopping must not hang on a child it cannot see end (a lost
        SIGCHLD, a pipe some other process keeps open)."""
        done: defer.Deferred[None] = defer.Deferred()

        def kill() -> None:
            self.log.warn(
                "{kind} {index} (pid {pid}) still running {s:.0f}s after SIGTERM; killing it",
                kind=self.kind,
                index=p.index,
                pid=p.os_pid,
                s=kill_after,
            )
            self._signal(p, signal.SIGKILL)

        def give_up() -> None:
            self.log.error(
                "{kind} {index} (pid {pid}) not seen to end {s:.0f}s after "
                "SIGKILL; not waiting for it",
                kind=self.kind,
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

        def ended(result: object) -> object:
            for t in timers:
                if t.active():
                    t.cancel()
            if not done.called:
                done.callback(None)
            return result

        p.ended.addBoth(ended)
        return done

    def _signal(self, p: WorkerProcess, sig: int) -> None:
        try:
            if p.transport is not None and p.pid is not None:
                p.transport.signalProcess(sig)
        except (error.ProcessExitedAlready, OSError):
            pass

    def stop(self) -> defer.Deferred[None]:
        """Stop every worker (SIGTERM, then SIGKILL after the grace)."""
        self.stopping = True
        self._cancel_restarts()
        return self._stop_procs(list(self.procs.values()))

    # -- logs ------------------------------------------------------------------------------------
    def relay_log(self, index: int, line: bytes) -> None:
        """A worker's JSON log line, into this process's log with the worker named."""
        try:
            level_name, namespace, text = _DECODER.decode(line.decode("utf-8"))
            level = _LEVELS[level_name]
        except Exception:
            level, namespace, text = (
                LogLevel.warn,
                "cgtwist.worker",
                line.decode("utf-8", "replace"),
            )
        if not text:
            return
        self.log.emit(
            level,
            "{text}",
            text=text,
            log_namespace=namespace,
            log_system=f"{self.kind.replace(' ', '-')}-{index}",
        )
