"""IMAP STARTTLS and login: TLS and plaintext policy, LOGIN, AUTHENTICATE PLAIN with SASL-IR.

Owns how a CgIMAP4Server session becomes authenticated: passwords only over TLS unless the
listener or auth.allow_plaintext allow it (RFC 3501 §6.2.3, LOGINDISABLED), STARTTLS that
discards pipelined plaintext (CVE-2011-0411), and the IMAP replies to each outcome of the one
login path (cgtwist.protocols.login: portal, penalty, delays, disconnect after auth.max_failures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.mail import imap4
from twisted.python.failure import Failure

from cgtwist.core.auth import AuthUnavailable
from cgtwist.interfaces import IAuthPenalty
from cgtwist.logs import Logger
from cgtwist.protocols.imap.commands import CommandTable
from cgtwist.protocols.imap.mailboxes import MailboxCommands
from cgtwist.protocols.login import (
    AuthzDenied,
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


class LoginMixin:
    """STARTTLS, LOGIN and AUTHENTICATE for the not-authenticated state."""

    login_commands = CommandTable()
    log = Logger()
    secure: bool
    canStartTLS: bool
    listener: Any
    settings: Any
    portal: Any
    penalty: IAuthPenalty
    peer_ip: str
    account: Any
    account_name: str
    state: str
    transport: Any
    _tls: Callable[[], Any]
    _inbuf: bytearray
    _closed: bool
    _failures: int
    _sasl_tag: Optional[bytes]
    _onLogout: Any
    factory: Any

    if TYPE_CHECKING:

        def sendBadResponse(self, tag: Optional[bytes] = None, message: bytes = b"") -> None: ...
        def sendNegativeResponse(self, tag: Optional[bytes] = None, message: Any = b"") -> None: ...
        def sendPositiveResponse(
            self, tag: Optional[bytes] = None, message: bytes = b""
        ) -> None: ...
        def sendLine(self, line: bytes) -> None: ...
        def setTimeout(self, period: Optional[float]) -> Any: ...
        def listCapabilities(self) -> list[bytes]: ...
        def _server_bug(self, tag: bytes) -> None: ...
        def _pause(self) -> None: ...
        def _resume(self) -> None: ...
        def _closed_by_us(self) -> None: ...
        def _later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None: ...
        def end_session(self, reason: str) -> None: ...

    def plaintext_allowed(self) -> bool:
        """Passwords only over TLS unless the listener or settings allow it (RFC 3501 §6.2.3)."""
        return plaintext_allowed(self.secure, self.listener, self.settings.current)

    def _can_starttls(self) -> bool:
        return not self.secure and self.canStartTLS and self._tls() is not None

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
            self.log.warn(
                "imap: discarded {n} octets pipelined after STARTTLS from {ip}",
                n=len(self._inbuf),
                ip=self.peer_ip,
            )
            self._inbuf.clear()
        self.secure = True
        self.sendPositiveResponse(tag, b"Begin TLS negotiation now")
        self.transport.startTLS(ctx)

    login_commands.add("unauth", "STARTTLS", do_STARTTLS)

    # -- login ------------------------------------------------------------------------------
    def do_LOGIN(self, tag: bytes, user: bytes, passwd: bytes) -> None:
        if not self.plaintext_allowed():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Use STARTTLS before LOGIN")
            return
        self._login(tag, user, passwd)

    login_commands.add(
        "unauth", "LOGIN", do_LOGIN, MailboxCommands.arg_astring, MailboxCommands.arg_astring
    )

    def do_AUTHENTICATE(self, tag: bytes, args: bytes) -> None:
        mech, _, initial = args.strip().partition(b" ")
        if mech.upper() != b"PLAIN":
            self.sendNegativeResponse(tag, b"[CANNOT] Unsupported authentication mechanism")
            return
        if not self.plaintext_allowed():
            self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Use STARTTLS first")
            return
        if initial:  # RFC 4959 SASL-IR; "=" is an empty initial response
            self._sasl_response(tag, initial)
            return
        self._sasl_tag = tag
        self.sendLine(b"+ ")
        self._resume()

    login_commands.add("unauth", "AUTHENTICATE", do_AUTHENTICATE, imap4.IMAP4Server.arg_line)

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
            user, passwd = parse_plain(decode_response(b64.strip()))
        except AuthzDenied:
            self.sendNegativeResponse(tag, b"[AUTHORIZATIONFAILED] Cannot act as another user")
            return
        except SaslError as e:
            self.sendBadResponse(tag, str(e).encode())
            return
        self._login(tag, user, passwd)

    def _login(self, tag: bytes, user: bytes, passwd: bytes) -> None:
        """Log in through the portal as given (user@domain, user%domain or bare)."""
        name = user.decode("utf-8", "replace")
        attempt = LoginAttempt(
            self.portal,
            self.penalty,
            "imap",
            imap4.IAccount,
            self.peer_ip,
            self._failures,
            penalty_logs=False,
            sessions=getattr(self.factory, "sessions", None),
            account_of=lambda avatar: getattr(avatar, "account", None),
        )
        d = attempt.run(user, passwd)
        d.addCallback(self._login_outcome, tag, name)
        d.addErrback(self._login_bug, tag)

    def _login_bug(self, failure: Failure, tag: bytes) -> None:
        self.log.failure("imap: login handling failed", failure)
        self._server_bug(tag)

    def _login_outcome(self, outcome: LoginOutcome, tag: bytes, name: str) -> None:
        if isinstance(outcome, LoggedIn):
            self._login_ok(outcome, tag, name)
        elif isinstance(outcome, Refused):
            self._failures = outcome.failures
            self.log.warn("auth failed: proto=imap ip={ip} user={user}", ip=self.peer_ip, user=name)
            # The penalty's delay has passed; answered on the next turn of the clock, as ever
            # (never while the command is still being dispatched), and only if still connected.
            self._later(0, self._login_refused, tag, outcome.disconnect)
        elif isinstance(outcome, Busy):
            # A shared penalty caps concurrent logins per IP (RELIABILITY §c).
            self.sendNegativeResponse(tag, b"[UNAVAILABLE] Too many concurrent logins, try later")
        elif isinstance(outcome, TooManySessions):
            self.log.warn(
                "imap: {account} has too many sessions from {ip}",
                account=outcome.account,
                ip=self.peer_ip,
            )
            self.sendNegativeResponse(
                tag, b"[UNAVAILABLE] Maximum number of connections from user+IP exceeded"
            )
        elif isinstance(outcome.failure.value, AuthUnavailable):  # the checker logged why
            self.log.warn("imap: authentication unavailable for {ip}", ip=self.peer_ip)
            self.sendNegativeResponse(tag, b"[UNAVAILABLE] Temporary authentication failure")
        else:
            self.log.failure(
                "imap: authentication backend failed for {ip}", outcome.failure, ip=self.peer_ip
            )
            self.sendNegativeResponse(tag, b"[UNAVAILABLE] Temporary authentication failure")

    def _login_refused(self, tag: bytes, disconnect: bool) -> None:
        self.sendNegativeResponse(tag, b"[AUTHENTICATIONFAILED] Authentication failed")
        if disconnect:
            self.sendLine(b"* BYE Too many authentication failures")
            self._closed_by_us()

    def _login_ok(self, outcome: LoggedIn, tag: bytes, name: str) -> None:
        if self._closed:
            outcome.logout()
            return
        self.account = outcome.avatar
        self.account_name = str(outcome.account)
        self._onLogout = (
            self.factory.listed(
                self.account_name, self.peer_ip, self.secure, self.end_session, outcome.logout
            )
            if self.factory is not None
            else outcome.logout
        )
        self.state = "auth"
        self.log.info("imap: login {account} from {ip}", account=self.account_name, ip=self.peer_ip)
        # RFC 3501 §5.4: an inactivity autologout timer of at least 30 minutes.
        self.setTimeout(max(self.settings.current.imap.idle_timeout, 1800))
        self.sendPositiveResponse(
            tag, b"[CAPABILITY " + b" ".join(self.listCapabilities()) + b"] Logged in"
        )
