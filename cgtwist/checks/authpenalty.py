"""AUTH brute-force protection shared by SMTP AUTH, POP3 and IMAP: delays, caps, log lines.

Owns per-host failure counting (IPv4 per address, IPv6 per /64) on the clock passed in: the
n-th failure's reply is delayed ``auth.fail_delays`` seconds (2, 4, 8, 15 by default, Dovecot's
auth penalty), a per-host cap on concurrent AUTH attempts once the host has failed, the
"disconnect after N failures on one connection" rule, and one fail2ban-readable line per failure::

    auth failed: ip=192.0.2.1 login=alice protocol=imap failures=3 delay=8

Failures are forgotten after ``auth.penalty_expiry`` seconds without a new one, so there is no
permanent lock-out; trusted networks (Client IPs, ``auth.trusted_ips``) are never delayed or
capped. Repeating the same wrong password does not escalate the delay. It must not verify
passwords itself, nor store them: only a keyed digest of recent wrong secrets is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from twisted.internet import defer, task
from zope.interface import implementer

from cgtwist.addresslist import host_key
from cgtwist.checks.result import clean
from cgtwist.interfaces import IAuthPenalty
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder

log = Logger()

_SECRETS_KEPT = 8


@dataclass
class _HostState:
    failures: int = 0
    last: float = 0.0
    secrets: list[bytes] = field(default_factory=list)


@implementer(IAuthPenalty)
class AuthPenalty:
    """One per server, shared by every protocol.

    ``is_trusted(ip)``: the trusted-network test (the protection policy passes its Client IPs
    plus ``auth.trusted_ips``); ``on_failure(ip)``: told of each failure (the auto-blacklist).
    """

    def __init__(
        self,
        clock: Any,
        settings: SettingsHolder,
        is_trusted: Optional[Callable[[str], bool]] = None,
        on_failure: Optional[Callable[[str], Any]] = None,
        max_hosts: int = 100000,
    ) -> None:
        self.clock = clock
        self.settings = settings
        self.is_trusted = is_trusted or (lambda ip: False)
        self.on_failure = on_failure
        self.max_hosts = max_hosts
        self._hosts: OrderedDict[str, _HostState] = OrderedDict()
        self._active: dict[str, int] = {}
        self._key = os.urandom(16)

    # -- settings
    def _delays(self) -> list[float]:
        return [float(x) for x in self.settings.current.auth.fail_delays]

    # -- state
    def _state(self, ip: str, create: bool) -> Optional[_HostState]:
        key = host_key(ip)
        st = self._hosts.get(key)
        now = self.clock.seconds()
        expiry = self.settings.current.auth.penalty_expiry
        if st is not None and now - st.last >= expiry:
            del self._hosts[key]
            st = None
        if st is None and create:
            st = self._hosts[key] = _HostState(last=now)
            while len(self._hosts) > self.max_hosts:
                self._hosts.popitem(last=False)
        if st is not None:
            self._hosts.move_to_end(key)
        return st

    def failures(self, ip: str) -> int:
        """Counted failures of the host right now (after expiry)."""
        st = self._state(ip, create=False)
        return st.failures if st else 0

    def delay_for_count(self, failures: int) -> float:
        """Seconds to hold the reply to the ``failures``-th failure (0 for none)."""
        if failures <= 0:
            return 0.0
        delays = self._delays()
        return delays[min(failures, len(delays)) - 1]

    # -- the API the protocols call
    def acquire(self, ip: str) -> bool:
        """Start an AUTH attempt; False when a host with failed logins on record already has
        ``auth.max_concurrent_per_ip`` running.

        Only hosts with failures are capped: parallel guessing (each connection waiting out its
        delay while the next guess runs) is what the cap stops, and a NAT gateway of users
        who all log in correctly at once must not see refusals. The caller answers a
        temporary error (SMTP 454 4.7.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]) and
        must call ``release`` only when this returned True.
        """
        if self.is_trusted(ip):
            return True
        key = host_key(ip)
        cap = self.settings.current.auth.max_concurrent_per_ip
        active = self._active.get(key, 0)
        if cap and active >= cap and self.failures(ip) > 0:
            log.info("auth concurrency cap: ip={ip} active={active}", ip=ip, active=active)
            return False
        self._active[key] = active + 1
        return True

    def release(self, ip: str) -> None:
        if self.is_trusted(ip):
            return
        key = host_key(ip)
        n = self._active.get(key, 0) - 1
        if n > 0:
            self._active[key] = n
        else:
            self._active.pop(key, None)

    def failed(
        self,
        ip: str,
        login: str,
        protocol: str,
        secret: Union[bytes, str, None] = None,
        log_line: bool = True,
    ) -> defer.Deferred[float]:
        """Record a failed login; fires with the delay after waiting it (on the clock).

        The caller sends the failure reply when this fires, and the same reply whether the
        account exists or not. ``log_line=False``: the caller writes the failure's line itself
        (IMAP and POP3 keep their ``auth failed: proto=`` lines).
        """
        trusted = self.is_trusted(ip)
        delay = 0.0
        failures = 0
        if not trusted:
            st = self._state(ip, create=True)
            assert st is not None
            st.last = self.clock.seconds()
            digest = None
            if secret is not None:
                raw = (
                    secret.encode("utf-8", "surrogateescape") if isinstance(secret, str) else secret
                )
                digest = hmac.new(self._key, raw, hashlib.sha256).digest()[:12]
            if digest is None or digest not in st.secrets:
                st.failures += 1
                if digest is not None:
                    st.secrets = (st.secrets + [digest])[-_SECRETS_KEPT:]
            failures = st.failures
            delay = self.delay_for_count(failures)
        # RELIABILITY.md b-G 39: one line per failure, fixed prefix, ip first, for fail2ban.
        if log_line:
            log.info(
                "auth failed: ip={ip} login={login} protocol={protocol} failures={failures} delay={delay}",
                ip=clean(ip, 64).replace(" ", "?"),
                login=clean(login, 100).replace(" ", "?") or "-",
                protocol=clean(protocol, 16),
                failures=failures,
                delay=f"{delay:g}",
            )
        if self.on_failure is not None and not trusted:
            try:
                self.on_failure(ip)
            except Exception:
                log.failure("auth failure hook failed")
        if delay <= 0:
            return defer.succeed(0.0)
        return task.deferLater(self.clock, delay, lambda: delay)

    def succeeded(self, ip: str) -> None:
        """A successful login clears the host's penalty (Dovecot does the same)."""
        self._hosts.pop(host_key(ip), None)

    def should_disconnect(self, connection_failures: int) -> bool:
        """True when one connection has failed ``auth.max_failures`` times: reply 421 / BYE."""
        limit = self.settings.current.auth.max_failures
        return limit > 0 and connection_failures >= limit
