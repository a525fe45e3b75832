"""What the listener factories share: the live sessions a shutdown drains (SMTP, POP3 and
IMAP: SessionDrain), and for POP3 and IMAP their set-up and per-IP connection counting.

The limit is read from the settings at each new connection, so a changed
``access.max_connections_per_ip`` applies to the next one.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.protocol import ServerFactory

from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.settings import SettingsHolder
from cgtwist.types import ListenerSpec


class PerIPConnections:
    """Counts open connections per client IP against a dynamic setting."""

    def __init__(self, settings: SettingsHolder, key: str = "access.max_connections_per_ip") -> None:
        self.settings = settings
        self.key = key
        self.counts: dict[str, int] = {}

    def opened(self, ip: str) -> bool:
        """Count a new connection; False when the IP is now over the limit (0 = no limit).

        The connection is counted either way: the caller closes it and calls ``closed``.
        """
        n = self.counts.get(ip, 0) + 1
        self.counts[ip] = n
        limit = int(self.settings.current[self.key])
        return limit <= 0 or n <= limit

    def closed(self, ip: str) -> None:
        n = self.counts.get(ip, 0) - 1
        if n > 0:
            self.counts[ip] = n
        else:
            self.counts.pop(ip, None)


class SessionDrain:
    """The live sessions of one listener's factory and the shutdown that drains them, for the
    SMTP, POP3 and IMAP factories alike.

    The factory adds each session to ``live`` when it starts and calls ``forget(session)``
    when its connection is lost. A session's ``shutdown()`` says the protocol's goodbye (SMTP
    421, IMAP ``* BYE``, POP3 ``-ERR [SYS/TEMP]``) now, or after the command it is running.
    ``live`` is also what ``Components.abort_sessions`` cuts after the grace period.
    """

    def __init__(self) -> None:
        self.live: set[Any] = set()
        self.stopping = False
        self._stopped: list[defer.Deferred[None]] = []

    def shutdown(self) -> defer.Deferred[None]:
        """Tell every session the server is going away (each closes after its goodbye); the
        factory refuses new ones from now on (``stopping``).

        Fires when every connection has closed, so the process exits with no client left
        seeing a reset. The service calls it on SIGTERM before it stops listening.
        """
        self.stopping = True
        d: defer.Deferred[None] = defer.Deferred()
        if not self.live:
            d.callback(None)
            return d
        self._stopped.append(d)
        for proto in list(self.live):
            proto.shutdown()
        return d

    def forget(self, proto: Any) -> None:
        """A connection ended; fire shutdown() waiters once none is left."""
        self.live.discard(proto)
        if self.stopping and not self.live:
            waiters, self._stopped = self._stopped, []
            for d in waiters:
                d.callback(None)


class AccessFactory(ServerFactory, SessionDrain):
    """The common part of ``POP3Factory`` and ``IMAPFactory``: one listener's settings, portal,
    TLS, clock and AUTH penalty, its per-IP connection counts, and its live sessions
    (SessionDrain; a subclass's ``buildProtocol`` adds each to ``live``).

    ``tls()`` returns the server context factory or None. ``penalty`` is the server's shared
    AuthPenalty (delays count per IP across SMTP, POP3 and IMAP); without one (tests) the
    factory keeps its own on ``clock`` and ``settings``: the same rules, not shared.
    """

    def __init__(self, listener: ListenerSpec, settings: SettingsHolder, portal: Any,
                 tls: Callable[[], Any], hostname: str, clock: Any = None,
                 penalty: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # composition default only
        self.listener = listener
        self.settings = settings
        self.portal = portal
        self.tls = tls
        self.hostname = hostname
        self.clock = clock
        self.penalty = penalty if penalty is not None else AuthPenalty(clock, settings)
        self.per_ip = PerIPConnections(settings)
        SessionDrain.__init__(self)

    def connection_opened(self, ip: str) -> bool:
        """Count a new connection; False when the IP is over access.max_connections_per_ip."""
        return self.per_ip.opened(ip)

    def connection_closed(self, ip: str) -> None:
        self.per_ip.closed(ip)
