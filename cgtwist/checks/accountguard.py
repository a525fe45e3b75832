"""Password guessing against one account from many addresses: a per-account failure budget.

Owns per-account failure counting on the clock passed in. The per-IP penalty
(``cgtwist.checks.authpenalty``) slows one address; ten addresses guessing one password still
made 75 guesses a minute. Here the n-th counted failure for an account holds its reply
``auth.account_delay * auth.account_delay_growth ** (n - 1)`` seconds (at most
``auth.account_max_delay``), and the ``auth.account_max_failures``-th locks the account for
``auth.account_lock_time`` seconds: every login to it is then refused like a wrong password,
except a correct password from a Client IP (the office keeps working while the world is
locked out). Failures are forgotten ``auth.account_lock_time`` seconds after the last one.

The one ``AccountChecker`` (cgtwist.core.auth) consults it, so SMTP AUTH, POP3, IMAP and any
later login through the Portal share one budget per account. Keyed by the login as parsed
(``name@domain``), whether the account exists or not, so a lock tells an attacker nothing
about which accounts exist. Repeating one wrong password (a phone with the old one) counts
once. It must not verify passwords itself, nor store them: only keyed digests of recent wrong
secrets are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Union

from twisted.internet import defer, task

from cgtwist.checks.result import clean
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder

log = Logger()

_SECRETS_KEPT = 8


@dataclass
class _AccountState:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0
    secrets: list[bytes] = field(default_factory=list)


class AccountGuard:
    """One per server process, shared by every login path through the cred checker."""

    def __init__(self, clock: Any, settings: SettingsHolder, max_accounts: int = 100000) -> None:
        self.clock = clock
        self.settings = settings
        self.max_accounts = max_accounts
        self._accounts: OrderedDict[str, _AccountState] = OrderedDict()
        self._key = os.urandom(16)

    def _state(self, account: str, create: bool) -> _AccountState | None:
        now = self.clock.seconds()
        st = self._accounts.get(account)
        if (
            st is not None
            and now >= st.locked_until
            and now - st.last >= self.settings.current.auth.account_lock_time
        ):
            del self._accounts[account]
            st = None
        if st is None and create:
            st = self._accounts[account] = _AccountState(last=now)
            while len(self._accounts) > self.max_accounts:
                self._accounts.popitem(last=False)
        if st is not None:
            self._accounts.move_to_end(account)
        return st

    def locked(self, account: str) -> bool:
        """True while ``account`` is locked (only a Client IP's correct password passes)."""
        st = self._state(account, create=False)
        return st is not None and self.clock.seconds() < st.locked_until

    def failures(self, account: str) -> int:
        """Counted failures of ``account`` right now (after expiry)."""
        st = self._state(account, create=False)
        return st.failures if st else 0

    def delay_for_count(self, failures: int) -> float:
        """Seconds to hold the reply to the ``failures``-th counted failure (0 for none)."""
        if failures <= 0:
            return 0.0
        base = self.settings.current.auth.account_delay
        growth = self.settings.current.auth.account_delay_growth
        ceiling = self.settings.current.auth.account_max_delay
        # growth ** n overflows a float long before any budget is that big: stop early.
        delay = base
        for _ in range(failures - 1):
            if delay >= ceiling:
                break
            delay *= growth
        return min(delay, ceiling)

    def failed(
        self, account: str, ip: str, secret: Union[bytes, str, None] = None
    ) -> defer.Deferred[float]:
        """Count a wrong password for ``account`` from ``ip`` (not a Client IP: the caller
        does not count those); fires with the delay once it has passed on the clock."""
        budget = self.settings.current.auth.account_max_failures
        if budget <= 0:
            return defer.succeed(0.0)
        st = self._state(account, create=True)
        assert st is not None
        now = st.last = self.clock.seconds()
        digest = None
        if secret is not None:
            raw = secret.encode("utf-8", "surrogateescape") if isinstance(secret, str) else secret
            digest = hmac.new(
                self._key, account.encode("utf-8", "surrogateescape") + b"\0" + raw, hashlib.sha256
            ).digest()[:12]
        if digest is None or digest not in st.secrets:
            st.failures += 1
            if digest is not None:
                st.secrets = (st.secrets + [digest])[-_SECRETS_KEPT:]
            if st.failures >= budget and now >= st.locked_until:
                lock = self.settings.current.auth.account_lock_time
                st.locked_until = now + lock
                # One line per lock, for the administrator and fail2ban alike.
                log.warn(
                    "auth account locked: account={account} ip={ip} failures={failures} "
                    "seconds={seconds}",
                    account=_field(account),
                    ip=_field(ip),
                    failures=st.failures,
                    seconds=f"{lock:g}",
                )
        return self._wait(self.delay_for_count(st.failures))

    def refused(self, account: str, ip: str) -> defer.Deferred[float]:
        """A login to a locked account: one log line, and the longest delay before the caller
        answers as for a wrong password."""
        log.info(
            "auth refused: account={account} ip={ip} reason=locked",
            account=_field(account),
            ip=_field(ip),
        )
        return self._wait(self.settings.current.auth.account_max_delay)

    def _wait(self, delay: float) -> defer.Deferred[float]:
        if delay <= 0:
            return defer.succeed(0.0)
        return task.deferLater(self.clock, delay, lambda: delay)


def _field(value: str) -> str:
    """A log field that cannot forge a line or shift the next field."""
    return clean(value, 100).replace(" ", "?") or "-"
