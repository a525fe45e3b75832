"""One login path for SMTP AUTH, POP3 and IMAP: the SASL decoder and ``LoginAttempt``.

Owns what the three protocols share about a login: whether a password may be sent in the
clear (``plaintext_allowed``), decoding SASL responses (PLAIN, RFC 4616;
LOGIN where SMTP offers it) into a name and a password, and the course of one attempt: the
auth penalty's cap on attempts running at once from a host, the shared cred Portal, the
penalty's accounting and its delay before a failure is answered, and the per-connection
failure count that ends in a disconnect (RELIABILITY.md b-G 39). The outcome comes back as data
(``LoggedIn``, ``Refused``, ``Busy``, ``Unavailable``, ``TooManySessions`` where the
protocol counts sessions per account and IP) that each protocol renders in its own syntax.
It never writes to a transport and never decides who an account is: the portal's checker (``cgtwist.core.auth.AccountChecker``) does.

twisted.mail's ``PLAINCredentials`` and ``LOGINCredentials`` do not fit: the first drops the
authorization identity unchecked, the second challenges with ``User Name\\0`` where our SMTP
clients get ``Username:``. The credentials are ``cgtwist.core.auth.PeerCredentials`` (a
twisted.cred ``UsernamePassword`` that carries the client's IP for the Roaming check).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from twisted.cred.error import LoginFailed
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import Interface

from cgtwist.core.auth import PeerCredentials
from cgtwist.errors import MailError
from cgtwist.interfaces import IAuthPenalty
from cgtwist.protocols.limits import SessionCounter
from cgtwist.settings import Settings
from cgtwist.types import ListenerSpec


def plaintext_allowed(secure: bool, listener: ListenerSpec, settings: Settings) -> bool:
    """Whether a password may be sent on this connection: always over TLS; in the clear only
    where the listener (``allow_plain_auth``) or ``auth.allow_plaintext`` allows it (RFC 3501
    §6.2.3 LOGINDISABLED, RFC 2595 §2.1, RFC 4954 §4). One rule for SMTP, POP3 and IMAP, read
    at each use so a changed setting applies to the next command."""
    return secure or listener.allow_plain_auth or settings.auth.allow_plaintext


# -- SASL ------------------------------------------------------------------------------------


class SaslError(ValueError):
    """A SASL response the server cannot use; each protocol answers it in its own syntax."""


class BadBase64(SaslError):
    """The response is not base64 (RFC 4648 §4, no stray characters)."""


class MalformedResponse(SaslError):
    """A PLAIN response that is not ``[authzid] NUL authcid NUL passwd`` (RFC 4616 §2)."""


class AuthzDenied(SaslError):
    """The client asked to act as another user (an authzid unlike its authcid): we never let one
    account act for another."""


def decode_response(line: bytes) -> bytes:
    """Decode one base64 SASL response; ``=`` is the empty response (RFC 4954 §4, RFC 4959)."""
    if line == b"=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise BadBase64("Invalid base64") from None


def parse_plain(response: bytes) -> tuple[bytes, bytes]:
    """RFC 4616 §2: a decoded PLAIN response -> (authcid, passwd)."""
    parts = response.split(b"\0")
    if len(parts) != 3 or not parts[1]:
        raise MalformedResponse("Invalid PLAIN response")
    authzid, authcid, passwd = parts
    if authzid and authzid != authcid:
        raise AuthzDenied("Cannot act as another user")
    return authcid, passwd


class SaslExchange:
    """One SASL exchange of PLAIN or LOGIN, as decoded responses arrive.

    ``step`` takes a decoded response and returns the next challenge (bytes the protocol sends
    base64-encoded after its continuation prefix) or (username, password) when finished; a bad
    response raises a ``SaslError``.
    """

    MECHANISMS = ("PLAIN", "LOGIN")

    def __init__(self, mechanism: str) -> None:
        if mechanism not in self.MECHANISMS:
            raise ValueError(f"unsupported SASL mechanism {mechanism!r}")
        self.mechanism = mechanism
        self._username: Optional[bytes] = None

    def first_challenge(self) -> bytes:
        """PLAIN starts with an empty challenge (RFC 4616 §2); LOGIN asks for the name."""
        return b"" if self.mechanism == "PLAIN" else b"Username:"

    def step(self, response: bytes) -> Union[bytes, tuple[bytes, bytes]]:
        if self.mechanism == "PLAIN":
            return parse_plain(response)
        if self._username is None:
            self._username = response
            return b"Password:"
        return self._username, response


# -- one attempt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedIn:
    """The password was right: the portal's avatar, the call that logs it out (and gives
    back its place among the account's sessions from this IP), and the account's name."""

    avatar: Any
    logout: Callable[[], None]
    account: str = ""


@dataclass(frozen=True)
class TooManySessions:
    """The password was right, but ``account`` already has ``auth.max_userip_connections``
    sessions from this IP (``UserIPSessions``): the avatar has been logged out again."""

    account: str


@dataclass(frozen=True)
class Refused:
    """Wrong name or password (alike: no user enumeration), answered after the penalty's delay.

    ``failures`` counts this connection's failures including this one; ``disconnect`` is the
    penalty's rule that the connection closes after the reply.
    """

    failures: int
    disconnect: bool


@dataclass(frozen=True)
class Busy:
    """Too many attempts running at once from a host that has failed before: try again later."""


@dataclass(frozen=True)
class Unavailable:
    """The portal could not answer (the account store is down, a realm refused, a bug): a
    temporary failure, never "wrong password". ``failure`` says why, for the protocol's log."""

    failure: Failure

    @property
    def temporary(self) -> bool:
        """A MailError the checker raised on purpose (and logged), not a bug."""
        value = self.failure.value
        return isinstance(value, MailError) and value.temporary


LoginOutcome = Union[LoggedIn, Refused, Busy, Unavailable, TooManySessions]


@dataclass(frozen=True)
class LoginAttempt:
    """One login of one connection: penalty cap, portal, accounting, delay on failure.

    ``protocol`` names the protocol in the penalty's log line; ``interface`` is the avatar
    interface asked of ``portal``; ``failures`` is the connection's count before this attempt.
    ``penalty_logs``: the penalty writes each failure's line (SMTP); IMAP and POP3 write
    their own ``auth failed: proto=`` lines when they render ``Refused``. ``sessions`` (POP3
    and IMAP: the server's ``UserIPSessions``) admits the logged-in account, named by
    ``account_of(avatar)`` or else as the client gave it, or answers ``TooManySessions``.
    """

    portal: Portal
    penalty: IAuthPenalty
    protocol: str
    interface: type[Interface]
    peer_ip: str
    failures: int = 0
    penalty_logs: bool = True
    sessions: Optional[SessionCounter] = None
    account_of: Callable[[Any], Optional[str]] = lambda avatar: None

    def run(self, username: bytes, password: bytes) -> defer.Deferred[LoginOutcome]:
        """Log in as given (``user@domain``, ``user%domain`` or bare: the checker knows the
        forms); fire with the outcome, a failure only after its delay."""
        allowed = self.penalty.acquire(self.peer_ip)
        if isinstance(allowed, defer.Deferred):  # a worker asks the server's penalty
            return allowed.addCallback(self._acquired, username, password)
        return self._acquired(allowed, username, password)

    def _acquired(
        self, allowed: bool, username: bytes, password: bytes
    ) -> defer.Deferred[LoginOutcome]:
        ip = self.peer_ip
        if not allowed:
            return defer.succeed(Busy())

        def release(result: Any) -> Any:
            self.penalty.release(ip)
            return result

        d: defer.Deferred[Any] = defer.maybeDeferred(
            self.portal.login, PeerCredentials(username, password, ip), None, self.interface
        )
        d.addBoth(release)
        return d.addCallbacks(
            self._logged_in,
            self._not_logged_in,
            callbackArgs=(username,),
            errbackArgs=(username, password),
        )

    def _logged_in(
        self, result: tuple[Any, Any, Callable[[], None]], username: bytes
    ) -> Union[LoginOutcome, defer.Deferred[LoginOutcome]]:
        _interface, avatar, logout = result
        self.penalty.succeeded(self.peer_ip)
        account = self.account_of(avatar) or username.decode("utf-8", "replace")
        if self.sessions is None:
            return LoggedIn(avatar, logout, account)
        held = self.sessions.admit(account, self.peer_ip, logout)
        if isinstance(held, defer.Deferred):  # a worker asks the server's count
            return held.addCallback(self._admitted, avatar, account, logout)
        return self._admitted(held, avatar, account, logout)

    @staticmethod
    def _admitted(
        held: Optional[Callable[[], None]],
        avatar: object,
        account: str,
        logout: Callable[[], None],
    ) -> LoginOutcome:
        if held is None:
            logout()
            return TooManySessions(account)
        return LoggedIn(avatar, held, account)

    def _not_logged_in(
        self, failure: Failure, username: bytes, password: bytes
    ) -> Union[LoginOutcome, defer.Deferred[LoginOutcome]]:
        if isinstance(failure.value, LoginFailed):
            return self.refuse(username, password)
        return Unavailable(failure)

    def refuse(
        self, username: bytes, password: Optional[bytes] = None
    ) -> defer.Deferred[LoginOutcome]:
        """Count a failure (also one found before the portal, as an SMTP authzid for another
        user) and fire with ``Refused`` once the penalty's delay has passed."""
        failures = self.failures + 1
        login = username.decode("utf-8", "replace").encode("unicode_escape").decode("ascii")
        d = defer.maybeDeferred(
            self.penalty.failed,
            self.peer_ip,
            login,
            self.protocol,
            secret=password,
            log_line=self.penalty_logs,
        )
        return d.addCallback(
            lambda _: Refused(failures, bool(self.penalty.should_disconnect(failures)))
        )
