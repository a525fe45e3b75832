"""Tests for cgtwist.storage.store: domains, accounts, aliases, settings, bootstrap.

Every test runs on SQLite; the same tests run on PostgreSQL when CGTWIST_TEST_PG_URL is set.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

from cgtwist.errors import AlreadyExists, InvalidName, NotFound, StoreError
from cgtwist.interfaces import IAccountStore
from cgtwist.storage.passwords import PasswordHasher
from cgtwist.storage.store import ENV_POSTMASTER_PASSWORD, SERVICES, AccountStore, InvalidValue
from tests.storage.dbcase import DatabaseCase, SpyArgon2

SHA6 = (
    "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFd"
    "cbYEdFCoEOfaS35inz1"
)  # "Hello world!"


class StoreTestsMixin:
    """The store's behaviour, independent of the database engine."""

    async def _failure(self: Any, d: Any, *types: type[BaseException]) -> BaseException:
        try:
            await d
        except types as e:
            return e
        self.fail(f"expected {types}")

    async def test_interface(self: Any) -> None:
        """The store provides IAccountStore, so the server can use it through the seam."""
        store = await self.open_store()
        self.assertTrue(IAccountStore.providedBy(store))

    async def test_migrations_idempotent(self: Any) -> None:
        """Opening the same database twice (server restart, CLI) keeps the data and version."""
        db = self.open_db()
        v1 = await db.migrate()
        store = await self.open_store()
        await store.add_domain("example.com")
        v2 = await db.migrate()
        self.assertEqual(v1, v2)
        self.assertEqual(await store.list_domains(), ["example.com"])

    async def test_bootstrap_creates_postmaster_once(self: Any) -> None:
        """First start creates the main domain, an admin postmaster and pbx, and only once."""
        store = await self.open_store()
        password = await store.bootstrap({})
        self.assertTrue(password and len(password) >= 12)
        self.assertEqual(await store.list_domains(), ["example.com"])
        names = [a.name for a in await store.list_accounts("example.com")]
        self.assertEqual(names, ["pbx", "postmaster"])
        pm = await store.verify_password("postmaster", "example.com", password)
        self.assertEqual(pm.settings, {"admin": True})
        self.assertIsNone(await store.bootstrap({}))
        self.assertIsNone(await store.verify_password("pbx", "example.com", ""))

    async def test_bootstrap_password_from_environment(self: Any) -> None:
        """A postmaster password in the environment is used and not printed again."""
        store = await self.open_store()
        self.assertIsNone(await store.bootstrap({ENV_POSTMASTER_PASSWORD: "s3cret-pm"}))
        self.assertIsNotNone(await store.verify_password("postmaster", "example.com", "s3cret-pm"))

    async def test_bootstrap_after_restart_with_removed_pbx(self: Any) -> None:
        """Bootstrap runs once per main domain: a restart never recreates or resets accounts."""
        store = await self.open_store()
        await store.bootstrap({ENV_POSTMASTER_PASSWORD: "one"})
        await store.set_password("postmaster", "example.com", "two")
        await store.remove_account("pbx", "example.com")
        self.assertIsNone(await store.bootstrap({ENV_POSTMASTER_PASSWORD: "three"}))
        self.assertIsNotNone(await store.verify_password("postmaster", "example.com", "two"))
        self.assertIsNone(await store.get_account("pbx", "example.com"))

    async def test_domain_crud(self: Any) -> None:
        """Domains are added, listed, looked up case-insensitively and removed."""
        store = await self.open_store()
        await store.add_domain("Example.ORG.")
        self.assertEqual(await store.list_domains(), ["example.org"])
        self.assertTrue(await store.is_local_domain("EXAMPLE.org"))
        self.assertFalse(await store.is_local_domain("other.org"))
        info = await store.get_domain("example.org")
        self.assertEqual(info["services"], sorted(SERVICES))
        await self._failure(store.add_domain("example.org"), AlreadyExists)
        await store.remove_domain("example.org")
        self.assertEqual(await store.list_domains(), [])
        self.assertIsNone(await store.get_domain("example.org"))
        await self._failure(store.remove_domain("example.org"), NotFound)

    async def test_remove_domain_refusals(self: Any) -> None:
        """The main domain is never removed; a non-empty domain only with force."""
        store = await self.open_store()
        await store.bootstrap({})
        e = await self._failure(store.remove_domain("example.com", force=True), StoreError)
        self.assertIn("main domain", str(e))
        await store.add_domain("example.org")
        await store.add_account("bob", "example.org", "pw")
        await store.add_alias("info", "example.org", "bob")
        e = await self._failure(store.remove_domain("example.org"), StoreError)
        self.assertIn("1 account", str(e))
        await store.add_domain("groups.org")
        await store.add_group("group", "team", "groups.org", ["bob@example.org"])
        e = await self._failure(store.remove_domain("groups.org"), StoreError)
        self.assertIn("1 forwarder(s) or group(s)", str(e))
        await store.remove_domain("groups.org", force=True)
        self.assertEqual(await store.list_groups("group"), [])
        await store.remove_domain("example.org", force=True)
        self.assertIsNone(await store.get_account("bob", "example.org"))
        self.assertEqual(await store.list_aliases(), [])
        # the same name can be created again, empty
        await store.add_domain("example.org")
        self.assertEqual(await store.list_accounts("example.org"), [])

    async def test_domain_alias(self: Any) -> None:
        """A domain alias is local, and accounts are found and log in through it."""
        store = await self.open_store()
        await store.add_domain("example.org")
        await store.add_account("bob", "example.org", "pw")
        await store.add_domain_alias("example.net", "example.org")
        self.assertTrue(await store.is_local_domain("example.net"))
        account = await store.get_account("bob", "example.net")
        self.assertEqual(account.address, "bob@example.org")
        self.assertIsNotNone(await store.verify_password("bob", "example.net", "pw"))
        await self._failure(store.add_domain("example.net"), AlreadyExists)
        await store.remove_domain_alias("example.net")
        self.assertFalse(await store.is_local_domain("example.net"))

    async def test_account_crud(self: Any) -> None:
        """Accounts are created with their fields, found case-insensitively, and removed."""
        store = await self.open_store()
        await store.add_domain("example.com")
        account = await store.add_account(
            "Alice",
            "EXAMPLE.com",
            "pw",
            real_name=" Alice A ",
            services=["mail", "imap"],
            settings={"admin": True},
        )
        self.assertEqual(account.address, "alice@example.com")
        self.assertEqual(account.real_name, "Alice A")
        self.assertEqual(account.services, frozenset({"mail", "imap"}))
        self.assertEqual(account.settings, {"admin": True})
        await self._failure(
            store.add_account("bob", "example.com", "pw", settings={"quota": 10}), InvalidValue
        )
        self.assertEqual(await store.get_account("ALICE", "example.COM"), account)
        await self._failure(store.add_account("alice", "example.com", "x"), AlreadyExists)
        await self._failure(store.add_account("bob", "nowhere.com", "x"), NotFound)
        info = await store.get_account_info("alice", "example.com")
        self.assertNotIn("password", info)
        self.assertTrue(info["has_password"])
        await store.remove_account("alice", "example.com")
        self.assertIsNone(await store.get_account("alice", "example.com"))
        await self._failure(store.remove_account("alice", "example.com"), NotFound)

    async def test_postmaster_not_removable(self: Any) -> None:
        """The main domain's postmaster (the administrator) cannot be removed by mistake."""
        store = await self.open_store()
        await store.bootstrap({})
        await self._failure(store.remove_account("postmaster", "example.com"), StoreError)

    async def test_unsafe_names_rejected(self: Any) -> None:
        """Names that could escape the Domains/ directory or inject SQL never get stored."""
        store = await self.open_store()
        await store.add_domain("example.com")
        for bad in ("../x", "a/b", "..", ".hidden", "a..b", "' OR 1=1--", "", "a b", "x\x00"):
            await self._failure(store.add_account(bad, "example.com", "pw"), InvalidName)
            await self._failure(store.add_alias(bad, "example.com", "x@example.org"), InvalidName)
            self.assertIsNone(await store.get_account(bad, "example.com"))
            self.assertIsNone(await store.verify_password(bad, "example.com", "pw"))
        for bad in ("../etc", "a/b", "exa mple.com", "-x.com", "' OR 1=1--"):
            await self._failure(store.add_domain(bad), InvalidName)
            self.assertFalse(await store.is_local_domain(bad))
        self.assertEqual([a.name for a in await store.list_accounts("example.com")], [])

    async def test_services_effective_set(self: Any) -> None:
        """An account's services are its own set intersected with its domain's."""
        store = await self.open_store()
        await store.add_domain("example.com", services=["mail", "pop", "relay"])
        account = await store.add_account("a", "example.com", "pw", services=["mail", "imap"])
        self.assertEqual(account.services, frozenset({"mail"}))
        default = await store.add_account("b", "example.com", "pw")
        self.assertEqual(default.services, frozenset({"mail", "pop", "relay"}))
        await store.update_domain("example.com", services=list(SERVICES))
        self.assertEqual(
            (await store.get_account("a", "example.com")).services, frozenset({"mail", "imap"})
        )
        await self._failure(
            store.add_account("c", "example.com", "pw", services=["ftp"]), InvalidValue
        )

    async def test_password_verification(self: Any) -> None:
        """Right password: the account; wrong, unknown, disabled or passwordless: None."""
        store = await self.open_store()
        await store.add_domain("example.com")
        await store.add_account("alice", "example.com", "right")
        await store.add_account("nopw", "example.com")
        await store.add_account("off", "example.com", "right", enabled=False)
        ok = await store.verify_password("ALICE", "example.com", "right")
        self.assertEqual(ok.address, "alice@example.com")
        self.assertIsNone(await store.verify_password("alice", "example.com", "wrong"))
        self.assertIsNone(await store.verify_password("alice", "example.com", "RIGHT"))
        self.assertIsNone(await store.verify_password("ghost", "example.com", "right"))
        self.assertIsNone(await store.verify_password("alice", "nowhere.com", "right"))
        self.assertIsNone(await store.verify_password("nopw", "example.com", ""))
        self.assertIsNone(await store.verify_password("off", "example.com", "right"))
        await store.update_account("off", "example.com", enabled=True)
        self.assertIsNotNone(await store.verify_password("off", "example.com", "right"))
        await store.update_domain("example.com", enabled=False)
        self.assertIsNone(await store.verify_password("off", "example.com", "right"))

    async def test_set_password(self: Any) -> None:
        """After set_password only the new password works, and the hash is not the password."""
        store = await self.open_store()
        await store.add_domain("example.com")
        await store.add_account("alice", "example.com", "old")
        await store.set_password("alice", "example.com", "new")
        self.assertIsNone(await store.verify_password("alice", "example.com", "old"))
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "new"))
        rows = await store.db.run_interaction(
            "dump", lambda cur: cur.query("SELECT password FROM accounts"), readonly=True
        )
        self.assertTrue(rows[0][0].startswith("$argon2id$"))
        self.assertNotIn("new", rows[0][0].split("$")[-1])
        await self._failure(store.set_password("ghost", "example.com", "x"), NotFound)
        await self._failure(store.set_password("alice", "example.com", ""), InvalidValue)
        await self._failure(store.add_account("bob", "example.com", ""), InvalidValue)

    async def test_weak_hash_upgraded_on_login(self: Any) -> None:
        """A hash made with older parameters is replaced after a successful login."""
        old = await self.open_store(hasher=PasswordHasher(reactor, memory_kib=64, time_cost=1))
        await old.add_domain("example.com")
        await old.add_account("alice", "example.com", "pw")
        new = AccountStore(
            old.db, "example.com", PasswordHasher(reactor, memory_kib=128, time_cost=1)
        )
        self.assertIsNone(await new.verify_password("alice", "example.com", "wrong"))
        rows = await old.db.run_interaction(
            "dump", lambda cur: cur.query("SELECT password FROM accounts"), readonly=True
        )
        self.assertIn("m=64,", rows[0][0])
        self.assertIsNotNone(await new.verify_password("alice", "example.com", "pw"))
        rows = await old.db.run_interaction(
            "dump", lambda cur: cur.query("SELECT password FROM accounts"), readonly=True
        )
        self.assertIn("m=128,", rows[0][0])
        self.assertIsNotNone(await new.verify_password("alice", "example.com", "pw"))

    async def test_imported_sha512_crypt_upgraded(self: Any) -> None:
        """A SHA512-CRYPT hash imported from Dovecot logs in once and is then argon2id."""
        store = await self.open_store()
        await store.add_domain("example.com")
        await store.add_account("alice", "example.com", password_hash="{SHA512-CRYPT}" + SHA6)
        self.assertIsNone(await store.verify_password("alice", "example.com", "wrong"))
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "Hello world!"))
        rows = await store.db.run_interaction(
            "dump", lambda cur: cur.query("SELECT password FROM accounts"), readonly=True
        )
        self.assertTrue(rows[0][0].startswith("$argon2id$"), rows[0][0])
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "Hello world!"))
        await store.set_password_hash("alice", "example.com", SHA6)
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "Hello world!"))
        for bad in ("plaintext", "$1$md5$crypt", "$argon2id$nonsense"):
            await self._failure(store.set_password_hash("alice", "example.com", bad), InvalidValue)
            await self._failure(
                store.add_account("bob", "example.com", password_hash=bad), InvalidValue
            )
        self.assertIsNone(await store.get_account("bob", "example.com"))

    async def test_one_verification_per_login(self: Any) -> None:
        """Unknown user, unknown domain, bad name and wrong password each cost one hash check."""
        store = await self.open_store()
        spy = SpyArgon2(store._hasher)
        await store.add_domain("example.com")
        await store.add_account("alice", "example.com", "pw")
        await store.add_account("nopw", "example.com")
        for name, domain in (
            ("alice", "example.com"),
            ("ghost", "example.com"),
            ("alice", "nowhere.org"),
            ("../x", "example.com"),
            ("nopw", "example.com"),
        ):
            before = len(spy.verified)
            self.assertIsNone(await store.verify_password(name, domain, "wrong"))
            self.assertEqual(len(spy.verified) - before, 1, (name, domain))

    async def test_password_never_stored_or_logged(self: Any) -> None:
        """The plaintext password appears in no log event and in no database row."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        secret = "Zebra-Quokka-4711"
        store = await self.open_store()
        await store.bootstrap({ENV_POSTMASTER_PASSWORD: secret + "pm"})
        await store.add_account("alice", "example.com", secret)
        await store.set_password("alice", "example.com", secret + "2")
        await store.verify_password("alice", "example.com", secret)
        await store.verify_password("alice", "example.com", secret + "2")
        rows = await store.db.run_interaction("dump", _dump_txn, readonly=True)
        self.assertNotIn(secret, repr(rows))
        self.assertNotIn(secret, repr(events))
        self.assertTrue(events)

    async def test_aliases(self: Any) -> None:
        """Aliases resolve to their target, log in as it, and never clash with accounts."""
        store = await self.open_store()
        await store.add_domain("example.com")
        await store.add_account("alice", "example.com", "pw")
        await store.add_alias("Info", "example.com", "alice")
        await store.add_alias("ext", "example.com", "Someone@Elsewhere.ORG")
        self.assertEqual(await store.resolve_alias("INFO", "example.com"), "alice@example.com")
        self.assertEqual(await store.resolve_alias("ext", "example.com"), "Someone@elsewhere.org")
        self.assertIsNone(await store.resolve_alias("alice", "example.com"))
        logged = await store.verify_password("info", "example.com", "pw")
        self.assertEqual(logged.address, "alice@example.com")
        self.assertIsNone(await store.verify_password("ext", "example.com", "pw"))
        self.assertEqual(
            await store.list_aliases("example.com"),
            [
                ("ext@example.com", "Someone@elsewhere.org"),
                ("info@example.com", "alice@example.com"),
            ],
        )
        await self._failure(store.add_alias("alice", "example.com", "x@y.org"), AlreadyExists)
        await self._failure(store.add_account("info", "example.com", "pw"), AlreadyExists)
        await self._failure(store.add_alias("info", "example.com", "x@y.org"), AlreadyExists)
        await self._failure(store.add_alias("loop", "example.com", "loop"), InvalidValue)
        await self._failure(store.add_alias("bad", "example.com", "a b@c.org"), InvalidValue)
        await self._failure(store.add_alias("bad", "example.com", "a@../x"), InvalidValue)
        await store.remove_alias("info", "example.com")
        self.assertIsNone(await store.resolve_alias("info", "example.com"))
        await self._failure(store.remove_alias("info", "example.com"), NotFound)

    async def test_server_settings(self: Any) -> None:
        """Settings are validated, stored as JSON, read back, and unset to the default."""
        store = await self.open_store()
        self.assertEqual(await store.get_settings(), {})
        await store.set_setting("smtp.max_recipients", 5)
        await store.set_setting("queue.retry_schedule", [10, 20])
        await store.set_setting("smtp.max_recipients", 7)
        self.assertEqual(
            await store.get_settings(), {"smtp.max_recipients": 7, "queue.retry_schedule": [10, 20]}
        )
        await self._failure(store.set_setting("smtp.max_recipients", "many"), InvalidValue)
        await self._failure(store.set_setting("smtp.max_recipients", -1), InvalidValue)
        await self._failure(store.set_setting("no.such", 1), InvalidValue)
        await self._failure(store.set_setting("listeners", [{"protocol": "gopher"}]), InvalidValue)
        await store.unset_setting("smtp.max_recipients")
        self.assertEqual(await store.get_settings(), {"queue.retry_schedule": [10, 20]})

    async def test_domain_and_account_settings(self: Any) -> None:
        """Domain and account settings hold JSON values; only keys the server reads are
        stored (cgtwist.account_settings.known), with their type."""
        store = await self.open_store()
        await store.add_domain("example.com")
        await store.add_account("alice", "example.com", "pw")
        await store.set_account_setting("alice", "example.com", "admin", True)
        self.assertEqual(
            (await store.get_account("alice", "example.com")).settings, {"admin": True}
        )
        await self._failure(
            store.set_domain_setting("example.com", "smtp.max_message_size", 1000), InvalidValue
        )
        await self._failure(
            store.set_account_setting("alice", "example.com", "MaxAccountSize", "10M"), InvalidValue
        )
        await self._failure(
            store.set_account_setting("alice", "example.com", "admin", "yes"), InvalidValue
        )
        await self._failure(store.add_domain("example.org", settings={"x": 1}), InvalidValue)
        self.assertEqual(await store.get_domain_settings("example.com"), {})
        await self._failure(
            store.set_account_setting("alice", "example.com", "a b", 1), InvalidValue
        )
        await self._failure(
            store.set_account_setting("ghost", "example.com", "admin", True), NotFound
        )
        await store.unset_account_setting("alice", "example.com", "admin")
        self.assertEqual(await store.get_account_settings("alice", "example.com"), {})
        await self._failure(store.unset_account_setting("alice", "example.com", "admin"), NotFound)


def _dump_txn(cur: Any) -> list[Any]:
    tables = ("domains", "domain_aliases", "accounts", "aliases", "server_settings", "meta")
    return [cur.query(f"SELECT * FROM {t}") for t in tables]

    async def test_forwarders_and_groups(self: Any) -> None:
        """Forwarders and Groups (schema delta 005): names beside accounts and aliases,
        never the same name twice, targets checked, changed and removed by kind."""
        store = await self.open_store()
        await store.add_domain("example.com")
        await store.add_account("alice", "example.com", "pw")
        await store.add_alias("info", "example.com", "alice")
        await store.add_group("forwarder", "fwd", "example.com", ["x@far.dom", "X@far.dom"])
        await store.add_group("group", "team", "example.com", ["alice", "bob@other.dom"])
        group = await store.resolve_group("FWD", "example.com")
        self.assertEqual((group.kind, group.targets), ("forwarder", ("x@far.dom",)))
        self.assertEqual(
            await store.list_groups("group"),
            [("team@example.com", ("alice@example.com", "bob@other.dom"))],
        )
        for name in ("alice", "info", "fwd"):
            await self._failure(store.add_group("group", name, "example.com", ["a"]), AlreadyExists)
        await self._failure(store.add_account("team", "example.com", "pw"), AlreadyExists)
        await self._failure(store.add_alias("team", "example.com", "alice"), AlreadyExists)
        await self._failure(store.add_group("group", "g", "example.com", []), InvalidValue)
        await self._failure(store.add_group("group", "g", "example.com", ["a b"]), InvalidValue)
        await self._failure(store.add_group("group", "g", "example.com", ["g"]), InvalidValue)
        await self._failure(store.add_group("list", "g", "example.com", ["a"]), InvalidValue)
        await self._failure(store.add_group("group", "g", "nowhere.dom", ["a"]), NotFound)
        await store.set_group_targets("group", "team", "example.com", ["carol"])
        self.assertEqual(
            (await store.resolve_group("team", "example.com")).targets, ("carol@example.com",)
        )
        await self._failure(store.remove_group("forwarder", "team", "example.com"), NotFound)
        await store.remove_group("group", "team", "example.com")
        self.assertIsNone(await store.resolve_group("team", "example.com"))
        self.assertIsNone(await store.resolve_group("a b", "example.com"))


class SQLiteStoreTests(StoreTestsMixin, DatabaseCase):
    engine = "sqlite"


class PostgresStoreTests(StoreTestsMixin, DatabaseCase):
    engine = "postgresql"
