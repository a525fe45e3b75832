"""cgtwist.runtime.fastwrite: a line to the server goes straight into the pipe when nothing
is queued before it, and never overtakes what is; a reply goes straight into an idle socket;
neither happens unless turned on, nor when Twisted's buffers are not where they were."""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone
from twisted.internet.process import ProcessWriter
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from cgtwist.runtime import fastwrite
from cgtwist.runtime.fastwrite import close_now, write_child_now, write_now, write_pipe_now


class _Proc:
    def childConnectionLost(self, name: Any) -> None:
        pass


class _Transport:
    """StandardIO's shape: ``_writer`` and ``write``."""

    def __init__(self, writer: ProcessWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.write(data)


class WritePipeNowTests(unittest.TestCase):
    def setUp(self) -> None:
        self.r, w = os.pipe()
        self.addCleanup(os.close, self.r)
        self.writer = ProcessWriter(MemoryReactor(), _Proc(), "write", w)
        self.writer.connected = 1
        self.addCleanup(os.close, w)
        os.set_blocking(self.r, False)
        self.assertIsNone(fastwrite.enable_pipe(True, _Transport(self.writer)))
        self.addCleanup(fastwrite.enable_pipe, False)

    def test_straight_into_the_pipe(self) -> None:
        """With nothing buffered the line is in the pipe at once (no reactor turn)."""
        write_pipe_now(_Transport(self.writer), b"Q 1\n")
        self.assertEqual(os.read(self.r, 100), b"Q 1\n")
        self.assertFalse(self.writer.dataBuffer or self.writer._tempDataBuffer)

    def test_never_overtakes_buffered_output(self) -> None:
        """Output already waiting in the writer keeps its place: the new line queues after it."""
        self.writer.write(b"R\n")  # buffered: MemoryReactor never makes it writable
        write_pipe_now(_Transport(self.writer), b"Q 2\n")
        with self.assertRaises(BlockingIOError):
            os.read(self.r, 100)
        self.writer.doWrite()
        self.assertEqual(os.read(self.r, 100), b"R\nQ 2\n")

    def test_plain_goes_through_the_transport(self) -> None:
        """Turned off (``runtime = plain``), the line waits in the writer's buffer for the
        reactor, as Twisted's StandardIO does it."""
        fastwrite.enable_pipe(False)
        write_pipe_now(_Transport(self.writer), b"Q 3\n")
        with self.assertRaises(BlockingIOError):
            os.read(self.r, 100)
        self.writer.doWrite()
        self.assertEqual(os.read(self.r, 100), b"Q 3\n")

    def test_a_transport_without_the_writer_stays_plain(self) -> None:
        """A StandardIO whose private ``_writer`` is gone (another Twisted) is refused, with
        the reason, and its lines go through the transport."""
        why = fastwrite.enable_pipe(True, object())
        self.assertIn("_writer", why or "")
        self.assertFalse(fastwrite._direct["pipe"])


class _ChildTransport:
    """A child process's transport: its pipes by child fd, and ``write`` to its stdin."""

    def __init__(self, writer: ProcessWriter) -> None:
        self.pipes = {0: writer}

    def write(self, data: bytes) -> None:
        self.pipes[0].write(data)


class WriteChildNowTests(unittest.TestCase):
    """The server's attempts to an outbound delivery worker (its standard input)."""

    def setUp(self) -> None:
        self.r, w = os.pipe()
        self.addCleanup(os.close, self.r)
        self.writer = ProcessWriter(MemoryReactor(), _Proc(), 0, w)
        self.writer.connected = 1
        self.addCleanup(os.close, w)
        os.set_blocking(self.r, False)
        self.assertIsNone(fastwrite.enable(True))
        self.addCleanup(fastwrite.enable, False)

    def test_straight_into_the_pipe(self) -> None:
        """With nothing buffered the attempt is in the worker's pipe at once, not after the
        rest of the server's reactor turn."""
        write_child_now(_ChildTransport(self.writer), b"A {}\n")
        self.assertEqual(os.read(self.r, 100), b"A {}\n")

    def test_never_overtakes_buffered_output(self) -> None:
        self.writer.write(b"S {}\n")  # buffered: MemoryReactor never makes it writable
        write_child_now(_ChildTransport(self.writer), b"A {}\n")
        with self.assertRaises(BlockingIOError):
            os.read(self.r, 100)
        self.writer.doWrite()
        self.assertEqual(os.read(self.r, 100), b"S {}\nA {}\n")

    def test_plain_goes_through_the_transport(self) -> None:
        fastwrite.enable(False)
        write_child_now(_ChildTransport(self.writer), b"A {}\n")
        with self.assertRaises(BlockingIOError):
            os.read(self.r, 100)
        self.writer.doWrite()
        self.assertEqual(os.read(self.r, 100), b"A {}\n")

    def test_a_transport_without_pipes_stays_plain(self) -> None:
        written: list[bytes] = []

        class Other:
            def write(self, data: bytes) -> None:
                written.append(data)

        write_child_now(Other(), b"A {}\n")
        self.assertEqual(written, [b"A {}\n"])


class _Peer(Protocol):
    def __init__(self, got: list[bytes]) -> None:
        self.got = got

    def dataReceived(self, data: bytes) -> None:
        self.got.append(data)


class WriteNowTests(unittest.SynchronousTestCase):
    """Over a real loopback connection of a private epoll reactor, turned by the test."""

    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.got: list[bytes] = []
        self.server: list[Protocol] = []

        def build(addr: Any) -> Protocol:
            p = _Peer(self.got)
            self.server.append(p)
            return p

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        self.port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        client = Protocol()
        self.reactor.connectTCP("127.0.0.1", self.port.getHost().port, _Once(client))
        self._turn_until(lambda: bool(self.server) and client.transport is not None)
        self.client = client
        self.addCleanup(self._close)
        self.addCleanup(fastwrite.enable, False)

    def _close(self) -> None:
        self.client.transport.abortConnection()
        self.port.stopListening()
        for _ in range(3):
            self.reactor.iterate(0)

    def _turn_until(self, cond: Callable[[], bool]) -> None:
        for _ in range(10000):
            if cond():
                return
            self.reactor.iterate(0.01)
        self.fail("condition not met")

    def test_tuned_reply_is_sent_before_the_next_turn(self) -> None:
        """With direct writes on, the reply is in the socket at once: the transport's
        buffer stays empty and the peer reads it on the next turn."""
        self.assertIsNone(fastwrite.enable(True))
        write_now(self.client.transport, b"250 ok\r\n")
        transport: Any = self.client.transport
        self.assertFalse(transport._tempDataBuffer or transport.dataBuffer)
        self._turn_until(lambda: b"".join(self.got) == b"250 ok\r\n")

    def test_plain_reply_goes_through_the_transport(self) -> None:
        """Off (``runtime = plain``), write_now is the transport's write: the reply waits in
        Twisted's buffer for the reactor and still arrives."""
        fastwrite.enable(False)
        write_now(self.client.transport, b"250 ok\r\n")
        transport: Any = self.client.transport
        self.assertTrue(transport._tempDataBuffer or transport.dataBuffer)
        self._turn_until(lambda: b"".join(self.got) == b"250 ok\r\n")

    def test_missing_buffers_keep_writes_plain(self) -> None:
        """A Twisted whose descriptors lack the buffers write_now must see empty is refused:
        enable says why and write_now stays the transport's write."""

        class Renamed:
            connected = 1
            disconnecting = 0
            _writeDisconnected = False
            dataBuffer = b""
            _pendingData: list[bytes] = []  # was _tempDataBuffer

        why = fastwrite.enable(True, probe=Renamed())
        self.assertIn("_tempDataBuffer", why or "")
        write_now(self.client.transport, b"250 ok\r\n")
        transport: Any = self.client.transport
        self.assertTrue(transport._tempDataBuffer or transport.dataBuffer)

    def test_this_twisted_has_what_it_needs(self) -> None:
        """The installed Twisted passes the check (a failure here means an upgrade changed
        the internals: the server would run these writes plain, and say so)."""
        self.assertIsNone(fastwrite.missing())


class _Recording(Protocol):
    """The closing side: the reason of its connectionLost, when it came."""

    def __init__(self) -> None:
        self.lost: list[Any] = []

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.append(reason)


class _Watching(_Peer):
    """The other side: what it read, and whether it saw the close."""

    def __init__(self, got: list[bytes], closed: list[bool]) -> None:
        super().__init__(got)
        self.closed = closed

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.append(True)


class CloseNowTests(unittest.SynchronousTestCase):
    """close_now over a real loopback connection of a private epoll reactor: a session's
    last reply, then the close, as the SMTP server ends a session (QUIT, 421)."""

    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.got: list[bytes] = []
        self.closed: list[bool] = []
        self.server: list[Protocol] = []

        def build(addr: Any) -> Protocol:
            p = _Watching(self.got, self.closed)
            self.server.append(p)
            return p

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        self.port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.client = _Recording()
        self.reactor.connectTCP("127.0.0.1", self.port.getHost().port, _Once(self.client))
        self._turn_until(lambda: bool(self.server) and self.client.transport is not None)
        self.addCleanup(self._stop)
        self.addCleanup(fastwrite.enable, False)

    def _stop(self) -> None:
        if self.client.transport.connected:
            self.client.transport.abortConnection()
        self.port.stopListening()
        for _ in range(3):
            self.reactor.iterate(0)

    def _turn_until(self, cond: Callable[[], bool]) -> None:
        for _ in range(10000):
            if cond():
                return
            self.reactor.iterate(0.01)
        self.fail("condition not met")

    def test_tuned_closes_at_once_after_the_whole_reply(self) -> None:
        """With direct writes on and the reply gone out whole, the connection is closed
        before close_now returns (connectionLost with ConnectionDone: no writability turn),
        and the peer reads the whole reply, then the end of the connection."""
        self.assertIsNone(fastwrite.enable(True))
        transport: Any = self.client.transport
        write_now(transport, b"221 2.0.0 Bye\r\n")
        close_now(transport)
        self.assertEqual(len(self.client.lost), 1)
        self.assertIsInstance(self.client.lost[0].value, ConnectionDone)
        self.assertFalse(transport.connected)
        self._turn_until(lambda: bool(self.closed))
        self.assertEqual(b"".join(self.got), b"221 2.0.0 Bye\r\n")

    def test_buffered_output_is_flushed_before_the_close(self) -> None:
        """Output still in Twisted's buffer keeps the close for later, as loseConnection
        does: nothing is lost, the peer reads all of it before the end."""
        self.assertIsNone(fastwrite.enable(True))
        transport: Any = self.client.transport
        transport.write(b"250 queued\r\n")  # buffered until the reactor's next turn
        close_now(transport)
        self.assertEqual(self.client.lost, [])
        self._turn_until(lambda: bool(self.closed) and bool(self.client.lost))
        self.assertEqual(b"".join(self.got), b"250 queued\r\n")
        self.assertIsInstance(self.client.lost[0].value, ConnectionDone)

    def test_plain_closes_as_twisted_does(self) -> None:
        """Off (``runtime = plain``), close_now is loseConnection: the close comes on a later
        turn of the reactor, after the reply."""
        fastwrite.enable(False)
        transport: Any = self.client.transport
        write_now(transport, b"221 2.0.0 Bye\r\n")
        close_now(transport)
        self.assertEqual(self.client.lost, [])
        self._turn_until(lambda: bool(self.closed) and bool(self.client.lost))
        self.assertEqual(b"".join(self.got), b"221 2.0.0 Bye\r\n")


class _Once(ClientFactory):
    def __init__(self, protocol: Protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_
