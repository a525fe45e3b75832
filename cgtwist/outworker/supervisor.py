"""The server's side of the outbound delivery workers (``smtp.delivery_workers``).

Owns the worker processes (started, restarted and stopped by cgtwist.workers.supervisor) and
the attempts handed to them: each attempt goes to the worker its destination hashes to, so
that worker's idle connection to the destination carries the next message too (the
connection cache is per process); while that worker is down (restarting), to another running
one. An attempt is answered by the worker's ``D`` line, checked whole
(cgtwist.outworker.wire); a worker that ends leaves its unanswered attempts answered with
None (the agent makes their recipients pending, and the queue retries them). The
administrator's settings go to every worker when it starts and whenever they change.
A worker whose reactor stops turning (a bug looping in it) would hold its attempts, and the
queue's slots for their destinations, for ever: every PROBE_INTERVAL seconds each worker
gets a probe it answers at once, and one that leaves it unanswered for
``smtp.delivery_worker_stall`` seconds is killed (and restarted; its attempts are retried).
A slow remote server never trips it: the worker's reactor answers while it waits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import zlib
from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from cgtwist.config import BootstrapConfig
from cgtwist.outworker.wire import (
    MAX_HEADER,
    MAX_RECIPIENTS,
    PROBE,
    BadFrame,
    Result,
    decode_result,
    encode_request,
    encode_settings,
)
from cgtwist.runtime.fastwrite import write_child_now
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, Recipient
from cgtwist.workers.supervisor import ChildSpec, ProcessReactor, Supervisor, WorkerProcess

PROBE_INTERVAL = 10.0


@dataclasses.dataclass
class _Outstanding:
    index: int  # the worker it went to
    answer: defer.Deferred[Optional[Result]]
    recipients: int


class OutboundWorkers(Supervisor):
    """``OutboundWorkers(reactor, cfg, settings, grace)``: ``configure(n)`` runs ``n``
    workers (0: none); ``submit(...)`` hands one attempt to one of them."""

    kind = "outbound worker"
    max_line = MAX_HEADER

    def __init__(
        self,
        reactor: ProcessReactor,
        cfg: BootstrapConfig,
        settings: SettingsHolder,
        grace: Callable[[], float] = lambda: 30.0,
        executable: str = sys.executable,
    ) -> None:
        super().__init__(reactor, grace, executable)
        self.cfg = cfg
        self.settings = settings
        self._outstanding: dict[int, _Outstanding] = {}
        self._next = 0
        self._probed: dict[int, float] = {}  # worker index -> when its unanswered probe went
        # The workers that said they are ready (H): a worker takes a few seconds to import
        # its modules on a busy machine, and the server delivers itself meanwhile rather than
        # leaving the attempts in a pipe nobody reads yet.
        self._ready: set[WorkerProcess] = set()
        self._prober: Optional[IDelayedCall] = None
        # Attempts handed over in this reactor turn, per worker, written at its end (_flush)
        self._unsent: dict[WorkerProcess, list[tuple[int, bytes]]] = {}
        self._flush_call: Optional[IDelayedCall] = None

    def configure(self, n: int) -> defer.Deferred[None]:
        """Run ``n`` workers: start or stop the difference; to those kept, the settings."""
        n = max(0, int(n))
        if n == self.wanted:
            self.send_all(encode_settings(dict(self.settings.current.overrides)))
            return defer.succeed(None)
        self.wanted = n
        extra = [p for i, p in self.procs.items() if i > n]
        for i in [i for i in self._restarts if i > n]:
            call = self._restarts.pop(i)
            if call.active():
                call.cancel()
        self.start_missing()
        self.send_all(encode_settings(dict(self.settings.current.overrides)))
        self._start_prober()
        return self._stop_procs(extra)

    def settings_changed(self, settings: Settings) -> None:
        """Fits ``SettingsHolder.subscribe``: workers follow ``smtp.delivery_workers`` and
        read the other settings from the server."""
        d = self.configure(settings.smtp.delivery_workers)
        d.addErrback(lambda f: self.log.failure("configuring the outbound workers failed", f))

    def stop(self) -> defer.Deferred[None]:
        if self._prober is not None and self._prober.active():
            self._prober.cancel()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
            self._flush()  # what they were given is answered (aborted: pending) as they stop
        return super().stop()

    # -- liveness --------------------------------------------------------------------------------
    def _start_prober(self) -> None:
        if self._prober is None and not self.stopping:
            self._prober = self.reactor.callLater(PROBE_INTERVAL, self._tick)

    def _tick(self) -> None:
        self._prober = None
        try:
            self.probe()
        except Exception:
            self.log.failure("outbound worker probe failed")
        if self.wanted:
            self._start_prober()

    def probe(self) -> None:
        """Kill a worker that left its probe unanswered too long; probe the others."""
        limit = self.settings.current.smtp.delivery_worker_stall
        now = self.reactor.seconds()
        for index, proc in list(self.procs.items()):
            if proc.pid is None:
                continue
            sent = self._probed.get(index)
            if sent is None:
                self._probed[index] = now
                proc.send(PROBE)
            elif limit and now - sent >= limit:
                self.log.error(
                    "outbound worker {index} (pid {pid}) has not answered for {s:.0f}s; "
                    "killing it (its attempts are retried)",
                    index=index,
                    pid=proc.os_pid,
                    s=now - sent,
                )
                self._probed.pop(index, None)
                self._signal(proc, signal.SIGKILL)

    # -- processes -------------------------------------------------------------------------------
    def child(self, index: int) -> Optional[ChildSpec]:
        env = dict(os.environ)
        env["CGTWIST_OUTWORKER"] = json.dumps(
            {"config": dataclasses.asdict(self.cfg), "index": index}
        )
        return [self.executable, "-m", "cgtwist.outworker.child"], env, {0: "w", 1: "r", 2: "r"}

    def child_started(self, proc: WorkerProcess) -> None:
        self._probed.pop(proc.index, None)
        self._ready.discard(proc)
        proc.send(encode_settings(dict(self.settings.current.overrides)))

    def child_ended(self, proc: WorkerProcess) -> None:
        """Its unanswered attempts are answered None: not delivered as far as we know."""
        self._ready.discard(proc)
        lost = [n for n, o in self._outstanding.items() if o.index == proc.index]
        if lost:
            self.log.warn(
                "outbound worker {index} ended with {n} attempt(s) in flight; they are retried",
                index=proc.index,
                n=len(lost),
            )
        for n in lost:
            self._outstanding.pop(n).answer.callback(None)

    # -- attempts --------------------------------------------------------------------------------
    def pick(self, queue: str) -> Optional[WorkerProcess]:
        """The worker for destination ``queue``: its own by hash, else another ready one."""
        if not self.wanted:
            return None
        h = zlib.crc32(queue.lower().encode("utf-8", "replace"))
        proc = self.procs.get(h % self.wanted + 1)
        if proc is not None and proc in self._ready and not proc.retired:
            return proc
        ready = sorted(p.index for p in self._ready if not p.retired)
        return self.procs.get(ready[h % len(ready)]) if ready else None

    def submit(
        self,
        queue: str,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
    ) -> Optional[defer.Deferred[Optional[Result]]]:
        """Hand one attempt to a worker; None when no worker runs, or when the attempt's
        line or its answer's could be over what the other side reads (``MAX_HEADER``:
        more than ``MAX_RECIPIENTS`` of one destination's recipients, a big list's post),
        which would be refused and never answered: the server delivers those itself. The
        Deferred fires with the worker's answer, or None when the worker ended before
        answering."""
        proc = self.pick(queue)
        if proc is None or self.stopping:
            return None
        frame = encode_request(self._next + 1, msg_id, queue, envelope, data, recipients)
        if len(recipients) > MAX_RECIPIENTS or len(frame) - len(data) > MAX_HEADER:
            self.log.info(
                "{msg_id}: attempt to {queue} with {n} recipients made by the server: its line "
                "is over what a delivery worker reads",
                msg_id=msg_id,
                queue=queue,
                n=len(recipients),
            )
            return None
        if proc.transport is None or proc.pid is None:
            return None
        self._next += 1
        n = self._next
        out = _Outstanding(proc.index, defer.Deferred(), len(recipients))
        self._outstanding[n] = out
        self._unsent.setdefault(proc, []).append((n, frame))
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)
        return out.answer

    def _flush(self) -> None:
        """The attempts handed over in the last reactor turn, into each worker's pipe with one
        write (``fastwrite.write_child_now``). One write per attempt woke the worker for each
        (on 2 cores a woken worker preempts the server's reactor): 1 ms of the server's
        reactor time in 7 per attempt went into those writes (cProfile of an outbound drain).
        A worker that ended meanwhile, or whose pipe refuses the write, has those attempts
        answered None (retried), as if it had ended after taking them."""
        self._flush_call = None
        unsent, self._unsent = self._unsent, {}
        for proc, frames in unsent.items():
            if _send_now(proc, b"".join(frame for _, frame in frames)):
                continue
            for n, _ in frames:
                out = self._outstanding.pop(n, None)
                if out is not None:
                    out.answer.callback(None)

    def line(self, proc: WorkerProcess, line: bytes) -> None:
        """A worker's answer; a line that is not one is logged and dropped (the attempt it
        may have meant stays outstanding until answered or until the worker ends)."""
        if line == b"P":
            self._probed.pop(proc.index, None)
            return
        if line == b"H":
            if proc.pid is not None and not proc.retired:
                self._ready.add(proc)
            return
        if not line:
            return
        try:
            result = decode_result(line)
        except BadFrame as e:
            self.log.warn(
                "outbound worker {index}: bad line dropped ({why}): {line!r}",
                index=proc.index,
                why=str(e),
                line=line[:200],
            )
            return
        out = self._outstanding.get(result.n)
        if out is None or out.index != proc.index:
            self.log.warn(
                "outbound worker {index}: answer to attempt {n} it was not given; dropped",
                index=proc.index,
                n=result.n,
            )
            return
        del self._outstanding[result.n]
        if len(result.states) != out.recipients:
            self.log.warn(
                "outbound worker {index}: {got} states for {want} recipients; retried",
                index=proc.index,
                got=len(result.states),
                want=out.recipients,
            )
            out.answer.callback(None)
            return
        out.answer.callback(result)

    def in_flight(self) -> int:
        return len(self._outstanding)


def _send_now(proc: WorkerProcess, frame: bytes) -> bool:
    """``WorkerProcess.send``, written into the worker's pipe at once when nothing waits
    before it (``fastwrite.write_child_now``), so the worker starts the attempt while this
    reactor turn goes on; False when the worker is not running."""
    if proc.transport is None or proc.pid is None:
        return False
    try:
        write_child_now(proc.transport, frame)
    except Exception:
        return False
    return True
