"""Tests for cgtwist.core.auth: login-name forms and the shared password checker."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.trial import unittest

from cgtwist.core.auth import AccountChecker, AuthUnavailable, parse_login
from cgtwist.core.routing import Routing
from cgtwist.errors import InvalidName
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.store import AccountStore
from tests.storage.dbcase import DatabaseCase, SpyArgon2

MAIN = "example.com"


class ParseLoginTests(unittest.TestCase):
    def test_forms(self) -> None:
        """user@domain, user%domain, user%domain@main and a bare name all name one account."""
        cases = {
            "alice@example.org": ("alice", "example.org"),
            "Alice@Example.ORG": ("alice", "example.org"),
            "alice%example.org": ("alice", "example.org"),
            "alice%example.org@example.com": ("alice", "example.org"),
            "alice%example.org@EXAMPLE.COM": ("alice", "example.org"),
            "alice": ("alice", MAIN),
            " alice ": ("alice", MAIN),
            "alice@example.com": ("alice", MAIN),
            "first.last@example.org.": ("first.last", "example.org"),
        }
        for login, want in cases.items():
            self.assertEqual(parse_login(login, MAIN), want, login)

    def test_invalid(self) -> None:
        """Empty, malformed, path-like, injected or oversized names are refused."""
        for login in (
            "",
            "@",
            "@example.org",
            "alice@",
            "a b",
            "alice@exa mple.org",
            "../x",
            "a/b@example.org",
            "alice%",
            "%example.org",
            "alice%x@other.org",
            "' OR 1=1--",
            "x\x00y",
            "a\r\nb",
            "a" * 65,
            "a@" + "b" * 300,
            "alice@../etc",
        ):
            self.assertRaises(InvalidName, parse_login, login, MAIN)


class FailingStore:
    """A store whose database is locked."""

    main_domain = MAIN

    def verify_password(self, name: str, domain: str, password: Any) -> defer.Deferred[Any]:
        return defer.fail(sqlite3.OperationalError("database is locked"))


class AccountCheckerTests(DatabaseCase):
    async def setUpStore(self) -> AccountStore:
        store = await self.open_store(MAIN)
        await store.bootstrap({"CGTWIST_POSTMASTER_PASSWORD": "pm-pass"})
        await store.add_domain("example.org")
        await store.add_account("alice", MAIN, "alice-pw")
        await store.add_account("bob", "example.org", "bob-pw", services=["mail", "imap"])
        await store.add_account("off", MAIN, "off-pw", enabled=False)
        await store.add_alias("info", MAIN, "bob@example.org")
        return store

    async def _login(self, checker: AccountChecker, user: Any, password: Any) -> str:
        return await checker.requestAvatarId(UsernamePassword(user, password))

    async def _refused(self, checker: AccountChecker, user: Any, password: Any) -> str:
        try:
            await self._login(checker, user, password)
        except UnauthorizedLogin as e:
            return str(e)
        self.fail(f"{user!r} logged in")

    async def test_login_forms(self) -> None:
        """Every login form gives the same lower-case avatar id "name@domain"."""
        checker = AccountChecker(await self.setUpStore())
        for user in ("alice", "ALICE", "alice@example.com", "alice%example.com"):
            self.assertEqual(await self._login(checker, user, "alice-pw"), "alice@example.com")
        for user in ("bob@example.org", "bob%example.org", "Bob%Example.org@example.com"):
            self.assertEqual(await self._login(checker, user, "bob-pw"), "bob@example.org")
        self.assertEqual(
            await self._login(checker, "postmaster", "pm-pass"), "postmaster@example.com"
        )

    async def test_bytes_credentials(self) -> None:
        """Protocols hand over bytes (SMTP AUTH, IMAP LOGIN); they work like text."""
        checker = AccountChecker(await self.setUpStore())
        self.assertEqual(await self._login(checker, b"alice", b"alice-pw"), "alice@example.com")
        await self._refused(checker, b"\xff\xfe", b"alice-pw")
        await self._refused(checker, b"alice", b"\xff")

    async def test_alias_logs_in_as_target(self) -> None:
        """An alias can be used as a login name (COMMUNIGATE.md a.1) and names its target."""
        checker = AccountChecker(await self.setUpStore())
        self.assertEqual(await self._login(checker, "info", "bob-pw"), "bob@example.org")

    async def test_refusals_look_alike(self) -> None:
        """Wrong password, unknown user, disabled account and pbx get the same refusal."""
        store = await self.setUpStore()
        spy = SpyArgon2(store._hasher)
        checker = AccountChecker(store)
        replies = set()
        for user, password in (
            ("alice", "wrong"),
            ("ghost", "alice-pw"),
            ("alice@nowhere.org", "alice-pw"),
            ("off", "off-pw"),
            ("pbx", ""),
            ("pbx", "x"),
            ("../x", "y"),
            ("", ""),
        ):
            before = len(spy.verified)
            replies.add(await self._refused(checker, user, password))
            self.assertEqual(len(spy.verified) - before, 1, user)
        self.assertEqual(len(replies), 1)

    async def test_service_restriction(self) -> None:
        """A checker for one service refuses accounts without that service enabled."""
        store = await self.setUpStore()
        self.assertEqual(
            await self._login(AccountChecker(store, "imap"), "bob@example.org", "bob-pw"),
            "bob@example.org",
        )
        await self._refused(AccountChecker(store, "pop"), "bob@example.org", "bob-pw")

    async def test_roaming_off_restricts_logins_to_client_ips(self) -> None:
        """CommuniGate's Roaming: bob (no 'roaming' service) may log in only from a Client IP;
        alice (all services) from anywhere. The refusal looks like a wrong password."""
        from cgtwist.core.auth import PeerCredentials

        store = await self.setUpStore()
        checker = AccountChecker(store, is_client_ip=lambda ip: ip == "192.0.2.7")
        login = checker.requestAvatarId
        self.assertEqual(
            await login(PeerCredentials(b"bob@example.org", b"bob-pw", "192.0.2.7")),
            "bob@example.org",
        )
        try:
            await login(PeerCredentials(b"bob@example.org", b"bob-pw", "198.51.100.1"))
        except UnauthorizedLogin:
            pass
        else:
            self.fail("bob logged in from outside the Client IPs")
        self.assertEqual(
            await login(PeerCredentials(b"alice", b"alice-pw", "198.51.100.1")), "alice@example.com"
        )

    async def test_store_failure_is_temporary(self) -> None:
        """A store that cannot answer gives AuthUnavailable (454 4.7.0), never a refusal."""
        checker = AccountChecker(FailingStore())  # type: ignore[arg-type]
        try:
            await self._login(checker, "alice", "pw")
        except AuthUnavailable as e:
            self.assertEqual(e.reply(), "454 4.7.0 Temporary authentication failure")
            self.assertTrue(e.temporary)
            self.assertIn("locked", e.detail)
        else:
            self.fail("no AuthUnavailable")
        self.flushLoggedErrors(sqlite3.OperationalError)

    async def test_portal(self) -> None:
        """The checker plugs into a twisted.cred Portal as SMTP, POP3 and IMAP use it."""
        from twisted.cred.portal import IRealm, Portal
        from zope.interface import Interface, implementer

        class IThing(Interface):
            pass

        @implementer(IRealm)
        class Realm:
            def requestAvatar(self, avatar_id: str, mind: Any, *interfaces: Any) -> Any:
                return IThing, avatar_id, lambda: None

        portal = Portal(Realm(), [AccountChecker(await self.setUpStore())])
        _, avatar, _ = await portal.login(UsernamePassword(b"alice", b"alice-pw"), None, IThing)
        self.assertEqual(avatar, "alice@example.com")


class AccessRouteTests(AccountCheckerTests):
    """Login names go through the Router's ``Access:`` records and aliases (COMMUNIGATE.md
    a.1), the same resolution ``router test --access`` prints."""

    TABLE = "Access:<login-*> = *\nAccess:<boss@example.com> = bob@example.org\n<fwd> = x@far.dom\n"

    async def checker(self, table: str = TABLE) -> tuple[AccountChecker, Any]:
        store = await self.setUpStore()
        routing = Routing(store, SettingsHolder(Settings({"router.table": table})), MAIN)
        return AccountChecker(store, router=routing), store

    async def test_access_record_names_the_account(self) -> None:
        checker, _ = await self.checker()
        self.assertEqual(await self._login(checker, "login-alice", "alice-pw"), "alice@example.com")
        self.assertEqual(
            await self._login(checker, "login-alice@example.com", "alice-pw"), "alice@example.com"
        )
        self.assertEqual(await self._login(checker, "boss", "bob-pw"), "bob@example.org")
        # the ordinary forms and aliases still work
        self.assertEqual(await self._login(checker, "alice", "alice-pw"), "alice@example.com")
        self.assertEqual(await self._login(checker, "info", "bob-pw"), "bob@example.org")

    async def test_names_routed_elsewhere_are_refused_like_a_wrong_password(self) -> None:
        checker, store = await self.checker()
        spy = SpyArgon2(store._hasher)
        replies = {
            await self._refused(checker, "fwd", "x"),
            await self._refused(checker, "login-ghost", "alice-pw"),
            await self._refused(checker, "login-alice", "wrong"),
        }
        self.assertEqual(len(replies), 1)
        self.assertEqual(len(spy.verified), 3)  # one hash each: the cost reveals nothing

    async def test_a_broken_table_is_a_temporary_failure(self) -> None:
        checker, _ = await self.checker("this is not a table")
        with self.assertRaises(AuthUnavailable):
            await self._login(checker, "alice", "alice-pw")
        self.flushLoggedErrors()
