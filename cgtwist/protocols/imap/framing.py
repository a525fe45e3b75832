"""IMAP input framing: command lines and literals read under hard limits, one command at a time.

Owns turning the byte stream into complete commands (lines plus literals) for CgIMAP4Server:
the size of a literal is checked before any ``+`` continuation is sent (RELIABILITY.md a8,
twisted #12763, greenmail #1038), LITERAL+ ``{n+}`` (RFC 7888), line and command length
(imap.max_command_length), APPEND literals capped by imap.max_literal and spooled to a
temporary file, and input paused while a command runs. It never interprets a command.
"""

from __future__ import annotations

import re
import tempfile
from collections import deque
from typing import IO, TYPE_CHECKING, Any, Optional, Union

from twisted.internet import defer
from twisted.mail import imap4

from cgtwist.logs import Logger
from cgtwist.protocols.imap import append as imap_append
from cgtwist.protocols.imap import parse as imap_parse

# RFC 3501 §9: tag = 1*<any ASTRING-CHAR except "+">
_TAG_RE = re.compile(rb"\A[^\x00-\x20\x7f-\xff(){%*\"\\+]{1,64}\Z")
_SPOOL_IN_MEMORY = 1024 * 1024  # APPEND literals larger than this go to a temporary file
# The end of a discarded over-long line kept to see whether it announced a LITERAL+ literal.
_TAIL = 32
_NONSYNC_AT_END = re.compile(rb"\{[0-9]+\+\}\r?\Z")


class _Pending:
    """One command being assembled from lines and literals."""

    def __init__(self, first: bytes) -> None:
        self.tag, self.name, _ = imap_parse.split_command(first)
        self.segments: list[bytes] = [first]
        self.literals: list[Union[bytes, IO[bytes]]] = []
        self.size = len(first)
        self.messages = 0  # APPEND message literals accepted (imap.max_append_messages)


def _append_arguments_problem(cmd: _Pending, before: bytes) -> Optional[str]:
    """What is wrong with APPEND's flags and date (``before``: the line up to the message
    literal), or None. The mailbox comes first: in this line after tag and command, or as an
    earlier literal, in which case the line holds only what follows it."""
    before, _binary = imap_append.strip_literal8(before)
    try:
        tokens = imap_parse.tokenize([before], [])
        args = tokens[3:] if len(cmd.segments) == 1 else tokens
        if len(cmd.segments) == 1 and len(tokens) < 3:
            return "Missing mailbox"
        imap_parse.append_arguments(args)
    except imap_parse.ParseError as e:
        return str(e)[:200]
    return None


class FramingMixin:
    """Line/literal reader; the protocol provides ``_dispatch``, ``_idle_line``, ``_sasl_line``."""

    log = Logger()
    _inbuf: bytearray
    _in_loop: bool
    _paused: bool
    _transport_paused: bool = False  # the transport really is paused (input came while busy)
    _discarding: bool
    _discard_tail = b""  # the last _TAIL octets of the line being discarded
    _closed: bool
    _cmd: Optional[_Pending]
    _literal_left: int
    _literal_sink: Optional[IO[bytes]]
    _literal_message: bool = False
    _literal_queue: deque[tuple[Any, bytes]]
    _idle_tag: Optional[bytes]
    _sasl_tag: Optional[bytes]
    settings: Any
    state: str
    transport: Any
    peer_ip: str

    if TYPE_CHECKING:

        def sendBadResponse(self, tag: Optional[bytes] = None, message: bytes = b"") -> None: ...
        def sendNegativeResponse(self, tag: Optional[bytes] = None, message: Any = b"") -> None: ...
        def sendContinuationRequest(self, msg: Optional[bytes] = b"") -> None: ...
        def sendLine(self, line: bytes) -> None: ...
        def resetTimeout(self) -> None: ...
        def _dispatch(self, cmd: _Pending) -> None: ...
        def _idle_line(self, line: bytes) -> None: ...
        def _sasl_line(self, line: bytes) -> None: ...

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self._inbuf += data
        if self._paused and data and not self._transport_paused:
            # Input while a command runs (pipelining): stop reading until its tagged reply.
            # Only now, not at every command: a client that waits for its replies costs no
            # pause and resume (two epoll_ctl calls per command).
            self._transport_paused = True
            self.transport.pauseProducing()
        if self._in_loop:
            return
        self._in_loop = True
        try:
            self._process()
        finally:
            self._in_loop = False

    def _process(self) -> None:
        limit = self.settings.current.imap.max_command_length
        while self._inbuf and not self._paused and not self._closed:
            if self._literal_left > 0:
                chunk = bytes(self._inbuf[: self._literal_left])
                del self._inbuf[: len(chunk)]
                assert self._literal_sink is not None
                self._literal_sink.write(chunk)
                self._literal_left -= len(chunk)
                self.resetTimeout()
                if self._literal_left == 0:
                    self._literal_done()
                continue
            nl = self._inbuf.find(b"\n")
            if self._discarding:
                if nl < 0:
                    self._discard_tail = (self._discard_tail + bytes(self._inbuf[-_TAIL:]))[-_TAIL:]
                    self._inbuf.clear()
                    return
                tail = (self._discard_tail + bytes(self._inbuf[max(0, nl - _TAIL) : nl]))[-_TAIL:]
                del self._inbuf[: nl + 1]
                self._discarding = False
                self._discard_tail = b""
                self._overlong_end(tail)
                continue
            if nl < 0:
                if len(self._inbuf) > limit:
                    self._too_long(bytes(self._inbuf[:80]))
                    self._discard_tail = bytes(self._inbuf[-_TAIL:])
                    self._inbuf.clear()
                    self._discarding = True
                return
            line = bytes(self._inbuf[:nl])
            del self._inbuf[: nl + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > limit:
                self._too_long(line[:80])
                self._overlong_end(line[-_TAIL:])
                continue
            self.resetTimeout()
            self._line(line)

    def _too_long(self, start: bytes) -> None:
        """A command line over imap.max_command_length: BAD, and drop the whole command."""
        tag = self._cmd.tag if self._cmd else start.split(b" ", 1)[0]
        self._abort_command()
        self.log.info("imap: command line too long from {ip}", ip=self.peer_ip)
        self._reply_bad_input(tag, b"[TOOBIG] Command line too long")

    def _overlong_end(self, tail: bytes) -> None:
        """The end of a refused over-long line: if it announced a LITERAL+ literal, the
        client sends its octets without waiting, and they must not run as commands (RFC 7888
        §4: the server cannot resynchronise), so the connection closes."""
        if _NONSYNC_AT_END.search(tail):
            self.sendLine(b"* BYE Command line too long")
            self._closed_by_us()

    def _reply_bad_input(self, tag: bytes, text: bytes) -> None:
        if not _TAG_RE.match(tag):
            tag = b"*"
        self.sendBadResponse(tag, text)

    def _line(self, line: bytes) -> None:
        if self._idle_tag is not None:
            self._idle_line(line)
            return
        if self._sasl_tag is not None:
            self._sasl_line(line)
            return
        if self._cmd is None:
            if not line.strip():
                self.sendBadResponse(None, b"Empty command line")
                return
            self._cmd = _Pending(line)
            if not _TAG_RE.match(self._cmd.tag):
                self._cmd = None
                self.sendBadResponse(None, b"Invalid tag")
                return
        else:
            self._cmd.segments.append(line)
            self._cmd.size += len(line)
        cmd = self._cmd
        if cmd.size > self.settings.current.imap.max_command_length:
            self._abort_command()
            self.sendBadResponse(cmd.tag, b"[TOOBIG] Command too long")
            return
        try:
            spec = imap_parse.literal_at_end(line)
        except imap_parse.ParseError as e:
            self._abort_command()
            self.log.info("imap: bad literal from {ip}: {line!r}", ip=self.peer_ip, line=line[-40:])
            self.sendBadResponse(cmd.tag, str(e).encode())
            return
        if spec is None:
            self._cmd = None
            self._dispatch(cmd)
            return
        self._start_literal(cmd, spec, line)

    def _literal_cap(
        self, cmd: _Pending, spec: imap_parse.LiteralSpec, line: bytes
    ) -> tuple[int, bool]:
        """(largest acceptable size, is this APPEND's message literal)."""
        if cmd.name == b"APPEND" and self.state in ("auth", "select"):
            # After the mailbox, every literal of APPEND is a message (RFC 3502 MULTIAPPEND).
            before = line[: spec.start]
            if len(cmd.segments) > 1 or before.split(b" ", 2)[2:] != [b""]:
                return self.settings.current.imap.max_literal, True
        return imap_parse.SMALL_LITERAL_MAX, False

    def _start_literal(self, cmd: _Pending, spec: imap_parse.LiteralSpec, line: bytes) -> None:
        cap, message = self._literal_cap(cmd, spec, line)
        small_total = sum(len(x) for x in cmd.literals if isinstance(x, bytes))
        if not message:
            cap = min(cap, self.settings.current.imap.max_command_length - small_total)
        too_many = message and cmd.messages >= self.settings.current.imap.max_append_messages
        if spec.size > cap or too_many:
            self._abort_command()
            if too_many:
                self.log.info(
                    "imap: APPEND of more than {n} messages refused from {ip}",
                    n=cmd.messages,
                    ip=self.peer_ip,
                )
            else:
                self.log.info(
                    "imap: literal of {size} octets refused from {ip}",
                    size=spec.size,
                    ip=self.peer_ip,
                )
            if not spec.sync:
                # RFC 7888 §4: the octets are already on their way; we cannot resynchronise.
                self.sendBadResponse(
                    cmd.tag,
                    b"[LIMIT] Too many messages in one APPEND"
                    if too_many
                    else b"[TOOBIG] Literal too large",
                )
                self.sendLine(b"* BYE Literal too large")
                self._closed_by_us()
            elif too_many:
                self.sendNegativeResponse(cmd.tag, b"[LIMIT] Too many messages in one APPEND")
            elif message:
                self.sendNegativeResponse(cmd.tag, b"[TOOBIG] Message too large")
            else:
                self.sendBadResponse(cmd.tag, b"[TOOBIG] Literal too large")
            return
        if message and spec.sync:
            # RFC 3501 §6.3.11: bad flags or date are BAD before the client sends the message.
            problem = _append_arguments_problem(cmd, line[: spec.start])
            if problem is not None:
                self._abort_command()
                self.log.info(
                    "imap: APPEND refused from {ip}: {problem}", ip=self.peer_ip, problem=problem
                )
                self.sendBadResponse(cmd.tag, problem.encode())
                return
        if message:
            cmd.messages += 1
            self._literal_sink = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        else:
            self._literal_sink = tempfile.SpooledTemporaryFile(
                max_size=imap_parse.SMALL_LITERAL_MAX + 1
            )
        self._literal_message = message
        self._literal_left = spec.size
        if spec.sync:
            self.sendContinuationRequest(b"Ready for literal data")
        if spec.size == 0:
            self._literal_done()

    def _literal_done(self) -> None:
        sink, self._literal_sink = self._literal_sink, None
        assert sink is not None and self._cmd is not None
        if self._literal_message:
            sink.seek(0)
            self._cmd.literals.append(sink)
        else:
            sink.seek(0)
            data = sink.read()
            sink.close()
            self._cmd.literals.append(data)
            self._cmd.size += len(data)

    def _drop_literal(self) -> None:
        if self._literal_sink is not None:
            self._literal_sink.close()
            self._literal_sink = None
        self._literal_left = 0

    def _abort_command(self) -> None:
        if self._cmd is not None:
            for lit in self._cmd.literals:
                if not isinstance(lit, bytes):
                    lit.close()
        self._cmd = None
        self._drop_literal()

    def _closed_by_us(self) -> None:
        self._paused = True
        self.transport.loseConnection()

    # -- dispatch ---------------------------------------------------------------------------
    def _pause(self) -> None:
        """No command is taken from the input until ``_resume``; the transport itself is
        paused only if input arrives meanwhile (dataReceived)."""
        self._paused = True

    def _resume(self) -> None:
        if self._paused and not self._closed:
            self._paused = False
            if self._transport_paused:
                self._transport_paused = False
                self.transport.resumeProducing()
            if self._inbuf:  # a pipelined command waiting: run it (nothing to do otherwise)
                self.dataReceived(b"")

    @staticmethod
    def _normalise_literal(seg: bytes) -> bytes:
        """``{n+}`` -> ``{n}`` so Twisted's argument parsers see the classic form."""
        if seg.endswith(b"+}"):
            return seg[:-2] + b"}"
        return seg

    # Twisted's argument parsers ask for literals here; we already hold them.
    def _stringLiteral(self, size: int) -> defer.Deferred[tuple[bytes, bytes]]:
        if not self._literal_queue:
            raise imap4.IllegalClientResponse("Unexpected literal")
        value, rest = self._literal_queue.popleft()
        if not isinstance(value, bytes):
            value.seek(0)
            value = value.read(imap_parse.SMALL_LITERAL_MAX + 1)
        return defer.succeed((value, rest))

    def _fileLiteral(self, size: int) -> defer.Deferred[tuple[Any, bytes]]:
        if not self._literal_queue:
            raise imap4.IllegalClientResponse("Unexpected literal")
        value, rest = self._literal_queue.popleft()
        if isinstance(value, bytes):
            spooled = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
            spooled.write(value)
            value = spooled
        value.seek(0)
        return defer.succeed((value, rest))
