"""The SMTP listener's factory: builds one ``CgSMTP`` per connection and keeps the listener's
connection counts (smtp.max_connections, smtp.max_connections_per_ip), session ids, deadline
timer and collaborators.

Split from ``cgtwist.protocols.smtp.server``, which keeps the commands; a connection reaches
the factory only through ``cgtwist.protocols.smtp.wire.SMTPServices``.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Optional, cast

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IOpenSSLContextFactory, IReactorTime
from twisted.internet.protocol import ServerFactory

from cgtwist.activesessions import ActiveSessions
from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.interfaces import (
    IAuthPenalty,
    IClientAccess,
    IPolicy,
    IStatistics,
    ISubmission,
)
from cgtwist.protocols.deadlines import DeadlineTimers
from cgtwist.protocols.limits import PerIPConnections, SessionDrain
from cgtwist.protocols.smtp.server import CgSMTP
from cgtwist.protocols.smtp.wire import SMTPWire
from cgtwist.settings import SettingsHolder
from cgtwist.types import ListenerSpec


class SMTPFactory(ServerFactory, SessionDrain):
    """Builds ``CgSMTP`` for one listener socket and keeps its connection counts.

    ``tls`` is called at use time and returns the current server context factory (or None when
    no certificate is available); ``portal`` is the shared cred Portal whose checkers verify
    AUTH. ``clock`` defaults to the global reactor only when the caller passes nothing.
    ``penalty`` is the shared AUTH penalty (cgtwist.checks.authpenalty.AuthPenalty); without
    one the factory keeps its own AuthPenalty on its clock and settings. ``stats`` counts
    each connection and each refusal (cgtwist.stats).

    When ``policy`` also has ``is_client_ip(ip)``, ``session_closed(session)``,
    ``report_offence(ip, kind)`` or ``check_message(session, envelope, message)`` (the
    protection and basic policies do), they are called at connect, at disconnect, when a
    client is cut off for too many errors or talked before the greeting, and after DATA
    before the message is queued.
    """

    protocol = CgSMTP

    def __init__(
        self,
        listener: ListenerSpec,
        settings: SettingsHolder,
        policy: IPolicy,
        submission: ISubmission,
        portal: Portal,
        tls: Callable[[], Optional[IOpenSSLContextFactory]],
        hostname: str,
        clock: Optional[IReactorTime] = None,
        penalty: Optional[IAuthPenalty] = None,
        stats: Optional[IStatistics] = None,
        active: Optional[ActiveSessions] = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor  # composition default only

            clock = cast(IReactorTime, reactor)
        self.listener = listener
        self.settings = settings
        self.policy = policy
        self.submission = submission
        self.portal = portal
        self.tls = tls
        self.hostname = hostname
        self.clock: IReactorTime = clock
        self.stats = stats
        self.deadline_timers = DeadlineTimers(clock)
        self.connections = 0
        self.per_ip = PerIPConnections(
            settings,
            lambda s: s.smtp.max_connections_per_ip,
            exempt=policy.is_client_ip if IClientAccess.providedBy(policy) else None,
        )
        SessionDrain.__init__(self)
        self.live: set[SMTPWire]
        self._prefix = secrets.token_hex(3)
        self._counter = 0
        self.penalty: IAuthPenalty = (
            penalty if penalty is not None else AuthPenalty(self.clock, settings)
        )
        self.active = active  # the logged-in sessions WebUser lists (cgtwist.activesessions)

    def buildProtocol(self, addr: Any) -> CgSMTP:
        if self.stats is not None:
            self.stats.connection("smtp")
        return CgSMTP(self)

    def new_session_id(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter:06x}"

    def register(self, proto: SMTPWire) -> Optional[str]:
        """Count a new connection; return why it is refused when over a limit (then not counted)."""
        ip = proto._peer()
        s = self.settings.current
        if self.stopping:
            return "Service shutting down"
        limit = s.smtp.max_connections
        if limit and self.connections >= limit:
            return "Error: too many connections"
        if not self.per_ip.opened(ip):
            self.per_ip.closed(ip)
            return "Error: too many connections from your address"
        self.connections += 1
        self.live.add(proto)
        return None

    def unregister(self, proto: SMTPWire) -> None:
        self.connections -= 1
        self.per_ip.closed(proto._peer())
        self.forget(proto)
