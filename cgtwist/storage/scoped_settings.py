"""Domain and account settings in the store: what an account's settings are and where each
comes from (its own over its domain's over the server's Account Defaults).

Owns the ``settings`` column of ``domains`` and ``accounts``: which names a domain or account
may set (only those the server reads, cgtwist.settings), reading them with their inheritance,
and changing one key at a time. ``ScopedSettingsStore`` is the half of the account store
(cgtwist.storage.store.AccountStore) that answers these; it sits apart from the domains and
accounts themselves because it owns a different question (what is in force for whom, and the
password policy that follows from it) and grows with every setting an account may carry.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from cgtwist import account_settings
from cgtwist import settings as dynamic
from cgtwist.errors import InvalidName, NotFound
from cgtwist.paths import check_account, check_domain
from cgtwist.storage import tables
from cgtwist.storage.groups import GroupStore
from cgtwist.storage.storebase import InvalidValue, _deferred


def check_setting_name(key: str) -> str:
    """Domain and account setting names: a short dotted identifier."""
    k = key.strip()
    if not k or len(k) > 64 or not all(c.isalnum() or c in "._-" for c in k) or not k[0].isalpha():
        raise InvalidValue(f"invalid setting name {key!r}")
    return k


def check_scoped_settings(scope: str, values: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """An account's or domain's settings: only keys the server reads (cgtwist.settings)."""
    out = {}
    for key, value in (values or {}).items():
        k = check_setting_name(key)
        try:
            out[k] = dynamic.validate_scoped(scope, k, value)
        except ValueError as e:
            raise InvalidValue(str(e)) from None
    return out


class ScopedSettingsStore(GroupStore):
    """The domain and account settings of the store behind ``db`` (see the module docstring)."""

    @_deferred
    async def get_effective_settings(
        self, name: str, domain: Optional[str] = None
    ) -> account_settings.Effective:
        """Fire with the settings in force for account ``name@domain`` (its own over its
        domain's over the server's Account Defaults, each with its source); with ``domain``
        None, ``name`` is a domain and the result what its accounts inherit."""
        if domain is None:
            own: dict[str, object] = {}
            dom = await self._inherited(name)
        else:
            own = await self.get_account_settings(name, domain)
            dom = await self._inherited(domain)
        server = dynamic.Settings(await self.get_settings())
        return account_settings.effective(server, dom, own, server.overrides)

    @_deferred
    async def get_scoped_settings(
        self, name: str, domain: str
    ) -> Optional[tuple[dict[str, object], dict[str, object], frozenset[str]]]:
        """Fire with (its domain's settings, its own, its effective services) for account
        ``name@domain`` in one read, or None when it does not exist (what a server lays over
        its own Account Defaults)."""
        try:
            n, d = check_account(name), check_domain(domain)
        except InvalidName:
            return None
        return await self._db.run_interaction(
            "get_scoped_settings", tables.scoped_settings_txn, n, d, readonly=True
        )

    async def _inherited(self, domain: str) -> dict[str, object]:
        """The settings of ``domain`` (or of the domain it is an alias of)."""
        d = check_domain(domain)
        values = await self._db.run_interaction(
            "domain_settings", tables.domain_settings_txn, d, readonly=True
        )
        if values is None:
            raise NotFound(f"domain {d} does not exist")
        return dict(values)

    async def _check_password_policy(
        self, domain: str, own: Mapping[str, object], password: str
    ) -> None:
        server = dynamic.Settings(await self.get_settings())
        dom = await self._inherited(domain)
        policy = account_settings.effective(server, dom, own, server.overrides).values.password
        reason = account_settings.password_refusal(policy, password)
        if reason:
            raise InvalidValue(reason)

    @_deferred
    async def get_domain_settings(self, domain: str) -> dict[str, Any]:
        try:
            d = check_domain(domain)
        except InvalidName:
            raise NotFound(f"domain {domain} does not exist") from None
        info = await self._db.run_interaction("get_domain", tables.get_domain_txn, d, readonly=True)
        if info is None:
            raise NotFound(f"domain {domain} does not exist")
        return dict(info["settings"])

    @_deferred
    async def set_domain_setting(self, domain: str, key: str, value: Any) -> None:
        await self._change_settings(
            "domains", "name = ?", (check_domain(domain),), f"domain {domain}", key, value, False
        )

    @_deferred
    async def unset_domain_setting(self, domain: str, key: str) -> None:
        await self._change_settings(
            "domains",
            "name = ?",
            (check_domain(domain),),
            f"domain {domain}",
            check_setting_name(key),
            None,
            True,
        )

    @_deferred
    async def get_account_settings(self, name: str, domain: str) -> dict[str, Any]:
        n, d = check_account(name), check_domain(domain)
        row = await self._db.run_interaction(
            "get_account_info", tables.account_full_txn, n, d, readonly=True
        )
        if row is None:
            raise NotFound(f"account {n}@{d} does not exist")
        return dict(tables.info_of(row)["settings"])

    @_deferred
    async def set_account_setting(self, name: str, domain: str, key: str, value: Any) -> None:
        n, d = check_account(name), check_domain(domain)
        await self._change_settings(
            "accounts",
            "name = ? AND domain_id = (SELECT id FROM domains WHERE name = ?)",
            (n, d),
            f"account {n}@{d}",
            key,
            value,
            False,
        )

    @_deferred
    async def unset_account_setting(self, name: str, domain: str, key: str) -> None:
        n, d = check_account(name), check_domain(domain)
        await self._change_settings(
            "accounts",
            "name = ? AND domain_id = (SELECT id FROM domains WHERE name = ?)",
            (n, d),
            f"account {n}@{d}",
            check_setting_name(key),
            None,
            True,
        )

    async def _change_settings(
        self,
        table: str,
        where: str,
        args: tuple[Any, ...],
        what: str,
        key: str,
        value: Any,
        unset: bool,
    ) -> None:
        # Setting a key nothing reads is refused; unsetting any key is allowed, so that one
        # stored before the check existed can be removed.
        if not unset:
            key = next(
                iter(
                    check_scoped_settings(
                        "domain" if table == "domains" else "account", {key: value}
                    )
                )
            )
        await self._write(
            f"change_{table}_settings",
            tables.change_settings_txn,
            table,
            where,
            args,
            what,
            key,
            value,
            unset,
        )
