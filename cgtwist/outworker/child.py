"""An outbound delivery worker: ``python -m cgtwist.outworker.child``, started by the server.

With ``smtp.delivery_workers`` = N the queue manager still decides everything about the queue
(which message, which destination, when, how many at once) and journals every result; only
the SMTP client sessions run here, on other CPU cores than the server's reactor: Postfix's
qmgr/smtp split, for the same reason. The server hands each attempt to the worker its
destination hashes to (cgtwist.outworker.supervisor), so this worker's idle connection to that
destination is the one the next message reuses.

A worker runs cgtwist.delivery.smtp's attempt with its own resolver (the server's ``[dns]``
settings, from the bootstrap configuration) and connection cache, and answers per recipient
(cgtwist.outworker.wire). It never touches the spool or the store: what it was given is in
the server's memory and on disk, so a worker that dies loses nothing; the server retries its
attempts. End of standard input means the server is gone: abort and exit. SIGTERM: abort the
sessions in flight (their recipients are answered pending, as the in-process client does at
a stop), QUIT the idle ones, exit. Log events go to standard error as JSON lines, which the
server writes into its own log.

The bootstrap configuration and the worker's index are in the environment variable
``CGTWIST_OUTWORKER`` (JSON: ``config``, ``index``).
"""

from __future__ import annotations

import json
import os
from typing import Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import Protocol
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from cgtwist.config import BootstrapConfig
from cgtwist.delivery.smtp import Attempt, SMTPDelivery
from cgtwist.dns import Resolver, system_nameservers
from cgtwist.logs import Logger
from cgtwist.outworker.wire import (
    PROBE,
    READY,
    BadLine,
    HostAttempt,
    Probe,
    Request,
    RequestReader,
    SettingsLine,
    encode_result,
)
from cgtwist.runtime.fastwrite import write_pipe_now
from cgtwist.runtime.mode import Runtime
from cgtwist.runtime.stopsignals import StopSignals
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.smtpworker.child import _log_to_stderr, _StandardIOClass
from cgtwist.types import QueueName, Recipient

log = Logger(namespace="cgtwist.outworker")

ENV = "CGTWIST_OUTWORKER"


def decode_spec(raw: str) -> tuple[BootstrapConfig, int]:
    """``CGTWIST_OUTWORKER`` -> (bootstrap config, worker index)."""
    spec = json.loads(raw)
    c = dict(spec["config"])
    c["nameservers"] = tuple(c.get("nameservers") or ())
    return BootstrapConfig(**c), int(spec.get("index", 0))


class OutboundWorker(Protocol):
    """Standard input/output to the server, over one SMTPDelivery.

    ``agent`` is the SMTP delivery agent (its ``on_attempt`` must be this worker's
    ``note``); ``settings`` the holder the agent reads, which the server's ``S`` lines fill.
    """

    def __init__(self, settings: SettingsHolder, reactor: IReactorCore, index: int) -> None:
        self.settings = settings
        self.reactor = reactor
        self.index = index
        self.agent: Optional[SMTPDelivery] = None
        self.reader = RequestReader()
        self.running: dict[int, defer.Deferred[list[Recipient]]] = {}
        self._tried: dict[str, list[HostAttempt]] = {}
        self.stopping = False

    def note(self, msg_id: str, attempt: Attempt) -> None:
        """SMTPDelivery's ``on_attempt``: kept until the attempt's answer carries it."""
        self._tried.setdefault(msg_id, []).append(
            HostAttempt(attempt.time, attempt.host, attempt.ip, attempt.reply, attempt.tls)
        )

    def dataReceived(self, data: bytes) -> None:
        # An exception here would make Twisted drop standard input, which the worker takes for
        # the server's death. Every frame is handled on its own; a failure is a log line.
        for frame in self.reader.feed(data):
            try:
                if isinstance(frame, Request):
                    self._start(frame)
                elif isinstance(frame, Probe):
                    if self.transport is not None:
                        write_pipe_now(self.transport, PROBE)
                elif isinstance(frame, SettingsLine):
                    self.settings.replace(Settings(frame.overrides))
                elif isinstance(frame, BadLine):
                    log.warn("outbound worker: {why}; line dropped", why=frame.why)
            except Exception:
                log.failure("outbound worker: handling a line from the server failed")

    def _start(self, req: Request) -> None:
        assert self.agent is not None
        d = self.agent.deliver(
            req.msg_id, req.envelope, req.data, req.recipients, queue=QueueName("SMTP", req.queue)
        )
        self.running[req.n] = d

        def answer(recipients: list[Recipient]) -> None:
            self.running.pop(req.n, None)
            tried = self._tried.pop(req.msg_id, [])
            if self.transport is not None:
                write_pipe_now(self.transport, encode_result(req.n, recipients, tried))

        d.addCallback(answer)
        d.addErrback(lambda f: log.failure("outbound worker: answering an attempt failed", f))

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        """Standard input closed: the server is gone."""
        if self.stopping:
            return
        log.warn("outbound worker {index}: the server is gone; exiting", index=self.index)
        self.abort()
        if self.reactor.running:
            self.reactor.stop()

    def abort(self) -> None:
        """Drop every session: those in flight answer pending (retried by the server)."""
        self.stopping = True
        if self.agent is not None:
            self.agent.abort_all()
            self.agent.close_idle()

    def ready(self) -> None:
        """The reactor runs: tell the server to hand attempts over."""
        if self.transport is not None:
            write_pipe_now(self.transport, READY)
        log.info("outbound worker {index} ready (pid {pid})", index=self.index, pid=os.getpid())

    async def stop(self) -> None:
        """SIGTERM: abort, and let the answers of the aborted attempts reach the server."""
        self.abort()
        running = list(self.running.values())
        if running:
            await defer.DeferredList(running, consumeErrors=True)


def build(cfg: BootstrapConfig, reactor: IReactorCore, index: int) -> OutboundWorker:
    """The worker's parts: settings holder, resolver, the SMTP agent, the link."""
    settings = SettingsHolder()
    link = OutboundWorker(settings, reactor, index)
    nameservers = list(cfg.nameservers) or system_nameservers()
    resolver = Resolver(nameservers, timeout=cfg.dns_timeout, max_concurrency=100, reactor=reactor)
    link.agent = SMTPDelivery(resolver, settings, cfg.hostname, reactor, on_attempt=link.note)
    return link


def main() -> None:
    from twisted.internet import reactor, stdio

    cfg, index = decode_spec(os.environ[ENV])
    runtime = Runtime(cfg.runtime, reactor)
    _log_to_stderr(LogLevel.levelWithName(cfg.log_level), reactor, runtime.wanted)
    runtime.start_worker()
    link = build(cfg, reactor, index)
    standard_io: _StandardIOClass = stdio.StandardIO
    runtime.start_pipe(standard_io(link, reactor=reactor))
    reactor.callWhenRunning(StopSignals(reactor).install)
    reactor.callWhenRunning(link.ready)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(link.stop()))
    reactor.run()


if __name__ == "__main__":
    main()
