"""The server's side of IMAP/POP3 worker processes (``imap.workers``): start, answer, stop.

Owns the child processes of cgtwist.imapworker.child and the pipes to them: it gives each the
IMAP and POP3 listening sockets (``childFDs``: plain, STARTTLS and implicit TLS alike),
answers their questions about the limits the server keeps for every process
(cgtwist.imapworker.desk), forwards reloads (``R``) and gives back what a worker held when it
ends. Starting, restarting with back-off, stopping within ``server.shutdown_grace`` and
relaying the workers' log lines are the shared process handling of
cgtwist.workers.supervisor.
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
from typing import Callable, Optional

from twisted.internet import defer

from cgtwist.config import BootstrapConfig
from cgtwist.imapworker import wire
from cgtwist.imapworker.desk import AccessDesk
from cgtwist.imapworker.locks import lock_line
from cgtwist.types import ListenerSpec
from cgtwist.workers.supervisor import (
    ChildSpec,
    ProcessReactor,
    Supervisor,
    WorkerProcess,
    listener_child,
)

PROTOCOLS = frozenset({"imap", "pop3"})


class IMAPWorkers(Supervisor):
    """``IMAPWorkers(reactor, cfg, desk, grace)``; ``configure(n, sockets)`` starts,
    restarts or stops workers over the (fd, listener) sockets of IMAP and POP3."""

    kind = "imap worker"
    max_line = wire.MAX_LINE

    def __init__(
        self,
        reactor: ProcessReactor,
        cfg: BootstrapConfig,
        desk: AccessDesk,
        grace: Callable[[], float] = lambda: 30.0,
        executable: str = sys.executable,
    ) -> None:
        super().__init__(reactor, grace, executable)
        self.cfg = cfg
        self.desk = desk
        self.sockets: list[tuple[int, ListenerSpec]] = []
        # The key of the digests of wrong passwords the workers send (RemotePenalty): the
        # same for all of them, so a repeated password counts once whichever worker saw it.
        self.key = secrets.token_bytes(32)
        desk.guard.subscribe(lambda account, seconds: self.send_all(lock_line(account, seconds)))

    def configure(self, n: int, sockets: list[tuple[int, ListenerSpec]]) -> defer.Deferred[None]:
        """Run ``n`` workers over ``sockets``; restart them all when either changed, else
        just forward a reload."""
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

        def start(_: object) -> None:
            self.desk.reset_listeners()  # every worker that counted on the old numbers ended
            self.start_missing()

        return d.addCallback(start)

    def reload(self) -> None:
        self.send_all(b"R\n")

    def child(self, index: int) -> Optional[ChildSpec]:
        if not self.sockets:
            return None
        return listener_child(
            self.executable,
            "cgtwist.imapworker.child",
            self.cfg,
            self.sockets,
            index,
            key=self.key.hex(),
        )

    def line(self, proc: WorkerProcess, line: bytes) -> None:
        self.desk.line(proc, proc.send, line)

    def child_started(self, proc: WorkerProcess) -> None:
        """A new worker hears the account locks still in force."""
        for account, seconds in self.desk.guard.in_force():
            proc.send(lock_line(account, seconds))

    def child_ended(self, proc: WorkerProcess) -> None:
        self.desk.worker_ended(proc)
