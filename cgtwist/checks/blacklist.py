"""Blacklists: static blacklisted IPs, blacklisted senders, and a temporary offender list.

Owns membership decisions only: the static IP list is an AddressList; the sender list holds
addresses and domains; the AutoBlacklist counts offences (too many protocol errors, failed
AUTHs) per host (IPv6 per /64) in a sliding window and blacklists the host for a while, on the
clock passed in. Nothing is ever blacklisted permanently by the automatic list. No I/O.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

from cgtwist.addresslist import AddressList, host_key
from cgtwist.checks.result import LISTED, PASS, CheckResult, clean
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder

log = Logger()


@dataclass(frozen=True)
class SenderBlacklist:
    """Blacklisted reverse-paths: ``user@domain`` (exact), ``domain`` or ``@domain`` (that
    domain), ``.domain`` or ``*.domain`` (the domain and every subdomain). One per line or
    comma; ``#``/``;`` comments. Comparison is case-insensitive."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    parents: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: Union[str, Iterable[str], None]) -> SenderBlacklist:
        if not text:
            return cls()
        lines = text.splitlines() if isinstance(text, str) else [str(x) for x in text]
        addresses, domains, parents = set(), set(), set()
        for line in lines:
            for mark in ("#", ";"):
                line = line.split(mark, 1)[0]
            for item in line.split(","):
                item = item.strip().lower().rstrip(".")
                if not item:
                    continue
                if item.startswith("*.") or item.startswith("."):
                    parents.add(item.lstrip("*").lstrip("."))
                elif item.startswith("@"):
                    domains.add(item[1:])
                elif "@" in item:
                    addresses.add(item)
                else:
                    domains.add(item)
        return cls(frozenset(addresses), frozenset(domains), frozenset(parents))

    def match(self, sender: str) -> Optional[str]:
        """The entry that blacklists ``sender`` (``""`` = ``<>`` is never listed), else None."""
        s = sender.strip().lower().rstrip(".")
        if not s or "@" not in s:
            return None
        domain = s.rpartition("@")[2]
        if s in self.addresses:
            return s
        if domain in self.domains:
            return domain
        labels = domain.split(".")
        for i in range(len(labels)):
            parent = ".".join(labels[i:])
            if parent in self.parents:
                return "*." + parent
        return None


class AutoBlacklist:
    """Temporary blacklist of offenders, counted per host, expiring on the clock.

    ``threshold`` offences within ``window`` seconds blacklist the host for ``duration``
    seconds. With ``settings`` given, the keys ``protection.autoblacklist.threshold``,
    ``.window`` and ``.duration`` are read at each use (0 threshold = disabled).
    """

    def __init__(
        self,
        clock: Any,
        settings: Optional[SettingsHolder] = None,
        threshold: int = 10,
        window: float = 600.0,
        duration: float = 1800.0,
        max_hosts: int = 100000,
    ) -> None:
        self.clock = clock
        self.settings = settings
        self._defaults = (threshold, window, duration)
        self.max_hosts = max_hosts
        self._offences: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked: dict[str, float] = {}

    def _params(self) -> tuple[int, float, float]:
        if self.settings is None:
            return self._defaults
        auto = self.settings.current.protection.autoblacklist
        return auto.threshold, float(auto.window), float(auto.duration)

    def offence(self, ip: str, kind: str = "error") -> bool:
        """Count one offence; True when this one got the host blacklisted."""
        threshold, window, duration = self._params()
        if threshold <= 0:
            return False
        now = self.clock.seconds()
        key = host_key(ip)
        q = self._offences.get(key)
        if q is None:
            q = self._offences[key] = deque()
        self._offences.move_to_end(key)
        q.append(now)
        while q and q[0] <= now - window:
            q.popleft()
        while len(self._offences) > self.max_hosts:
            self._offences.popitem(last=False)
        if len(q) >= threshold and not self.is_blocked(ip):
            self._blocked[key] = now + duration
            q.clear()
            log.warn(
                "auto-blacklisted ip={ip} key={key} kind={kind} for={duration}s",
                ip=ip,
                key=key,
                kind=kind,
                duration=int(duration),
            )
            self._prune(now)
            return True
        return False

    def blocked_until(self, ip: str) -> Optional[float]:
        """Clock time the host's blacklisting ends, or None when it is not blacklisted."""
        key = host_key(ip)
        until = self._blocked.get(key)
        if until is None:
            return None
        if until <= self.clock.seconds():
            del self._blocked[key]
            return None
        return until

    def is_blocked(self, ip: str) -> bool:
        return self.blocked_until(ip) is not None

    def unblock(self, ip: str) -> bool:
        """Administrator action: lift a host's blacklisting now."""
        self._offences.pop(host_key(ip), None)
        return self._blocked.pop(host_key(ip), None) is not None

    def entries(self) -> list[tuple[str, float]]:
        """(host key, seconds left) of every current entry, for the admin interface."""
        now = self.clock.seconds()
        self._prune(now)
        return sorted((k, until - now) for k, until in self._blocked.items())

    def _prune(self, now: float) -> None:
        for k in [k for k, until in self._blocked.items() if until <= now]:
            del self._blocked[k]


def check_ip(
    ip: str, static: AddressList, auto: Optional[AutoBlacklist], clock: Any
) -> CheckResult:
    """CheckResult("blacklist", listed|pass) for a connecting IP (static list, then auto)."""
    if static.contains(ip):
        return CheckResult("blacklist", LISTED, "blacklisted IP address", 0.0, {"list": "static"})
    if auto is not None:
        until = auto.blocked_until(ip)
        if until is not None:
            left = int(until - clock.seconds())
            return CheckResult(
                "blacklist",
                LISTED,
                f"temporarily blacklisted ({left}s left)",
                0.0,
                {"list": "auto"},
            )
    return CheckResult("blacklist", PASS, "not blacklisted")


def check_sender(sender: str, senders: SenderBlacklist) -> CheckResult:
    """CheckResult("sender-blacklist", listed|pass) for a MAIL FROM reverse-path."""
    entry = senders.match(sender)
    if entry:
        return CheckResult("sender-blacklist", LISTED, f"sender matches {clean(entry, 100)}")
    return CheckResult("sender-blacklist", PASS, "")
