"""The account store: domains, accounts and aliases, over a Database.

Owns the meaning of the tables (names, enabled services, the first-start bootstrap) and
implements ``cgtwist.interfaces.IAccountStore`` plus the administrator's operations used by
``cgtwist-admin`` and the web admin. Every public method returns a Deferred. SQL runs in named
``_txn`` functions (cgtwist.storage.tables) on the pool's threads; password hashing runs in the
hasher's threads, never inside a database transaction and never on the reactor thread. The
other halves of the store are its bases: passwords (cgtwist.storage.password_store), domain
and account settings (cgtwist.storage.scoped_settings), forwarders and groups
(cgtwist.storage.groups), server settings and nodes (cgtwist.storage.settings_store).
"""

from __future__ import annotations

import json
import os
import time
from typing import (
    Any,
    Callable,
    Iterable,
    Mapping,
    Optional,
)

from twisted.internet.defer import Deferred
from zope.interface import implementer

from cgtwist.config import DEFAULT_NODE
from cgtwist.errors import AlreadyExists, InvalidName, NotFound, StoreError
from cgtwist.interfaces import IAccountStore
from cgtwist.paths import check_account, check_domain
from cgtwist.storage import tables
from cgtwist.storage.database import DEFAULT_TIMEOUT, Cursor, Database
from cgtwist.storage.password_store import PasswordStore
from cgtwist.storage.passwords import PasswordHasher, generate_password
from cgtwist.storage.scoped_settings import check_scoped_settings, check_setting_name
from cgtwist.storage.storebase import InvalidValue, _deferred
from cgtwist.storage.tables import KIND_SERVICE, KIND_USER, PBX, POSTMASTER, SERVICES
from cgtwist.types import Account

ENV_POSTMASTER_PASSWORD = "CGTWIST_POSTMASTER_PASSWORD"

# SERVICES (cgtwist.storage.tables) and InvalidValue (storebase) are part of this interface.
__all__ = [
    "ENV_POSTMASTER_PASSWORD",
    "SERVICES",
    "AccountStore",
    "InvalidValue",
    "check_scoped_settings",
    "check_services",
    "check_setting_name",
    "check_target",
    "open_store",
]


def check_services(services: Optional[Iterable[str]]) -> Optional[frozenset[str]]:
    """Validate a set of service names; None stays None ("all services")."""
    if services is None:
        return None
    out = frozenset(s.strip().lower() for s in services if s.strip())
    unknown = sorted(out - set(SERVICES))
    if unknown:
        raise InvalidValue(f"unknown service {unknown[0]!r} (known: {', '.join(SERVICES)})")
    return out


def check_target(target: str, domain: str) -> str:
    """Validate an alias target address; a bare name means that name in the alias's domain."""
    return tables.check_target_address(target, domain)


@implementer(IAccountStore)
class AccountStore(PasswordStore):
    """Domains, accounts and aliases (and, through its bases, their settings) in the database behind ``db``.

    ``main_domain`` comes from the bootstrap configuration; ``hasher`` hashes and verifies
    passwords off the reactor; ``now`` gives the creation timestamps. ``node`` is the node
    this store speaks for (``[server] node``): whose node settings ``get_settings`` merges in
    and where ``set_setting`` puts one (docs/CLUSTER.md). On PostgreSQL every change is
    announced to the other nodes (cgtwist.storage.notify) in the transaction that makes it.
    """

    def __init__(
        self,
        db: Database,
        main_domain: str,
        hasher: PasswordHasher,
        now: Callable[[], float] = time.time,
        node: str = DEFAULT_NODE,
    ) -> None:
        super().__init__(db, hasher, now, node)
        self.main_domain = check_domain(main_domain)

    # ---- first start ---------------------------------------------------------------------

    @_deferred
    async def settle_main_domain(self, configured: str, explicit: bool) -> str:
        """Agree on the main domain with the database and return it.

        The first start records its main domain. Later, a configuration that does not name one
        (so it defaulted to the host name) uses the recorded one: ``cgtwist-admin --base-dir``
        and a restart without ``--main-domain`` must not invent a second main domain. An
        explicit, different name is taken and recorded (the administrator renamed it).
        """
        recorded = await self._db.run_interaction(
            "main_domain_get", tables.meta_get_txn, "main_domain", readonly=True
        )
        chosen = configured if (explicit or not recorded) else str(recorded)
        if chosen != recorded:
            await self._write("main_domain_set", self._set_meta_txn, "main_domain", chosen)
            if recorded:
                self._log.warn("main domain changed from {old} to {new}", old=recorded, new=chosen)
        self.main_domain = chosen
        return chosen

    @staticmethod
    def _set_meta_txn(cur: Cursor, name: str, value: str) -> None:
        cur.execute(cur.engine.upsert("meta", ("name",), ("value",)), (name, value))

    async def bootstrap(self, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
        """Create the main domain, ``postmaster`` (administrator) and ``pbx`` once.

        The postmaster password is ``$CGTWIST_POSTMASTER_PASSWORD`` or generated; fire with the
        generated password (for the caller to print once) or None when nothing was generated.
        """
        env = os.environ if environ is None else environ
        marker = f"bootstrap:{self.main_domain}"
        if await self._db.run_interaction(
            "bootstrap_check", tables.meta_get_txn, marker, readonly=True
        ):
            return None
        given = env.get(ENV_POSTMASTER_PASSWORD) or None
        password = given or generate_password()
        phc = await self._hasher.hash(password)
        created = await self._db.run_interaction("bootstrap", self._bootstrap_txn, marker, phc)
        if created:
            self._log.info(
                "created {account} (administrator) and {pbx} in the main domain",
                account=f"{POSTMASTER}@{self.main_domain}",
                pbx=f"{PBX}@{self.main_domain}",
            )
        return password if created and not given else None

    def _bootstrap_txn(self, cur: Cursor, marker: str, phc: str) -> bool:
        if tables.meta_get_txn(cur, marker):
            return False  # another process got here first
        if tables.domain_id_txn(cur, self.main_domain) is None:
            self._insert_domain_txn(cur, self.main_domain, None, {})
        did = tables.domain_id_txn(cur, self.main_domain)
        assert did is not None
        created = False
        if tables.account_row_txn(cur, did, POSTMASTER) is None:
            self._insert_account_txn(
                cur, did, POSTMASTER, phc, "Postmaster", KIND_USER, True, None, {"admin": True}
            )
            created = True
        if (
            tables.account_row_txn(cur, did, PBX) is None
            and tables.alias_target_txn(cur, did, PBX) is None
        ):
            self._insert_account_txn(cur, did, PBX, None, "PBX", KIND_SERVICE, True, None, {})
        cur.execute(cur.engine.upsert("meta", ("name",), ("value",)), (marker, "1"))
        return created

    # ---- domains -------------------------------------------------------------------------

    @_deferred
    async def add_domain(
        self,
        name: str,
        services: Optional[Iterable[str]] = None,
        settings: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Create a domain; AlreadyExists when it (or a domain alias of that name) exists."""
        d = check_domain(name)
        svc = check_services(services)
        values = check_scoped_settings("domain", settings)
        await self._write("add_domain", self._add_domain_txn, d, svc, values)
        self._log.info("domain {domain} created", domain=d)

    def _add_domain_txn(
        self, cur: Cursor, d: str, svc: Optional[frozenset[str]], values: Mapping[str, Any]
    ) -> None:
        if tables.domain_id_txn(cur, d) is not None or tables.domain_alias_txn(cur, d) is not None:
            raise AlreadyExists(f"domain {d} already exists")
        self._insert_domain_txn(cur, d, svc, values)

    def _insert_domain_txn(
        self, cur: Cursor, d: str, svc: Optional[frozenset[str]], values: Mapping[str, Any]
    ) -> None:
        cur.execute(
            "INSERT INTO domains (name, enabled, services, settings, created) "
            "VALUES (?, 1, ?, ?, ?)",
            (d, tables.services_json(svc), json.dumps(dict(values)), int(self._now())),
        )

    @_deferred
    async def list_domains(self) -> list[str]:
        """Fire with every domain name, sorted."""
        rows = await self._db.run_interaction(
            "list_domains",
            lambda cur: cur.query("SELECT name FROM domains ORDER BY name"),
            readonly=True,
        )
        return [r[0] for r in rows]

    @_deferred
    async def remove_domain(self, name: str, force: bool = False) -> None:
        """Remove a domain; never the main domain; one with accounts or aliases only with force."""
        d = check_domain(name)
        if d == self.main_domain:
            raise StoreError(f"{d} is the main domain and cannot be removed")
        await self._write("remove_domain", tables.remove_domain_txn, d, force)
        self._log.info("domain {domain} removed", domain=d)

    @_deferred
    async def get_domain(self, name: str) -> Optional[dict[str, Any]]:
        """Fire with {name, enabled, services, settings, aliases, accounts} or None."""
        try:
            d = check_domain(name)
        except InvalidName:
            return None
        return await self._db.run_interaction("get_domain", tables.get_domain_txn, d, readonly=True)

    @_deferred
    async def is_local_domain(self, name: str) -> bool:
        """Fire with True for one of our domains or a domain alias."""
        try:
            d = check_domain(name)
        except InvalidName:
            return False
        did = await self._db.run_interaction(
            "is_local_domain", tables.resolve_domain_txn, d, readonly=True
        )
        return did is not None

    @_deferred
    async def update_domain(
        self, name: str, services: Optional[Iterable[str]] = None, enabled: Optional[bool] = None
    ) -> None:
        """Change a domain's enabled services (a list; [] = none) or enabled flag."""
        d = check_domain(name)
        svc = check_services(services)
        await self._write("update_domain", tables.update_domain_txn, d, svc, enabled)

    @_deferred
    async def add_domain_alias(self, alias: str, domain: str) -> None:
        """Make ``alias`` another name of ``domain`` (mail and logins to it go to ``domain``)."""
        a, d = check_domain(alias), check_domain(domain)
        await self._write("add_domain_alias", tables.add_domain_alias_txn, a, d)

    @_deferred
    async def remove_domain_alias(self, alias: str) -> None:
        a = check_domain(alias)
        await self._write(
            "remove_domain_alias",
            tables.delete_one_txn,
            "DELETE FROM domain_aliases WHERE name = ?",
            (a,),
            f"domain alias {a} does not exist",
        )

    # ---- accounts ------------------------------------------------------------------------

    @_deferred
    async def add_account(
        self,
        name: str,
        domain: str,
        password: Optional[str] = None,
        real_name: str = "",
        services: Optional[Iterable[str]] = None,
        settings: Optional[Mapping[str, Any]] = None,
        enabled: bool = True,
        password_hash: Optional[str] = None,
        check_policy: bool = True,
    ) -> Account:
        """Create an account (no password: it cannot log in until one is set).

        ``password_hash`` instead of ``password`` imports a hash (see set_password_hash).
        A ``password`` must meet the password policy the account will have (its domain's
        and the server's Account Defaults, and its own ``settings``), else InvalidValue says
        why; ``check_policy`` False skips that for a generated (random) password.
        """
        n, d = check_account(name), check_domain(domain)
        svc = check_services(services)
        values = check_scoped_settings("account", settings)
        if password == "":
            raise InvalidValue("the password must not be empty")
        if password is not None and check_policy:
            await self._check_password_policy(d, values, password)
        if password_hash is not None:
            phc: Optional[str] = self._imported_hash(password_hash)
        else:
            phc = await self._hasher.hash(password) if password is not None else None
        await self._write(
            "add_account", self._add_account_txn, n, d, phc, real_name.strip(), svc, values, enabled
        )
        self._log.info("account {account} created", account=f"{n}@{d}")
        account = await self.get_account(n, d)
        assert account is not None
        return account

    def _add_account_txn(
        self,
        cur: Cursor,
        n: str,
        d: str,
        phc: Optional[str],
        real: str,
        svc: Optional[frozenset[str]],
        values: Mapping[str, Any],
        enabled: bool,
    ) -> None:
        did = tables.claim_name_txn(cur, n, d, "account")
        self._insert_account_txn(cur, did, n, phc, real, KIND_USER, enabled, svc, values)

    def _insert_account_txn(
        self,
        cur: Cursor,
        did: int,
        n: str,
        phc: Optional[str],
        real: str,
        kind: str,
        enabled: bool,
        svc: Optional[frozenset[str]],
        values: Mapping[str, Any],
    ) -> None:
        cur.execute(
            "INSERT INTO accounts (domain_id, name, password, real_name, kind, enabled, services,"
            " settings, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                did,
                n,
                phc,
                real,
                kind,
                1 if enabled else 0,
                tables.services_json(svc),
                json.dumps(dict(values)),
                int(self._now()),
            ),
        )

    @_deferred
    async def get_account(self, name: str, domain: str) -> Optional[Account]:
        """Fire with the Account (effective services, own settings) or None."""
        try:
            n, d = check_account(name), check_domain(domain)
        except InvalidName:
            return None
        row = await self._db.run_interaction(
            "get_account", tables.account_full_txn, n, d, readonly=True
        )
        return tables.account_of(row) if row else None

    @_deferred
    async def get_account_info(self, name: str, domain: str) -> dict[str, Any]:
        """Fire with everything an administrator may see of an account (never the hash)."""
        n, d = check_account(name), check_domain(domain)
        row = await self._db.run_interaction(
            "get_account_info", tables.account_full_txn, n, d, readonly=True
        )
        if row is None:
            raise NotFound(f"account {n}@{d} does not exist")
        return tables.info_of(row)

    @_deferred
    async def list_account_info(self, domain: str) -> list[dict[str, Any]]:
        """Fire with ``get_account_info`` of every account of a domain, sorted by name."""
        d = check_domain(domain)
        rows = await self._db.run_interaction(
            "list_account_info", tables.list_accounts_txn, d, readonly=True
        )
        return [tables.info_of(r) for r in rows]

    @_deferred
    async def list_accounts(self, domain: str) -> list[Account]:
        """Fire with the domain's accounts sorted by name; NotFound for an unknown domain."""
        d = check_domain(domain)
        rows = await self._db.run_interaction(
            "list_accounts", tables.list_accounts_txn, d, readonly=True
        )
        return [tables.account_of(r) for r in rows]

    @_deferred
    async def remove_account(self, name: str, domain: str) -> None:
        """Remove an account (its Maildir stays on disk); never the main domain's postmaster."""
        n, d = check_account(name), check_domain(domain)
        await self._write("remove_account", tables.remove_account_txn, n, d, self.main_domain)
        self._log.info("account {account} removed", account=f"{n}@{d}")

    @_deferred
    async def update_account(
        self,
        name: str,
        domain: str,
        real_name: Optional[str] = None,
        services: Optional[Iterable[str]] = None,
        enabled: Optional[bool] = None,
    ) -> None:
        """Change the real name, enabled services or the enabled flag of an account."""
        n, d = check_account(name), check_domain(domain)
        svc = check_services(services)
        await self._write(
            "update_account",
            tables.update_account_txn,
            n,
            d,
            None if real_name is None else real_name.strip(),
            svc,
            enabled,
        )

    # ---- aliases -------------------------------------------------------------------------

    @_deferred
    async def add_alias(self, name: str, domain: str, target: str) -> None:
        """Make ``name@domain`` deliver to (and log in as) ``target``."""
        n, d = check_account(name), check_domain(domain)
        t = check_target(target, d)
        if t == f"{n}@{d}":
            raise InvalidValue("an alias cannot point to itself")
        await self._write("add_alias", tables.add_alias_txn, n, d, t)
        self._log.info("alias {alias} -> {target} created", alias=f"{n}@{d}", target=t)

    @_deferred
    async def remove_alias(self, name: str, domain: str) -> None:
        n, d = check_account(name), check_domain(domain)
        await self._write("remove_alias", tables.remove_alias_txn, n, d)

    @_deferred
    async def list_aliases(self, domain: Optional[str] = None) -> list[tuple[str, str]]:
        """Fire with [(alias address, target), ...] of one domain or of all, sorted."""
        d = check_domain(domain) if domain else None
        return await self._db.run_interaction(
            "list_aliases", tables.list_aliases_txn, d, readonly=True
        )

    @_deferred
    async def resolve_alias(self, name: str, domain: str) -> Optional[str]:
        """Fire with the target address of alias ``name@domain`` (domain aliases followed)."""
        try:
            n, d = check_account(name), check_domain(domain)
        except InvalidName:
            return None
        return await self._db.run_interaction(
            "resolve_alias", tables.resolve_alias_txn, n, d, readonly=True
        )


def open_store(
    url: str,
    main_domain: str,
    reactor: Any,
    pool_min: int = 1,
    pool_max: int = 4,
    hasher: Optional[PasswordHasher] = None,
    timeout: float = DEFAULT_TIMEOUT,
    node: str = DEFAULT_NODE,
) -> Deferred[AccountStore]:
    """Open the database at ``url``, apply migrations, fire with an AccountStore on it
    speaking for ``node``.

    The reactor must be running (or about to run): adbapi starts its threads then.
    ``timeout``: each store call's deadline in seconds (``[database] timeout``).
    """

    async def opening() -> AccountStore:
        db = Database(url, reactor, pool_min, pool_max, timeout=timeout)
        try:
            await db.migrate()
        except BaseException:
            db.close()
            raise
        return AccountStore(db, main_domain, hasher or PasswordHasher(reactor), node=node)

    return Deferred.fromCoroutine(opening())
