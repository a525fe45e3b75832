"""An SMTP worker process: ``python -m cgtwist.smtpworker.child``, started by the server, never by hand.

With ``smtp.workers`` = N the server (cgtwist.service) binds the SMTP listening sockets as
before, stops accepting on them itself and starts N of these processes, which share the
sockets (the kernel hands each new connection to one of them), the store and the spool. The
Python work of receiving (SMTP dialogue, checks, spool writing) then runs on other CPU cores
than the queue and delivery: Postfix's smtpd/qmgr split, for the same reason.

A worker builds only the receiving half of the server (cgtwist.app's ``open_reception``): it
stores each accepted message durably into ``Queue/incoming/`` before its 250; the spool
announces it to the worker's link to the server (``Spool.subscribe``), which names it on
standard output (``Q <id>``); the server moves it into ``Queue/`` and delivers it.
From the server on standard input: ``R`` reload settings and TLS certificate, ``C <n>`` the
queue size (for ``queue.max_messages``). End of standard input means the server is gone: the
worker closes its sockets and exits at once, so that a restarted server can bind them; what it
had stored but not reported waits in ``Queue/incoming/`` for that server's start-up.
Log events are JSON lines ``[level, namespace, text]``, which the server writes into its own
log: on standard output as ``L <line>`` beside the ``Q`` lines while the link to the server
is up (a message's ``Q`` and its ``accepted`` line in one write), else (before it, after it,
a line over 4,000 octets) on standard error. SIGTERM: stop accepting, let transactions in flight finish (the same
grace as the server's, ``server.shutdown_grace``), exit.

The worker's settings are the server's bootstrap configuration and its listeners, in the
environment variable ``CGTWIST_WORKER`` (JSON: ``config``, ``listeners`` with ``fd``,
``index``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from json.encoder import encode_basestring_ascii
from typing import Any, Optional, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IProtocol, IReactorFDSet
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogBeginner
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.config import BootstrapConfig
from cgtwist.logs import Logger, plain_text
from cgtwist.runtime.fastwrite import write_pipe_now
from cgtwist.runtime.mode import Runtime
from cgtwist.runtime.stopsignals import StopSignals
from cgtwist.settings import SettingsHolder
from cgtwist.stats import ForwardedCounts
from cgtwist.tls import ServerTLS
from cgtwist.types import Envelope, ListenerSpec

log = Logger(namespace="cgtwist.worker")

ENV = "CGTWIST_WORKER"
_quote = encode_basestring_ascii  # a JSON string, as json.dumps writes it (ensure_ascii)


def decode_spec(raw: str) -> tuple[BootstrapConfig, list[tuple[int, ListenerSpec]], int]:
    """``CGTWIST_WORKER`` -> (bootstrap config, [(fd, listener)], worker index)."""
    spec = json.loads(raw)
    c = dict(spec["config"])
    c["nameservers"] = tuple(c.get("nameservers") or ())
    cfg = BootstrapConfig(**c)
    listeners = []
    for item in spec["listeners"]:
        item = dict(item)
        fd = int(item.pop("fd"))
        listeners.append((fd, ListenerSpec(**item)))
    return cfg, listeners, int(spec.get("index", 0))


class MasterLink(LineOnlyReceiver):
    """Standard input/output to the server: subscribed to this process's spool, it names each
    stored message to the server, which adopts it.

    Its lines to the server (``Q <id>``, ``S`` counts, ``L`` log lines) are gathered and
    written once per reactor turn: a message's ``Q`` and its ``accepted`` log line come in
    the same turn and go out in one write, which the server reads at once, where a line on
    each of two pipes cost a write here and a read and a reactor turn in the server. What
    is gathered when the reactor stops is written then (``flush``, after its shutdown)."""

    delimiter = b"\n"
    MAX_LENGTH = 4096
    # A log line longer than this goes to standard error (the server drops a line on
    # standard output longer than its SMTPWorkers.max_line, 4096).
    MAX_LOG_LINE = 4000

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._pending: list[bytes] = []
        self._scheduled = False
        self._lost = False
        self._direct = False  # the reactor stopped: every line is written at once

    def stored(self, msg_id: str, envelope: Envelope, data: bytes) -> None:
        """The message is durable in Queue/incoming/: tell the server to take it (fits
        ``Spool.subscribe``)."""
        self._send(b"Q " + msg_id.encode("ascii") + b"\n")

    def counted(self, lines: bytes) -> None:
        """What the worker counted (cgtwist.stats.ForwardedCounts), for the server's
        statistics."""
        self._send(lines)

    def log_line(self, line: bytes) -> bool:
        """Send one log line (JSON, ending in a newline) as ``L <line>``; False when it must
        go to standard error instead: too long, or no link to the server."""
        if len(line) > self.MAX_LOG_LINE or self.transport is None or self._lost:
            return False
        self._send(b"L " + line)
        return True

    def _send(self, data: bytes) -> None:
        if self.transport is None:
            return
        self._pending.append(data)
        if self._direct:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self.worker.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Write what is gathered (at the end of the turn)."""
        self._scheduled = False
        data, self._pending = b"".join(self._pending), []
        if data and self.transport is not None:
            write_pipe_now(self.transport, data)

    def unbuffer(self) -> None:
        """The reactor stopped (``after shutdown``): write what is gathered and every later
        line at once, as no turn will come to do it."""
        self._direct = True
        self.flush()

    def lineReceived(self, line: bytes) -> None:
        # An exception here would make Twisted drop standard input, which the worker takes
        # for the server's death: it would exit. A line is answered by a log line instead.
        try:
            if line == b"R":
                self.worker.reload()
            elif line.startswith(b"C "):
                try:
                    count = int(line[2:])
                except ValueError:
                    log.warn("worker: bad count line from the server: {line!r}", line=line)
                    return
                self.worker.set_count(count)
            else:
                log.warn("worker: unknown line from the server: {line!r}", line=line)
        except Exception:
            log.failure("worker: handling the server's line {line!r} failed", line=line)

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        self._lost = True
        self.worker.master_gone()


class Worker:
    """The receiving half of the server over inherited listening sockets.

    The server's lines can arrive before the components exist: the queue size is sent once a
    second and the store may take longer than that to open on a busy machine. Until ``start``
    has opened them, the latest count and a pending reload are remembered and applied when
    they are ready, never read from half-built components.
    """

    def __init__(
        self,
        cfg: BootstrapConfig,
        listeners: list[tuple[int, ListenerSpec]],
        index: int,
        reactor: Any,
    ) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.index = index
        self.reactor = reactor
        self.settings = SettingsHolder()
        self.tls = ServerTLS(cfg.certificate, cfg.key)
        self.link = MasterLink(self)
        self.app: Any = None  # cgtwist.app.Components once built (maybe still opening)
        self.ready = False  # the components are open: lines from the server apply at once
        self.ports: list[Any] = []
        self.stopping = False
        self._count: Optional[int] = None  # the last queue size heard before ready
        self._reload_wanted = False  # an R heard before ready
        self._started: defer.Deferred[None] = defer.Deferred()  # start() finished, or failed

    def start(self) -> defer.Deferred[None]:
        """Open the components, apply what the server said meanwhile, then accept."""
        d = defer.ensureDeferred(self._start())

        def done(result: Any) -> Any:
            self._started.callback(None)
            return result

        return d.addBoth(done)

    async def _start(self) -> None:
        from cgtwist.app import Components

        self.tls.reload()
        self.app = Components(
            self.cfg,
            self.reactor,
            self.settings,
            self.tls,
            stats=ForwardedCounts(self.reactor, self.link.counted),
        )
        await self.app.open_reception()
        self.app.spool.subscribe(self.link.stored)
        self.app.spool.reserve()  # its first message too is committed in place
        self.ready = True
        if self._count is not None:
            self.app.spool.set_count(self._count)
        if self._reload_wanted:  # the settings may have changed after open() read them
            self._reload_wanted = False
            self.reload()
        if self.stopping:  # SIGTERM or the server's end came while opening: never accept
            return
        for fd, spec in self.listeners:
            factory: Any = self.app.factory_for(spec)
            if spec.tls == "implicit":
                factory = TLSMemoryBIOFactory(self.tls, False, factory)
            family = socket.AF_INET6 if ":" in spec.address else socket.AF_INET
            self.ports.append(self.reactor.adoptStreamPort(fd, family, factory))
            os.close(fd)  # adoptStreamPort works on a duplicate
        log.info(
            "smtp worker {index} ready (pid {pid}), {n} listener(s)",
            index=self.index,
            pid=os.getpid(),
            n=len(self.ports),
        )

    def reload(self) -> None:
        self.tls.reload()
        if not self.ready:
            self._reload_wanted = True
            return
        defer.ensureDeferred(self.app.reload_settings()).addErrback(
            lambda f: log.failure("worker: settings reload failed", f)
        )

    def set_count(self, count: int) -> None:
        if self.ready:
            self.app.spool.set_count(count)
        else:
            self._count = count

    def master_gone(self) -> None:
        """The server exited (or was killed): free the sockets now and stop."""
        if self.stopping:
            return
        log.warn("smtp worker {index}: the server is gone; exiting", index=self.index)
        self.stopping = True
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()
        if self.app is not None:
            self.app.abort_sessions()
        if self.reactor.running:
            self.reactor.stop()

    async def stop(self) -> None:
        """SIGTERM: stop accepting, finish the transactions in flight, close.

        A stop that comes while ``start`` still opens the components waits for it, so that
        what it opened (store, thread pools) is closed and no socket is adopted after.
        """
        self.stopping = True
        if self.app is not None:  # start() ran: wait until it has finished or failed
            await self._started
        ports, self.ports = self.ports, []
        await defer.gatherResults(
            [defer.maybeDeferred(p.stopListening) for p in ports], consumeErrors=True
        )
        if self.app is not None:
            await self.app.drain()
            await self.app.close()


@implementer(ILogObserver)
class StderrObserver:
    """The worker's log observer: each event a JSON line ``[level, namespace, text]`` on
    ``out`` (standard error, which the server relays into its log: cgtwist.workers'
    ``relay_log``); ``batched`` (``[server] runtime = tuned``): gathered per reactor turn
    (TurnBufferedFile), else written line by line."""

    def __init__(
        self, out: Any, reactor: Any, batched: bool, link: Optional[MasterLink] = None
    ) -> None:
        from cgtwist.logs import TurnBufferedFile

        self.link = link
        self.batched = batched
        if batched:
            out = TurnBufferedFile(out, reactor)
            reactor.addSystemEventTrigger("after", "shutdown", out.unbuffer)  # later lines too
        self.out = out

    def __call__(self, event: Any) -> None:
        text = plain_text(event) or formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        try:
            level, namespace = event["log_level"].name, event.get("log_namespace", "-")
            if type(namespace) is str:
                # What json.dumps([level, namespace, text]) writes, by its C string encoder
                # alone (its list encoding runs in Python): a line per accepted message.
                line = f'["{level}", {_quote(namespace)}, {_quote(text)}]\n'
            else:
                line = json.dumps([level, namespace, text]) + "\n"
            if self.link is not None and self.link.log_line(line.encode("ascii")):
                return
            self.out.write(line)
            if not self.batched:
                self.out.flush()
        except Exception:  # never let logging kill the worker
            pass

    def flush(self) -> None:
        """Write what is gathered now (for a measurement that runs no reactor turn)."""
        if self.batched:
            self.out.flush_now()
        else:
            self.out.flush()


def _log_to_stderr(
    level: LogLevel, reactor: Any, batched: bool, link: Optional[MasterLink] = None
) -> None:
    """Log events at ``level`` and above to standard error (StderrObserver), or through
    ``link`` to the server while it is connected."""
    from cgtwist.logs import LevelFilter, set_level

    set_level(level)
    observer = StderrObserver(sys.stderr, reactor, batched, link)
    globalLogBeginner.beginLoggingTo([LevelFilter(observer, level)], redirectStandardIO=False)


class _StandardIOClass(Protocol):
    """``stdio.StandardIO``'s constructor as ``_posixstdio`` declares it. ``stdio`` picks the
    class by platform at import time and mypy takes the first, untyped, Windows branch; this
    is the part of the signature both classes share and the worker uses."""

    def __call__(self, proto: IProtocol, *, reactor: IReactorFDSet) -> object: ...


def main() -> None:
    from twisted.internet import reactor, stdio

    cfg, listeners, index = decode_spec(os.environ[ENV])
    runtime = Runtime(cfg.runtime, reactor)
    worker = Worker(cfg, listeners, index, reactor)  # its events wait for the observer
    _log_to_stderr(LogLevel.levelWithName(cfg.log_level), reactor, runtime.wanted, worker.link)
    reactor.addSystemEventTrigger("after", "shutdown", worker.link.unbuffer)
    runtime.start_worker()  # cgtwist.runtime: reactor, direct writes, file threads
    standard_io: _StandardIOClass = stdio.StandardIO
    runtime.start_pipe(standard_io(worker.link, reactor=reactor))

    def failed(f: Any) -> None:
        log.failure("smtp worker {index} failed to start", f, index=index)
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(StopSignals(reactor).install)
    reactor.callWhenRunning(lambda: worker.start().addErrback(failed))
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(worker.stop()))
    reactor.run()


if __name__ == "__main__":
    main()
