"""Account locks (``auth.account_max_failures``) that hold in every IMAP/POP3 worker process.

Owns two sides of one budget. In the server, ``NotedGuard`` wraps the server's AccountGuard
(cgtwist.checks.accountguard), which counts every wrong password of an account whichever
process saw it, and tells its subscribers when an account becomes locked, so the server can
tell each worker (``Z`` lines, cgtwist.imapworker.wire). In a worker, ``RemoteAccountGuard``
is what the worker's cred checker consults: a failure is counted by the server (``B`` line,
answered after the server's delay), and whether an account is locked is a look-up in the locks
the server announced, so a login costs no extra round trip. A worker started later hears the
locks still in force at its start. Decides nothing itself: the budget, delays and lock time
are the server's AccountGuard's.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Union

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from cgtwist.checks.accountguard import AccountGuard
from cgtwist.imapworker import wire
from cgtwist.imapworker.remote import ServerLink
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder

log = Logger(namespace="cgtwist.imapworker")

Locked = Callable[[str, float], None]  # (account, seconds it stays locked)


class NotedGuard:
    """The server's AccountGuard, telling ``subscribe``d callables of each new lock."""

    def __init__(self, inner: AccountGuard, clock: IReactorTime, settings: SettingsHolder) -> None:
        self.inner = inner
        self.clock = clock
        self.settings = settings
        self.until: dict[str, float] = {}  # account -> when its lock ends (as announced)
        self._subscribers: list[Locked] = []

    def subscribe(self, locked: Locked) -> None:
        self._subscribers.append(locked)

    def locked(self, account: str) -> bool:
        return self.inner.locked(account)

    def refused(self, account: str, ip: str) -> defer.Deferred[float]:
        return self.inner.refused(account, ip)

    def failed(
        self, account: str, ip: str, secret: Union[bytes, str, None] = None
    ) -> defer.Deferred[float]:
        d = self.inner.failed(account, ip, secret)
        now = self.clock.seconds()
        if self.inner.locked(account) and self.until.get(account, 0.0) <= now:
            seconds = float(self.settings.current.auth.account_lock_time)
            self.until[account] = now + seconds
            for locked in list(self._subscribers):
                locked(account, seconds)
        return d

    def in_force(self) -> list[tuple[str, float]]:
        """(account, seconds left) of the locks announced and not yet over."""
        now = self.clock.seconds()
        for account in [a for a, t in self.until.items() if t <= now]:
            del self.until[account]
        return [(a, t - now) for a, t in self.until.items()]


def lock_line(account: str, seconds: float) -> bytes:
    return wire.line("Z", f"{seconds:.3f}", account)


class RemoteAccountGuard:
    """A worker's view of the server's account locks, for its cred checker: the locks are
    those the server announced (``ServerLink.locked_until``)."""

    def __init__(
        self, link: ServerLink, clock: IReactorTime, settings: SettingsHolder, key: bytes
    ) -> None:
        self.link = link
        self.clock = clock
        self.settings = settings
        self.key = key

    def locked(self, account: str) -> bool:
        return self.link.locked_until.get(account, 0.0) > self.clock.seconds()

    def failed(
        self, account: str, ip: str, secret: Union[bytes, str, None] = None
    ) -> defer.Deferred[float]:
        digest = "-"
        if secret:
            raw = secret.encode("utf-8", "surrogateescape") if isinstance(secret, str) else secret
            digest = hashlib.blake2b(raw, key=self.key, digest_size=16).hexdigest()
        d = self.link.ask("B", self.link.number(), ip, digest, account)
        return d.addCallback(float)

    def refused(self, account: str, ip: str) -> defer.Deferred[float]:
        """A login to a locked account: the log line and delay the server's guard gives."""
        log.info("auth refused: account={account} ip={ip} reason=locked", account=account, ip=ip)
        delay = float(self.settings.current.auth.account_max_delay)
        if delay <= 0:
            return defer.succeed(0.0)
        return task.deferLater(self.clock, delay, lambda: delay)
