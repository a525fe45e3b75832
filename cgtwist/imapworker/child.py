"""An IMAP/POP3 worker process: ``python -m cgtwist.imapworker.child``, started by the server.

With ``imap.workers`` = N the server (cgtwist.service) binds the IMAP and POP3 listening
sockets as before, stops accepting on them itself and starts N of these processes, which
share the sockets (the kernel hands each new connection to one of them), the store (accounts
and passwords, SQLite or PostgreSQL) and the Maildirs: sessions then run on every CPU core,
as Dovecot's imap processes do. One folder open in several processes stays consistent
through its index (cgtwist.mailstore.folder: a lock per folder, UIDs and MODSEQs allocated
under it, each process catching up from the index log); mail the server delivers reaches a
session here at its next command, or at once where the mail store watches other processes'
changes (``Components.watch_mailboxes``: the mail store's inotify watch, IDLE push).

What must hold for the whole server is asked of it over standard input and output
(cgtwist.imapworker.remote and wire): admission against ``access.max_connections_per_ip``, the
login brake, the account locks, ``auth.max_userip_connections`` and WebUser's list of sessions, which the server
ends with an ``E`` line. ``R`` reloads settings and the TLS certificate. End of standard input
means the server is gone: the worker closes its sockets and sessions and exits at once, so
that a restarted server can bind them. SIGTERM: stop accepting, say goodbye to every session
(IMAP ``* BYE``, POP3 ``-ERR``), wait up to ``server.shutdown_grace``, exit. Log events go to
standard error as JSON lines, which the server writes into its own log.

The settings are the server's bootstrap configuration, its IMAP and POP3 listeners and the key
of the password digests, in ``CGTWIST_WORKER`` (JSON: ``config``, ``listeners`` with ``fd``,
``index``, ``key``).
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Optional, cast

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorSocket
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import ServerFactory
from twisted.logger import LogLevel
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from cgtwist.config import BootstrapConfig
from cgtwist.imapworker.locks import RemoteAccountGuard
from cgtwist.imapworker.remote import (
    GateFactory,
    RemoteActiveSessions,
    RemoteConnections,
    RemotePenalty,
    RemoteSessions,
    ServerLink,
)
from cgtwist.logs import Logger
from cgtwist.runtime.mode import Runtime
from cgtwist.runtime.stopsignals import StopSignals
from cgtwist.settings import SettingsHolder
from cgtwist.smtpworker.child import _log_to_stderr, _StandardIOClass, decode_spec
from cgtwist.stats import ForwardedCounts
from cgtwist.tls import ServerTLS
from cgtwist.types import ListenerSpec

if TYPE_CHECKING:
    from cgtwist.app import Components

log = Logger(namespace="cgtwist.imapworker")

ENV = "CGTWIST_WORKER"

REFUSALS = {
    "imap": b"* BYE Too many connections from your address\r\n",
    "pop3": b"-ERR [SYS/TEMP] Too many connections from your address\r\n",
}


class Worker:
    """The POP3 and IMAP half of the server over inherited listening sockets."""

    def __init__(
        self,
        cfg: BootstrapConfig,
        listeners: list[tuple[int, ListenerSpec]],
        index: int,
        key: bytes,
        reactor: PosixReactorBase,
    ) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.index = index
        self.reactor = reactor
        self.settings = SettingsHolder()
        self.tls = ServerTLS(cfg.certificate, cfg.key)
        self.link = ServerLink(self.reload, self.master_gone, reactor)
        self.key = key
        self.app: Optional[Components] = None  # once built (maybe still opening)
        self.ready = False
        self.ports: list[IListeningPort] = []
        self.stopping = False
        self._reload_wanted = False  # an R heard before ready
        self._started: defer.Deferred[None] = defer.Deferred()

    def start(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._start_then_say())

    async def _start_then_say(self) -> None:
        try:
            await self._start()
        finally:
            self._started.callback(None)

    async def _start(self) -> None:
        from cgtwist.app import Components, SharedAccess

        self.tls.reload()
        link = self.link
        self.app = app = Components(
            self.cfg,
            self.reactor,
            self.settings,
            self.tls,
            stats=ForwardedCounts(self.reactor, link.send),
            shared=SharedAccess(
                penalty=RemotePenalty(link, self.settings, self.key),
                sessions=RemoteSessions(link),
                active=RemoteActiveSessions(link, self.reactor.seconds),
                guard=RemoteAccountGuard(link, self.reactor, self.settings, self.key),
            ),
        )
        await app.open_reception()
        app.watch_mailboxes()
        self.ready = True
        if self._reload_wanted:
            self._reload_wanted = False
            self.reload()
        if self.stopping:
            return
        for number, (fd, spec) in enumerate(self.listeners):
            inner = app.factory_for(spec, per_ip=RemoteConnections(link, number))
            factory: IProtocolFactory = GateFactory(inner, link, number, REFUSALS[spec.protocol])
            if spec.tls == "implicit":
                factory = TLSMemoryBIOFactory(self.tls, False, factory)
            family = socket.AF_INET6 if ":" in spec.address else socket.AF_INET
            sockets = IReactorSocket(self.reactor)
            # the factory of a listening socket, as IReactorSocket names it
            self.ports.append(sockets.adoptStreamPort(fd, family, cast(ServerFactory, factory)))
            os.close(fd)  # adoptStreamPort works on a duplicate
        log.info(
            "imap worker {index} ready (pid {pid}), {n} listener(s)",
            index=self.index,
            pid=os.getpid(),
            n=len(self.ports),
        )

    def reload(self) -> None:
        self.tls.reload()
        if not self.ready or self.app is None:
            self._reload_wanted = True
            return
        defer.ensureDeferred(self.app.reload_settings()).addErrback(
            lambda f: log.failure("imap worker: settings reload failed", f)
        )

    def master_gone(self) -> None:
        """The server exited (or was killed): free the sockets now and stop."""
        if self.stopping:
            return
        log.warn("imap worker {index}: the server is gone; exiting", index=self.index)
        self.stopping = True
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()
        if self.app is not None:
            self.app.abort_sessions()
        if self.reactor.running:
            self.reactor.stop()

    async def stop(self) -> None:
        """SIGTERM: stop accepting, say goodbye to every session, close."""
        self.stopping = True
        if self.app is not None:
            await self._started
        ports, self.ports = self.ports, []
        await defer.gatherResults(
            [defer.maybeDeferred(p.stopListening) for p in ports], consumeErrors=True
        )
        if self.app is not None:
            await self.app.drain()
            if self.app.notifier is not None:
                self.app.notifier.stop_watching()
            await self.app.close()


def decode(raw: str) -> tuple[BootstrapConfig, list[tuple[int, ListenerSpec]], int, bytes]:
    """``CGTWIST_WORKER`` -> (bootstrap config, [(fd, listener)], worker index, digest key)."""
    cfg, listeners, index = decode_spec(raw)
    return cfg, listeners, index, bytes.fromhex(json.loads(raw)["key"])


def main() -> None:
    from twisted.internet import reactor, stdio

    cfg, listeners, index, key = decode(os.environ[ENV])
    runtime = Runtime(cfg.runtime, reactor)
    _log_to_stderr(LogLevel.levelWithName(cfg.log_level), reactor, runtime.wanted)
    runtime.start_worker()
    worker = Worker(cfg, listeners, index, key, cast(PosixReactorBase, reactor))
    standard_io: _StandardIOClass = stdio.StandardIO
    runtime.start_pipe(standard_io(worker.link, reactor=reactor))

    def failed(f: Failure) -> None:
        log.failure("imap worker {index} failed to start", f, index=index)
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(StopSignals(reactor).install)
    reactor.callWhenRunning(lambda: worker.start().addErrback(failed))
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(worker.stop()))
    reactor.run()


if __name__ == "__main__":
    main()
