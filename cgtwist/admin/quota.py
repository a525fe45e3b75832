"""An account's mailbox usage beside its quota limits in force, for ``account show`` and the
WebAdmin account page.

Owns the report once: the limits (``quota.storage``, ``quota.messages``, ``quota.grace``)
with where each comes from (the account, its domain, the server or the built-in default) and
the usage from an injected source. The source is the edge's to choose: cgtwist-admin counts
the Maildir in a thread (``maildir_usage``: what is on disk, whether or not the server runs),
the server asks its own running count (``cgtwist.mailstore.quota.UsageBook``, kept current by
every delivery and IMAP change). Either way the counting happens off the reactor. It must not
print, render or decide what a limit allows (``QuotaLimits.exceeded`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

from cgtwist import paths
from cgtwist.account_settings import Effective
from cgtwist.errors import InvalidName
from cgtwist.mailstore.quota import Usage, UsageBook, scan_usage

# (name, domain) -> what the account keeps now; counted off the reactor thread.
UsageSource = Callable[[str, str], Awaitable[Usage]]
# Runs a blocking function with its arguments in a thread (deferToThreadPool's shape).
InThread = Callable[..., Awaitable[Usage]]


def maildir_usage(base_dir: str, in_thread: InThread) -> UsageSource:
    """Usage counted from the account's Maildir under ``base_dir`` by ``scan_usage`` in a
    thread (the count the server makes when it starts)."""

    async def usage(name: str, domain: str) -> Usage:
        path = paths.maildir(base_dir, domain, name)
        found: Usage = await in_thread(scan_usage, path)
        return found

    return usage


def counted_usage(book: UsageBook, base_dir: str) -> UsageSource:
    """Usage as the running server counts it (``book``, the process's one UsageBook): the
    figure the quota is enforced with, kept current by each delivery and IMAP change and
    counted by a scan in the mailstore's threads when not known yet."""

    async def usage(name: str, domain: str) -> Usage:
        path = paths.maildir(base_dir, domain, name)  # InvalidName before any scan
        found: Usage = await book.usage(f"{name}@{domain}", path)
        return found

    return usage


@dataclass(frozen=True)
class Limit:
    """One quota resource: its limit in force (0 = none), where that comes from and, when
    counted, what the account uses of it."""

    limit: int
    source: str  # "account", "domain", "server" or "default"
    used: Optional[int] = None

    @property
    def percent(self) -> Optional[int]:
        """The share used, rounded down (None: no limit or not counted)."""
        if not self.limit or self.used is None:
            return None
        return self.used * 100 // self.limit

    @property
    def over(self) -> bool:
        return bool(self.limit) and self.used is not None and self.used >= self.limit


@dataclass(frozen=True)
class QuotaReport:
    """What ``QuotaAdmin.report`` answers: storage (octets) and messages, the grace period
    (seconds) and, when the usage could not be counted, why."""

    storage: Limit
    messages: Limit
    grace: Limit
    error: str = ""

    def as_dict(self) -> dict[str, object]:
        """The flat form ``cgtwist-admin account show`` prints (where each limit comes from,
        ``settings show --effective`` prints)."""
        out: dict[str, object] = {
            "storage_limit": self.storage.limit,
            "messages_limit": self.messages.limit,
            "grace": self.grace.limit,
        }
        if self.error:
            out["error"] = self.error
        else:
            out.update(storage_used=self.storage.used, messages_used=self.messages.used)
        return out


class QuotaAdmin:
    """``QuotaAdmin(effective, usage)``: ``effective(domain, name)`` gives the account's
    settings in force (``Admin.effective_settings``: AdminError for a missing account);
    ``usage``, the injected source (None: limits only, the usage is reported unknown)."""

    def __init__(
        self,
        effective: Callable[[str, str], Awaitable[Effective]],
        usage: Optional[UsageSource],
    ) -> None:
        self._effective = effective
        self._usage = usage

    async def report(self, name: str, domain: str) -> QuotaReport:
        eff = await self._effective(domain, name)
        quota = eff.values.quota

        def source(key: str) -> str:
            return str(eff.sources.get(key, (None, "default"))[1])

        storage = Limit(quota.storage, source("quota.storage"))
        messages = Limit(quota.messages, source("quota.messages"))
        grace = Limit(quota.grace, source("quota.grace"))
        if self._usage is None:
            return QuotaReport(storage, messages, grace, "no usage count here")
        try:
            used = await self._usage(name, domain)
        except (OSError, InvalidName) as e:
            return QuotaReport(storage, messages, grace, f"cannot count the Maildir: {e}")
        return QuotaReport(
            Limit(storage.limit, storage.source, used.octets),
            Limit(messages.limit, messages.source, used.messages),
            grace,
        )
