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

import enum
import time
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Protocol, Union

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


def mail_disabled(address: str) -> MailError:
    """550 5.2.1: CommuniGate's disabled Mail service means the account receives nothing."""
    return MailError(550, "5.2.1", f"<{address}>: Mailbox disabled, not accepting mail")


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


class Cache(enum.Enum):
    """``AccountLimits.cached``'s answer when it has none: ask the store (``account``)."""

    MISS = 0


def size_refusal_of(account: Optional[Account], address: str, size: int) -> Optional[MailError]:
    """552 5.3.4 when ``size`` octets are more than ``account`` (None: not an account, no
    limit of its own) receives."""
    limit = account.settings.values.mail.max_message_size if account is not None else 0
    if limit and size > limit:
        return too_big(limit, address)
    return None


def mail_refusal_of(account: Optional[Account], address: str) -> Optional[MailError]:
    """550 5.2.1 when ``account`` (or its domain) has the Mail service off."""
    if account is not None and "mail" not in account.services:
        return mail_disabled(address)
    return None


class AccountLimits:
    """``effective(address)``, ``size_refusal(address, size)`` and ``mail_refusal(address)``
    for accounts of ``accounts`` (an AccountStore with ``get_scoped_settings``), under the
    server settings of ``settings``, kept ``TTL`` seconds by ``now`` (monotonic, as the
    Router's facts: a wall-clock step back must not keep an answer for hours); ``cached``
    answers from what is kept, without waiting."""

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
        self._now = now
        self._cache: Expiring[str, Optional[Account]] = Expiring(now, self.TTL, self.MAX_CACHED)
        settings.subscribe(lambda _s: self._cache.clear())

    async def effective(self, address: str) -> Optional[Effective]:
        """The settings in force for account ``address`` (None: not an account)."""
        account = await self.account(address)
        return account.settings if account is not None else None

    async def account(self, address: str) -> Optional[Account]:
        """Account ``address`` as the receiving side sees it (None: not an account)."""
        key = address.lower()
        return await self._cache.fetch(key, lambda: self._read(key))

    def cached(self, address: str) -> Union[Optional[Account], Literal[Cache.MISS]]:
        """What ``account`` would answer at once from the cache, or Cache.MISS: the checks
        of a message to an account asked about in the last seconds (a burst, and every
        message's second look after DATA) run without a coroutine or a Deferred."""
        key = address.lower()
        expires = self._cache.expires(key)
        if expires is None or expires <= self._now():
            return Cache.MISS
        return self._cache.stale(key)

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
        return size_refusal_of(await self.account(address), address, size)

    async def mail_refusal(self, address: str) -> Optional[MailError]:
        """550 5.2.1 when account ``address`` (or its domain) has the Mail service off:
        CommuniGate's disabled Mail service means the account receives nothing."""
        return mail_refusal_of(await self.account(address), address)
