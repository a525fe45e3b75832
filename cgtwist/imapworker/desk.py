"""The server's answers to its IMAP/POP3 workers: the limits and lists kept for every process.

Owns what each worker holds of the server's counts (connections per listener and IP, login
attempts running, places among an account's sessions per IP, entries in WebUser's list) and
gives all of it back when the worker ends, so a worker killed with sessions open leaves no
count behind. The counting itself is the server's own objects, the same ones its own POP3
and IMAP factories use when ``imap.workers`` is 0: PerIPConnections per listener
(``access.max_connections_per_ip``, Client IPs exempt), the AuthPenalty
(``auth.fail_delays``, ``auth.max_concurrent_per_ip``, the auto-blacklist), UserIPSessions
(``auth.max_userip_connections``) and ActiveSessions (WebUser). A limit therefore holds for
the whole server whatever the number of workers; the account locks
(``auth.account_max_failures``) too, through cgtwist.imapworker.locks. Lines are cgtwist.imapworker.wire's; it
never reads a socket itself: ``send`` is the worker's standard input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from twisted.python.failure import Failure

from cgtwist.activesessions import ActiveSession, ActiveSessions
from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.imapworker import wire
from cgtwist.imapworker.locks import NotedGuard
from cgtwist.logs import Logger
from cgtwist.protocols.limits import PerIPConnections, UserIPSessions
from cgtwist.settings import SettingsHolder

log = Logger(namespace="cgtwist.imapworker")

Send = Callable[[bytes], bool]


@dataclass
class Holdings:
    """What one worker process holds of the server's counts, given back when it ends."""

    connections: dict[tuple[int, str], int] = field(default_factory=dict)  # (listener, ip)
    attempts: dict[str, int] = field(default_factory=dict)  # ip -> acquired, not released
    places: dict[int, Callable[[], None]] = field(default_factory=dict)  # n -> give back
    listed: dict[int, ActiveSession] = field(default_factory=dict)  # n -> WebUser's entry


class AccessDesk:
    """``AccessDesk(settings, is_client_ip, penalty, sessions, active, guard, counted)``.

    ``penalty`` is the server's own AuthPenalty (not the counting wrapper: a worker counts its
    failures itself and sends them with its counters); ``guard`` the server's account budget
    (auth.account_max_failures), which announces its locks; ``counted(text)`` adds a worker's
    ``S`` line to the server's statistics (cgtwist.stats.Statistics.add_forwarded).
    """

    def __init__(
        self,
        settings: SettingsHolder,
        is_client_ip: Callable[[str], bool],
        penalty: AuthPenalty,
        sessions: UserIPSessions,
        active: ActiveSessions,
        guard: NotedGuard,
        counted: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.settings = settings
        self.is_client_ip = is_client_ip
        self.penalty = penalty
        self.sessions = sessions
        self.active = active
        self.guard = guard
        self.counted = counted
        self.per_ip: dict[int, PerIPConnections] = {}  # by listener number
        self.holdings: dict[object, Holdings] = {}  # by worker

    def _held(self, worker: object) -> Holdings:
        held = self.holdings.get(worker)
        if held is None:
            held = self.holdings[worker] = Holdings()
        return held

    def _connections(self, listener: int) -> PerIPConnections:
        counter = self.per_ip.get(listener)
        if counter is None:
            counter = self.per_ip[listener] = PerIPConnections(
                self.settings, exempt=self.is_client_ip
            )
        return counter

    def reset_listeners(self) -> None:
        """The listeners were renumbered (their workers restarted): counts start afresh."""
        self.per_ip.clear()

    # -- lines -------------------------------------------------------------------------------
    def line(self, worker: object, send: Send, raw: bytes) -> None:
        """One line from ``worker``; answers go through ``send``. A line that does not
        parse is logged and dropped (the worker is ours: that is a bug, not an attack)."""
        try:
            self._line(worker, send, raw)
        except Exception:
            log.failure("imap worker: bad line {line!r}", line=raw[:200])

    def _line(self, worker: object, send: Send, raw: bytes) -> None:
        kind = raw[:1]
        held = self._held(worker)
        if kind == b"O":
            _, n, listener, ip = wire.fields(raw, 4)
            send(wire.line("o", n, wire.flag(self._open(held, int(listener), ip))))
        elif kind == b"X":
            _, listener, ip = wire.fields(raw, 3)
            self._close(held, int(listener), ip)
        elif kind == b"P":
            _, n, ip = wire.fields(raw, 3)
            allowed = self.penalty.acquire(ip)
            if allowed:
                held.attempts[ip] = held.attempts.get(ip, 0) + 1
            send(wire.line("p", n, wire.flag(allowed)))
        elif kind == b"D":
            _, ip = wire.fields(raw, 2)
            self._release(held, ip)
        elif kind == b"F":
            _, n, ip, protocol, log_line, digest, login = wire.fields(raw, 7)
            d = self.penalty.failed(
                ip,
                login,
                protocol,
                secret=None if digest == "-" else digest.encode("ascii"),
                log_line=log_line == "1",
            )
            d.addCallback(lambda delay: send(wire.line("f", n, f"{float(delay):.3f}")))
            d.addErrback(self._failed_bug, send, n, "f")
        elif kind == b"B":
            _, n, ip, digest, account = wire.fields(raw, 5)
            b = self.guard.failed(account, ip, None if digest == "-" else digest.encode("ascii"))
            b.addCallback(lambda delay: send(wire.line("b", n, f"{float(delay):.3f}")))
            b.addErrback(self._failed_bug, send, n, "b")
        elif kind == b"K":
            _, ip = wire.fields(raw, 2)
            self.penalty.succeeded(ip)
        elif kind == b"U":
            _, n, ip, account = wire.fields(raw, 4)
            place = self.sessions.admit(account, ip, lambda: None)
            if place is not None:
                held.places[int(n)] = place
            send(wire.line("u", n, wire.flag(place is not None)))
        elif kind == b"V":
            _, n = wire.fields(raw, 2)
            give_back = held.places.pop(int(n), None)
            if give_back is not None:
                give_back()
        elif kind == b"L":
            _, n, protocol, secure, ip, account = wire.fields(raw, 6)
            self._list(held, send, int(n), protocol, secure == "1", ip, account)
        elif kind == b"G":
            _, n = wire.fields(raw, 2)
            session = held.listed.pop(int(n), None)
            if session is not None:
                self.active.remove(session)
        elif kind == b"S":
            if self.counted is not None:
                self.counted(raw[2:].decode("ascii"))
        else:
            raise ValueError("unknown line")

    def _failed_bug(self, failure: Failure, send: Send, n: str, answer: str) -> None:
        log.failure("imap worker: counting a failed login failed", failure)
        send(wire.line(answer, n, "0"))

    def _open(self, held: Holdings, listener: int, ip: str) -> bool:
        counter = self._connections(listener)
        if not counter.opened(ip):
            counter.closed(ip)
            log.warn("imap worker: too many connections from {ip}", ip=ip)
            return False
        key = (listener, ip)
        held.connections[key] = held.connections.get(key, 0) + 1
        return True

    def _close(self, held: Holdings, listener: int, ip: str) -> None:
        key = (listener, ip)
        n = held.connections.get(key, 0)
        if n <= 0:
            return
        if n == 1:
            del held.connections[key]
        else:
            held.connections[key] = n - 1
        self._connections(listener).closed(ip)

    def _release(self, held: Holdings, ip: str) -> None:
        n = held.attempts.get(ip, 0)
        if n <= 0:
            return
        if n == 1:
            del held.attempts[ip]
        else:
            held.attempts[ip] = n - 1
        self.penalty.release(ip)

    def _list(
        self,
        held: Holdings,
        send: Send,
        n: int,
        protocol: str,
        secure: bool,
        ip: str,
        account: str,
    ) -> None:
        def end(reason: str) -> None:
            held.listed.pop(n, None)
            send(wire.line("E", n, reason))

        held.listed[n] = self.active.add(account, protocol, ip, secure, end)

    # -- a worker ended ------------------------------------------------------------------------
    def worker_ended(self, worker: object) -> None:
        """Give back everything ``worker`` held: its connections, attempts, places, entries."""
        held = self.holdings.pop(worker, None)
        if held is None:
            return
        for (listener, ip), n in held.connections.items():
            counter = self._connections(listener)
            for _ in range(n):
                counter.closed(ip)
        for ip, n in held.attempts.items():
            for _ in range(n):
                self.penalty.release(ip)
        for give_back in held.places.values():
            give_back()
        for session in held.listed.values():
            self.active.remove(session)
