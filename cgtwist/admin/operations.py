"""Domains, accounts, aliases, settings and nodes: the store changes an administrator makes.

Owns each change as one method: validate, change the store, log who made it, tell the running
server (``changed``). It must not parse command lines, print or render: its callers are
cgtwist.cli and cgtwist.web. The Router, the queue, the mailing lists, the Rules and the
quota report are ``Admin.router``, ``.queue``, ``.lists``, ``.rules`` and ``.quota``
(cgtwist.admin.router, .queue, .lists, .rules, .quota).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Optional, Union

from twisted.internet.interfaces import IReactorTime

from cgtwist import account_settings
from cgtwist import settings as dynamic
from cgtwist.admin.errors import AdminError
from cgtwist.admin.lists import ListAdmin
from cgtwist.admin.queue import Call, QueueAdmin
from cgtwist.admin.quota import QuotaAdmin, UsageSource
from cgtwist.admin.router import RouterAdmin
from cgtwist.admin.rules import Mailboxes, RulesAdmin
from cgtwist.core.auth import parse_login
from cgtwist.logs import Logger
from cgtwist.paths import check_domain
from cgtwist.storage import directory
from cgtwist.storage.directory import AccountPage
from cgtwist.storage.passwords import generate_password

log = Logger(namespace="cgtwist.admin")

# Told after each change with what changed ("domain", "account", "alias", "settings",
# "router") and the change's log text; returns the server's reply (listeners it could not
# bind) or None.
Changed = Callable[[str, str], Union[Awaitable[Optional[dict[str, Any]]], Optional[dict[str, Any]]]]

__all__ = ["AccountPage", "Admin", "SettingView"]


@dataclass(frozen=True)
class SettingView:
    """One server setting as an administrator sees it."""

    key: str
    value: Any
    default: bool  # not set: the built-in default applies
    node: Optional[str]  # the node it belongs to, for node settings
    doc: str


def services_list(text: Optional[str]) -> Optional[list[str]]:
    """``"mail,imap"`` or ``"mail imap"`` as a list; None stays None (inherit)."""
    if text is None:
        return None
    return [s for s in text.replace(" ", ",").split(",") if s]


class Admin:
    """Every administration operation on one store, made by ``actor`` (logged with each change).

    ``changed``: tells the running server (the CLI: the control socket; the web: a reload in
    the same process). ``call``: sends a control command for the queue operations. ``clock``,
    ``hostname`` and ``mailboxes`` (which folders an account has) are what Rules need to be
    checked and explained as the server runs them. ``usage`` counts an account's mailbox
    for ``quota`` (cgtwist.admin.quota: the CLI scans the Maildir, the server asks its count).
    """

    def __init__(
        self,
        store: Any,
        main_domain: str,
        node: str,
        changed: Changed,
        call: Optional[Call] = None,
        actor: str = "cgtwist-admin",
        *,
        clock: Optional[IReactorTime] = None,
        hostname: str = "",
        mailboxes: Optional[Mailboxes] = None,
        usage: Optional[UsageSource] = None,
    ) -> None:
        self.store = store
        self.main_domain = main_domain
        self.node = node
        self.actor = actor
        self._changed = changed
        self._call = call
        self._rules_env = (clock, hostname, mailboxes)
        self._usage = usage
        self.router = RouterAdmin(store, main_domain, self._change)
        self.queue = QueueAdmin(call, self._log_change)
        self.lists = ListAdmin(store, self._change, self._log_change, call)
        self.rules = RulesAdmin(store, main_domain, node, self._change, *self._rules_env)
        self.quota = QuotaAdmin(self.effective_settings, usage)

    def acting_as(self, actor: str) -> Admin:
        """The same operations, logged as made by ``actor`` (a web session's account)."""
        clock, hostname, mailboxes = self._rules_env
        return Admin(
            self.store,
            self.main_domain,
            self.node,
            self._changed,
            self._call,
            actor,
            clock=clock,
            hostname=hostname,
            mailboxes=mailboxes,
            usage=self._usage,
        )

    def _log_change(self, change: str) -> None:
        log.info("change by {actor}: {change}", actor=self.actor, change=change)

    async def _change(self, what: str, change: str) -> Optional[dict[str, Any]]:
        self._log_change(change)
        reply = self._changed(what, change)
        if inspect.isawaitable(reply):
            reply = await reply
        return reply

    def address(self, text: str) -> tuple[str, str]:
        """An account or alias address: ``name@domain``, ``name%domain`` or ``name``."""
        return parse_login(text, self.main_domain)

    # ---- domains -------------------------------------------------------------------------

    async def domains(self) -> list[dict[str, Any]]:
        """Every domain with its aliases, services and flags, sorted by name (one
        transaction: cgtwist.storage.directory)."""
        found: list[dict[str, Any]] = await self.store.db.run_interaction(
            "domains", directory.domains_txn, readonly=True
        )
        return [dict(info, main=info["name"] == self.main_domain) for info in found]

    async def domain(self, name: str) -> dict[str, Any]:
        info = await self.store.get_domain(name)
        if info is None:
            raise AdminError(f"domain {name} does not exist")
        return dict(info, name=check_domain(name), main=check_domain(name) == self.main_domain)

    async def add_domain(
        self, name: str, services: Optional[Iterable[str]] = None, alias_of: Optional[str] = None
    ) -> None:
        if alias_of:
            await self.store.add_domain_alias(name, alias_of)
            await self._change("domain", f"domain alias {name} of {alias_of} created")
        else:
            await self.store.add_domain(name, services=None if services is None else list(services))
            await self._change("domain", f"domain {name} created")

    async def set_domain(
        self, name: str, services: Optional[Iterable[str]] = None, enabled: Optional[bool] = None
    ) -> None:
        svc = None if services is None else list(services)
        await self.store.update_domain(name, services=svc, enabled=enabled)
        await self._change("domain", f"domain {name} changed: services={svc} enabled={enabled}")

    async def remove_domain(self, name: str, force: bool = False) -> None:
        """Remove a domain (``force``: with its accounts and aliases) or a domain alias."""
        store = self.store
        if await store.get_domain(name) is None and await store.is_local_domain(name):
            await store.remove_domain_alias(name)
            await self._change("domain", f"domain alias {name} removed")
        else:
            await store.remove_domain(name, force=force)
            await self._change("domain", f"domain {name} removed" + (" (forced)" if force else ""))

    # ---- accounts ------------------------------------------------------------------------

    async def accounts(self, domain: Optional[str] = None) -> list[dict[str, Any]]:
        """Every account of a domain (default: the main domain), sorted by name."""
        return list(await self.store.list_account_info(domain or self.main_domain))

    async def account_page(
        self,
        domain: str,
        search: str = "",
        limit: int = 50,
        after: Optional[str] = None,
        before: Optional[str] = None,
        search_rows: int = directory.SEARCH_ROWS,
    ) -> AccountPage:
        """One page of a domain's accounts, paged and searched in SQL (cgtwist.storage.directory);
        a search looks at ``search_rows`` accounts per page at most."""
        d = check_domain(domain)
        page: AccountPage = await self.store.db.run_interaction(
            "account_page",
            directory.account_page_txn,
            d,
            search.strip()[:100],
            limit,
            after,
            before,
            search_rows,
            readonly=True,
        )
        return page

    async def account(self, name: str, domain: str) -> dict[str, Any]:
        """Everything an administrator may see of an account (never the password hash)."""
        return dict(await self.store.get_account_info(name, domain))

    async def add_account(
        self,
        name: str,
        domain: str,
        password: Optional[str] = None,
        password_hash: Optional[str] = None,
        real_name: str = "",
        services: Optional[Iterable[str]] = None,
        admin: bool = False,
        enabled: bool = True,
    ) -> Optional[str]:
        """Create an account; returns the generated password when neither a password nor a
        hash was given (shown once, never stored in clear)."""
        generated = None
        if password is None and password_hash is None:
            password = generated = generate_password()
        await self.store.add_account(
            name,
            domain,
            password,
            real_name=real_name,
            services=None if services is None else list(services),
            settings={"admin": True} if admin else None,
            enabled=enabled,
            password_hash=password_hash,
            check_policy=generated is None,  # a random password is not held to the policy
        )
        await self._change("account", f"account {name}@{domain} created")
        return generated

    async def remove_account(self, name: str, domain: str) -> None:
        await self.store.remove_account(name, domain)
        await self._change("account", f"account {name}@{domain} removed")

    async def set_password(
        self,
        name: str,
        domain: str,
        password: Optional[str] = None,
        password_hash: Optional[str] = None,
    ) -> Optional[str]:
        """Set a password (or import a hash); returns the generated one when neither was given."""
        if await self.store.get_account(name, domain) is None:
            raise AdminError(f"account {name}@{domain} does not exist")
        generated = None
        if password_hash is not None:
            await self.store.set_password_hash(name, domain, password_hash)
        else:
            if password is None:
                password = generated = generate_password()
            await self.store.set_password(name, domain, password, check_policy=generated is None)
        await self._change("account", f"password of {name}@{domain} changed")
        return generated

    async def set_account(
        self,
        name: str,
        domain: str,
        real_name: Optional[str] = None,
        services: Optional[Iterable[str]] = None,
        enabled: Optional[bool] = None,
    ) -> None:
        svc = None if services is None else list(services)
        await self.store.update_account(
            name, domain, real_name=real_name, services=svc, enabled=enabled
        )
        parts = [
            f"{k}={v!r}"
            for k, v in (("real_name", real_name), ("services", svc), ("enabled", enabled))
            if v is not None
        ]
        await self._change("account", f"account {name}@{domain} changed: {' '.join(parts)}")

    # ---- aliases -------------------------------------------------------------------------

    async def add_alias(self, name: str, domain: str, target: str) -> None:
        await self.store.add_alias(name, domain, target)
        await self._change("alias", f"alias {name}@{domain} -> {target} created")

    async def remove_alias(self, name: str, domain: str) -> None:
        await self.store.remove_alias(name, domain)
        await self._change("alias", f"alias {name}@{domain} removed")

    async def aliases(self, domain: Optional[str] = None) -> list[tuple[str, str]]:
        return list(await self.store.list_aliases(domain))

    # ---- forwarders and groups -------------------------------------------------------------

    async def groups(
        self, kind: str, domain: Optional[str] = None
    ) -> list[tuple[str, tuple[str, ...]]]:
        """Every forwarder or group (``kind``) of ``domain`` (None: of every domain) with
        its addresses: [(address, targets), ...]."""
        return list(await self.store.list_groups(kind, domain))

    async def group(self, kind: str, name: str, domain: str) -> tuple[str, ...]:
        """The addresses of forwarder or group (``kind``) ``name@domain``."""
        found = await self.store.resolve_group(name, domain)
        if found is None or found.kind != kind:
            raise AdminError(f"{kind} {name}@{domain} does not exist")
        return tuple(found.targets)

    async def add_group(self, kind: str, name: str, domain: str, targets: Iterable[str]) -> None:
        """Create forwarder or group ``name@domain`` sending on to ``targets``."""
        t = list(targets)
        await self.store.add_group(kind, name, domain, t)
        await self._change(kind, f"{kind} {name}@{domain} -> {', '.join(t)} created")

    async def set_group(self, kind: str, name: str, domain: str, targets: Iterable[str]) -> None:
        """Replace the addresses of forwarder or group ``name@domain``."""
        t = list(targets)
        await self.store.set_group_targets(kind, name, domain, t)
        await self._change(kind, f"{kind} {name}@{domain} set to {', '.join(t)}")

    async def remove_group(self, kind: str, name: str, domain: str) -> None:
        await self.store.remove_group(kind, name, domain)
        await self._change(kind, f"{kind} {name}@{domain} removed")

    # ---- settings ------------------------------------------------------------------------

    async def effective_settings(
        self, domain: str, account: Optional[str] = None
    ) -> account_settings.Effective:
        """The account settings in force for ``account@domain`` (each with its source: the
        account, its domain or the server's Account Defaults), or with no ``account`` what
        the accounts of ``domain`` inherit."""
        eff: account_settings.Effective
        if account is None:  # NotFound for a domain that does not exist
            eff = await self.store.get_effective_settings(domain)
        elif await self.store.get_account(account, domain) is None:
            raise AdminError(f"account {account}@{domain} does not exist")
        else:
            eff = await self.store.get_effective_settings(account, domain)
        return eff

    async def server_settings(
        self, node: Optional[str] = None, key: Optional[str] = None
    ) -> list[SettingView]:
        """Every server setting (or ``key``) with its value for ``node`` (default: this one)."""
        node = node or self.node
        overrides = await self.store.get_settings(node)
        keys = sorted(dynamic.DEFAULTS)
        if key is not None:
            if key not in dynamic.DEFAULTS:
                raise AdminError(f"unknown setting {key!r}")
            keys = [key]
        return [
            SettingView(
                key=k,
                value=overrides.get(k, dynamic.DEFAULTS[k][0]),
                default=k not in overrides,
                node=node if dynamic.is_node_setting(k) else None,
                doc=dynamic.DEFAULTS[k][1],
            )
            for k in keys
        ]

    async def setting(self, key: str) -> Any:
        """The effective value of one server setting on this node."""
        (view,) = await self.server_settings(key=key)
        return view.value

    async def scoped_settings(
        self, domain: Optional[str] = None, account: Optional[tuple[str, str]] = None
    ) -> dict[str, Any]:
        """A domain's or an account's own settings."""
        if account is not None:
            return dict(await self.store.get_account_settings(*account))
        assert domain is not None
        return dict(await self.store.get_domain_settings(domain))

    async def set_setting(
        self,
        key: str,
        value: Any,
        node: Optional[str] = None,
        domain: Optional[str] = None,
        account: Optional[tuple[str, str]] = None,
    ) -> Optional[dict[str, Any]]:
        """Validate and store a setting (server, node, domain or account); returns the
        server's reply (listeners it could not bind) when it runs."""
        if account is not None:
            await self.store.set_account_setting(*account, key, value)
            where = f" of {account[0]}@{account[1]}"
        elif domain is not None:
            await self.store.set_domain_setting(domain, key, value)
            where = f" of domain {domain}"
        else:
            await self.store.set_setting(key, value, node=node)
            where = f" of node {node}" if node else ""
        shown = "(hidden)" if key in dynamic.SECRET_SETTINGS else _short(value)
        return await self._change("settings", f"setting {key}{where} set to {shown}")

    async def unset_setting(
        self,
        key: str,
        node: Optional[str] = None,
        domain: Optional[str] = None,
        account: Optional[tuple[str, str]] = None,
    ) -> Optional[dict[str, Any]]:
        if account is not None:
            await self.store.unset_account_setting(*account, key)
            where = f" of {account[0]}@{account[1]}"
        elif domain is not None:
            await self.store.unset_domain_setting(domain, key)
            where = f" of domain {domain}"
        else:
            await self.store.unset_setting(key, node=node)
            where = f" of node {node}" if node else ""
        return await self._change("settings", f"setting {key}{where} reset to its default")

    # ---- nodes ---------------------------------------------------------------------------

    async def nodes(self) -> list[dict[str, Any]]:
        """Every node that started on this database or has settings."""
        return list(await self.store.list_nodes())

    async def remove_node(self, name: str) -> None:
        await self.store.remove_node(name)
        self._log_change(f"node {name} forgotten")


def _short(value: Any, width: int = 120) -> str:
    import json

    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."
