"""The server's side of SMTP worker processes (``smtp.workers``): start, watch, restart, stop.

Owns the child processes of cgtwist.smtpworker.child and the pipes to them: it gives each the SMTP
listening sockets (``childFDs``), adopts every message a worker names (``Q <id>``) through the
queue manager, relays the worker's log lines into the server's log, forwards reloads (``R``)
and the queue size (``C <n>``), and sweeps ``Queue/incoming/`` whenever a worker ends (a
worker killed between its 250 and its notice leaves the message there) and once a minute.
Starting, restarting with back-off, stopping within a bound and relaying the log are the
shared process handling of cgtwist.workers.supervisor.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from cgtwist.config import BootstrapConfig
from cgtwist.types import ListenerSpec
from cgtwist.workers.supervisor import (
    KILL_WAIT,
    RESTART_DELAYS,
    STOP_MARGIN,
    ChildSpec,
    Supervisor,
    WorkerProcess,
    listener_child,
)

__all__ = ["KILL_WAIT", "RESTART_DELAYS", "STOP_MARGIN", "SMTPWorkers", "_WorkerProcess"]

SWEEP_INTERVAL = 60.0
COUNT_INTERVAL = 1.0
_WorkerProcess = WorkerProcess  # the name the tests and earlier code use


class SMTPWorkers(Supervisor):
    """``SMTPWorkers(reactor, cfg, adopt, sweep, count, grace)``.

    ``adopt(msg_id)`` -> Deferred: take one message from Queue/incoming/ (the queue manager);
    ``sweep(live_pids)`` -> Deferred[list of ids] waiting there (the spool); ``count()`` the
    number of queued messages; ``grace()`` the seconds a stopping worker gets to finish its
    transactions (``server.shutdown_grace``, which the worker reads too); ``counted(text)``
    adds what a worker counted (its ``S`` lines: cgtwist.stats.Statistics.add_forwarded).
    ``configure(n, sockets)`` starts, restarts or stops workers.
    """

    kind = "smtp worker"

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
        super().__init__(reactor, grace, executable)
        self._clock: IReactorTime = reactor
        self._counted = counted
        self.cfg = cfg
        self._adopt = adopt
        self._sweep = sweep
        self._count = count
        self.sockets: list[tuple[int, ListenerSpec]] = []
        self._last_count: Optional[int] = None
        self._timers: list[LoopingCall] = []

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
            self.start_missing()
            self._start_timers()

        return d.addCallback(start)

    def reload(self) -> None:
        self.send_all(b"R\n")

    # -- processes --------------------------------------------------------------------------
    def child(self, index: int) -> Optional[ChildSpec]:
        if not self.sockets:
            return None
        self._last_count = None  # the new worker hears the queue size at the next tick
        return listener_child(
            self.executable, "cgtwist.smtpworker.child", self.cfg, self.sockets, index
        )

    def line(self, proc: WorkerProcess, line: bytes) -> None:
        if line.startswith(b"Q "):
            self.adopt(line[2:].decode("ascii", "replace"))
        elif line.startswith(b"S "):
            self.counted(proc.index, line[2:])
        elif line.startswith(b"L "):  # a log line, sent with the Q of its message
            self.relay_log(proc.index, line[2:])
        elif line:
            self.log.warn(
                "smtp worker {index}: unexpected output {line!r}",
                index=proc.index,
                line=line[:200],
            )

    def child_ended(self, proc: WorkerProcess) -> None:
        """A worker killed between its 250 and its notice leaves the message in
        Queue/incoming/: adopt it now."""
        self.sweep()

    def stop(self) -> defer.Deferred[None]:
        """Stop every worker (graceful, as ``configure`` does) and the timers."""
        for t in self._timers:
            if t.running:
                t.stop()
        self._timers = []
        return super().stop()

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
            self.send_all(b"C %d\n" % n)

    def _start_timers(self) -> None:
        if self._timers or not self.wanted:
            return
        for fn, every in ((self._send_count, COUNT_INTERVAL), (self.sweep, SWEEP_INTERVAL)):
            loop = LoopingCall(fn)
            loop.clock = self._clock
            loop.start(every, now=False).addErrback(
                lambda f: self.log.failure("smtp worker timer failed", f)
            )
            self._timers.append(loop)
