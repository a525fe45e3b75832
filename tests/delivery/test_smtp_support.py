"""Loopback SMTP sinks with programmable misbehaviour, a fake resolver and a self-signed
certificate for the outbound SMTP tests (helpers only; no tests here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from twisted.internet import defer, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from cgtwist.errors import DNSPermanentError


@dataclass
class Behaviour:
    """How a sink answers. ``rcpt`` maps a recipient address to its reply line."""

    greeting: str = "220 sink.test ESMTP"
    extensions: tuple[str, ...] = ("8BITMIME",)
    rcpt: Callable[[str], str] = lambda addr: "250 2.1.5 Ok"
    data_end: str = "250 2.0.0 Ok: queued"
    disconnect_after_dot: bool = False
    stall_after_dot: bool = False
    tls: Optional[ssl.CertificateOptions] = None
    auth_ok: str = "235 2.7.0 Authentication successful"
    max_rcpts: int = 0  # more RCPTs in one transaction get 452 4.5.3
    tls_garbage: bool = False  # answer the ClientHello with non-TLS bytes (a broken TLS stack)


@dataclass
class SinkLog:
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(
        default_factory=list
    )  # raw DATA as on the wire, dot line excluded
    connections: int = 0
    tls_messages: int = 0
    dot_seen: list[defer.Deferred[None]] = field(default_factory=list)
    protocols: list[Any] = field(default_factory=list)


class Sink(LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, behaviour: Behaviour, log: SinkLog) -> None:
        self.b = behaviour
        self.log = log
        self.in_data = False
        self.buf: list[bytes] = []
        self.tls = False
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.log.connections += 1
        self.log.protocols.append(self)
        if not self.b.greeting:
            return  # stall: say nothing at all
        self.sendLine(self.b.greeting.encode())
        if not self.b.greeting.startswith("2"):
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.lost.called:
            self.lost.callback(None)

    def rawDataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if self.in_data:
            if line == b".":
                self.in_data = False
                self.log.messages.append(b"".join(x + b"\r\n" for x in self.buf))
                if self.tls:
                    self.log.tls_messages += 1
                self.buf = []
                waiters, self.log.dot_seen[:] = list(self.log.dot_seen), []
                for d in waiters:
                    d.callback(None)
                if self.b.disconnect_after_dot:
                    self.transport.abortConnection()
                    return
                if self.b.stall_after_dot:
                    return
                self.sendLine(self.b.data_end.encode())
            else:
                self.buf.append(line)
            return
        cmd = line.decode("utf-8", "replace")
        self.log.commands.append(cmd)
        verb = cmd.split(" ", 1)[0].upper()
        if verb == "EHLO":
            exts = list(self.b.extensions)
            if self.tls:
                exts = [e for e in exts if e != "STARTTLS"]
            lines = ["sink.test"] + exts
            for i, x in enumerate(lines):
                sep = " " if i == len(lines) - 1 else "-"
                self.sendLine(f"250{sep}{x}".encode())
        elif verb == "HELO":
            self.sendLine(b"250 sink.test")
        elif verb == "STARTTLS" and self.b.tls_garbage:
            self.sendLine(b"220 2.0.0 Ready to start TLS")
            self.setRawMode()
        elif verb == "STARTTLS" and self.b.tls is not None and not self.tls:
            self.sendLine(b"220 2.0.0 Ready to start TLS")
            self.transport.startTLS(self.b.tls)
            self.tls = True
        elif verb == "AUTH":
            self.sendLine(self.b.auth_ok.encode())
        elif verb == "MAIL":
            self.rcpt_count = 0
            self.sendLine(b"250 2.1.0 Ok")
        elif verb == "RCPT":
            addr = cmd.split("<", 1)[1].split(">", 1)[0]
            self.rcpt_count = getattr(self, "rcpt_count", 0) + 1
            if self.b.max_rcpts and self.rcpt_count > self.b.max_rcpts:
                self.sendLine(b"452 4.5.3 Too many recipients")
                return
            self.sendLine(self.b.rcpt(addr).encode())
        elif verb == "DATA":
            self.in_data = True
            self.sendLine(b"354 End data with <CR><LF>.<CR><LF>")
        elif verb in ("RSET", "NOOP"):
            self.sendLine(b"250 2.0.0 Ok")
        elif verb == "QUIT":
            self.sendLine(b"221 2.0.0 Bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"502 5.5.2 Error: command not recognized")


class SinkFactory(Factory):
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.log = SinkLog()

    def buildProtocol(self, addr: Any) -> Sink:
        return Sink(self.behaviour, self.log)


class FakeResolver:
    """IResolver from dicts; a value that is an exception class is raised."""

    def __init__(
        self,
        mx: dict[str, Any] | None = None,
        a: dict[str, Any] | None = None,
        aaaa: dict[str, Any] | None = None,
    ) -> None:
        self.mx = mx or {}
        self.a = a or {}
        self.aaaa = aaaa or {}
        self.queries: list[tuple[str, str]] = []

    def _answer(self, table: dict[str, Any], kind: str, name: str) -> defer.Deferred[Any]:
        self.queries.append((kind, name))
        v = table.get(name)
        if isinstance(v, type) and issubclass(v, Exception):
            return defer.fail(v(name))
        if v is None:
            if kind == "MX" and name not in self.a:
                return defer.fail(DNSPermanentError(name))
            return defer.succeed([])
        return defer.succeed(list(v))

    def lookup_mx(self, domain: str) -> defer.Deferred[Any]:
        return self._answer(self.mx, "MX", domain)

    def lookup_a(self, host: str) -> defer.Deferred[Any]:
        return self._answer(self.a, "A", host)

    def lookup_aaaa(self, host: str) -> defer.Deferred[Any]:
        return self._answer(self.aaaa, "AAAA", host)

    def lookup_txt(self, name: str) -> defer.Deferred[Any]:
        return defer.succeed([])

    def lookup_ptr(self, ip: str) -> defer.Deferred[Any]:
        return defer.succeed([])


class Net:
    """Routes connections by IP to sinks on 127.0.0.1 (unknown IPs get a closed port) and
    remembers every client protocol so the test can wait until all are closed."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.ports: dict[str, int] = {}
        self.listening: list[Any] = []
        self.clients: list[tuple[Any, defer.Deferred[None]]] = []
        self.connects: list[str] = []
        self.closed_port = 0

    def add(self, ip: str, factory: SinkFactory) -> None:
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.listening.append(port)
        self.ports[ip] = port.getHost().port

    async def start(self) -> None:
        """Find a port with nothing listening (connection refused)."""
        from twisted.internet.protocol import ServerFactory

        p = self.reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
        self.closed_port = p.getHost().port
        await p.stopListening()

    def connect(self, ip: str, port: int, proto: Any) -> defer.Deferred[Any]:
        self.connects.append(ip)
        lost: defer.Deferred[None] = defer.Deferred()
        orig = proto.connectionLost

        def connection_lost(reason: Any = None) -> None:
            orig(reason)
            if not lost.called:
                lost.callback(None)

        proto.connectionLost = connection_lost
        self.clients.append((proto, lost))
        ep = TCP4ClientEndpoint(
            self.reactor, "127.0.0.1", self.ports.get(ip, self.closed_port), timeout=5
        )
        d = connectProtocol(ep, proto)

        def failed(f: Any) -> Any:
            if not lost.called:
                lost.callback(None)
            return f

        d.addErrback(failed)
        return d

    async def close(self, factories: list[SinkFactory]) -> None:
        for proto, lost in self.clients:
            if not lost.called and proto.transport is not None:
                proto.transport.abortConnection()
        for _proto, lost in self.clients:
            await lost
        for f in factories:
            for p in f.log.protocols:
                if not p.lost.called:
                    p.transport.abortConnection()
                await p.lost
        for port in self.listening:
            await port.stopListening()
