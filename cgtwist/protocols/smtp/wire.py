"""The SMTP server's wire: connection life cycle, bounded input, reply order, timeouts, limits.

Owns everything between bytes and commands for one SMTP connection: the greeting after the
connect policy, line splitting with the command-length limit and no unbounded buffering,
dispatch of commands strictly one at a time (reading pauses while a reply is outstanding, so
pipelined replies keep their order: RFC 2920, twisted #8126), DATA bytes into the DataReader,
the error limit, the greeting pause and its early talkers, idle/DATA/TLS-handshake timeouts and
the command-line, DATA and session deadlines (cgtwist.protocols.deadlines) on the passed-in
clock, and TLS detection.
The commands themselves live in cgtwist.protocols.smtp.server (and AUTH in cgtwist.protocols.smtp.auth).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLContextFactory,
    IReactorTime,
    ISSLTransport,
)
from twisted.mail.smtp import ESMTP
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.activesessions import ActiveSession, ActiveSessions
from cgtwist.errors import MailError
from cgtwist.interfaces import (
    IAuthPenalty,
    IClientAccess,
    IPolicy,
    ISessionWatch,
    IStatistics,
    ISubmission,
)
from cgtwist.logs import Logger
from cgtwist.protocols.deadlines import Deadlines, DeadlineTimers, transfer_allowance
from cgtwist.protocols.smtp.data import DataReader
from cgtwist.protocols.smtp.transaction import Transaction
from cgtwist.runtime.fastwrite import close_now, write_now
from cgtwist.settings import SettingsHolder
from cgtwist.types import ListenerSpec, SessionInfo

if TYPE_CHECKING:
    from cgtwist.settings import Settings

# Bytes we keep buffered while a reply is outstanding (pipelined commands are small; RFC 2920
# forbids sending message content before 354).
MAX_PENDING = 256 * 1024

COMMANDS = {
    b"HELO": "helo",
    b"EHLO": "ehlo",
    b"MAIL": "mail",
    b"RCPT": "rcpt",
    b"DATA": "data",
    b"RSET": "rset",
    b"NOOP": "noop",
    b"QUIT": "quit",
    b"HELP": "help",
    b"VRFY": "vrfy",
    b"EXPN": "expn",
    b"STARTTLS": "starttls",
    b"AUTH": "auth",
    b"BDAT": "not_offered",
    b"ETRN": "not_offered",
    b"TURN": "not_offered",
}

# Replies that mean "the client said something wrong": each gets a log line.
_PROTOCOL_ERRORS = frozenset({500, 501, 502, 503, 504, 530, 538, 553, 555})


def _plain_ip(ip: str) -> str:
    """``::ffff:192.0.2.1`` (an IPv4 client on a dual-stack socket) -> ``192.0.2.1``, so
    per-IP limits and Client IP lists see one spelling."""
    if ip.lower().startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


class SMTPServices(Protocol):
    """What one SMTP connection takes from its listener's factory (``SMTPFactory``): the
    collaborators, the settings and the connection accounting. Declared here, where it is
    used, so the wire does not import the commands module that builds on it."""

    listener: ListenerSpec
    settings: SettingsHolder
    policy: IPolicy
    submission: ISubmission
    portal: Portal
    penalty: IAuthPenalty
    tls: Callable[[], Optional[IOpenSSLContextFactory]]
    hostname: str
    clock: IReactorTime
    deadline_timers: DeadlineTimers  # the listener's: one reactor timer for all its deadlines
    stopping: bool
    stats: Optional[IStatistics]
    active: Optional[ActiveSessions]  # the logged-in sessions WebUser lists and ends

    def new_session_id(self) -> str: ...
    def register(self, proto: SMTPWire) -> Optional[str]: ...
    def unregister(self, proto: SMTPWire) -> None: ...


if TYPE_CHECKING:
    # Twisted leaves these (ESMTP's constructor, TimeoutMixin's timer) unannotated and mypy
    # --strict refuses an untyped call: for the type checker only, the base class with the
    # signatures used here (at run time the name is ESMTP itself).
    class _ESMTP(ESMTP):
        def __init__(
            self, chal: Optional[dict[bytes, Any]], contextFactory: Optional[object]
        ) -> None: ...
        def setTimeout(self, period: Optional[float]) -> Optional[float]: ...
        def resetTimeout(self) -> None: ...

else:
    _ESMTP = ESMTP


@implementer(IHandshakeListener)
class SMTPWire(_ESMTP):
    """Connection handling shared by the SMTP commands; see the module docstring.

    Twisted's ESMTP is the base for what it means to be an SMTP server protocol in Twisted, but
    the input side is ours: its line receiver buffers without bound in DATA, takes a bare LF as
    end of data and answers out of order when validation is a Deferred.
    """

    log = Logger()
    transport: Any  # a TCP/TLS transport: ITransport plus producer and TLS methods

    def __init__(self, factory: SMTPServices) -> None:
        super().__init__(chal={}, contextFactory=None)
        self.factory = factory
        self.host = factory.hostname.encode("ascii", "replace")
        self.session: Optional[SessionInfo] = None
        self._buf = b""
        self._pos = 0  # commands before this offset of _buf are done (no re-copy per line)
        self._busy = False  # a reply is outstanding: do not read the next command yet
        self._paused = False  # the transport was paused because input came while busy
        self._in_loop = False
        self._discarding = False  # inside an over-long command line
        self._closed = False
        self._greeted = False
        self._early_talker = False
        self._registered = False
        self._tls = False
        self._esmtp = False
        self._errors = 0
        self._handshake_timer: Any = None  # IDelayedCall
        self._listed: Optional[ActiveSession] = None  # on the factory's ``active`` since AUTH
        # greeting pause, command line, DATA and session deadlines (smtp.*_deadline settings)
        self._deadlines = Deadlines(factory.clock, factory.deadline_timers)
        self._data_started = 0.0
        self._shutting_down = False  # say _goodbye after the reply being worked on, then close
        self._goodbye = ""
        self._reader: Optional[DataReader] = None
        self._reset_transaction()

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """TimeoutMixin's timer on the passed-in clock, not the global reactor."""
        services: SMTPServices = self.factory
        return services.clock.callLater(period, func)

    def _settings(self) -> Settings:
        services: SMTPServices = self.factory  # Twisted types Protocol.factory loosely
        return services.settings.current

    def _set_timeout(self, seconds: float) -> None:
        """(Re)arm the inactivity timer from a setting read now; 0 switches it off."""
        self.setTimeout(seconds if seconds > 0 else None)

    def _reset_transaction(self) -> None:
        """Forget the mail transaction (RSET, HELO/EHLO, STARTTLS, the end of DATA)."""
        self.transaction: Optional[Transaction] = None

    # -- connection -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        # Replies are small and strictly request/response: without TCP_NODELAY, Nagle's
        # algorithm plus the client's delayed ACK can hold a reply back for ~40 ms.
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            try:
                nodelay(True)
            except OSError:
                pass
        peer, host = self.transport.getPeer(), self.transport.getHost()
        peer_ip = _plain_ip(str(getattr(peer, "host", peer)))
        self.session = SessionInfo(
            session_id=self.factory.new_session_id(),
            peer_ip=peer_ip,
            peer_port=int(getattr(peer, "port", 0)),
            local_ip=str(getattr(host, "host", host)),
            local_port=int(getattr(host, "port", 0)),
            listener=self.factory.listener.name,
            is_client_ip=bool(self._policy_hook(IClientAccess, lambda p: p.is_client_ip(peer_ip))),
        )
        # Implicit TLS (465): the integrator wraps the factory in TLSMemoryBIOFactory.
        t = self.transport
        self._tls = bool(ISSLTransport.providedBy(t) or isinstance(t, TLSMemoryBIOProtocol))
        refusal = self.factory.register(self)
        if refusal is not None:
            self.log.info(
                "connection refused: {reason} peer={peer}",
                reason=refusal,
                peer=self.session.peer_ip,
            )
            enhanced = "4.3.2" if self.factory.stopping else "4.7.0"
            self._send(f"421 {enhanced} {self.factory.hostname} {refusal}, try again later")
            self._close()
            return
        self._registered = True
        if self._tls:
            self._arm_handshake_timer()
        self._set_timeout(self._settings().smtp.idle_timeout)
        self._deadlines.arm(
            "session", self._settings().smtp.session_deadline, self._session_expired
        )
        self._start(
            defer.maybeDeferred(self.factory.policy.connect, self.session).addCallbacks(
                self._connect_ok, self._connect_refused
            )
        )

    def _connect_ok(self, result: Any) -> None:
        if isinstance(result, SessionInfo):
            self.session = result
        if self._early_talker:
            self._pregreet()
            return
        delay = self._settings().smtp.greeting_delay
        client = self.session is not None and self.session.is_client_ip
        if delay > 0 and not client and not self.factory.listener.submission:
            # Postfix postscreen's greet test: a bot that does not wait for the banner talks
            # into the pause. A timer, never a sleep: the reactor serves others meanwhile.
            self._deadlines.arm("greeting", delay, self._greet)
            return
        self._greet()

    def _greet(self) -> None:
        if self._closed:
            return
        self._greeted = True
        # RFC 2034 §3: no enhanced code on the greeting.
        self._send(f"220 {self.factory.hostname} ESMTP cgtwist")

    def _pregreet(self) -> None:
        # RFC 5321 §3.1: the client must wait for the greeting (Postfix "pregreet").
        self.log.info("pregreet traffic from peer={peer}", peer=self._peer())
        self._policy_hook(ISessionWatch, lambda p: p.report_offence(self._peer(), "pregreet"))
        self._send("554 5.5.1 Protocol error: talked before the greeting")
        self._close()

    def _connect_refused(self, f: Failure) -> None:
        err = self._error_of(f, "connect")
        self._count_refusal()
        self.log.info(
            "connection refused by policy: peer={peer} reply={reply}",
            peer=self._peer(),
            reply=err.reply(),
        )
        # RFC 5321 §3.1: a server that will not talk answers 554 (or 421 for "later").
        self._send(err.reply() if err.code in (421, 554) else f"554 {err.enhanced} {err.text}")
        self._close()

    def _arm_handshake_timer(self) -> None:
        seconds = self._settings().smtp.tls_handshake_timeout
        if seconds > 0:
            self._handshake_timer = self.factory.clock.callLater(seconds, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        self._handshake_timer = None
        self.log.info("TLS handshake timeout: peer={peer}", peer=self._peer())
        self._closed = True
        self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: record the negotiated TLS version (STARTTLS or implicit)."""
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        self._tls = True
        try:
            version = str(self.transport.getHandle().get_protocol_version_name())
        except Exception:  # a transport without an OpenSSL handle
            version = "TLS"
        if self.session is not None:
            self.session = replace(self.session, tls=version)

    def _start_tls(self, ctx: Any) -> None:
        """Switch to TLS after our 220: drop buffered plaintext, forget the session's state."""
        if len(self._buf) > self._pos:
            # CVE-2011-0411: bytes sent after STARTTLS, before the handshake, are not trusted.
            self.log.info(
                "discarded {n} bytes pipelined after STARTTLS: peer={peer}",
                n=len(self._buf) - self._pos,
                peer=self._peer(),
            )
        self._buf, self._pos = b"", 0
        # RFC 3207 §4.2: discard any knowledge obtained from the client before TLS.
        assert self.session is not None
        self.session = replace(self.session, helo="", account=None)
        self._esmtp = False
        self._reset_transaction()
        self._tls = True
        self._arm_handshake_timer()
        self.transport.startTLS(ctx)

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        self._closed = True
        self.setTimeout(None)
        self._deadlines.cancel_all()
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        if self._listed is not None and self.factory.active is not None:
            self.factory.active.remove(self._listed)
            self._listed = None
        if self._registered:
            self._registered = False
            self.factory.unregister(self)
            self._policy_hook(ISessionWatch, lambda p: p.session_closed(self.session))
        if self._reader is not None:
            self.log.info("connection lost during DATA: peer={peer}", peer=self._peer())
        self._reader = None

    def timeoutConnection(self) -> None:
        self._timed_out("idle timeout")

    def _timed_out(self, what: str) -> None:
        """Drop the connection for a timeout or deadline; a message in DATA is discarded."""
        # RFC 5321 §4.5.3.2.7; §3.8: a server closing on timeout should say 421 first.
        self.log.info("{what}: peer={peer}", what=what, peer=self._peer())
        self._reader = None
        self._send(f"421 4.4.2 {self.factory.hostname} Error: timeout exceeded")
        self._close()

    # -- deadlines: progress, not mere bytes (a byte every few seconds resets an idle timer) --

    def _watch_line(self) -> None:
        """A command line has ``smtp.command_deadline`` seconds from its first byte to its
        CRLF. Armed while part of a line waits for the rest and the server is not busy (bytes
        waiting behind an outstanding reply are ours to handle, not the client's)."""
        if (
            self._closed
            or self._busy
            or self._reader is not None
            or not (self._buf or self._discarding)
        ):
            if self._deadlines.armed("line"):
                self._deadlines.cancel("line")
        elif not self._deadlines.armed("line"):
            self._deadlines.arm(
                "line",
                self._settings().smtp.command_deadline,
                lambda: self._timed_out("command deadline exceeded"),
            )

    def _arm_data_deadline(self) -> None:
        """DATA may take ``smtp.data_deadline`` seconds plus the time its octets take at
        ``smtp.data_min_rate`` (a large message on a slow link gets through; a trickle not)."""
        self._data_started = self.factory.clock.seconds()
        self._deadlines.arm("data", self._settings().smtp.data_deadline, self._data_deadline)

    def _data_deadline(self) -> None:
        reader = self._reader
        if reader is None:
            return
        allowed = transfer_allowance(
            self._settings().smtp.data_deadline,
            self._settings().smtp.data_min_rate,
            reader.size,
        )
        left = self._data_started + allowed - self.factory.clock.seconds()
        if left >= 1.0:  # the octets so far earned more time: look again then
            self._deadlines.arm("data", left, self._data_deadline)
            return
        self._timed_out(f"DATA deadline exceeded after {reader.size} octets")

    def _session_expired(self) -> None:
        """``smtp.session_deadline``: 421 now, or after the reply being worked on (a message
        in DATA is read to its end, under its own deadline, and submitted first)."""
        self.log.info("session deadline exceeded: peer={peer}", peer=self._peer())
        self._close_after_reply(
            f"421 4.4.2 {self.factory.hostname} Error: session time limit exceeded"
        )

    def _policy_hook(self, iface: Any, call: Callable[[Any], Any]) -> Any:
        """``call(policy)`` when the policy provides ``iface`` (IClientAccess, ISessionWatch:
        the protection policy does), else None; never raise."""
        policy = self.factory.policy
        if not iface.providedBy(policy):
            return None
        try:
            return call(policy)
        except Exception:
            self.log.failure(
                "policy hook {name} failed: peer={peer}", name=iface.__name__, peer=self._peer()
            )
            return None

    def _peer(self) -> str:
        return self.session.peer_ip if self.session else "?"

    def shutdown(self) -> None:
        """Server stopping: 421 now when idle, else right after the reply being worked on
        (a message in DATA is read to its end and submitted first)."""
        # RFC 5321 §3.8: 421 when the service must shut down.
        self._close_after_reply(f"421 4.3.2 {self.factory.hostname} Service shutting down")

    def list_login(self, account: str) -> None:
        """AUTH succeeded: list the session among ``account``'s active ones (WebUser's
        Sessions page) until the connection ends."""
        active, session = self.factory.active, self.session
        if active is not None and session is not None:
            secure = session.tls is not None
            self._listed = active.add(account, "smtp", session.peer_ip, secure, self.end_session)

    def end_session(self, reason: str) -> None:
        """The account's owner ended this session (WebUser): 421 now when idle, else right
        after the reply being worked on, as at shutdown (RFC 5321 §3.8)."""
        account = self.session.account if self.session is not None else None
        self.log.info(
            "session ended: peer={peer} user={account}: {reason}",
            peer=self._peer(),
            account=account,
            reason=reason,
        )
        self._close_after_reply(f"421 4.7.0 {self.factory.hostname} {reason}")

    def _close_after_reply(self, goodbye: str) -> None:
        if self._shutting_down:
            return  # the first reason given is the one the client hears
        self._shutting_down, self._goodbye = True, goodbye
        if not self._busy and self._reader is None and not self._closed:
            self._shutdown_now()

    def _shutdown_now(self) -> None:
        self._send(self._goodbye)
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._buf, self._pos = b"", 0
        if self._paused:
            # Reading was paused for an outstanding reply: resume it, or the transport never
            # sees the peer's close (TLS waits for it) and the connection is never released.
            self._paused = False
            self.transport.resumeProducing()
        # At once when the last reply went out whole (runtime.fastwrite): connectionLost
        # may run inside this call.
        close_now(self.transport)

    # -- output -----------------------------------------------------------------------------

    def _send(self, line: str) -> None:
        if not self._closed:
            write_now(self.transport, line.encode("ascii", "replace") + b"\r\n")

    def _send_lines(self, lines: list[str]) -> None:
        """A multi-line reply in one write: one system call and one TCP segment, not one per
        line (the client reads until the last line anyway)."""
        if not self._closed and lines:
            write_now(
                self.transport, "".join(f"{line}\r\n" for line in lines).encode("ascii", "replace")
            )

    def _reply(self, code: int, enhanced: str, text: str) -> None:
        """One reply with its RFC 3463 enhanced code; the client's errors count towards the
        error limit.

        Only 5xx replies count: bad syntax, bad sequence, refused senders and recipients
        (unknown users: a harvest runs into ``smtp.max_errors``). A 4xx is the server's own
        temporary state (452 4.3.1 disk nearly full, 451 local problem, 454 TLS unavailable,
        452 4.5.3 recipient limit) and never makes us drop, let alone auto-blacklist, a client
        that did nothing wrong. 535 has its own budget (``auth.max_failures``).
        """
        if code >= 500 and code != 535:
            self._errors += 1
        if code in _PROTOCOL_ERRORS:
            self.log.info(
                "protocol error: peer={peer} reply={code} {enhanced} {text}",
                peer=self._peer(),
                code=code,
                enhanced=enhanced,
                text=text,
            )
        self._send(f"{code} {enhanced} {text}")

    def _reply_error(self, err: MailError) -> None:
        """A refusal by the policy or the submission (of a sender, recipient or message)."""
        self._count_refusal()
        self._reply(err.code, err.enhanced, err.text)

    def _count_refusal(self) -> None:
        if self.factory.stats is not None:
            self.factory.stats.message("rejected")

    def _error_of(self, f: Failure, what: str) -> MailError:
        """MailError from a failed policy/submission call; anything else is logged as 451."""
        if isinstance(f.value, MailError):
            return f.value
        self.log.failure("unexpected error in {what}: peer={peer}", f, what=what, peer=self._peer())
        return MailError(451, "4.3.0", "Temporary local problem, try again later")

    # -- input ------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self.resetTimeout()
        if not self._greeted:
            self._early_talker = True
            if self._deadlines.armed("greeting"):  # talked into the greeting pause
                self._deadlines.cancel("greeting")
                self._pregreet()
            return  # else the connect policy is still at work: _connect_ok answers
        if self._reader is not None and not self._busy:
            rest = self._reader.feed(data)
            if rest is None:
                return
            self._end_of_data()
            data = rest
        self._buf += data
        if self._busy and not self._paused and data:
            # Input while a reply is outstanding (pipelining): stop reading until it is sent.
            # Paused only now, not for every slow reply, nor at a final dot with nothing after
            # it: two epoll_ctl calls saved per command of a client that waits for its replies.
            self._paused = True
            self.transport.pauseProducing()
        if self._busy and len(self._buf) - self._pos > MAX_PENDING:
            self.log.info("too much pipelined input: peer={peer}", peer=self._peer())
            self._send("421 4.7.0 Too much pipelined input")
            self._close()
            return
        self._process()

    def _start(self, d: defer.Deferred[Any]) -> None:
        """Hold further input until ``d`` fires, so replies keep command order (RFC 2920)."""
        state = {"fired": False}

        def done(_: Any) -> None:
            state["fired"] = True
            if not self._busy:
                return  # fired synchronously: nothing was paused
            self._busy = False
            if self._closed:
                return
            if self._shutting_down and self._reader is None:
                self._shutdown_now()
                return
            if self._paused:
                self._paused = False
                self.transport.resumeProducing()
            if not self._in_loop:
                self._process()

        d.addBoth(done)
        if not state["fired"] and not self._closed:
            self._busy = True
            if len(self._buf) > self._pos and not self._paused:
                # Pipelined input is already waiting: read no more until it has been worked.
                self._paused = True
                self.transport.pauseProducing()

    def _process(self) -> None:
        if self._in_loop:
            return
        self._in_loop = True
        try:
            while (
                not self._busy
                and not self._closed
                and (len(self._buf) > self._pos or self._shutting_down)
            ):
                if self._shutting_down and self._reader is None:
                    self._shutdown_now()
                    break
                if self._reader is not None:
                    data = self._buf[self._pos :]
                    self._buf, self._pos = b"", 0
                    rest = self._reader.feed(data)
                    if rest is None:
                        break
                    self._buf = rest
                    self._end_of_data()
                    continue
                nl = self._buf.find(b"\n", self._pos)
                limit = self._settings().smtp.max_command_length
                if nl < 0:
                    if len(self._buf) - self._pos >= limit:  # its LF would make it longer
                        self._buf, self._pos = b"", 0
                        if not self._discarding:
                            self._discarding = True
                            self._too_long()
                    break
                line = self._buf[self._pos : nl]
                self._pos = nl + 1
                if self._discarding:
                    self._discarding = False
                    continue
                if len(line) + 1 > limit:  # RFC 5321 §4.5.3.1.4 counts the CRLF
                    self._too_long()
                    continue
                self._line(line)
        finally:
            self._in_loop = False
            if self._pos:
                self._buf, self._pos = self._buf[self._pos :], 0
            self._watch_line()

    def _too_long(self) -> None:
        # RFC 5321 §4.5.3.1.4: command line limit; answer and keep the connection.
        self._reply(500, "5.5.2", "Line too long")
        self._check_errors()

    def _line(self, line: bytes) -> None:
        if not line.endswith(b"\r"):
            # RFC 5321 §2.3.8: lines end with CRLF; a bare LF is not a line end.
            self._reply(500, "5.5.2", "Syntax error: command lines must end with CRLF")
            self._check_errors()
            return
        line = line[:-1]
        if self._sasl_line(line):
            return
        if b"\r" in line or b"\0" in line:
            self._reply(500, "5.5.2", "Syntax error: invalid character in command")
            self._check_errors()
            return
        if self._errors >= self._settings().smtp.max_errors:
            self._too_many_errors()
            return
        verb, _, arg = line.strip(b" ").partition(b" ")
        name = COMMANDS.get(verb.upper())
        if name is None:
            self._reply(500, "5.5.1", "Command unrecognized")
        else:
            getattr(self, "smtp_" + name)(arg.strip(b" "))
        self._check_errors()

    def _check_errors(self) -> None:
        if not self._busy and not self._closed and self._errors >= self._settings().smtp.max_errors:
            self._too_many_errors()

    def _too_many_errors(self) -> None:
        self.log.info(
            "too many errors: peer={peer} errors={errors}", peer=self._peer(), errors=self._errors
        )
        self._policy_hook(ISessionWatch, lambda p: p.report_offence(self._peer(), "errors"))
        self._send(f"421 4.7.0 {self.factory.hostname} Error: too many errors")
        self._close()

    # -- hooks for the command layers ------------------------------------------------------------

    def _sasl_line(self, line: bytes) -> bool:
        """Consume ``line`` as a SASL response when an AUTH exchange is running."""
        return False

    def _end_of_data(self) -> None:
        """Called when the DataReader found the end of the message."""
        raise NotImplementedError
