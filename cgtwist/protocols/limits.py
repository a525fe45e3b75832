"""What the POP3 and IMAP factories share: per-IP connection counting and their set-up.

The limit is read from the settings at each new connection, so a changed
``access.max_connections_per_ip`` applies to the next one.
"""

from __future__ import annotations

from typing import Any, Callable

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


class AccessFactory(ServerFactory):
    """The common part of ``POP3Factory`` and ``IMAPFactory``: one listener's settings, portal,
    TLS, clock and AUTH penalty, and its per-IP connection counts.

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

    def connection_opened(self, ip: str) -> bool:
        """Count a new connection; False when the IP is over access.max_connections_per_ip."""
        return self.per_ip.opened(ip)

    def connection_closed(self, ip: str) -> None:
        self.per_ip.closed(ip)
