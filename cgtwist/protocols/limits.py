"""Per-IP connection counting shared by the POP3 and IMAP factories.

Owns only the counts; the limit is read from the settings at each new connection, so a
changed ``access.max_connections_per_ip`` applies to the next one.
"""

from __future__ import annotations

from cgtwist.settings import SettingsHolder


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
