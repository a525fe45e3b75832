"""SMTP AUTH (RFC 4954): the AUTH command and its replies.

Owns the AUTH dialogue: when AUTH may be used (after EHLO, outside a transaction, over TLS
unless plaintext is allowed), the 334 challenges, and the replies to each login outcome. The
SASL decoding and the login itself (penalty, portal, delay, failure count) are
``cgtwist.protocols.login``'s. It never decides what a login means for relaying: that is the
policy's job, from ``SessionInfo.account``.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any, Callable, Optional

from twisted.cred.portal import IRealm, Portal
from zope.interface import Interface, implementer

from cgtwist.protocols.login import (
    AuthzDenied,
    BadBase64,
    Busy,
    LoggedIn,
    LoginAttempt,
    LoginOutcome,
    Refused,
    SaslError,
    SaslExchange,
    Unavailable,
    decode_response,
    plaintext_allowed,
)
from cgtwist.protocols.smtp.wire import SMTPWire

MECHANISMS = SaslExchange.MECHANISMS


class ISMTPLogin(Interface):
    """The avatar interface SMTP asks for: the avatar is the account name ("name@domain")."""


@implementer(IRealm)
class AvatarIdRealm:
    """A realm whose avatar is the avatarId itself: SMTP only needs to know who logged in."""

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        return interfaces[0], avatarId, lambda: None


def smtp_portal(portal: Portal) -> Portal:
    """A Portal over the checkers of the shared one (the same AccountChecker as POP3 and IMAP)
    with a realm of our own, so SMTP needs nothing from the mail-access realm."""
    checkers = {id(c): c for c in portal.checkers.values()}.values()
    realm: Any = AvatarIdRealm()
    return Portal(realm, list(checkers))


def b64(text: bytes) -> bytes:
    return base64.b64encode(text)


class AuthCommands(SMTPWire):
    """The AUTH command on top of the wire (RFC 4954)."""

    _sasl: Optional[SaslExchange] = None
    _auth_failures = 0

    def _auth_allowed(self) -> bool:
        """Passwords only over TLS unless the listener or the settings allow plaintext."""
        return plaintext_allowed(bool(self._tls), self.factory.listener, self._settings())

    def smtp_auth(self, arg: bytes) -> None:
        assert self.session is not None
        if not self.session.helo or not self._esmtp:
            self._reply(503, "5.5.1", "Error: send EHLO first")
            return
        if self.session.account:
            self._reply(503, "5.5.1", "Error: already authenticated")
            return
        if self.transaction is not None:
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
        self._sasl = SaslExchange(mechanism)
        if initial.strip():
            self._auth_response(initial.strip())
        else:
            self._send("334 " + b64(self._sasl.first_challenge()).decode())

    def _sasl_line(self, line: bytes) -> bool:
        if self._sasl is None:
            return False
        self._auth_response(line)
        return True

    def _attempt(self) -> LoginAttempt:
        return LoginAttempt(
            smtp_portal(self.factory.portal),
            self.factory.penalty,
            "smtp",
            ISMTPLogin,
            self._peer(),
            self._auth_failures,
        )

    def _auth_response(self, line: bytes) -> None:
        sasl = self._sasl
        assert sasl is not None
        if line == b"*":
            self._sasl = None
            self._reply(501, "5.7.0", "Authentication aborted")
            return
        try:
            step = sasl.step(decode_response(line))
        except AuthzDenied:
            # We do not let one account act for another: a failure like a wrong password.
            self._sasl = None
            self._start(self._attempt().refuse(b"").addCallback(self._auth_outcome))
            return
        except SaslError as e:
            self._sasl = None
            text = (
                "Cannot decode response" if isinstance(e, BadBase64) else "Malformed PLAIN response"
            )
            self._reply(501, "5.5.2", text)
            return
        if isinstance(step, bytes):
            self._send("334 " + b64(step).decode())
            return
        self._sasl = None
        username, password = step
        self._start(self._attempt().run(username, password).addCallback(self._auth_outcome))

    def _auth_outcome(self, outcome: LoginOutcome) -> None:
        if isinstance(outcome, LoggedIn):
            assert self.session is not None
            avatar_id = outcome.avatar
            if isinstance(avatar_id, bytes):
                avatar_id = avatar_id.decode("utf-8", "replace")
            account = str(avatar_id)
            self.session = replace(self.session, account=account)
            self.list_login(account)
            self.log.info(
                "auth ok: proto=smtp ip={peer} user={account}", peer=self._peer(), account=account
            )
            self._reply(235, "2.7.0", "Authentication successful")
        elif isinstance(outcome, Refused):
            self._auth_failures = outcome.failures
            self._reply(535, "5.7.8", "Authentication credentials invalid")
            if outcome.disconnect:
                self._send("421 4.7.0 Too many authentication failures")
                self._close()
        elif isinstance(outcome, Busy):
            self._reply(454, "4.7.0", "Too many authentications in progress, try again later")
        else:
            assert isinstance(outcome, Unavailable)  # SMTP counts no sessions per user+IP
            self._unavailable(outcome)

    def _unavailable(self, outcome: Unavailable) -> None:
        # The store could not answer (AuthUnavailable, already logged by the checker) or a
        # bug: retry later, never 535 (RFC 4954 §6: 454 4.7.0).
        if outcome.temporary:
            self.log.info(
                "auth unavailable: peer={peer} reason={reason}",
                peer=self._peer(),
                reason=outcome.failure.getErrorMessage(),
            )
        else:
            self.log.failure("auth unavailable: peer={peer}", outcome.failure, peer=self._peer())
        self._reply(454, "4.7.0", "Temporary authentication failure")
