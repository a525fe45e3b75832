"""Outbound SMTP client protocol: one connection, one or more mail transactions on it.

Owns the wire (RFC 5321 §3-4): reply parsing, EHLO/HELO, STARTTLS (RFC 3207), AUTH PLAIN
(RFC 4954), MAIL/RCPT/DATA with PIPELINING (RFC 2920), SIZE, 8BITMIME and DSN parameters
(RFC 3461), CRLF and dot-stuffing of the data, and the per-command timeouts of RFC 5321
§4.5.3.2. It decides nothing about which host to use or what a reply means for the queue:
``cgtwist.delivery.smtp`` does that with the replies this module returns.
"""

from __future__ import annotations

import base64
import collections
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IPullProducer, IReactorTime
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.logs import Logger
from cgtwist.runtime.fastwrite import write_now
from cgtwist.typedtwisted import failure_of

if TYPE_CHECKING:
    # LineReceiver leaves these unannotated and mypy --strict refuses an untyped call; for
    # the type checker only, the base class with the signatures used here (at run time the
    # name is LineReceiver itself).
    class _LineReceiver(LineReceiver):
        def clearLineBuffer(self) -> bytes: ...

else:
    _LineReceiver = LineReceiver

log = Logger(namespace="cgtwist.delivery.smtp")

_REPLY_LINE = re.compile(rb"^([2-5]\d\d)([ -]|$)(.*)$", re.S)
_EOL = re.compile(rb"\r\n|\r|\n")
_XTEXT = re.compile(r"^[\x21-\x7e]{1,500}$")
_CHUNK = 65536


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for each reply (RFC 5321 §4.5.3.2)."""

    greeting: float = 300
    command: float = 300
    mail: float = 300
    rcpt: float = 300
    data_init: float = 120
    data_block: float = 180
    data_end: float = 600


@dataclass(frozen=True)
class Reply:
    """One (possibly multi-line) SMTP reply."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(s for s in self.lines if s).strip()

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


class SessionError(Exception):
    """The session broke: timeout, lost connection, refused greeting/EHLO/TLS/AUTH, bad reply.

    ``reply`` is the server's reply when there was one. ``during`` names the step (greeting,
    ehlo, starttls, tls, auth, mail, rcpt, data, data-end, rset). ``permanent`` is True only
    for a 5xx reply.
    """

    def __init__(self, text: str, during: str, reply: Optional[Reply] = None) -> None:
        super().__init__(text)
        self.text = text
        self.during = during
        self.reply = reply

    @property
    def permanent(self) -> bool:
        return self.reply is not None and self.reply.code >= 500


@dataclass
class TransactionResult:
    """Replies for one message: MAIL, one per RCPT (None if never answered), DATA and the end."""

    mail: Optional[Reply] = None
    rcpts: list[Optional[Reply]] = field(default_factory=list)
    data: Optional[Reply] = None
    end: Optional[Reply] = None
    error: Optional[SessionError] = None  # the session broke part-way


def encode_data(data: bytes) -> bytes:
    """Message bytes as they go on the wire after DATA, final ``.CRLF`` included.

    RFC 5321 §2.3.8: lines end in CRLF, bare CR and LF are normalised. §4.5.2: a line that
    starts with a dot gets one more dot (transparency).
    """
    lf = data.count(b"\n")
    if lf == data.count(b"\r\n") == data.count(b"\r"):
        # Already CRLF only (what the SMTP server stores): three C-speed scans instead of
        # a regular expression over every byte (two re.sub were 47 us per 2 kB message,
        # a tenth of an outbound run's CPU).
        text = data
    else:
        text = _EOL.sub(b"\r\n", data)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    # Every line start is now the start of the text or follows a CRLF.
    if text.startswith(b"."):
        text = b"." + text
    if b"\n." in text:
        text = text.replace(b"\r\n.", b"\r\n..")
    return text + b".\r\n"


def xtext_ok(value: str) -> bool:
    """Parameters passed on verbatim must be printable ASCII without spaces (RFC 3461 §4)."""
    return bool(_XTEXT.match(value))


@implementer(IPullProducer)
class _DataProducer:
    """Writes the encoded message in blocks as the transport drains (back-pressure).

    Every block written restarts the data-block timer (RFC 5321 §4.5.3.2.5).
    """

    def __init__(self, client: SMTPClient, payload: bytes) -> None:
        self.client = client
        self.payload = memoryview(payload)
        self.offset = 0
        self.done: defer.Deferred[None] = defer.Deferred()
        self.stopped = False

    def resumeProducing(self) -> None:
        if self.stopped or self.done.called:
            return
        chunk = self.payload[self.offset : self.offset + _CHUNK]
        self.offset += len(chunk)
        self.client._arm(self.client.timeouts.data_block, "data")
        transport: Any = self.client.transport
        transport.write(bytes(chunk))
        if self.offset >= len(self.payload):
            transport.unregisterProducer()
            self.client._disarm()
            self.client._producer = None
            self.done.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True


class SMTPClient(_LineReceiver):
    """One outbound SMTP session. ``start()`` once, then ``transaction()`` any number of times.

    ``tls`` builds the client TLS connection creator for ``peer_name`` (None: never STARTTLS);
    ``peer_ip`` is the address it connects to (for the log lines of a reused session);
    ``require_tls`` refuses to continue without TLS (smarthost with AUTH); ``auth`` is a
    (user, password) pair sent with AUTH PLAIN only inside TLS.
    """

    delimiter = b"\r\n"
    MAX_LENGTH = 4096  # RFC 5321 §4.5.3.1.5: 512 octets per reply line; we allow slack
    MAX_REPLY_LINES = 200

    def __init__(
        self,
        clock: IReactorTime,
        helo_name: str,
        peer_name: str,
        timeouts: Timeouts,
        tls: Optional[Callable[[str], Any]] = None,
        require_tls: bool = False,
        auth: Optional[tuple[str, str]] = None,
        peer_ip: str = "",
    ) -> None:
        self.clock: Any = clock
        self.helo_name = helo_name
        self.peer_name = peer_name
        self.peer_ip = peer_ip  # the address connected to, for the log of a reused session
        self.timeouts = timeouts
        self._tls_factory = tls
        self.require_tls = require_tls
        self.auth = auth
        self.extensions: dict[str, str] = {}
        self.tls_version: Optional[str] = None
        self.tls_started = False
        self._replies: collections.deque[Reply] = collections.deque()
        self._partial: list[str] = []
        self._waiting: Optional[defer.Deferred[Reply]] = None
        # read_replies: the Deferred waiting for ``_want`` replies at once
        self._waiting_many: Optional[defer.Deferred[list[Reply]]] = None
        self._want = 0
        self._timer: Any = None  # IDelayedCall: the reply deadline (see _arm)
        self._timer_what = ""
        self._timer_seconds = 0.0
        self._armed = False
        self._lost: Optional[SessionError] = None
        self._producer: Optional[_DataProducer] = None
        self.busy = False
        # Transactions begun on this connection (Postfix's conn_use): the delivery log says
        # it, so an administrator (and the outbound benchmark) sees how well reuse works.
        self.uses = 0

    # --- connection events ---------------------------------------------------------------

    def connectionMade(self) -> None:
        self._arm(self.timeouts.greeting, "greeting")

    def connectionLost(self, reason: Failure = failure_of(Exception("closed"))) -> None:
        during = (
            "tls" if self.tls_started and self.tls_version is None else self._timer_what or "idle"
        )
        why = reason.getErrorMessage() if reason is not None else "closed"
        self._lost = self._lost or SessionError(f"connection lost ({why})", during)
        self._cancel_timer()
        self._fail_waiters(self._lost)

    def _fail_waiters(self, error: SessionError) -> None:
        d, self._waiting = self._waiting, None
        if d is not None:
            d.errback(error)
        many, self._waiting_many = self._waiting_many, None
        if many is not None:
            many.errback(error)
        p, self._producer = self._producer, None
        if p is not None and not p.done.called:
            p.stopped = True
            p.done.errback(error)

    @property
    def alive(self) -> bool:
        return self._lost is None and self.transport is not None

    def abort(self, error: SessionError) -> None:
        """Drop the connection at once and fail whatever waits for a reply."""
        if self._lost is None:
            self._lost = error
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        self._fail_waiters(error)

    # --- replies -------------------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        m = _REPLY_LINE.match(line)
        if not m:
            self.abort(SessionError(f"malformed reply {line[:80]!r}", self._timer_what or "reply"))
            return
        code, sep, rest = m.groups()
        self._partial.append(rest.decode("utf-8", "replace").strip())
        if sep == b"-":
            if len(self._partial) > self.MAX_REPLY_LINES:
                self.abort(SessionError("reply too long", self._timer_what or "reply"))
            return
        reply = Reply(int(code), tuple(self._partial))
        self._partial = []
        d, self._waiting = self._waiting, None
        if d is not None:
            self._disarm()
            d.callback(reply)
            return
        self._replies.append(reply)  # pipelined or early reply: read in order later
        many = self._waiting_many
        if many is None:
            return
        if len(self._replies) < self._want:
            self._arm(self._timer_seconds, self._timer_what)  # the next one's deadline
            return
        self._waiting_many = None
        self._disarm()
        many.callback(self.take_replies(self._want))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.abort(SessionError("reply line too long", self._timer_what or "reply"))

    # One reply deadline per session, moved rather than replaced: a message costs five or six
    # replies, and a cancel plus a new callLater for each was 3 % of an outbound run's CPU.
    # Between replies the deadline is disarmed, not cancelled: if it fires then, it does
    # nothing. A lost or aborted connection cancels it.

    def _arm(self, seconds: float, what: str) -> None:
        self._timer_what = what
        self._timer_seconds = seconds
        self._armed = True
        timer = self._timer
        if timer is not None and timer.active():
            timer.reset(seconds)
        else:
            self._timer = self.clock.callLater(seconds, self._timed_out)

    def _disarm(self) -> None:
        self._armed = False

    def _cancel_timer(self) -> None:
        self._armed = False
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _timed_out(self) -> None:
        self._timer = None
        if not self._armed:
            return
        what, seconds = self._timer_what, self._timer_seconds
        self.abort(SessionError(f"timeout after {seconds:g}s waiting for the {what} reply", what))

    def read_reply(self, timeout: float, what: str) -> defer.Deferred[Reply]:
        """The next reply, in order; errbacks SessionError on timeout or lost connection."""
        if self._replies:
            if not self._waiting:
                self._disarm()
            return defer.succeed(self._replies.popleft())
        if self._lost is not None:
            return defer.fail(self._lost)
        d: defer.Deferred[Reply] = defer.Deferred()
        self._waiting = d
        self._arm(timeout, what)
        return d

    def read_replies(self, n: int, timeout: float, what: str) -> defer.Deferred[list[Reply]]:
        """The next ``n`` replies, in order, in one Deferred: the RCPT replies of a
        pipelined group (RFC 2920 §3.1), which ``read_reply`` one at a time took a turn of
        every coroutine of the delivery each (10,000 per post to a list). Each must come
        within ``timeout`` of the one before, as with ``read_reply``; on a timeout or a lost
        connection it errbacks SessionError, and the replies that did come are left for
        ``take_replies``."""
        if len(self._replies) >= n:
            self._disarm()
            return defer.succeed(self.take_replies(n))
        if self._lost is not None:
            return defer.fail(self._lost)
        d: defer.Deferred[list[Reply]] = defer.Deferred()
        self._waiting_many, self._want = d, n
        self._arm(timeout, what)
        return d

    def take_replies(self, n: int) -> list[Reply]:
        """Up to ``n`` of the replies received and not read yet, oldest first."""
        return [self._replies.popleft() for _ in range(min(n, len(self._replies)))]

    def send(self, line: str) -> None:
        self._write(line.encode("utf-8") + b"\r\n")

    def _write(self, data: bytes) -> None:
        """Commands and small messages go straight into the socket when nothing is queued
        before them (``runtime.fastwrite``): Twisted's buffered write costs two ``epoll_ctl``
        and a reactor turn per write, 19,000 ``epoll_ctl`` for 9,730 messages of an outbound
        run. Under TLS, or with output queued, it is the transport's own write."""
        if self._lost is None and self.transport is not None:
            write_now(self.transport, data)

    async def command(self, line: str, timeout: float, what: str) -> Reply:
        self.send(line)
        return await self.read_reply(timeout, what)

    # --- session setup -------------------------------------------------------------------

    async def start(self) -> None:
        """Greeting, EHLO, STARTTLS when offered, AUTH when configured. Raises SessionError."""
        greeting = await self.read_reply(self.timeouts.greeting, "greeting")
        if greeting.code != 220:  # RFC 5321 §3.1: 554 (or 421) means go away
            raise SessionError(f"greeting refused: {greeting}", "greeting", greeting)
        await self._ehlo()
        if self._tls_factory is not None and "STARTTLS" in self.extensions:
            reply = await self.command("STARTTLS", self.timeouts.command, "starttls")
            if reply.code == 220:
                # RFC 3207 §4.2 / CVE-2011-0411: nothing may follow the 220 in plaintext.
                # clearLineBuffer: LineReceiver's public way to the bytes not yet read as
                # lines (its private _buffer, read here before, would read as empty if a
                # Twisted renamed it, and the check would pass).
                if self._replies or self._partial or self.clearLineBuffer():
                    raise self._fatal(SessionError("plaintext injected after STARTTLS", "starttls"))
                self.tls_started = True
                transport: Any = self.transport
                try:
                    transport.startTLS(self._tls_factory(self.peer_name))
                except Exception as e:  # e.g. an unreadable CA file: this host, not a crash
                    raise self._fatal(SessionError(f"cannot set up TLS: {e}", "tls")) from None
                self.extensions = {}
                await self._ehlo()  # RFC 3207 §4.2: discard what we knew, EHLO again
                self.tls_version = _tls_version(self.transport)
            elif self.require_tls:
                raise self._fatal(SessionError(f"STARTTLS refused: {reply}", "starttls", reply))
        elif self.require_tls:
            raise self._fatal(SessionError("STARTTLS not offered but TLS is required", "starttls"))
        if self.auth is not None:
            await self._authenticate()

    def _fatal(self, error: SessionError) -> SessionError:
        self.abort(error)
        return error

    async def _ehlo(self) -> None:
        reply = await self.command(f"EHLO {self.helo_name}", self.timeouts.command, "ehlo")
        if reply.code == 250:
            ext: dict[str, str] = {}
            for entry in reply.lines[1:]:
                word, _, arg = entry.partition(" ")
                if word:
                    ext[word.upper()] = arg.strip()
            self.extensions = ext
            return
        if 500 <= reply.code < 600 and not self.tls_started:  # RFC 5321 §3.2: fall back to HELO
            reply = await self.command(f"HELO {self.helo_name}", self.timeouts.command, "helo")
            if reply.code == 250:
                self.extensions = {}
                return
        raise SessionError(f"EHLO/HELO refused: {reply}", "ehlo", reply)

    async def _authenticate(self) -> None:
        if self.tls_version is None:
            raise self._fatal(SessionError("refusing AUTH without TLS", "auth"))
        mechs = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" not in mechs:
            raise self._fatal(SessionError("server does not offer AUTH PLAIN", "auth"))
        assert self.auth is not None
        user, password = self.auth
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        reply = await self.command(f"AUTH PLAIN {token}", self.timeouts.command, "auth")
        if reply.code != 235:  # RFC 4954 §6
            raise self._fatal(SessionError(f"authentication failed: {reply}", "auth", reply))

    # --- transactions --------------------------------------------------------------------

    def mail_params(self, size: int, params: dict[str, str], eight_bit: bool, utf8: bool) -> str:
        """ESMTP parameters for MAIL FROM, only those the server offered."""
        out = []
        if "SIZE" in self.extensions:
            out.append(f"SIZE={size}")  # RFC 1870 §5
        body = str(params.get("BODY", "")).upper()
        if "8BITMIME" in self.extensions and (body == "8BITMIME" or eight_bit):
            out.append("BODY=8BITMIME")  # RFC 6152
        if utf8 and "SMTPUTF8" in self.extensions:
            out.append("SMTPUTF8")  # RFC 6531 §3.4
        if "DSN" in self.extensions:  # RFC 3461 §4.3, §4.4: pass RET and ENVID on
            ret = str(params.get("RET", "")).upper()
            if ret in ("FULL", "HDRS"):
                out.append(f"RET={ret}")
            envid = str(params.get("ENVID", ""))
            if envid and xtext_ok(envid):
                out.append(f"ENVID={envid}")
        return "".join(" " + p for p in out)

    def rcpt_params(self, notify: str, orcpt: str) -> str:
        """NOTIFY and ORCPT for RCPT TO when the server speaks DSN (RFC 3461 §4.1, §4.2)."""
        if "DSN" not in self.extensions:
            return ""
        out = []
        if notify and re.match(r"^[A-Za-z,]{1,40}$", notify):
            out.append(f"NOTIFY={notify.upper()}")
        if orcpt and xtext_ok(orcpt) and ";" in orcpt:
            out.append(f"ORCPT={orcpt}")
        return "".join(" " + p for p in out)

    def size_limit(self) -> int:
        """The server's advertised SIZE, 0 when none (RFC 1870 §4)."""
        raw = self.extensions.get("SIZE", "")
        return int(raw) if raw.isdigit() else 0

    async def transaction(
        self, sender: str, rcpts: list[tuple[str, str]], mail_params: str, data: bytes
    ) -> TransactionResult:
        """One message: MAIL, RCPT per recipient, DATA, the data, the final reply.

        Never raises for server replies; a broken session is returned in ``result.error`` with
        the replies received so far, so accepted-then-lost recipients can be retried.
        """
        result = TransactionResult(rcpts=[None] * len(rcpts))
        self.busy = True
        self.uses += 1
        try:
            await self._transaction(sender, rcpts, mail_params, data, result)
        except SessionError as e:
            result.error = e
        finally:
            self.busy = False
        return result

    async def _transaction(
        self,
        sender: str,
        rcpts: list[tuple[str, str]],
        mail_params: str,
        data: bytes,
        result: TransactionResult,
    ) -> None:
        pipelining = "PIPELINING" in self.extensions
        t = self.timeouts
        if pipelining:
            # RFC 2920 §3.1: MAIL, every RCPT and DATA in one group; replies come in order.
            lines = [f"MAIL FROM:<{sender}>{mail_params}"]
            lines += [f"RCPT TO:<{addr}>{p}" for addr, p in rcpts]
            lines.append("DATA")
            self._write("".join(x + "\r\n" for x in lines).encode("utf-8"))
            result.mail = await self.read_reply(t.mail, "mail")
            try:
                result.rcpts[:] = await self.read_replies(len(rcpts), t.rcpt, "rcpt")
            except SessionError:
                got = self.take_replies(len(rcpts))  # those answered before the break
                result.rcpts[: len(got)] = got
                raise
            result.data = await self.read_reply(t.data_init, "data")
            accepted = result.mail.code == 250 and any(
                r is not None and r.positive for r in result.rcpts
            )
            if result.data.code != 354:
                if result.mail.code == 250:
                    await self._rset()
                return
            if not accepted:
                # RFC 2920 §3.1: DATA was accepted with no valid recipient: end it at once.
                self.send(".")
                await self.read_reply(t.data_end, "data-end")
                await self._rset()
                return
        else:
            result.mail = await self.command(f"MAIL FROM:<{sender}>{mail_params}", t.mail, "mail")
            if result.mail.code != 250:
                await self._rset()
                return
            for i, (addr, p) in enumerate(rcpts):
                result.rcpts[i] = await self.command(f"RCPT TO:<{addr}>{p}", t.rcpt, "rcpt")
            if not any(r is not None and r.positive for r in result.rcpts):
                await self._rset()
                return
            result.data = await self.command("DATA", t.data_init, "data")
            if result.data.code != 354:
                await self._rset()
                return
        await self._send_data(data)
        result.end = await self.read_reply(t.data_end, "data-end")

    def _send_data(self, data: bytes) -> defer.Deferred[None]:
        if self._lost is not None or self.transport is None:
            return defer.fail(self._lost or SessionError("not connected", "data"))
        payload = encode_data(data)
        if len(payload) <= _CHUNK:
            # One block: written at once (straight into an idle socket, see _write), the
            # rest left to the transport, whose buffer of at most one block needs no
            # producer; the deadline for the final reply (data_end) covers its draining.
            # A producer here was a registration, a reactor turn and two epoll_ctl more
            # per message.
            self._write(payload)
            return defer.succeed(None)
        producer = _DataProducer(self, payload)
        self._producer = producer
        done = producer.done
        self.transport.registerProducer(producer, False)  # type: ignore[attr-defined]  # an ITCPTransport
        return done

    async def _rset(self) -> None:
        """RFC 5321 §4.1.1.5: abort the transaction so the connection can carry another."""
        try:
            reply = await self.command("RSET", self.timeouts.command, "rset")
        except SessionError:
            return
        if reply.code != 250:
            self.abort(SessionError(f"RSET refused: {reply}", "rset", reply))

    def quit(self) -> None:
        """Say QUIT and close without waiting long (RFC 5321 §4.1.1.10)."""
        if self._lost is not None or self.transport is None:
            return
        self.send("QUIT")
        transport: Any = self.transport

        def close(_: object) -> None:
            transport.loseConnection()

        self.read_reply(10, "quit").addBoth(close)


def _tls_version(transport: Any) -> Optional[str]:
    try:
        handle = transport.getHandle()
        name = handle.get_protocol_version_name()
        return str(name) if name else "TLS"
    except Exception:
        return "TLS"
