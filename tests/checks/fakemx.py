"""A tiny scripted SMTP server on 127.0.0.1 port 0 for callback-verification tests.

Modes: "accept" (every RCPT 250), "reject" (RCPT 550), "tempfail" (RCPT 450), "stall" (greets,
then never answers), "silent" (never even greets), "noehlo" (EHLO 502, HELO ok), "badgreet"
(554 greeting). Records every connection's command lines in ``sessions``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver


class _MX(LineOnlyReceiver):
    delimiter = b"\r\n"

    def __init__(self, owner: FakeMX) -> None:
        self.owner = owner
        self.lines: list[str] = []

    def connectionMade(self) -> None:
        self.owner.sessions.append(self.lines)
        self.owner.open.append(self)
        mode = self.owner.mode
        if mode == "silent":
            return
        if mode == "badgreet":
            self.sendLine(b"554 go away")
            return
        self.sendLine(b"220-fake.mx.test ESMTP")
        self.sendLine(b"220 fake.mx.test ready")

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.owner.open:
            self.owner.open.remove(self)

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("latin-1")
        self.lines.append(text)
        mode = self.owner.mode
        verb = text.split(" ", 1)[0].split(":", 1)[0].upper()
        if mode == "stall":
            return
        if verb == "EHLO":
            if mode == "noehlo":
                self.sendLine(b"502 5.5.1 no EHLO here")
            else:
                self.sendLine(b"250-fake.mx.test")
                self.sendLine(b"250 PIPELINING")
        elif verb == "HELO":
            self.sendLine(b"250 fake.mx.test")
        elif verb == "MAIL":
            self.sendLine(b"250 2.1.0 ok")
        elif verb == "RCPT":
            reply = {
                "reject": b"550 5.1.1 no such user\r\nX-Inject: 1",
                "tempfail": b"450 4.2.0 try later",
            }.get(mode, b"250 2.1.5 ok")
            self.sendLine(reply)
        elif verb == "QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"500 what")


class FakeMX:
    def __init__(self, mode: str = "accept") -> None:
        self.mode = mode
        self.sessions: list[list[str]] = []
        self.open: list[_MX] = []
        self.port = 0
        self._listening: Any = None

    def listen(self, reactor: Any) -> int:
        self._listening = reactor.listenTCP(
            0, Factory.forProtocol(lambda: _MX(self)), interface="127.0.0.1"
        )
        self.port = self._listening.getHost().port
        return self.port

    def stop(self) -> defer.Deferred[Any]:
        for p in list(self.open):
            p.transport.abortConnection()
        return defer.maybeDeferred(self._listening.stopListening)
