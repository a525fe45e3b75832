"""The one twisted.cred realm for mail access: POP3 maildrops and IMAP accounts.

Owns turning an authenticated avatar id ("name@domain", from cgtwist.core.auth.AccountChecker)
into an avatar: ``twisted.mail.pop3.IMailbox`` (a locked PopMailbox) or
``twisted.mail.imap4.IAccount`` (a MaildirAccount), after checking the account exists and has
the ``pop``/``imap`` service enabled. Creates the Maildir and special-use folders on first
login. Passwords are not its business: the checker has verified them already.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.mail import imap4, pop3
from zope.interface import implementer

from cgtwist import paths
from cgtwist.account_settings import QuotaLimits
from cgtwist.core.account_limits import AccountLimits
from cgtwist.errors import InvalidName
from cgtwist.logs import Logger
from cgtwist.mailstore import MailboxNotifier, MaildirAccount, provision
from cgtwist.mailstore.pop import MailboxInUse, PopMailbox

__all__ = ["MailRealm", "ServiceDisabled", "MailboxInUse"]


class ServiceDisabled(UnauthorizedLogin):
    """The account exists but may not use this protocol (CommuniGate "Enabled Services")."""


def _noop() -> None:
    return None


@implementer(IRealm)
class MailRealm:
    """``MailRealm(base_dir, store, notifier, main_domain)``.

    ``store`` is a cgtwist.interfaces.IAccountStore (``get_account(name, domain)`` fires with an Account whose
    ``services`` holds "pop"/"imap"); ``notifier`` the process's MailboxNotifier.
    """

    log = Logger()
    SERVICES = {pop3.IMailbox: "pop", imap4.IAccount: "imap"}

    def __init__(
        self,
        base_dir: str,
        store: Any,
        notifier: MailboxNotifier,
        main_domain: str,
        limits: Optional[AccountLimits] = None,
    ) -> None:
        self.base_dir = base_dir
        self.store = store
        self.notifier = notifier
        self.main_domain = main_domain
        # The account's settings in force at login (quota.max_folders); None: no limits.
        self.limits = limits
        self._provisioned: set[str] = set()

    async def quota_limits(self, address: str) -> QuotaLimits:
        """Account ``address``'s quota settings in force now (through the limits' short
        cache, so a ``settings set`` reaches open IMAP sessions within seconds)."""
        if self.limits is None:
            return QuotaLimits()
        eff = await self.limits.effective(address)
        return eff.values.quota if eff is not None else QuotaLimits()

    def requestAvatar(  # type: ignore[override]
        self, avatarId: Union[str, bytes], mind: Any, *interfaces: Any
    ) -> defer.Deferred[tuple[Any, Any, Callable[[], None]]]:
        return defer.ensureDeferred(self._request(avatarId, interfaces))

    async def _request(
        self, avatarId: Union[str, bytes], interfaces: tuple[Any, ...]
    ) -> tuple[Any, Any, Callable[[], None]]:
        iface = next((i for i in interfaces if i in self.SERVICES), None)
        if iface is None:
            raise NotImplementedError("MailRealm serves only pop3.IMailbox and imap4.IAccount")
        ident = (
            avatarId.decode("utf-8", "replace") if isinstance(avatarId, bytes) else str(avatarId)
        )
        name, _, domain = ident.rpartition("@")
        try:
            name = paths.check_account(name)
            domain = paths.check_domain(domain or self.main_domain)
            path = paths.maildir(self.base_dir, domain, name)
        except InvalidName:
            self.log.warn("realm: bad avatar id {avatar!r}", avatar=ident)
            raise UnauthorizedLogin("bad avatar id") from None
        account = await self.store.get_account(name, domain)
        if account is None:
            raise UnauthorizedLogin("no such account")
        service = self.SERVICES[iface]
        if service not in account.services:
            self.log.info(
                "realm: {service} not enabled for {account}",
                service=service,
                account=f"{name}@{domain}",
            )
            raise ServiceDisabled(f"{service} is not enabled for this account")
        if path not in self._provisioned:
            created = await self.notifier.run(provision, path)
            if created:
                self.log.info("created Maildir for {account}", account=f"{name}@{domain}")
            self._provisioned.add(path)
        address = f"{name}@{domain}"
        max_folders = 0
        if self.limits is not None:
            max_folders = (await self.quota_limits(address)).max_folders
        acct = MaildirAccount(
            path,
            address,
            self.notifier,
            max_folders,
            quota_limits=lambda: defer.ensureDeferred(self.quota_limits(address)),
        )
        if iface is imap4.IAccount:
            return imap4.IAccount, acct, _noop
        box = await PopMailbox.open(acct)
        return pop3.IMailbox, box, box.release
