"""SMTP AUTH (RFC 4954) SASL exchanges for PLAIN (RFC 4616) and LOGIN, and the cred glue.

Owns decoding the client's SASL responses into a username and password, and logging in through
the checkers of the shared cred Portal. It never decides what a login means for relaying: that
is the policy's job, from ``SessionInfo.account``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable, Optional, Union

from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from zope.interface import Interface, implementer

from cgtwist.errors import MailError

MECHANISMS = ("PLAIN", "LOGIN")


class ISMTPLogin(Interface):
    """The avatar interface SMTP asks for: the avatar is the account name ("name@domain")."""


@implementer(IRealm)
class AvatarIdRealm:
    """A realm whose avatar is the avatarId itself: SMTP only needs to know who logged in."""

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Callable[[], None]]:
        return interfaces[0], avatarId, lambda: None


def login(portal: Portal, username: bytes, password: bytes) -> defer.Deferred[str]:
    """Check ``username``/``password`` with ``portal``'s checkers; fire with "name@domain".

    Uses the checkers of the shared Portal (the same AccountChecker as POP3 and IMAP) with a
    realm of our own, so SMTP needs nothing from the mail-access realm. The login name is passed
    through as typed (``user@domain``, ``user%domain`` or bare): the checker knows the forms.
    """
    checkers = {id(c): c for c in portal.checkers.values()}.values()
    realm: Any = AvatarIdRealm()
    creds: Any = UsernamePassword(username, password)
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
