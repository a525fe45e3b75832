"""The baseline receiving policy: route each recipient and refuse unauthorised relaying.

Owns only the spine's decisions (COMMUNIGATE.md a.6, step 4): a recipient is accepted when the
Router sends it somewhere local (LOCAL, PIPE, LIST, NULL), refused with the route's text when the
Router says ERROR, and accepted for a remote (SMTP) route only from an authenticated session, a
Client IP, or a ``Relay:`` record. Every other hook accepts. Protection checks (RBL, SPF,
callbacks) wrap this object and delegate to it; it never does DNS or I/O itself.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.core.routing import route_error
from cgtwist.errors import MailError
from cgtwist.interfaces import IPolicy, IRouter
from cgtwist.settings import SettingsHolder
from cgtwist.types import Envelope, Route, SessionInfo

LOCAL_MODULES = frozenset({"LOCAL", "PIPE", "LIST", "NULL"})


@implementer(IPolicy)
class BasicPolicy:
    """IPolicy for the spine. Small on purpose: protection policies wrap it."""

    log = Logger()

    def __init__(self, router: IRouter, settings: SettingsHolder) -> None:
        self.router: Any = router  # Any: zope interfaces are not mypy protocols
        self.settings = settings

    def connect(self, session: SessionInfo) -> defer.Deferred[Optional[SessionInfo]]:
        return defer.succeed(None)

    def helo(self, session: SessionInfo, name: str) -> defer.Deferred[Optional[SessionInfo]]:
        return defer.succeed(None)

    def mail_from(self, session: SessionInfo, sender: str, params: Mapping[str, str]) -> defer.Deferred[None]:
        return defer.succeed(None)

    def rcpt_to(
        self, session: SessionInfo, sender: str, recipient: str, params: Mapping[str, str]
    ) -> defer.Deferred[str]:
        d = defer.maybeDeferred(self.router.route, recipient, "mail")
        d.addCallbacks(self._routed, self._route_failed,
                       callbackArgs=(session, recipient), errbackArgs=(session, recipient))
        return d

    def _routed(self, route: Route, session: SessionInfo, recipient: str) -> str:
        module = route.module.upper()
        if module in LOCAL_MODULES:
            return recipient
        if module == "ERROR":
            raise route_error(route)
        # Anything else leaves this server: relaying (COMMUNIGATE.md a.6).
        if session.account or session.is_client_ip or route.relay:
            return recipient
        self.log.info(
            "relaying denied: peer={peer} rcpt={rcpt} route={route}",
            peer=session.peer_ip, rcpt=recipient, route=str(route),
        )
        raise MailError(554, "5.7.1", "Relaying denied")

    def _route_failed(self, f: Failure, session: SessionInfo, recipient: str) -> Any:
        if f.check(MailError):
            err: MailError = f.value  # type: ignore[assignment]
            if err.temporary:
                raise MailError(451, "4.3.0", "Temporary routing failure, try again later", err.detail)
            return f
        self.log.failure("routing {rcpt} failed", f, rcpt=recipient, peer=session.peer_ip)
        raise MailError(451, "4.3.0", "Temporary routing failure, try again later")

    def trace_headers(self, session: SessionInfo, envelope: Envelope) -> defer.Deferred[list[bytes]]:
        return defer.succeed([])
