"""Account settings in force for the receiving side: read through a short cache, and what
they imply for a local recipient: its Mail service (off: 550 5.2.1) and its maximum message
size (``mail.max_message_size``: 552 5.3.4).

Owns asking the store for an account's and its domain's settings and laying them over the
server's Account Defaults (cgtwist.account_settings.effective) at the moment of use, so a
``settings set`` applies to the next RCPT. Answers are kept a few seconds (a burst of mail to
one account asks once, cgtwist.core.expiring) and dropped at every settings reload, as the
Router's facts are. It decides nothing about routing and does no I/O but the store's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from twisted.internet.defer import Deferred

from cgtwist import account_settings
from cgtwist.account_settings import Effective
from cgtwist.core.expiring import Expiring
from cgtwist.errors import MailError
from cgtwist.settings import SettingsHolder


def too_big(limit: int, address: str) -> MailError:
    """RFC 1870 §6.2 / RFC 3463 5.3.4: the message is larger than this recipient accepts."""
    return MailError(
        552, "5.3.4", f"Message size exceeds the limit of <{address}> ({limit} octets)"
    )


Scoped = Optional[tuple[dict[str, object], dict[str, object], frozenset[str]]]


class IScopedSettings(Protocol):
    """Where an account's and its domain's stored settings come from (the AccountStore)."""

    def get_scoped_settings(self, name: str, domain: str) -> Deferred[Scoped]:
        """Fire with (domain settings, account settings, effective services), or None for
        no such account."""


@dataclass(frozen=True)
class Account:
    """What the receiving side needs of an account: settings in force, effective services."""

    settings: Effective
    services: frozenset[str]


class AccountLimits:
    """``effective(address)`` and ``size_refusal(address, size)`` for accounts of ``accounts``
    (an AccountStore with ``get_scoped_settings``), under the server settings of ``settings``,
    kept ``TTL`` seconds by ``now`` (monotonic, as the Router's facts: a wall-clock step back
    must not keep an answer for hours)."""

    TTL = 5.0
    MAX_CACHED = 10000

    def __init__(
        self,
        accounts: IScopedSettings,
        settings: SettingsHolder,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._accounts = accounts
        self._settings = settings
        self._cache: Expiring[str, Optional[Account]] = Expiring(now, self.TTL, self.MAX_CACHED)
        settings.subscribe(lambda _s: self._cache.clear())

    async def effective(self, address: str) -> Optional[Effective]:
        """The settings in force for account ``address`` (None: not an account)."""
        account = await self._account(address)
        return account.settings if account is not None else None

    async def _account(self, address: str) -> Optional[Account]:
        key = address.lower()
        return await self._cache.fetch(key, lambda: self._read(key))

    async def _read(self, key: str) -> Optional[Account]:
        name, _, domain = key.rpartition("@")
        scoped = await self._accounts.get_scoped_settings(name, domain)
        if scoped is None:
            return None
        current = self._settings.current
        eff = account_settings.effective(current, scoped[0], scoped[1], current.overrides)
        return Account(eff, scoped[2])

    async def size_refusal(self, address: str, size: int) -> Optional[MailError]:
        """552 5.3.4 when ``size`` octets are more than account ``address`` receives."""
        eff = await self.effective(address)
        limit = eff.values.mail.max_message_size if eff is not None else 0
        if limit and size > limit:
            return too_big(limit, address)
        return None

    async def mail_refusal(self, address: str) -> Optional[MailError]:
        """550 5.2.1 when account ``address`` (or its domain) has the Mail service off:
        CommuniGate's disabled Mail service means the account receives nothing."""
        account = await self._account(address)
        if account is not None and "mail" not in account.services:
            return MailError(550, "5.2.1", f"<{address}>: Mailbox disabled, not accepting mail")
        return None
