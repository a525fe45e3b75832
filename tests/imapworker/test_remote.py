"""A worker's side (cgtwist.imapworker.remote): questions go up the pipe and wait for the
server's answers; a connection waits at the gate until admitted, then its protocol takes the
gate's place on the transport."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from cgtwist.imapworker.remote import (
    MAX_WAITING_INPUT,
    GateFactory,
    RemoteActiveSessions,
    RemoteConnections,
    RemotePenalty,
    RemoteSessions,
    ServerLink,
)
from cgtwist.settings import Settings, SettingsHolder


class Pipe(StringTransport):
    def lines(self) -> list[bytes]:
        out = self.value().splitlines()
        self.clear()
        return out


def link() -> tuple[ServerLink, Pipe, list[str]]:
    events: list[str] = []
    sl = ServerLink(lambda: events.append("reload"), lambda: events.append("gone"), Clock())
    pipe = Pipe()
    sl.makeConnection(pipe)
    return sl, pipe, events


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class TCP(StringTransport):
    """A TCP connection's transport: its ``protocol`` is what reads."""

    protocol: Any = None


class Address:
    host = "192.0.2.1"


class GateTests(unittest.TestCase):
    def setUp(self) -> None:
        self.link, self.pipe, self.events = link()
        self.built: list[Recorder] = []

        class Inner(Factory):
            def buildProtocol(inner_self, addr: Any) -> Recorder:
                p = Recorder()
                self.built.append(p)
                return p

        self.factory = GateFactory(Inner(), self.link, 3, b"* BYE no\r\n")

    def connect(self) -> tuple[Any, TCP]:
        gate = self.factory.buildProtocol(Address())
        tcp = TCP()
        tcp.protocol = gate
        gate.makeConnection(tcp)
        return gate, tcp

    def test_admitted_connection_gets_its_protocol_with_what_was_sent(self) -> None:
        gate, tcp = self.connect()
        self.assertEqual(self.pipe.lines(), [b"O 1 3 192.0.2.1"])
        gate.dataReceived(b"a1 CAPA")
        gate.dataReceived(b"BILITY\r\n")
        self.assertEqual(self.built, [])
        self.link.dataReceived(b"o 1 1\n")
        (inner,) = self.built
        self.assertIs(tcp.protocol, inner)
        self.assertTrue(inner.made)
        self.assertIs(inner.transport, tcp)
        self.assertEqual(inner.data, b"a1 CAPABILITY\r\n")

    def test_refused_connection_reads_the_refusal(self) -> None:
        gate, tcp = self.connect()
        self.link.dataReceived(b"o 1 0\n")
        self.assertEqual(tcp.value(), b"* BYE no\r\n")
        self.assertTrue(tcp.disconnecting)
        self.assertEqual(self.built, [])
        self.assertEqual(self.pipe.lines(), [b"O 1 3 192.0.2.1"])  # nothing to give back

    def test_lost_before_admission_gives_its_place_back(self) -> None:
        gate, tcp = self.connect()
        gate.connectionLost(None)
        self.link.dataReceived(b"o 1 1\n")
        self.assertEqual(self.built, [])
        self.assertEqual(self.pipe.lines(), [b"O 1 3 192.0.2.1", b"X 3 192.0.2.1"])

    def test_too_much_before_admission_is_cut(self) -> None:
        gate, tcp = self.connect()
        tcp.abortConnection = lambda: setattr(tcp, "aborted", True)  # type: ignore[method-assign]
        gate.dataReceived(b"x" * (MAX_WAITING_INPUT + 1))
        self.assertTrue(getattr(tcp, "aborted", False))

    def test_server_gone_cuts_waiting_connections(self) -> None:
        gate, tcp = self.connect()
        tcp.abortConnection = lambda: setattr(tcp, "aborted", True)  # type: ignore[method-assign]
        self.link.connectionLost(None)
        self.assertTrue(getattr(tcp, "aborted", False))
        self.assertEqual(self.events, ["gone"])

    def test_connection_count_tells_the_server_of_each_close(self) -> None:
        count = RemoteConnections(self.link, 2)
        self.assertTrue(count.opened("192.0.2.1"))
        count.closed("192.0.2.1")
        self.assertEqual(self.pipe.lines(), [b"X 2 192.0.2.1"])


class LoginTests(unittest.TestCase):
    def setUp(self) -> None:
        self.link, self.pipe, self.events = link()

    def test_penalty_asks_the_server(self) -> None:
        settings = SettingsHolder(Settings({"auth.max_failures": 2}))
        penalty = RemotePenalty(self.link, settings, b"k" * 32)
        got: list[Any] = []
        penalty.acquire("192.0.2.1").addCallback(got.append)
        penalty.failed(
            "192.0.2.1", "alice smith", "imap", secret=b"pw", log_line=False
        ).addCallback(got.append)
        penalty.failed("192.0.2.1", "bob", "pop3").addCallback(got.append)
        penalty.release("192.0.2.1")
        penalty.succeeded("192.0.2.1")
        p, f1, f2, d, k = self.pipe.lines()
        self.assertEqual(p, b"P 1 192.0.2.1")
        head, digest, login = f1.rsplit(b" ", 2)[0], f1.split(b" ")[5], f1.split(b" ", 6)[6]
        self.assertEqual(head.split(b" ")[:5], [b"F", b"2", b"192.0.2.1", b"imap", b"0"])
        self.assertEqual(login, b"alice smith")
        self.assertEqual(len(digest), 32)
        self.assertNotIn(b"pw", f1)
        self.assertEqual(f2, b"F 3 192.0.2.1 pop3 1 - bob")
        self.assertEqual((d, k), (b"D 192.0.2.1", b"K 192.0.2.1"))
        self.link.dataReceived(b"f 3 4.000\np 1 0\nf 2 2.000\n")
        self.assertEqual(got, [4.0, False, 2.0])
        self.assertFalse(penalty.should_disconnect(1))
        self.assertTrue(penalty.should_disconnect(2))

    def test_sessions_count_and_give_back_once(self) -> None:
        sessions = RemoteSessions(self.link)
        got: list[Any] = []
        logouts: list[int] = []
        sessions.admit("Alice@Example.test", "192.0.2.1", lambda: logouts.append(1)).addCallback(
            got.append
        )
        sessions.admit("alice@example.test", "192.0.2.1", lambda: logouts.append(2)).addCallback(
            got.append
        )
        self.assertEqual(
            self.pipe.lines(),
            [b"U 1 192.0.2.1 alice@example.test", b"U 2 192.0.2.1 alice@example.test"],
        )
        self.link.dataReceived(b"u 2 0\nu 1 1\n")
        refused, admitted = got
        self.assertIsNone(refused)
        admitted()
        admitted()
        self.assertEqual(self.pipe.lines(), [b"V 1"])
        self.assertEqual(logouts, [1, 1])

    def test_listed_session_ended_by_the_server(self) -> None:
        active = RemoteActiveSessions(self.link, lambda: 100.0)
        ended: list[str] = []
        one = active.add("alice@example.test", "imap", "192.0.2.1", True, ended.append)
        two = active.add("alice@example.test", "pop3", "192.0.2.1", False, ended.append)
        self.link.dataReceived(b"E 1 Ended by its owner in WebUser\n")
        self.assertEqual(ended, ["Ended by its owner in WebUser"])
        active.remove(one)  # the session's own end after it: the server knows already
        active.remove(two)
        self.assertEqual(
            self.pipe.lines(),
            [
                b"L 1 imap 1 192.0.2.1 alice@example.test",
                b"L 2 pop3 0 192.0.2.1 alice@example.test",
                b"G 2",
            ],
        )

    def test_reload_and_unknown_lines(self) -> None:
        self.link.dataReceived(b"R\nwhat is this\no 99 1\n")
        self.assertEqual(self.events, ["reload"])


class LoginAttemptTests(unittest.TestCase):
    """LoginAttempt (cgtwist.protocols.login) over a worker's stand-ins: it waits for the
    server's answers to the attempt cap and to the count of sessions per account and IP."""

    def setUp(self) -> None:
        from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
        from twisted.cred.portal import Portal

        from tests.protocols.test_login import IThing, Realm

        self.link, self.pipe, _ = link()
        self.realm = Realm()
        self.portal = Portal(self.realm, [InMemoryUsernamePasswordDatabaseDontUse(bob=b"pw")])
        self.iface = IThing
        settings = SettingsHolder(Settings({}))
        self.penalty = RemotePenalty(self.link, settings, b"k" * 32)

    def attempt(self) -> Any:
        from cgtwist.protocols.login import LoginAttempt

        return LoginAttempt(
            self.portal,
            self.penalty,
            "imap",
            self.iface,
            "192.0.2.1",
            sessions=RemoteSessions(self.link),
        )

    def test_logged_in_after_both_answers(self) -> None:
        from cgtwist.protocols.login import LoggedIn

        d = self.attempt().run(b"bob", b"pw")
        self.assertNoResult(d)
        self.assertEqual(self.pipe.lines(), [b"P 1 192.0.2.1"])
        self.link.dataReceived(b"p 1 1\n")
        self.assertNoResult(d)
        self.assertEqual(self.pipe.lines(), [b"D 192.0.2.1", b"K 192.0.2.1", b"U 2 192.0.2.1 bob"])
        self.link.dataReceived(b"u 2 1\n")
        outcome = self.successResultOf(d)
        assert isinstance(outcome, LoggedIn)
        outcome.logout()
        self.assertEqual(self.pipe.lines(), [b"V 2"])
        self.assertEqual(self.realm.logouts, 1)

    def test_busy_and_too_many_sessions(self) -> None:
        from cgtwist.protocols.login import Busy, TooManySessions

        d = self.attempt().run(b"bob", b"pw")
        self.link.dataReceived(b"p 1 0\n")
        self.assertEqual(self.successResultOf(d), Busy())
        self.assertEqual(self.pipe.lines(), [b"P 1 192.0.2.1"])  # nothing to release
        d = self.attempt().run(b"bob", b"pw")
        self.link.dataReceived(b"p 2 1\n")
        self.link.dataReceived(b"u 3 0\n")
        self.assertEqual(self.successResultOf(d), TooManySessions("bob"))
        self.assertEqual(self.realm.logouts, 1)  # the avatar was logged out again


class RemoteAccountGuardTests(unittest.TestCase):
    def test_locks_come_from_the_server_and_failures_go_to_it(self) -> None:
        from cgtwist.imapworker.locks import RemoteAccountGuard

        sl, pipe, _ = link()
        clock = sl.clock
        settings = SettingsHolder(Settings({"auth.account_max_delay": 5}))
        guard = RemoteAccountGuard(sl, clock, settings, b"k" * 32)  # type: ignore[arg-type]
        self.assertFalse(guard.locked("alice@example.test"))
        sl.dataReceived(b"Z 30.000 alice@example.test\n")
        self.assertTrue(guard.locked("alice@example.test"))
        self.assertFalse(guard.locked("bob@example.test"))
        clock.advance(31)  # type: ignore[attr-defined]
        self.assertFalse(guard.locked("alice@example.test"))
        got: list[float] = []
        guard.failed("bob@example.test", "192.0.2.1", "guess").addCallback(got.append)
        (line,) = pipe.lines()
        self.assertTrue(line.startswith(b"B 1 192.0.2.1 ") and line.endswith(b" bob@example.test"))
        self.assertNotIn(b"guess", line)
        sl.dataReceived(b"b 1 2.500\n")
        self.assertEqual(got, [2.5])
        refused = guard.refused("alice@example.test", "192.0.2.1")
        self.assertNoResult(refused)
        clock.advance(5)  # type: ignore[attr-defined]
        self.assertEqual(self.successResultOf(refused), 5.0)
