"""SMTP AUTH (RFC 4954): the AUTH command, SASL PLAIN (RFC 4616) and LOGIN, and the cred glue.

Owns decoding the client's SASL responses into a username and password, logging in through the
checkers of the shared cred Portal, failure delays and the per-connection failure limit. It
never decides what a login means for relaying: that is the policy's job, from
``SessionInfo.account``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from typing import Any, Callable, Optional, Union

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from cgtwist.core.auth import PeerCredentials
from cgtwist.errors import MailError
from cgtwist.protocols.smtp.wire import SMTPWire

MECHANISMS = ("PLAIN", "LOGIN")


class ISMTPLogin(Interface):
    """The avatar interface SMTP asks for: the avatar is the account name ("name@domain")."""


@implementer(IRealm)
class AvatarIdRealm:
    """A realm whose avatar is the avatarId itself: SMTP only needs to know who logged in."""

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        return interfaces[0], avatarId, lambda: None


def login(
    portal: Portal, username: bytes, password: bytes, peer_ip: str = ""
) -> defer.Deferred[str]:
    """Check ``username``/``password`` with ``portal``'s checkers; fire with "name@domain".

    Uses the checkers of the shared Portal (the same AccountChecker as POP3 and IMAP) with a
    realm of our own, so SMTP needs nothing from the mail-access realm. The login name is passed
    through as typed (``user@domain``, ``user%domain`` or bare): the checker knows the forms.
    """
    checkers = {id(c): c for c in portal.checkers.values()}.values()
    realm: Any = AvatarIdRealm()
    creds: Any = PeerCredentials(username, password, peer_ip)
    own = Portal(realm, list(checkers))
    d = own.login(creds, None, ISMTPLogin)

    def avatar(result: tuple[Any, Any, Callable[[], None]]) -> str:
        avatar_id = result[1]
        if isinstance(avatar_id, bytes):
            avatar_id = avatar_id.decode("utf-8", "replace")
        return str(avatar_id)

    return d.addCallback(avatar)


def b64decode(line: bytes) -> bytes:
    """Decode one SASL response; RFC 4954 §4: '=' is an empty initial response."""
    if line == b"=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise MailError(501, "5.5.2", "Cannot decode response") from None


def b64(text: bytes) -> bytes:
    return base64.b64encode(text)


class SASLExchange:
    """One AUTH exchange. ``step`` takes a decoded response and returns the next challenge
    (bytes to send after ``334``) or a (username, password) tuple when finished."""

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self._username: Optional[bytes] = None

    def first_challenge(self) -> bytes:
        return b"" if self.mechanism == "PLAIN" else b"Username:"

    def step(self, response: bytes) -> Union[bytes, tuple[bytes, bytes]]:
        if self.mechanism == "PLAIN":
            # RFC 4616 §2: [authzid] NUL authcid NUL passwd
            parts = response.split(b"\0")
            if len(parts) != 3 or not parts[1]:
                raise MailError(501, "5.5.2", "Malformed PLAIN response")
            authzid, authcid, passwd = parts
            if authzid and authzid != authcid:
                # We do not let one account act for another.
                raise MailError(535, "5.7.8", "Authentication credentials invalid")
            return authcid, passwd
        if self._username is None:
            self._username = response
            return b"Password:"
        return self._username, response


class AuthCommands(SMTPWire):
    """The AUTH command on top of the wire (RFC 4954)."""

    _sasl: Optional[SASLExchange] = None
    _auth_failures = 0

    def _auth_allowed(self) -> bool:
        """Passwords only over TLS unless the listener or the settings allow plaintext."""
        return bool(
            self._tls
            or self.factory.listener.allow_plain_auth
            or self._setting("auth.allow_plaintext")
        )

    def smtp_auth(self, arg: bytes) -> None:
        assert self.session is not None
        if not self.session.helo or not self._esmtp:
            self._reply(503, "5.5.1", "Error: send EHLO first")
            return
        if self.session.account:
            self._reply(503, "5.5.1", "Error: already authenticated")
            return
        if self._sender is not None:
            # RFC 4954 §4: AUTH is not permitted during a mail transaction.
            self._reply(503, "5.5.1", "Error: AUTH not permitted during a mail transaction")
            return
        if not self._auth_allowed():
            # RFC 4954 §6 / RFC 3207: 538 5.7.11 encryption required.
            self._reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
            return
        mech, _, initial = arg.partition(b" ")
        mechanism = mech.decode("latin-1").upper()
        if mechanism not in MECHANISMS:
            self._reply(504, "5.5.4", "Unrecognized authentication type")
            return
        self._sasl = SASLExchange(mechanism)
        if initial.strip():
            self._auth_response(initial.strip())
        else:
            self._send("334 " + b64(self._sasl.first_challenge()).decode())

    def _sasl_line(self, line: bytes) -> bool:
        if self._sasl is None:
            return False
        self._auth_response(line)
        return True

    def _auth_response(self, line: bytes) -> None:
        sasl = self._sasl
        assert sasl is not None
        if line == b"*":
            self._sasl = None
            self._reply(501, "5.7.0", "Authentication aborted")
            return
        try:
            step = sasl.step(b64decode(line))
        except MailError as e:
            self._sasl = None
            if e.code == 535:
                self._start(self._auth_failed(b""))
            else:
                self._reply_error(e)
            return
        if isinstance(step, bytes):
            self._send("334 " + b64(step).decode())
            return
        self._sasl = None
        username, password = step
        ip = self._peer()
        penalty = self.factory.penalty
        if not penalty.acquire(ip):
            self._reply(454, "4.7.0", "Too many authentications in progress, try again later")
            return

        def release(result: Any) -> Any:
            penalty.release(ip)
            return result

        d = login(self.factory.portal, username, password, ip).addBoth(release)
        d.addCallbacks(self._auth_ok, self._auth_error, errbackArgs=(username, password))
        self._start(d)

    def _auth_ok(self, account: str) -> None:
        assert self.session is not None
        self.session = replace(self.session, account=account)
        self.factory.penalty.succeeded(self._peer())
        self.log.info(
            "auth ok: proto=smtp ip={peer} user={account}", peer=self._peer(), account=account
        )
        self._reply(235, "2.7.0", "Authentication successful")

    def _auth_error(
        self, f: Failure, username: bytes, password: bytes
    ) -> Optional[defer.Deferred[None]]:
        if f.check(UnauthorizedLogin):
            return self._auth_failed(username, password)
        # The store could not answer (AuthUnavailable, already logged by the checker) or a
        # bug: retry later, never 535 (RFC 4954 §6: 454 4.7.0).
        if f.check(MailError) and f.value.temporary:  # type: ignore[union-attr]
            self.log.info(
                "auth unavailable: peer={peer} reason={reason}",
                peer=self._peer(),
                reason=f.getErrorMessage(),
            )
        else:
            self.log.failure("auth unavailable: peer={peer}", f, peer=self._peer())
        self._reply(454, "4.7.0", "Temporary authentication failure")
        return None

    def _auth_failed(
        self, username: bytes, password: Optional[bytes] = None
    ) -> defer.Deferred[None]:
        """535 once the penalty's delay has passed; 421 and close after too many here."""
        self._auth_failures += 1
        login_name = username.decode("utf-8", "replace").encode("unicode_escape").decode("ascii")
        d = defer.maybeDeferred(
            self.factory.penalty.failed, self._peer(), login_name, "smtp", secret=password
        )

        def answer(_: Any) -> None:
            self._reply(535, "5.7.8", "Authentication credentials invalid")
            if self.factory.penalty.should_disconnect(self._auth_failures):
                self._send("421 4.7.0 Too many authentication failures")
                self._close()

        return d.addCallback(answer)
