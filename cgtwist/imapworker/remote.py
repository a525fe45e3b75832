"""An IMAP/POP3 worker's side of the limits and lists the server keeps for every process.

Owns the worker's link to the server (``ServerLink``: standard input and output, lines of
cgtwist.imapworker.wire) and the stand-ins the worker's POP3 and IMAP factories get instead
of the server's own objects, so that a limit an administrator sets holds for the server as a
whole and not once per worker:

- ``AdmissionGate``: each new connection waits (reading nothing into the protocol) until the
  server admits it against ``access.max_connections_per_ip``; refused, it hears the
  protocol's own refusal. Admitted, the gate steps aside: the protocol is put in its place on
  the transport, so a session costs nothing more than in the server process.
- ``RemoteConnections``: the factories' per-IP count, which tells the server when an admitted
  connection ends.
- ``RemotePenalty``: the login brake (``auth.fail_delays``, ``auth.max_concurrent_per_ip``,
  the auto-blacklist that Protection keeps), which is the server's: a worker asks it.
- ``RemoteSessions``: ``auth.max_userip_connections``, counted by the server.
- ``RemoteActiveSessions``: WebUser's "Active sessions", listed in the server, which ends a
  session by a line to its worker.

It decides nothing itself: every answer is the server's. The cost is one round trip on the
pipe per connection and two or three per login, never per command.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Callable, Optional, Union, cast
from typing import Protocol as Structure

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.activesessions import ActiveSession
from cgtwist.imapworker import wire
from cgtwist.interfaces import IAuthPenalty
from cgtwist.logs import Logger
from cgtwist.protocols.limits import Admitted
from cgtwist.runtime.fastwrite import write_pipe_now
from cgtwist.settings import SettingsHolder

log = Logger(namespace="cgtwist.imapworker")

MAX_WAITING_INPUT = 65536  # what a client may send before the server admitted its connection

_ANSWERS = frozenset({b"o", b"p", b"u", b"f", b"b"})


class ServerLink(LineOnlyReceiver):
    """Standard input and output to the server: questions with their answers, notices, and
    the server's own lines (``R`` reload, ``E`` end a listed session, ``Z`` an account
    locked, kept in ``locked_until`` for cgtwist.imapworker.locks.RemoteAccountGuard)."""

    delimiter = b"\n"
    MAX_LENGTH = wire.MAX_LINE

    def __init__(
        self, reload: Callable[[], None], gone: Callable[[], None], clock: IReactorTime
    ) -> None:
        self._reload = reload
        self._gone = gone
        self.clock = clock
        # accounts the server locked (auth.account_max_failures) -> when the lock ends
        self.locked_until: dict[str, float] = {}
        self._numbers = itertools.count(1)
        self._waiting: dict[tuple[bytes, int], defer.Deferred[str]] = {}
        self.ends: dict[int, Callable[[str], None]] = {}  # listed sessions: their end(reason)

    def number(self) -> int:
        return next(self._numbers)

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            write_pipe_now(self.transport, data)

    def ask(self, kind: str, n: int, *fields: object) -> defer.Deferred[str]:
        """Send ``kind n fields``; fires with the value of the server's answer (``kind``
        in lower case, same ``n``), or fails when the server is gone."""
        d: defer.Deferred[str] = defer.Deferred()
        if self.transport is None:
            d.errback(ConnectionLost("the server is gone"))
            return d
        self._waiting[(kind.lower().encode("ascii"), n)] = d
        self.send(wire.line(kind, n, *fields))
        return d

    def lineReceived(self, line: bytes) -> None:
        # An exception here would make Twisted drop standard input, which the worker takes
        # for the server's death: it would exit. A bad line is logged instead.
        try:
            if line == b"R":
                self._reload()
            elif line[:1] in _ANSWERS and line[1:2] == b" ":
                kind, n, value = wire.fields(line, 3)
                d = self._waiting.pop((kind.encode("ascii"), int(n)), None)
                if d is not None:
                    d.callback(value)
            elif line.startswith(b"Z "):
                _, seconds, account = wire.fields(line, 3)
                now = self.clock.seconds()
                for gone in [a for a, t in self.locked_until.items() if t <= now]:
                    del self.locked_until[gone]
                self.locked_until[account] = now + float(seconds)
            elif line.startswith(b"E "):
                _, n, reason = wire.fields(line, 3)
                end = self.ends.pop(int(n), None)
                if end is not None:
                    end(reason)
            else:
                log.warn("imap worker: unknown line from the server: {line!r}", line=line[:200])
        except Exception:
            log.failure("imap worker: handling the server's line {line!r} failed", line=line[:200])

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(ConnectionLost("the server is gone"))
        self._gone()


# -- connections -------------------------------------------------------------------------------
class RemoteConnections:
    """A factory's per-IP count in a worker: the server admitted the connection already
    (AdmissionGate), so ``opened`` allows it; ``closed`` gives its place back to the server."""

    def __init__(self, link: ServerLink, listener: int) -> None:
        self.link = link
        self.listener = listener

    def opened(self, ip: str) -> bool:
        return True

    def closed(self, ip: str) -> None:
        self.link.send(wire.line("X", self.listener, ip))


class _Connection(Structure):
    """A TCP connection (twisted.internet.tcp.Connection): its ``protocol`` is what reads."""

    protocol: IProtocol


class GateFactory(Factory):
    """Wraps a POP3 or IMAP factory: each connection passes an AdmissionGate first.
    ``refusal`` is what a refused client reads (the protocol's own words)."""

    def __init__(self, inner: Factory, link: ServerLink, listener: int, refusal: bytes) -> None:
        self.inner = inner
        self.link = link
        self.listener = listener
        self.refusal = refusal

    def buildProtocol(self, addr: Optional[IAddress]) -> AdmissionGate:
        gate = AdmissionGate(self, addr)
        gate.factory = self
        return gate


class AdmissionGate(Protocol):
    """One connection until the server has admitted it; then its real protocol takes its
    place on the transport (the TCP connection's or the TLS layer's ``protocol``), with the
    bytes the client sent meanwhile. Refused, the client reads the refusal and the
    connection closes."""

    def __init__(self, gate: GateFactory, addr: Optional[IAddress]) -> None:
        self.gate = gate
        self.addr = addr
        self.ip = str(getattr(addr, "host", "") or "")
        self.held: list[bytes] = []
        self.held_size = 0
        self.lost = False

    def connectionMade(self) -> None:
        link = self.gate.link
        d = link.ask("O", link.number(), self.gate.listener, self.ip)
        d.addCallbacks(self._answered, self._no_answer)

    def dataReceived(self, data: bytes) -> None:
        self.held.append(data)
        self.held_size += len(data)
        if self.held_size > MAX_WAITING_INPUT:
            log.warn("imap worker: {ip} sent too much before its admission", ip=self.ip)
            self._abort()

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        self.lost = True

    def _answered(self, value: str) -> None:
        if value != "1":
            log.warn("imap worker: too many connections from {ip}", ip=self.ip)
            if not self.lost and self.transport is not None:
                self.transport.write(self.gate.refusal)
                self.transport.loseConnection()
            return
        if self.lost:
            self.gate.link.send(wire.line("X", self.gate.listener, self.ip))
            return
        inner = self.gate.inner.buildProtocol(self.addr)
        transport = self.transport
        if inner is None or transport is None:
            self.gate.link.send(wire.line("X", self.gate.listener, self.ip))
            if transport is not None:
                transport.loseConnection()
            return
        if isinstance(transport, TLSMemoryBIOProtocol):
            transport.wrappedProtocol = inner
        else:
            cast(_Connection, transport).protocol = inner
        inner.makeConnection(transport)
        held, self.held = b"".join(self.held), []
        if held:
            inner.dataReceived(held)

    def _no_answer(self, failure: Failure) -> None:
        if not self.lost:
            self._abort()

    def _abort(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()


# -- logins ------------------------------------------------------------------------------------
@implementer(IAuthPenalty)
class RemotePenalty:
    """The server's login brake, asked over the link. ``key`` (from the server) makes the
    digest of a wrong password that goes over the pipe, so a repeated one counts once there
    without the password itself leaving this process."""

    def __init__(self, link: ServerLink, settings: SettingsHolder, key: bytes) -> None:
        self.link = link
        self.settings = settings
        self.key = key

    def acquire(self, ip: str) -> defer.Deferred[bool]:
        d = self.link.ask("P", self.link.number(), ip)
        return d.addCallback(lambda value: value == "1")

    def release(self, ip: str) -> None:
        self.link.send(wire.line("D", ip))

    def failed(
        self,
        ip: str,
        login: str,
        protocol: str,
        secret: Union[bytes, str, None] = None,
        log_line: bool = True,
    ) -> defer.Deferred[float]:
        digest = "-"
        if secret:
            raw = secret.encode("utf-8", "replace") if isinstance(secret, str) else secret
            digest = hashlib.blake2b(raw, key=self.key, digest_size=16).hexdigest()
        d = self.link.ask("F", self.link.number(), ip, protocol, wire.flag(log_line), digest, login)
        return d.addCallback(float)

    def succeeded(self, ip: str) -> None:
        self.link.send(wire.line("K", ip))

    def should_disconnect(self, connection_failures: int) -> bool:
        limit = self.settings.current.auth.max_failures
        return limit > 0 and connection_failures >= limit


class RemoteSessions:
    """``auth.max_userip_connections``, counted by the server."""

    def __init__(self, link: ServerLink) -> None:
        self.link = link

    def admit(self, account: str, ip: str, logout: Callable[[], None]) -> defer.Deferred[Admitted]:
        n = self.link.number()

        def answered(value: str) -> Admitted:
            if value != "1":
                return None
            done: list[bool] = []

            def counted_logout() -> None:
                if not done:
                    done.append(True)
                    self.link.send(wire.line("V", n))
                logout()

            return counted_logout

        return self.link.ask("U", n, ip, account.lower()).addCallback(answered)


class RemoteActiveSessions:
    """WebUser's list, kept by the server: a session is listed there (``L``), taken off
    (``G``), and ended by the server's ``E`` line, which calls its ``end``."""

    def __init__(self, link: ServerLink, now: Callable[[], float]) -> None:
        self.link = link
        self.now = now

    def add(
        self, account: str, protocol: str, peer: str, secure: bool, end: Callable[[str], None]
    ) -> ActiveSession:
        n = self.link.number()
        self.link.ends[n] = end
        self.link.send(wire.line("L", n, protocol, wire.flag(secure), peer, account.lower()))
        return ActiveSession(str(n), account.lower(), protocol, peer, self.now(), secure, end)

    def remove(self, session: ActiveSession) -> None:
        n = int(session.id)
        if self.link.ends.pop(n, None) is not None:
            self.link.send(wire.line("G", n))
