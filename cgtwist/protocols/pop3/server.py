"""The POP3 listener: Twisted's POP3 with STLS, SASL PLAIN, the plaintext policy and limits.

Owns the POP3 dialogue (RFC 1939, CAPA/RESP-CODES RFC 2449, STLS RFC 2595, AUTH RFC 5034):
states, command parsing and pipelining, replies, idle timeout, the AUTHORIZATION state and the
replies to each login outcome (the login itself is ``cgtwist.protocols.login``'s), the per-IP
connection cap, the goodbye at server shutdown. Once logged in, the TRANSACTION-state
commands are ``cgtwist.protocols.pop3.maildrop.Maildrop``'s. Never touches files itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet import defer, interfaces
from twisted.mail import pop3
from twisted.python.failure import Failure

from cgtwist.errors import MailError
from cgtwist.interfaces import IAuthPenalty
from cgtwist.logs import Logger
from cgtwist.mailstore.pop import MailboxInUse, PopMailbox
from cgtwist.protocols.limits import AccessFactory
from cgtwist.protocols.login import (
    Busy,
    LoggedIn,
    LoginAttempt,
    LoginOutcome,
    Refused,
    SaslError,
    TooManySessions,
    decode_response,
    parse_plain,
    plaintext_allowed,
)
from cgtwist.protocols.pop3.maildrop import Maildrop
from cgtwist.settings import SettingsHolder
from cgtwist.types import ListenerSpec

MAX_LINE = 1024  # RFC 2449 §4 allows 255 for commands; SASL responses may be longer
MAX_USER = 320
MAX_QUEUED = 32  # pipelined commands held while one runs, before reading pauses
# RFC 2449 §8.1.2 / RFC 3206 §4: SYS/TEMP tells the client to try again later, not to give up.
SHUTDOWN_LINE = b"-ERR [SYS/TEMP] server shutting down"

if TYPE_CHECKING:
    # Twisted leaves these inherited methods (LineOnlyReceiver, TimeoutMixin) unannotated and
    # mypy --strict refuses an untyped call: for the type checker only, the base class with
    # the signatures used here (at run time the name is pop3.POP3 itself).
    class _POP3(pop3.POP3):
        def sendLine(self, line: bytes) -> None: ...
        def dataReceived(self, data: bytes) -> None: ...
        def setTimeout(self, period: Optional[float]) -> Optional[float]: ...
        def resetTimeout(self) -> None: ...

else:
    _POP3 = pop3.POP3


class POP3Server(_POP3):
    """One POP3 connection. States: ``AUTHORIZATION`` -> ``TRANSACTION`` -> ``UPDATE``."""

    log = Logger()
    delimiter = b"\r\n"
    MAX_LENGTH = MAX_LINE
    transport: Any
    factory: Any
    portal: Any

    def __init__(
        self,
        listener: ListenerSpec,
        settings: SettingsHolder,
        portal: Any,
        tls: Callable[[], Any],
        hostname: str,
        clock: Any,
        penalty: IAuthPenalty,
    ) -> None:
        self.listener = listener
        self.settings = settings
        self.portal = portal
        self.tls = tls
        self.hostname = hostname
        self.clock = clock
        self.penalty = penalty
        self.state = "AUTHORIZATION"
        self.peer_ip = "?"
        self.account = ""
        self.maildrop: Optional[Maildrop] = None  # the TRANSACTION state, once logged in
        self._user: Optional[str] = None
        self._sasl: Optional[str] = None  # mechanism awaiting a continuation
        self._busy = False
        self._queue: list[bytes] = []
        self._discard = False
        self._paused = False
        self._tls_started = False
        self._failures = 0
        self._counted = False
        self._bye_after_command = False  # shutdown() came while a command was running
        self._bye_line = SHUTDOWN_LINE  # what shutdown() says
        self._bye_reason = "server shutting down"  # and logs

    # -- connection ----------------------------------------------------------------------------

    def callLater(self, period: float, func: Callable[[], Any]) -> Any:  # TimeoutMixin
        return self.clock.callLater(period, func)

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer_ip = str(getattr(peer, "host", "?"))
        factory = self.factory
        if isinstance(factory, POP3Factory):
            if factory.stopping:
                # Accepted between SIGTERM and the listeners closing: say why, so the client
                # retries later instead of reporting a broken server.
                self.sendLine(SHUTDOWN_LINE)
                self.transport.loseConnection()
                return
            self._counted = True
            if not factory.connection_opened(self.peer_ip):
                self.log.warn("pop3: too many connections from {ip}", ip=self.peer_ip)
                self.sendLine(b"-ERR [SYS/TEMP] Too many connections from your address")
                self.transport.loseConnection()
                return
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            try:
                nodelay(True)  # replies are written in pieces; Nagle + delayed ACK costs 40 ms
            except Exception:
                pass
        self.setTimeout(self.settings.current.pop3.idle_timeout)
        self.sendLine(b"+OK cgtwist POP3 server ready")

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        self.setTimeout(None)
        self._logout()
        factory = self.factory
        if isinstance(factory, POP3Factory):
            if self._counted:
                self._counted = False
                factory.connection_closed(self.peer_ip)
            factory.forget(self)

    def _logout(self) -> None:
        """Unlock the maildrop without applying deletions (only QUIT does); runs once."""
        if self._onLogout is not None:
            logout, self._onLogout = self._onLogout, None
            try:
                logout()
            except Exception:
                self.log.failure("pop3: logout failed for {account}", account=self.account)

    def shutdown(self) -> None:
        """Server stopping: ``-ERR [SYS/TEMP]`` now, or after the running command's reply.

        A RETR being streamed or a login being checked is finished first, so the client never
        sees half a reply. Never enters UPDATE: RFC 1939 §6 deletes only at the client's QUIT,
        so messages marked with DELE stay (a QUIT already running completes as asked).
        """
        if self.transport is None or self.transport.disconnecting:
            return
        if self._busy:
            self._bye_after_command = True
            return
        self._shutdown_now()

    def end_session(self, reason: str) -> None:
        """The account's owner ended this session (WebUser's active sessions): ``-ERR
        reason`` and close, now or after the running command's reply, as at shutdown (never
        entering UPDATE: messages marked with DELE stay, RFC 1939 §6)."""
        self._bye_line = b"-ERR " + reason.encode("utf-8", "replace")
        self._bye_reason = reason
        self.shutdown()

    def _shutdown_now(self) -> None:
        self.log.info(
            "pop3: {reason}, closing {ip} {account}",
            reason=self._bye_reason,
            ip=self.peer_ip,
            account=self.account,
        )
        self.setTimeout(None)  # no idle-timeout -ERR after this one while the client reads
        self._queue.clear()  # pipelined commands are not run: that could include a QUIT's UPDATE
        self.sendLine(self._bye_line)
        # The lock goes now, as at connectionLost: a client slow to read must not hold it.
        self._logout()
        self.maildrop = None
        if self._paused:
            # Reading was paused for a pipelined backlog: resume it, or the transport never
            # sees the peer's close (TLS waits for it) and the session is never released.
            self._paused = False
            self.transport.resumeProducing()
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        """Idle too long (RFC 1939 §3: >= 10 minutes): close without entering UPDATE."""
        self.log.info(
            "pop3: idle timeout for {ip} {account}", ip=self.peer_ip, account=self.account
        )
        self.sendLine(b"-ERR Idle timeout, closing connection")
        self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.info("pop3: line too long from {ip}", ip=self.peer_ip)
        self.sendLine(b"-ERR Line too long")
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self._discard = False
        super().dataReceived(data)

    @property
    def secure(self) -> bool:
        return (
            self._tls_started
            or self.listener.tls == "implicit"
            or interfaces.ISSLTransport.providedBy(self.transport)
        )

    def plaintext_allowed(self) -> bool:
        """Passwords only over TLS unless the listener or auth.allow_plaintext allows it."""
        return plaintext_allowed(self.secure, self.listener, self.settings.current)

    def stls_available(self) -> bool:
        return self.state == "AUTHORIZATION" and not self.secure and self.tls() is not None

    def ok(self, text: str = "") -> None:
        self.sendLine(b"+OK" + (b" " + text.encode() if text else b""))

    def err(self, text: str) -> None:
        self.sendLine(b"-ERR " + text.encode())

    # -- command loop (pipelining: one command at a time, the rest queued) ---------------------

    def lineReceived(self, line: bytes) -> None:
        if self._discard:
            self.log.warn("pop3: discarding data sent with STLS from {ip}", ip=self.peer_ip)
            return
        if self._busy:
            self._queue.append(line)
            if len(self._queue) >= MAX_QUEUED and not self._paused:
                self._paused = True  # back-pressure: stop reading until the backlog is done
                self.transport.pauseProducing()
            return
        self.resetTimeout()
        self._run(line)

    def _run(self, line: bytes) -> None:
        try:
            d = self._dispatch(line)
        except Exception:
            self.log.failure("pop3: command failed for {ip}", ip=self.peer_ip)
            self.err("[SYS/TEMP] Internal error")
            return
        if isinstance(d, defer.Deferred):
            # Finished already: no need to hold the queue. A Deferred waiting on another (the
            # failed-login delay) is ``called`` but paused: that command is still running.
            if d.called and not d.paused:
                d.addErrback(self._unexpected)
                return
            self._busy = True
            self.setTimeout(None)
            d.addErrback(self._unexpected)
            d.addBoth(self._done)

    def _unexpected(self, f: Failure) -> None:
        self.log.failure("pop3: command failed for {ip}", f, ip=self.peer_ip)
        if self.transport is not None and not self.transport.disconnecting:
            self.err("[SYS/TEMP] Internal error")

    def _done(self, _: Any) -> None:
        self._busy = False
        if self.transport is None or self.transport.disconnecting:
            return
        if self._bye_after_command:
            self._shutdown_now()
            return
        self.setTimeout(self.settings.current.pop3.idle_timeout)
        while self._queue and not self._busy and not self.transport.disconnecting:
            self._run(self._queue.pop(0))
        if self._paused and not self._queue and not self.transport.disconnecting:
            self._paused = False
            self.transport.resumeProducing()

    def _dispatch(self, line: bytes) -> Optional[defer.Deferred[Any]]:
        if self._sasl is not None:
            mech, self._sasl = self._sasl, None
            return self._sasl_response(mech, line.strip())
        try:
            text = line.decode("utf-8")  # commands are ASCII; passwords may be UTF-8
        except UnicodeDecodeError:
            self.err("Invalid characters in command")
            return None
        cmd, _, rest = text.partition(" ")
        cmd = cmd.upper()
        if not (cmd.isascii() and cmd.isalpha()) or len(cmd) > 4:
            self.err("Unknown command")
            return None
        handler = getattr(self, f"{self.state.lower()}_{cmd}", None)
        if handler is None and self.state == "TRANSACTION" and self.maildrop is not None:
            handler = self.maildrop.handler(cmd)
        if handler is None:
            known = (
                hasattr(self, f"authorization_{cmd}")
                or hasattr(self, f"transaction_{cmd}")
                or cmd in Maildrop.COMMANDS
            )
            self.err("Command not valid in this state" if known else "Unknown command")
            return None
        result: Optional[defer.Deferred[Any]] = handler(rest)
        return result

    # -- both states ---------------------------------------------------------------------------

    def _capa(self, rest: str) -> None:
        """RFC 2449 §5: CAPA in any state."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state == "AUTHORIZATION":
            if self.plaintext_allowed():
                caps += ["USER", "SASL PLAIN"]
            if self.stls_available():
                caps.append("STLS")
        caps.append("IMPLEMENTATION cgtwist")
        self.ok("Capability list follows")
        for c in caps:
            self.sendLine(c.encode())
        self.sendLine(b".")

    authorization_CAPA = transaction_CAPA = _capa

    # -- AUTHORIZATION -------------------------------------------------------------------------

    def authorization_QUIT(self, rest: str) -> None:
        self.ok("Logging out")
        self.transport.loseConnection()

    def authorization_APOP(self, rest: str) -> None:
        self.err("[AUTH] APOP is not supported")

    def authorization_STLS(self, rest: str) -> None:
        """RFC 2595 §4; buffered commands sent with STLS are discarded (CVE-2011-0411)."""
        if rest:
            self.err("STLS takes no arguments")
            return
        ctx = self.tls() if not self.secure else None
        if ctx is None:
            self.err("TLS not available" if not self.secure else "Already using TLS")
            return
        self.ok("Begin TLS negotiation now")
        self._buffer = b""
        self._discard = True
        self._queue.clear()
        self._user = None
        self._tls_started = True
        self.transport.startTLS(ctx)

    def _refuse_plaintext(self) -> bool:
        if self.plaintext_allowed():
            return False
        self.err("[AUTH] Plaintext authentication disallowed on non-secure connections; use STLS")
        return True

    def authorization_USER(self, rest: str) -> None:
        if self._refuse_plaintext():
            return
        user = rest.strip()
        if not user or len(user) > MAX_USER or any(ord(c) < 33 for c in user):
            self.err("Invalid user name")
            return
        self._user = user
        self.ok()

    def authorization_PASS(self, rest: str) -> Optional[defer.Deferred[Any]]:
        if self._refuse_plaintext():
            return None
        if self._user is None:
            self.err("USER first")
            return None
        user, self._user = self._user, None
        return self._login(user, rest)

    def authorization_AUTH(self, rest: str) -> Optional[defer.Deferred[Any]]:
        """RFC 5034; only PLAIN (RFC 4616), only where passwords may be sent."""
        args = rest.split()
        if not args:
            self.ok("Supported SASL mechanisms follow")
            if self.plaintext_allowed():
                self.sendLine(b"PLAIN")
            self.sendLine(b".")
            return None
        if args[0].upper() != "PLAIN" or len(args) > 2:
            self.err("Unsupported SASL mechanism")
            return None
        if self._refuse_plaintext():
            return None
        if len(args) == 2:
            # Base64 is ASCII; anything else fails its decoding as an invalid response.
            return self._sasl_response("PLAIN", args[1].encode("utf-8"))
        self._sasl = "PLAIN"
        self.sendLine(b"+ ")
        return None

    def _sasl_response(self, mech: str, data: bytes) -> Optional[defer.Deferred[Any]]:
        if data == b"*":
            self.err("Authentication cancelled")
            return None
        try:
            authc, password = parse_plain(decode_response(data))
            user = authc.decode("utf-8")
            secret = password.decode("utf-8")
        except (SaslError, UnicodeDecodeError):
            self.err("Invalid SASL response")
            return None
        if len(user) > MAX_USER:
            self.err("Invalid SASL response")
            return None
        return self._login(user, secret)

    def _login(self, user: str, password: str) -> Optional[defer.Deferred[Any]]:
        attempt = LoginAttempt(
            self.portal,
            self.penalty,
            "pop3",
            pop3.IMailbox,
            self.peer_ip,
            self._failures,
            penalty_logs=False,
            sessions=getattr(self.factory, "sessions", None),
            account_of=_account_of,
        )
        d = attempt.run(user.encode("utf-8"), password.encode("utf-8"))
        return d.addCallback(self._login_outcome, user)

    def _login_outcome(self, outcome: LoginOutcome, user: str) -> None:
        if isinstance(outcome, LoggedIn):
            self._logged_in(outcome, user)
        elif isinstance(outcome, Refused):
            self._failures = outcome.failures
            # RELIABILITY.md b-G 39: the fail2ban-readable line, as ever for POP3.
            self.log.info(
                "auth failed: proto=pop3 ip={ip} user={user} failures={n}",
                ip=self.peer_ip,
                user=user,
                n=self._failures,
            )
            if self.transport is None or self.transport.disconnecting:
                return
            self.err("[AUTH] Authentication failed")
            if outcome.disconnect:
                self.transport.loseConnection()
        elif isinstance(outcome, Busy):
            # The shared penalty caps logins running at once from a host that has failed before.
            self.err("[SYS/TEMP] Too many logins in progress from your address, try later")
        elif isinstance(outcome, TooManySessions):
            self.log.warn(
                "pop3: {account} has too many sessions from {ip}",
                account=outcome.account,
                ip=self.peer_ip,
            )
            self.err("[IN-USE] Maximum number of connections from user+IP exceeded")
        else:
            self._unavailable(outcome.failure, user)

    def _logged_in(self, outcome: LoggedIn, user: str) -> None:
        avatar = outcome.avatar
        if self.transport is None or self.transport.disconnecting:
            outcome.logout()
            return
        self.maildrop = Maildrop(self, avatar)
        self.account = outcome.account
        factory = self.factory
        self._onLogout = (
            factory.listed(
                self.account, self.peer_ip, self.secure, self.end_session, outcome.logout
            )
            if isinstance(factory, POP3Factory)
            else outcome.logout
        )
        self.state = "TRANSACTION"
        count, size = avatar.count_and_size()
        self.log.info(
            "pop3: login {account} from {ip}: {count} messages",
            account=self.account,
            ip=self.peer_ip,
            count=count,
        )
        self.ok(f"Logged in, {count} messages ({size} octets)")

    def _unavailable(self, f: Failure, user: str) -> None:
        if isinstance(f.value, MailboxInUse):
            self.log.info("pop3: maildrop of {user} in use ({ip})", user=user, ip=self.peer_ip)
            self.err("[IN-USE] Mailbox is locked by another POP3 session")
        elif isinstance(f.value, MailError):
            self.log.warn(
                "pop3: authentication unavailable for {user}: {err}", user=user, err=f.value
            )
            self.err("[SYS/TEMP] Temporary authentication failure, try again later")
        else:
            self.log.failure("pop3: login error for {user}", f, user=user)
            self.err("[SYS/TEMP] Temporary authentication failure, try again later")


class POP3Factory(AccessFactory):
    """``POP3Factory(listener, settings, portal, tls, hostname, clock=reactor, penalty=None)``:
    builds POP3Server connections for one listener (set-up, per-IP counts and the shutdown
    drain: AccessFactory; each session says ``-ERR [SYS/TEMP]`` at shutdown)."""

    protocol = POP3Server
    live: set[POP3Server]


def _account_of(avatar: Any) -> Optional[str]:
    """The account a POP3 avatar is the maildrop of (its user+IP sessions are counted)."""
    return avatar.box.folder.account if isinstance(avatar, PopMailbox) else None
