"""The outbound SMTP client on a StringTransport: reply parsing, EHLO/HELO, STARTTLS
injection, AUTH policy, timeouts and the data encoding."""

from __future__ import annotations

import re
from typing import Any, Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from cgtwist.delivery.smtp_client import SessionError, SMTPClient, Timeouts, encode_data
from cgtwist.runtime import fastwrite


class TLSRecordingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.tls_started: list[Any] = []

    def startTLS(self, ctx: Any) -> None:
        self.tls_started.append(ctx)


def make(
    tls: Any = None, auth: Any = None, require_tls: bool = False
) -> tuple[SMTPClient, TLSRecordingTransport, task.Clock]:
    clock = task.Clock()
    c = SMTPClient(
        clock,
        "out.test",
        "mx.test",
        Timeouts(greeting=30, command=20),
        tls=tls,
        require_tls=require_tls,
        auth=auth,
    )
    t = TLSRecordingTransport()
    c.makeConnection(t)
    return c, t, clock


def sent(t: StringTransport) -> list[bytes]:
    lines = t.value().split(b"\r\n")
    t.clear()
    return [x for x in lines if x]


class Session(unittest.TestCase):
    def test_multiline_ehlo_gives_extensions(self) -> None:
        """A multi-line 250 EHLO reply is read whole and its keywords become extensions."""
        c, t, _ = make()
        d = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 mx.test ESMTP\r\n")
        self.assertEqual(sent(t), [b"EHLO out.test"])
        c.dataReceived(b"250-mx.test hello\r\n250-SIZE 1000\r\n250-pipelining\r\n250 8BITMIME\r\n")
        self.successResultOf(d)
        self.assertEqual(c.extensions, {"SIZE": "1000", "PIPELINING": "", "8BITMIME": ""})
        self.assertEqual(c.size_limit(), 1000)

    def test_helo_fallback(self) -> None:
        """A server that refuses EHLO with 5xx is greeted with HELO instead (RFC 5321 §3.2)."""
        c, t, _ = make()
        d = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 old.test\r\n")
        sent(t)
        c.dataReceived(b"502 5.5.1 what\r\n")
        self.assertEqual(sent(t), [b"HELO out.test"])
        c.dataReceived(b"250 old.test\r\n")
        self.successResultOf(d)
        self.assertEqual(c.extensions, {})

    def test_plaintext_after_starttls_220_is_refused(self) -> None:
        """Bytes following the 220 to STARTTLS in the same packet (a man in the middle
        injecting plaintext, CVE-2011-0411 pattern) abort the session before TLS starts."""
        c, t, _ = make(tls=lambda host: object())
        d = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 mx.test\r\n")
        c.dataReceived(b"250-mx.test\r\n250 STARTTLS\r\n")
        self.assertEqual(sent(t), [b"EHLO out.test", b"STARTTLS"])
        c.dataReceived(b"220 2.0.0 go ahead\r\n250 2.1.0 injected\r\n")
        f = self.failureResultOf(d, SessionError)
        self.assertIn("injected", f.value.text)
        self.assertEqual(t.tls_started, [])
        self.assertTrue(t.disconnecting)

    def test_starttls_then_fresh_ehlo(self) -> None:
        """After 220 to STARTTLS the client starts TLS with our options for the MX name and
        forgets the plaintext extensions, asking EHLO again."""
        made: list[str] = []
        c, t, _ = make(tls=lambda host: made.append(host) or "ctx")
        d = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 mx.test\r\n250-mx.test\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n")
        sent(t)
        c.dataReceived(b"220 go\r\n")
        self.assertEqual(t.tls_started, ["ctx"])
        self.assertEqual(made, ["mx.test"])
        self.assertEqual(sent(t), [b"EHLO out.test"])
        self.assertEqual(c.extensions, {})
        c.dataReceived(b"250-mx.test\r\n250 SIZE 5\r\n")
        self.successResultOf(d)
        self.assertEqual(c.extensions, {"SIZE": "5"})

    def test_tls_setup_error_is_a_session_error(self) -> None:
        """A TLS configuration that cannot be built (say, an unreadable CA file) fails this
        session as a TLS failure instead of crashing the delivery."""

        def broken(host: str) -> Any:
            raise OSError("no such CA file")

        c, t, _ = make(tls=broken)
        d = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 mx\r\n250-mx\r\n250 STARTTLS\r\n")
        c.dataReceived(b"220 go\r\n")
        f = self.failureResultOf(d, SessionError)
        self.assertEqual(f.value.during, "tls")
        self.assertTrue(t.disconnecting)

    def test_auth_never_sent_in_plaintext(self) -> None:
        """With a login configured but no TLS, the password is never sent."""
        c, t, _ = make(auth=("u", "secret"))
        d = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 mx.test\r\n250-mx.test\r\n250 AUTH PLAIN\r\n")
        self.failureResultOf(d, SessionError)
        self.assertNotIn(b"AUTH", t.value())

    def test_malformed_reply_aborts(self) -> None:
        """A reply line that is not 'ddd text' ends the session with an error, not a crash."""
        c, t, _ = make()
        d = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"hello there\r\n")
        f = self.failureResultOf(d, SessionError)
        self.assertIn("malformed", f.value.text)
        self.assertTrue(t.disconnecting)

    def test_overlong_reply_line_aborts(self) -> None:
        """An endless reply line is cut off and the session dropped (bounded memory)."""
        c, t, _ = make()
        d = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 " + b"x" * 10000)
        self.failureResultOf(d, SessionError)

    def test_greeting_timeout(self) -> None:
        """No greeting within the greeting timeout: the session fails and the socket closes."""
        c, t, clock = make()
        d = defer.Deferred.fromCoroutine(c.start())
        clock.advance(29)
        self.assertNoResult(d)
        clock.advance(1)
        f = self.failureResultOf(d, SessionError)
        self.assertEqual(f.value.during, "greeting")
        self.assertTrue(t.disconnecting)

    def test_rcpt_timeout_keeps_earlier_replies(self) -> None:
        """A server that stops answering after some RCPTs: the transaction reports the replies
        it got and the error, so only the unanswered recipients are retried."""
        c, t, clock = make()
        d0 = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 mx\r\n250 mx\r\n")
        self.successResultOf(d0)
        sent(t)
        d = defer.Deferred.fromCoroutine(c.transaction("a@x", [("b@y", ""), ("c@y", "")], "", b"x"))
        c.dataReceived(b"250 ok\r\n")
        c.dataReceived(b"550 5.1.1 no\r\n")
        clock.advance(300)
        result = self.successResultOf(d)
        self.assertEqual(str(result.rcpts[0]), "550 5.1.1 no")
        self.assertIsNone(result.rcpts[1])
        self.assertIsNotNone(result.error)


class Pipelined(unittest.TestCase):
    """RFC 2920: MAIL, the RCPTs and DATA go in one group and their replies are read in order."""

    def start(self) -> tuple[SMTPClient, TLSRecordingTransport, task.Clock]:
        c, t, clock = make()
        d0 = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 mx\r\n250-mx\r\n250 PIPELINING\r\n")
        self.successResultOf(d0)
        sent(t)
        return c, t, clock

    def test_replies_in_pieces_each_with_its_deadline(self) -> None:
        """The RCPT replies may come in any pieces, each within the RCPT timeout of the one
        before (not of the group's start), and each recipient gets its own."""
        c, t, clock = self.start()
        rcpts = [(f"u{n}@y", "") for n in range(4)]
        d = defer.Deferred.fromCoroutine(c.transaction("a@x", rcpts, "", b"hello\r\n"))
        self.assertEqual(sent(t)[-1], b"DATA")
        c.dataReceived(b"250 ok\r\n250 2.1.5 u0\r\n250 2.1")
        clock.advance(299)
        c.dataReceived(b".5 u1\r\n550 5.1.1 u2 unknown\r\n")
        clock.advance(299)  # 598 s after the group: still in time, 299 s after the last reply
        c.dataReceived(b"250 2.1.5 u3\r\n354 go\r\n")
        self.assertEqual(sent(t), [b"hello", b"."])  # a small message: written at once
        c.dataReceived(b"250 2.0.0 queued\r\n")
        result = self.successResultOf(d)
        self.assertIsNone(result.error)
        self.assertEqual(
            [str(r) for r in result.rcpts],
            ["250 2.1.5 u0", "250 2.1.5 u1", "550 5.1.1 u2 unknown", "250 2.1.5 u3"],
        )
        self.assertEqual((str(result.data), str(result.end)), ("354 go", "250 2.0.0 queued"))

    def test_a_big_message_waits_for_the_transport(self) -> None:
        """Data over one block goes through a pull producer, one block each time the
        transport asks for more (back-pressure), not into its buffer all at once."""
        c, t, clock = self.start()
        body = b"".join(b"line %06d\r\n" % n for n in range(20000))  # 240 kB
        d = defer.Deferred.fromCoroutine(c.transaction("a@x", [("b@y", "")], "", body))
        t.clear()
        c.dataReceived(b"250 ok\r\n250 b\r\n354 go\r\n")
        self.assertEqual(t.value(), b"")
        self.assertIsNotNone(t.producer)
        while t.producer is not None:
            before = len(t.value())
            t.producer.resumeProducing()
            self.assertLessEqual(len(t.value()) - before, 65536)
        self.assertEqual(t.value(), body + b".\r\n")
        c.dataReceived(b"250 2.0.0 queued\r\n")
        self.assertIsNone(self.successResultOf(d).error)

    def test_silence_after_some_replies_keeps_them(self) -> None:
        """A server that stops answering part-way through the RCPT replies: the transaction
        reports the replies it got and the error, so only the unanswered are retried."""
        c, t, clock = self.start()
        rcpts = [("b@y", ""), ("c@y", ""), ("d@y", "")]
        d = defer.Deferred.fromCoroutine(c.transaction("a@x", rcpts, "", b"x"))
        c.dataReceived(b"250 ok\r\n250 b\r\n550 5.1.1 c\r\n")
        clock.advance(299)
        self.assertNoResult(d)
        clock.advance(1)
        result = self.successResultOf(d)
        self.assertEqual(
            [str(r) if r else None for r in result.rcpts], ["250 b", "550 5.1.1 c", None]
        )
        self.assertEqual(result.error.during, "rcpt")  # type: ignore[union-attr]
        self.assertTrue(t.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])


def _encode_reference(data: bytes) -> bytes:
    """encode_data as it was written first: two regular expressions over every byte."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", text) + b".\r\n"


class Encoding(unittest.TestCase):
    @settings(max_examples=500, deadline=None)
    @given(
        st.lists(
            st.sampled_from([b".", b"..", b"a", b".a", b"\r\n", b"\n", b"\r", b" ", b"\r\n."]),
            max_size=40,
        )
    )
    def test_same_wire_form_as_the_regular_expressions(self, pieces: list[bytes]) -> None:
        """The fast path for CRLF-only data and the general one give, for any line endings
        and dots, exactly the bytes the two regular expressions gave."""
        data = b"".join(pieces)
        self.assertEqual(encode_data(data), _encode_reference(data))

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.sampled_from([b".", b"..", b"a", b".a", b"\r\n", b"\n", b"\r", b" ", b"x.y"]),
            max_size=40,
        )
    )
    def test_encoding_round_trips_and_never_ends_early(self, pieces: list[bytes]) -> None:
        """Whatever the line endings and dots, the wire form has CRLF lines only, its first
        lone '.' line is the terminator, and removing the stuffing gives the CRLF message back."""
        data = b"".join(pieces)
        wire = encode_data(data)
        self.assertTrue(wire.endswith(b".\r\n"))
        body = wire[:-3]
        self.assertNotIn(b"\r\n.\r\n", b"\r\n" + body)
        self.assertIsNone(re.search(rb"\r(?!\n)|(?<!\r)\n", wire))
        unstuffed = re.sub(rb"(?m)^\.", b"", body)
        normal = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
        if normal and not normal.endswith(b"\r\n"):
            normal += b"\r\n"
        self.assertEqual(unstuffed, normal)


class Deadlines(unittest.TestCase):
    def test_each_reply_has_its_own_deadline(self) -> None:
        """The deadline moves with each command: a reply late for the first command's timeout
        but in time for its own is taken, and a later silence still ends the session."""
        c, t, clock = make()
        d0 = defer.Deferred.fromCoroutine(c.start())
        clock.advance(25)  # greeting timeout 30
        c.dataReceived(b"220 mx\r\n")
        clock.advance(15)  # 40 s from the start, 15 s into EHLO's 20
        c.dataReceived(b"250 mx\r\n")
        self.successResultOf(d0)
        clock.advance(1000)  # idle between transactions: no deadline runs
        self.assertFalse(t.disconnecting)
        d = defer.Deferred.fromCoroutine(c.transaction("a@x", [("b@y", "")], "", b"x"))
        clock.advance(299)
        self.assertNoResult(d)
        clock.advance(1)  # the MAIL reply's 300 s
        result = self.successResultOf(d)
        self.assertIsNotNone(result.error)
        self.assertEqual(result.error.during, "mail")  # type: ignore[union-attr]
        self.assertTrue(t.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])


class SafePath(unittest.TestCase):
    @settings(max_examples=500, deadline=None)
    @given(st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=40))
    def test_same_answer_as_the_character_rule(self, text: str) -> None:
        """An address is fit for ``<...>`` exactly when it has no control character, DEL or
        angle bracket (and the length and space rules hold)."""
        from cgtwist.delivery.smtp import _safe_path

        bad = any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or "<" in text or ">" in text
        expected = (
            bool(text)
            and len(text.encode("utf-8")) <= 256
            and not bad
            and (" " not in text or text.startswith('"'))
        )
        self.assertEqual(_safe_path(text), expected)
        self.assertFalse(_safe_path("a@b\r\nRCPT TO:<x@y>"))


class _Sink(Protocol):
    def __init__(self, got: list[bytes]) -> None:
        self.got = got

    def dataReceived(self, data: bytes) -> None:
        self.got.append(data)


class DirectWrites(unittest.SynchronousTestCase):
    """Over a real loopback connection of a private epoll reactor, with direct writes on
    (``runtime = tuned``): the pipelined group and a small message go straight into the idle
    socket, not into Twisted's buffer for a later turn (two ``epoll_ctl`` and a reactor turn
    each: 6.9 ``epoll_ctl`` per message of an outbound run, 2.1 without)."""

    def setUp(self) -> None:
        self.reactor = EPollReactor()
        self.got: list[bytes] = []
        factory = Factory.forProtocol(lambda: _Sink(self.got))
        self.port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.client = SMTPClient(self.reactor, "out.test", "mx.test", Timeouts())
        once = ClientFactory.forProtocol(lambda: self.client)
        self.reactor.connectTCP("127.0.0.1", self.port.getHost().port, once)
        self._turn_until(lambda: self.client.transport is not None and self.client.alive)
        self.assertIsNone(fastwrite.enable(True))
        self.addCleanup(fastwrite.enable, False)
        self.addCleanup(self._close)

    def _close(self) -> None:
        self.client.abort(SessionError("test over", "test"))
        self.port.stopListening()
        for call in self.reactor.getDelayedCalls():
            call.cancel()
        for _ in range(3):
            self.reactor.iterate(0)

    def _turn_until(self, cond: Callable[[], bool]) -> None:
        for _ in range(10000):
            if cond():
                return
            self.reactor.iterate(0.01)
        self.fail("condition not met")

    def _unbuffered(self) -> bool:
        transport: Any = self.client.transport
        return not (transport._tempDataBuffer or transport.dataBuffer)

    def test_group_and_message_go_straight_into_the_socket(self) -> None:
        c = self.client
        d0 = defer.Deferred.fromCoroutine(c.start())
        c.dataReceived(b"220 mx\r\n")
        self.assertTrue(self._unbuffered())  # EHLO
        c.dataReceived(b"250-mx\r\n250 PIPELINING\r\n")
        self.successResultOf(d0)
        d = defer.Deferred.fromCoroutine(c.transaction("a@x", [("b@y", "")], "", b"hi\r\n"))
        self.assertTrue(self._unbuffered())  # MAIL, RCPT, DATA
        c.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
        self.assertTrue(self._unbuffered())  # the message
        c.dataReceived(b"250 2.0.0 queued\r\n")
        self.assertIsNone(self.successResultOf(d).error)
        want = b"EHLO out.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\n"
        self._turn_until(lambda: b"".join(self.got) == want)
