"""cgtwist.runtime.reactor: the epoll reactor's direct dispatch still moves bytes over real sockets,
still cuts off (and logs) a protocol that raises, and leaves other reactors alone."""

from __future__ import annotations

from typing import Any

from twisted.internet.base import ReactorBase
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.logger import globalLogPublisher

from cgtwist.runtime.reactor import missing, streamline


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        if data.startswith(b"boom"):
            raise RuntimeError("protocol bug")
        self.transport.write(data)


class _Client(Protocol):
    def __init__(self, reactor: Any, send: bytes, got: list[bytes], lost: list[str]) -> None:
        self.reactor, self.send, self.got, self.lost = reactor, send, got, lost

    def connectionMade(self) -> None:
        self.transport.write(self.send)

    def dataReceived(self, data: bytes) -> None:
        self.got.append(data)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.append(type(reason.value).__name__)
        self.reactor.stop()


def _exchange(send: bytes) -> tuple[list[bytes], list[str], list[dict[str, Any]]]:
    """Run a private, streamlined epoll reactor: one loopback connection sends ``send``."""
    reactor = EPollReactor()
    assert streamline(reactor)
    got: list[bytes] = []
    lost: list[str] = []
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        port = reactor.listenTCP(0, Factory.forProtocol(_Echo), interface="127.0.0.1")
        cf = ClientFactory()
        cf.buildProtocol = lambda addr: _Client(reactor, send, got, lost)  # type: ignore[method-assign]
        reactor.connectTCP("127.0.0.1", port.getHost().port, cf)
        reactor.callLater(10, reactor.stop)  # a broken dispatch fails the test, never hangs it
        reactor.run(installSignalHandlers=False)
        port.stopListening()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return got, lost, events


def test_bytes_flow_through_direct_dispatch() -> None:
    """An echo over 127.0.0.1 completes with the reactor's own poll replaced."""
    got, lost, _ = _exchange(b"hello")
    assert b"".join(got) == b"hello"
    assert lost == ["ConnectionDone"]


def test_protocol_error_still_logged_and_connection_dropped() -> None:
    """A protocol that raises is disconnected and its traceback logged, as with Twisted's
    dispatch; the reactor goes on (the client sees the connection end)."""
    got, lost, events = _exchange(b"boom")
    assert got == []
    assert lost and lost[0] in ("ConnectionDone", "ConnectionLost")
    failures = [e.get("log_failure") or e.get("failure") for e in events]
    assert any(f is not None and "protocol bug" in str(f.value) for f in failures)


def test_other_reactors_left_alone() -> None:
    memory = MemoryReactor()
    assert streamline(memory) is False
    assert "doIteration" not in vars(memory)


def test_this_twisted_has_what_it_needs() -> None:
    """The installed Twisted's epoll reactor passes the check (a failure here means an
    upgrade changed its internals: the server would keep Twisted's loop, and say so)."""
    assert missing(EPollReactor()) is None


def test_a_reactor_without_the_internals_keeps_its_own_loop() -> None:
    """An EPollReactor whose private poller or selectables are not what the direct
    dispatch uses (another Twisted) is left alone, and ``missing`` says what is gone."""
    reactor = EPollReactor()
    reactor._selectables = None  # type: ignore[assignment]
    assert "_selectables" in (missing(reactor) or "")
    assert streamline(reactor) is False
    assert "doIteration" not in vars(reactor)
    other = EPollReactor()
    del other._poller
    assert "_poller" in (missing(other) or "")
    assert streamline(other) is False


def test_a_main_loop_that_no_longer_calls_do_iteration_is_refused(monkeypatch: Any) -> None:
    """If Twisted's main loop stopped calling doIteration the replacement would never run:
    the check refuses it instead of replacing a method nobody calls."""

    def main_loop(self: Any) -> None:
        self.runUntilCurrent()

    monkeypatch.setattr(ReactorBase, "mainLoop", main_loop)
    reactor = EPollReactor()
    assert "doIteration" in (missing(reactor) or "")
    assert streamline(reactor) is False
