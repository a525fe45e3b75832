"""The IMAP4rev1 listener: framing, limits, TLS and login policy around Twisted's IMAP4Server.

Owns the connection: reading lines and literals under hard limits before any ``+``
continuation (RELIABILITY.md a8, twisted #12763), one command at a time with input paused
while it runs, STARTTLS without plaintext injection (CVE-2011-0411), LOGIN/AUTHENTICATE policy
and failed-login delays, timeouts on the passed-in clock, and unsolicited-response ordering.
Mailbox commands live in cgtwist.protocols.imap_commands; it never decides about accounts
(the cred portal does) and never touches Maildir files (the mailstore does).
"""

# mypy: disable-error-code="assignment,misc"
# (Twisted types its command tables per class; ours are re-bound on purpose.)

from __future__ import annotations

import re
import tempfile
from collections import deque
from typing import IO, Any, Callable, Optional, Union, cast

from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer, interfaces
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from cgtwist.protocols import imap_parse
from cgtwist.protocols.imap_auth import IPenalty, LoginPenalty, SaslError, decode_plain
from cgtwist.protocols.imap_commands import CommandsMixin
from cgtwist.settings import SettingsHolder
from cgtwist.types import ListenerSpec

# RFC 3501 §9: tag = 1*<any ASTRING-CHAR except "+">
_TAG_RE = re.compile(rb"\A[^\x00-\x20\x7f-\xff(){%*\"\\+]{1,64}\Z")
_COMMAND_RE = re.compile(rb"\A[A-Za-z][A-Za-z0-9]{0,31}\Z")
_SPOOL_IN_MEMORY = 1024 * 1024  # APPEND literals larger than this go to a temporary file


class _Pending:
    """One command being assembled from lines and literals."""

    def __init__(self, first: bytes) -> None:
        self.tag, self.name, _ = imap_parse.split_command(first)
        self.segments: list[bytes] = [first]
        self.literals: list[Union[bytes, IO[bytes]]] = []
        self.size = len(first)
        self.message_literal = False  # an APPEND message literal was accepted


class CgIMAP4Server(CommandsMixin, imap4.IMAP4Server):
    """IMAP4rev1 server with cgtwist's extensions, limits and policies."""

    IDENT = b"cgtwist IMAP4rev1 server ready"
    log = Logger()
    factory: Optional[IMAPFactory] = None

    def __init__(self, listener: ListenerSpec, settings: SettingsHolder, portal: Any,
                 tls: Callable[[], Any], hostname: str, clock: Any,
                 penalty: Optional[IPenalty] = None) -> None:
        super().__init__(chal={}, contextFactory=None, scheduler=None)
        self.listener = listener
        self.settings = settings
        self.portal = portal
        self._tls = tls
        self.hostname = hostname
        self.clock = clock
        self.penalty: IPenalty = penalty or LoginPenalty(settings, clock)
        self.peer_ip = ""
        self.secure = False
        self.account_name = ""
        self._inbuf = bytearray()
        self._in_loop = False
        self._paused = False
        self._discarding = False
        self._closed = False
        self._cmd: Optional[_Pending] = None
        self._literal_left = 0
        self._literal_sink: Optional[IO[bytes]] = None
        self._literal_queue: deque[tuple[Any, bytes]] = deque()
        self._busy_tag: Optional[bytes] = None
        self._busy_name = b""
        self._idle_tag: Optional[bytes] = None
        self._sasl_tag: Optional[bytes] = None
        self._unsolicited: list[tuple[bytes, bytes]] = []  # (kind, line)
        self._failures = 0
        self._counted = False
        self._delayed: list[Any] = []
        self.enabled: set[bytes] = set()

    # -- time -------------------------------------------------------------------------------
    def callLater(self, period: float, func: Callable[..., Any]) -> Any:  # TimeoutMixin hook
        return self.clock.callLater(period, func)

    def _later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        call = self.clock.callLater(delay, self._run_later, fn, args)
        self._delayed.append(call)

    def _run_later(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._delayed = [c for c in self._delayed if c.active()]
        if not self._closed:
            fn(*args)

    # -- connection -------------------------------------------------------------------------
    def connectionMade(self) -> None:
        self.tags = {}
        peer = self.transport.getPeer()
        self.peer_ip = getattr(peer, "host", "") or ""
        self.secure = self.listener.tls == "implicit" or \
            interfaces.ISSLTransport(self.transport, None) is not None
        self.canStartTLS = interfaces.ITLSTransport(self.transport, None) is not None
        self._counted = self.factory is not None
        if self.factory is not None and not self.factory.connection_opened(self.peer_ip):
            self.log.warn("imap: too many connections from {ip}", ip=self.peer_ip)
            self.sendLine(b"* BYE Too many connections from your address")
            self._closed = True
            self.transport.loseConnection()
            return
        self.setTimeout(self.settings.current["imap.preauth_timeout"])
        # RFC 3501 §7.1.1 greeting; never PREAUTH (RELIABILITY b-E 31).
        self.sendPositiveResponse(message=b"[CAPABILITY " + b" ".join(self.listCapabilities())
                                  + b"] " + self.IDENT)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self._closed = True
        self.setTimeout(None)
        for call in self._delayed:
            if call.active():
                call.cancel()
        self._delayed = []
        self._stop_streaming()
        self._release_mailbox()
        self._abort_command()
        if self.factory is not None and self._counted:
            self._counted = False
            self.factory.connection_closed(self.peer_ip)
        if self._onLogout:
            self._onLogout()
            self._onLogout = None

    def timeoutConnection(self) -> None:
        self.log.info("imap: idle timeout for {ip} {account}", ip=self.peer_ip,
                      account=self.account_name)
        self.sendLine(b"* BYE Autologout; idle for too long")
        self._release_mailbox()
        self.state = "timeout"
        if self._streamer is not None:  # a reader that stopped reading: do not wait for it
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _release_mailbox(self) -> None:
        if self.mbox is not None:
            mbox, self.mbox = self.mbox, None
            try:
                mbox.removeListener(self)
            except Exception:
                pass
            closeable = cast(Any, imap4.ICloseableMailbox(mbox, None))
            if closeable is not None:
                defer.maybeDeferred(closeable.close).addErrback(
                    lambda f: self.log.failure("closing mailbox failed", f))

    # -- capabilities -----------------------------------------------------------------------
    def plaintext_allowed(self) -> bool:
        """Passwords only over TLS unless the listener or settings allow it (RFC 3501 §6.2.3)."""
        return self.secure or self.listener.allow_plain_auth or \
            bool(self.settings.current["auth.allow_plaintext"])

    def _can_starttls(self) -> bool:
        return not self.secure and self.canStartTLS and self._tls() is not None

    def listCapabilities(self) -> list[bytes]:
        caps = [b"IMAP4rev1", b"LITERAL+", b"SASL-IR", b"ID", b"ENABLE", b"IDLE", b"NAMESPACE",
                b"UIDPLUS", b"MOVE", b"UNSELECT", b"SPECIAL-USE", b"CHILDREN"]
        if self.state == "unauth":
            if self._can_starttls():
                caps.append(b"STARTTLS")
            if self.plaintext_allowed():
                caps.append(b"AUTH=PLAIN")
            else:
                caps.append(b"LOGINDISABLED")
        return caps

    def capabilities(self) -> dict[bytes, Any]:
        return {c: None for c in self.listCapabilities()[1:]}

    # -- framing ----------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self._inbuf += data
        if self._in_loop:
            return
        self._in_loop = True
        try:
            self._process()
        finally:
            self._in_loop = False

    def _process(self) -> None:
        limit = int(self.settings.current["imap.max_command_length"])
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
                    self._inbuf.clear()
                    return
                del self._inbuf[: nl + 1]
                self._discarding = False
                continue
            if nl < 0:
                if len(self._inbuf) > limit:
                    self._too_long(bytes(self._inbuf[:80]))
                    self._inbuf.clear()
                    self._discarding = True
                return
            line = bytes(self._inbuf[:nl])
            del self._inbuf[: nl + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > limit:
                self._too_long(line[:80])
                continue
            self.resetTimeout()
            self._line(line)

    def _too_long(self, start: bytes) -> None:
        """A command line over imap.max_command_length: BAD, and drop the whole command."""
        tag = self._cmd.tag if self._cmd else start.split(b" ", 1)[0]
        self._abort_command()
        self.log.info("imap: command line too long from {ip}", ip=self.peer_ip)
        self._reply_bad_input(tag, b"[TOOBIG] Command line too long")

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
        if cmd.size > int(self.settings.current["imap.max_command_length"]):
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

    def _literal_cap(self, cmd: _Pending, spec: imap_parse.LiteralSpec, line: bytes) -> tuple[int, bool]:
        """(largest acceptable size, is this APPEND's message literal)."""
        if cmd.name == b"APPEND" and self.state in ("auth", "select") and not cmd.message_literal:
            before = line[: spec.start]
            if len(cmd.segments) > 1 or before.split(b" ", 2)[2:] != [b""]:
                return int(self.settings.current["imap.max_literal"]), True
        return imap_parse.SMALL_LITERAL_MAX, False

    def _start_literal(self, cmd: _Pending, spec: imap_parse.LiteralSpec, line: bytes) -> None:
        cap, message = self._literal_cap(cmd, spec, line)
        small_total = sum(len(x) for x in cmd.literals if isinstance(x, bytes))
        if not message:
            cap = min(cap, int(self.settings.current["imap.max_command_length"]) - small_total)
        if spec.size > cap:
            self._abort_command()
            self.log.info("imap: literal of {size} octets refused from {ip}", size=spec.size,
                          ip=self.peer_ip)
            if not spec.sync:
                # RFC 7888 §4: the octets are already on their way; we cannot resynchronise.
                self.sendBadResponse(cmd.tag, b"[TOOBIG] Literal too large")
                self.sendLine(b"* BYE Literal too large")
                self._closed_by_us()
            elif message:
                self.sendNegativeResponse(cmd.tag, b"[TOOBIG] Message too large")
            else:
                self.sendBadResponse(cmd.tag, b"[TOOBIG] Literal too large")
            return
        if message:
            cmd.message_literal = True
            self._literal_sink = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        else:
            self._literal_sink = tempfile.SpooledTemporaryFile(max_size=imap_parse.SMALL_LITERAL_MAX + 1)
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
        if not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _resume(self) -> None:
        if self._paused and not self._closed:
            self._paused = False
            self.transport.resumeProducing()
            self.dataReceived(b"")

    def _dispatch(self, cmd: _Pending) -> None:
        """Run one complete command; input stays paused until its tagged reply."""
        text = b" ".join(cmd.segments)
        if imap_parse.nesting_depth(text) > imap_parse.MAX_DEPTH:
            self._abort_command()
            self.sendBadResponse(cmd.tag, b"Too deeply nested")
            return
        self._busy_tag = cmd.tag
        self._busy_name = cmd.name
        self._pause()
        refresh = getattr(self.mbox, "refresh", None) if self.state == "select" else None
        if refresh is None:
            self._run(cmd)
            return
        # The mailstore wants a rescan at the start of each selected-state command.
        d = defer.maybeDeferred(refresh)
        d.addErrback(lambda f: self.log.failure("imap: mailbox refresh failed", f))
        d.addCallback(lambda _: None if self._closed else self._run(cmd))

    def _run(self, cmd: _Pending) -> None:
        try:
            special = self._special_command(cmd)
            if not special:
                segs = [self._normalise_literal(s) for s in cmd.segments]
                self._literal_queue = deque(zip(cmd.literals, segs[1:], strict=True))
                self.parse_command(segs[0])
        except Exception:
            self.log.failure("imap: command {cmd} failed", cmd=cmd.name)
            self._server_bug(cmd.tag)
        finally:
            self._literal_queue.clear()

    @staticmethod
    def _normalise_literal(seg: bytes) -> bytes:
        """``{n+}`` -> ``{n}`` so Twisted's argument parsers see the classic form."""
        if seg.endswith(b"+}"):
            return seg[:-2] + b"}"
        return seg

    def _special_command(self, cmd: _Pending) -> bool:
        """Commands that take the raw segments and literals rather than Twisted's parsers."""
        if self.state == "select" and cmd.name in (b"SEARCH", b"UID SEARCH"):
            self.do_SEARCH_raw(cmd.tag, cmd.segments, list(cmd.literals), cmd.name != b"SEARCH")
            return True
        if cmd.name == b"ID" and self.state != "logout":
            self.do_ID_raw(cmd.tag, cmd.segments, list(cmd.literals))
            return True
        return False

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

    def parse_command(self, line: bytes) -> None:
        tag, _, rest = line.partition(b" ")
        cmd, _, args = rest.partition(b" ")
        if not cmd:
            self.sendBadResponse(tag, b"Missing command")
            return
        try:
            self.dispatchCommand(tag, cmd.upper(), args)
        except imap4.IllegalClientResponse as e:
            self.sendBadResponse(tag, b"Illegal syntax: " + str(e)[:200].encode("utf-8", "replace"))
        except imap4.IllegalOperation as e:
            self.sendNegativeResponse(tag, b"Illegal operation: " + str(e)[:200].encode("utf-8", "replace"))
        except imap4.IllegalMailboxEncoding:
            self.sendNegativeResponse(tag, b"Illegal mailbox name")

    def dispatchCommand(self, tag: bytes, cmd: bytes, rest: Optional[bytes], uid: Optional[int] = None) -> None:
        if not _COMMAND_RE.match(cmd):
            self.sendBadResponse(tag, b"Unknown command")
            return
        f = self.lookupCommand(cmd)
        if f:
            super().dispatchCommand(tag, cmd, rest, uid)
        elif self.lookupCommandAnyState(cmd):
            self.sendBadResponse(tag, b"Command not valid in this state")
        else:
            self.sendBadResponse(tag, b"Unknown command")

    def lookupCommandAnyState(self, cmd: bytes) -> bool:
        name = cmd.decode("ascii", "replace").upper()
        return any(getattr(self, f"{s}_{name}", None) for s in ("unauth", "auth", "select"))

    def _IMAP4Server__ebDispatch(self, failure: Failure, tag: bytes) -> None:
        """Argument-parser errors: BAD for syntax, NO [SERVERBUG] for our own bugs."""
        if failure.check(imap4.IllegalClientResponse):
            self.sendBadResponse(tag, b"Illegal syntax: " + str(failure.value)[:200].encode("utf-8", "replace"))
        elif failure.check(imap4.IllegalOperation):
            self.sendNegativeResponse(tag, b"Illegal operation")
        elif failure.check(imap4.IllegalMailboxEncoding):
            self.sendNegativeResponse(tag, b"Illegal mailbox name")
        else:
            self.log.failure("imap: command failed", failure)
            self._server_bug(tag)

    def _server_bug(self, tag: bytes) -> None:
        """RFC 5530 SERVERBUG: the client sees a clean NO, the log keeps the traceback."""
        if self._busy_tag == tag or self._busy_tag is None:
            self.sendNegativeResponse(tag, b"[SERVERBUG] Internal error, try again later")

    # -- responses --------------------------------------------------------------------------
    def _respond(self, state: bytes, tag: Optional[bytes], message: Optional[bytes]) -> None:
        if self._closed and self.transport is None:
            return
        is_final = tag is not None and tag != b"*" and tag == self._busy_tag
        if is_final:
            self._flush_unsolicited()
        if not tag:
            tag = b"*"
        line = b" ".join((tag, state, message)) if message else b" ".join((tag, state))
        self.sendLine(line)
        if is_final:
            self._busy_tag = None
            self._busy_name = b""
            self._resume()

    def sendNegativeResponse(self, tag: Optional[bytes] = None, message: Any = b"") -> None:
        if isinstance(message, str):  # Twisted passes str in a few places
            message = message.encode("utf-8", "replace")
        self._respond(b"NO", tag, message)

    def sendUntaggedResponse(self, message: bytes, isAsync: Optional[bool] = None) -> None:
        if isAsync:
            self.unsolicited(message)
        else:
            self._respond(message, None, None)

    def unsolicited(self, line: bytes, kind: bytes = b"") -> None:
        """Queue an unsolicited response; sent at once during IDLE, else before the next tagged
        reply. EXPUNGE waits while FETCH, STORE or SEARCH runs (RFC 3501 §7.4.1)."""
        self._unsolicited.append((kind, line))
        if self._idle_tag is not None:
            self._flush_unsolicited()

    def _flush_unsolicited(self) -> None:
        hold_expunge = self._busy_name in (b"FETCH", b"STORE", b"SEARCH")
        while self._unsolicited:
            kind, line = self._unsolicited[0]
            if kind == b"EXPUNGE" and hold_expunge:
                return
            self._unsolicited.pop(0)
            self.sendLine(b"* " + line)
        if not hold_expunge:
            for line in self._pending_expunge_lines():
                self.sendLine(b"* " + line)

    def do_LOGOUT(self, tag: bytes) -> None:
        """RFC 3501 §6.1.3: BYE, OK, close; nothing pipelined after LOGOUT is run."""
        self._release_mailbox()
        self.state = "logout"
        self.sendUntaggedResponse(b"BYE Logging out")
        self._inbuf.clear()
        self.sendPositiveResponse(tag, b"LOGOUT completed")
        self._closed_by_us()

    unauth_LOGOUT = (do_LOGOUT,)
    auth_LOGOUT = select_LOGOUT = logout_LOGOUT = unauth_LOGOUT

    # -- STARTTLS ---------------------------------------------------------------------------
    def do_STARTTLS(self, tag: bytes) -> None:
        if self.secure:
            self.sendBadResponse(tag, b"TLS is already active")
            return
        ctx = self._tls() if self.canStartTLS else None
        if ctx is None:
            self.sendNegativeResponse(tag, b"TLS not available")
            return
        if self._inbuf:
            # CVE-2011-0411: never run commands that were sent before the handshake.
            self.log.warn("imap: discarded {n} octets pipelined after STARTTLS from {ip}",
                          n=len(self._inbuf), ip=self.peer_ip)
            self._inbuf.clear()
        self.secure = True
        self.sendPositiveResponse(tag, b"Begin TLS negotiation now")
        self.transport.startTLS(ctx)

    unauth_STARTTLS = (do_STARTTLS,)

    # -- login ------------------------------------------------------------------------------
    def do_LOGIN(self, tag: bytes, user: bytes, passwd: bytes) -> None:
        if not self.plaintext_allowed():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Use STARTTLS before LOGIN")
            return
        self._login(tag, user, passwd)

    unauth_LOGIN = (do_LOGIN, CommandsMixin.arg_astring, CommandsMixin.arg_astring)

    def do_AUTHENTICATE(self, tag: bytes, args: bytes) -> None:
        mech, _, initial = args.strip().partition(b" ")
        if mech.upper() != b"PLAIN":
            self.sendNegativeResponse(tag, b"[CANNOT] Unsupported authentication mechanism")
            return
        if not self.plaintext_allowed():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Use STARTTLS first")
            return
        if initial:  # RFC 4959 SASL-IR; "=" is an empty initial response
            self._sasl_response(tag, b"" if initial == b"=" else initial)
            return
        self._sasl_tag = tag
        self.sendLine(b"+ ")
        self._resume()

    unauth_AUTHENTICATE = (do_AUTHENTICATE, imap4.IMAP4Server.arg_line)

    def _sasl_line(self, line: bytes) -> None:
        tag, self._sasl_tag = self._sasl_tag, None
        assert tag is not None
        self._pause()
        if line.strip() == b"*":  # RFC 3501 §6.2.2: the client cancels
            self.sendBadResponse(tag, b"Authentication cancelled")
            return
        self._sasl_response(tag, line)

    def _sasl_response(self, tag: bytes, b64: bytes) -> None:
        try:
            authz, user, passwd = decode_plain(b64)
        except SaslError as e:
            self.sendBadResponse(tag, str(e).encode())
            return
        if authz and authz != user:
            self.sendNegativeResponse(tag, b"[AUTHORIZATIONFAILED] Cannot act as another user")
            return
        self._login(tag, user, passwd)

    def _login(self, tag: bytes, user: bytes, passwd: bytes) -> None:
        """Log in through the portal as given (user@domain, user%domain or bare)."""
        name = user.decode("utf-8", "replace")
        portal: Any = self.portal
        d = defer.maybeDeferred(portal.login, credentials.UsernamePassword(user, passwd),
                                None, imap4.IAccount)
        d.addCallbacks(self._login_ok, self._login_failed, callbackArgs=(tag, name),
                       errbackArgs=(tag, name))
        d.addErrback(self._login_bug, tag)

    def _login_bug(self, failure: Failure, tag: bytes) -> None:
        self.log.failure("imap: login handling failed", failure)
        self._server_bug(tag)

    def _login_ok(self, result: tuple[Any, Any, Callable[[], None]], tag: bytes, name: str) -> None:
        iface, avatar, logout = result
        if self._closed:
            logout()
            return
        self.account = avatar
        self._onLogout = logout
        self.account_name = str(getattr(avatar, "account", "") or name)
        self.state = "auth"
        self.penalty.record_success(self.peer_ip, name)
        self.log.info("imap: login {account} from {ip}", account=self.account_name, ip=self.peer_ip)
        self.setTimeout(max(int(self.settings.current["imap.idle_timeout"]), 60))
        self.sendPositiveResponse(tag, b"[CAPABILITY " + b" ".join(self.listCapabilities())
                                  + b"] Logged in")

    def _login_failed(self, failure: Failure, tag: bytes, name: str) -> None:
        if not failure.check(UnauthorizedLogin, UnhandledCredentials):
            self.log.failure("imap: authentication backend failed for {ip}", failure, ip=self.peer_ip)
            self.sendNegativeResponse(tag, b"[UNAVAILABLE] Temporary authentication failure")
            return
        delay = self.penalty.delay_for(self.peer_ip)
        self.penalty.record_failure(self.peer_ip, name)
        self._failures += 1
        self.log.warn("auth failed: proto=imap ip={ip} user={user}", ip=self.peer_ip, user=name)
        self._later(delay, self._login_refused, tag)

    def _login_refused(self, tag: bytes) -> None:
        self.sendNegativeResponse(tag, b"[AUTHENTICATIONFAILED] Authentication failed")
        if self._failures >= int(self.settings.current["auth.max_failures"]):
            self.sendLine(b"* BYE Too many authentication failures")
            self._closed_by_us()

    # -- IDLE (RFC 2177) ----------------------------------------------------------------------
    def do_IDLE(self, tag: bytes) -> None:
        self._idle_tag = tag
        self.sendContinuationRequest(b"idling")
        self._flush_unsolicited()
        self._resume()

    auth_IDLE = (do_IDLE,)
    select_IDLE = auth_IDLE

    def _idle_line(self, line: bytes) -> None:
        tag, self._idle_tag = self._idle_tag, None
        assert tag is not None
        self._busy_tag = tag
        self._pause()
        if line.strip().upper() == b"DONE":
            self.sendPositiveResponse(tag, b"IDLE terminated")
        else:
            self.sendBadResponse(tag, b"Expected DONE")

    # IMailboxListener: Twisted's mailbox listener calls, queued as unsolicited responses.
    def newMessages(self, exists: Optional[int], recent: Optional[int]) -> None:
        if exists is not None:
            self.unsolicited(b"%d EXISTS" % exists)
        if recent is not None:
            self.unsolicited(b"%d RECENT" % recent)

    def flagsChanged(self, newFlags: dict[int, Any]) -> None:
        for seq, flags in sorted(newFlags.items()):
            words = b" ".join(f.encode() if isinstance(f, str) else f for f in flags)
            self.unsolicited(b"%d FETCH (FLAGS (%s))" % (seq, words))

    def expunged(self, seqs: list[int]) -> None:
        """Messages removed by another session; ``seqs`` in the order they are to be sent."""
        for seq in seqs:
            self.unsolicited(b"%d EXPUNGE" % seq, b"EXPUNGE")

    def modeChanged(self, writeable: bool) -> None:
        self.unsolicited(b"OK [READ-WRITE]" if writeable else b"OK [READ-ONLY]")


class IMAPFactory(ServerFactory):
    """Builds CgIMAP4Server connections for one listener; counts connections per IP."""

    protocol = CgIMAP4Server  # type: ignore[assignment]

    def __init__(self, listener: ListenerSpec, settings: SettingsHolder, portal: Any,
                 tls: Callable[[], Any], hostname: str, clock: Any = None,
                 penalty: Optional[IPenalty] = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # composition default only
        self.listener = listener
        self.settings = settings
        self.portal = portal
        self.tls = tls
        self.hostname = hostname
        self.clock = clock
        self.penalty: IPenalty = penalty or LoginPenalty(settings, clock)
        self.per_ip: dict[str, int] = {}

    def buildProtocol(self, addr: Any) -> CgIMAP4Server:  # type: ignore[override]
        p = CgIMAP4Server(self.listener, self.settings, self.portal, self.tls, self.hostname,
                          self.clock, self.penalty)
        p.factory = self
        return p

    def connection_opened(self, ip: str) -> bool:
        """Count a new connection; False when the IP is over access.max_connections_per_ip."""
        n = self.per_ip.get(ip, 0) + 1
        self.per_ip[ip] = n
        return n <= int(self.settings.current["access.max_connections_per_ip"])

    def connection_closed(self, ip: str) -> None:
        n = self.per_ip.get(ip, 0) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)
