"""Sender ownership (RELIABILITY.md #44): which MAIL FROM and From: an authenticated account
may use, through BasicPolicy over the real Routing (cgtwist.core.senders, cgtwist.core.policy)."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.trial import unittest

from cgtwist.core.policy import BasicPolicy
from cgtwist.core.routing import Routing
from cgtwist.core.senders import header_from_addresses
from cgtwist.errors import MailError
from cgtwist.settings import Settings, SettingsHolder, validate
from cgtwist.types import Account, Envelope, SessionInfo
from tests.core.test_routing import MAIN, FakeStore


class SettingsStore(FakeStore):
    """The routing test store plus account settings (``admin``, ``smtp.send_as``)."""

    def __init__(self) -> None:
        super().__init__()
        self.accounts |= {"postmaster@company.com"}
        self.account_settings: dict[str, dict[str, Any]] = {
            "postmaster@company.com": {"admin": True},
            "bob@company.com": {"smtp.send_as": "team@partner.com, news-*@company.com"},
        }

    def get_account(self, name: str, domain: str) -> defer.Deferred[Optional[Account]]:
        d = super().get_account(name, domain)

        def with_settings(account: Optional[Account]) -> Optional[Account]:
            if account is None:
                return None
            return Account(
                account.name,
                account.domain,
                settings=self.account_settings.get(account.address, {}),
            )

        return d.addCallback(with_settings)


def session(account: Optional[str]) -> SessionInfo:
    return SessionInfo(
        session_id="s1",
        peer_ip="203.0.113.9",
        peer_port=1,
        local_ip="198.51.100.1",
        local_port=587,
        account=account,
    )


MESSAGE = b"From: %s\r\nTo: x@far.dom\r\nSubject: hi\r\n\r\nFrom: body@far.dom\r\n"


class SenderOwnershipTests(unittest.TestCase):
    def make(self, table: str = "", **overrides: Any) -> BasicPolicy:
        self.store = SettingsStore()
        self.settings = SettingsHolder(Settings(dict(overrides, **{"router.table": table})))
        return BasicPolicy(
            Routing(self.store, self.settings, MAIN), self.settings, accounts=self.store
        )  # type: ignore[arg-type]

    def mail(self, policy: BasicPolicy, account: Optional[str], sender: str) -> Any:
        out: list[Any] = []
        policy.mail_from(session(account), sender, {}).addBoth(out.append)
        return out[0]

    def refused(self, policy: BasicPolicy, account: str, sender: str) -> str:
        result = self.mail(policy, account, sender)
        self.assertTrue(
            getattr(result, "check", None) and result.check(MailError), (sender, result)
        )
        return str(result.value.reply())

    def test_foreign_sender_refused(self) -> None:
        """alice, authenticated, may not use bob's address (or anyone else's): 553 5.7.1."""
        policy = self.make()
        self.assertEqual(
            self.refused(policy, "alice@company.com", "bob@company.com"),
            "553 5.7.1 <bob@company.com>: Sender address rejected: not owned by alice@company.com",
        )
        self.assertEqual(self.refused(policy, "alice@company.com", "ceo@far.dom")[:9], "553 5.7.1")
        self.assertEqual(
            self.refused(policy, "alice@company.com", "nobody@company.com")[:9], "553 5.7.1"
        )

    def test_own_addresses_allowed(self) -> None:
        """Its own address (any case), its aliases (chains too), its domain's aliases and the
        null sender are the account's."""
        policy = self.make()
        for sender in [
            "alice@company.com",
            "Alice@Company.COM",
            "al@company.com",
            "boss@company.com",
            "",
        ]:
            self.assertIsNone(self.mail(policy, "alice@company.com", sender), sender)
        self.assertIsNone(self.mail(policy, "carol@other.dom", "carol@alias.dom"))

    def test_router_records_allowed(self) -> None:
        """An address the Router sends to the account (a Router record) is the account's."""
        policy = self.make("<sales@company.com> = alice@company.com\n")
        self.assertIsNone(self.mail(policy, "alice@company.com", "sales@company.com"))
        self.assertEqual(self.refused(policy, "bob@company.com", "sales@company.com")[:3], "553")

    def test_send_as_patterns(self) -> None:
        """smtp.send_as on the account (bob's) or on the server (everyone's) allows more."""
        policy = self.make(**{"smtp.send_as": "*@lists.company.com"})
        self.assertIsNone(self.mail(policy, "bob@company.com", "team@partner.com"))
        self.assertIsNone(self.mail(policy, "bob@company.com", "News-Weekly@company.com"))
        self.assertIsNone(self.mail(policy, "alice@company.com", "dev@lists.company.com"))
        self.assertEqual(self.refused(policy, "alice@company.com", "team@partner.com")[:3], "553")

    def test_administrator_sends_as_its_domain(self) -> None:
        """An account with the admin flag (postmaster) may use any address of its own domain,
        not of another."""
        policy = self.make()
        for sender in ["bob@company.com", "no-reply@company.com"]:
            self.assertIsNone(self.mail(policy, "postmaster@company.com", sender), sender)
        self.assertEqual(
            self.refused(policy, "postmaster@company.com", "carol@other.dom")[:3], "553"
        )

    def test_unauthenticated_and_switched_off(self) -> None:
        """Unauthenticated sessions are not asked (relaying rules cover them); with
        smtp.restrict_sender off anything goes."""
        self.assertIsNone(self.mail(self.make(), None, "bob@company.com"))
        policy = self.make(**{"smtp.restrict_sender": False})
        self.assertIsNone(self.mail(policy, "alice@company.com", "bob@company.com"))

    def test_store_trouble_is_temporary(self) -> None:
        """When the store cannot answer, the client retries (451), it is never refused."""
        policy = self.make()
        self.store.broken = True
        result = self.mail(policy, "alice@company.com", "bob@company.com")
        self.assertEqual(result.value.code, 451)
        self.flushLoggedErrors()


class FromHeaderTests(unittest.TestCase):
    def make(self, on: bool = True) -> BasicPolicy:
        self.store = SettingsStore()
        settings = SettingsHolder(Settings({"smtp.check_from_header": on}))
        return BasicPolicy(Routing(self.store, settings, MAIN), settings, accounts=self.store)  # type: ignore[arg-type]

    def check(
        self, policy: BasicPolicy, message: bytes, account: Optional[str] = "alice@company.com"
    ) -> Any:
        out: list[Any] = []
        policy.check_message(session(account), Envelope(sender=""), message).addBoth(out.append)
        return out[0]

    def test_off_by_default(self) -> None:
        """Out of the box only the envelope sender is checked."""
        policy = self.make(on=False)
        self.assertFalse(Settings()["smtp.check_from_header"])
        self.assertIsNone(self.check(policy, MESSAGE % b"bob@company.com"))

    def test_foreign_from_refused(self) -> None:
        """With the check on, a From: the account does not own gets 550 5.7.1."""
        result = self.check(self.make(), MESSAGE % b'"Bob" <bob@company.com>')
        self.assertEqual(
            result.value.reply(),
            "550 5.7.1 From: header address rejected: not owned by alice@company.com",
        )

    def test_own_from_allowed(self) -> None:
        policy = self.make()
        for value in [
            b"alice@company.com",
            b'"Alice A." <Alice@company.com>',
            b"Al\r\n <al@company.com>",
        ]:
            self.assertIsNone(self.check(policy, MESSAGE % value), value)
        self.assertIsNone(self.check(policy, b"Subject: no from\r\n\r\nbody\r\n"))
        self.assertIsNone(self.check(policy, MESSAGE % b"bob@company.com", account=None))

    def test_ambiguous_from_refused(self) -> None:
        """Two From: fields, or one of the mailboxes foreign, is refused."""
        policy = self.make()
        two = b"From: alice@company.com\r\nFrom: bob@company.com\r\n\r\nx\r\n"
        self.assertEqual(self.check(policy, two).value.code, 550)
        obsolete = b"From: alice@company.com\r\nfrom \t: bob@company.com\r\n\r\nx\r\n"
        self.assertEqual(self.check(policy, obsolete).value.code, 550)
        self.assertEqual(self.check(policy, b"FROM : bob@company.com\r\n\r\nx\r\n").value.code, 550)
        self.assertEqual(
            self.check(policy, MESSAGE % b"alice@company.com, bob@company.com").value.code, 550
        )


class ParsingTests(unittest.TestCase):
    def test_header_from_addresses(self) -> None:
        self.assertEqual(header_from_addresses(b"From: A <a@x.example>\r\n\r\n"), ["a@x.example"])
        self.assertEqual(
            header_from_addresses(b"from:\r\n\tB <b@x.example>,\r\n c@y.example\r\n\r\n"),
            ["b@x.example", "c@y.example"],
        )
        self.assertEqual(header_from_addresses(b"Subject: x\r\n\r\nFrom: a@b.example\r\n"), [])
        self.assertIsNone(header_from_addresses(b"From: undisclosed\r\n\r\n"))
        # RFC 5322 §4.5.3: the obsolete 'From :' is a From field; two of them cannot be told.
        self.assertEqual(header_from_addresses(b"From \t: a@b.example\r\n\r\n"), ["a@b.example"])
        self.assertIsNone(header_from_addresses(b"From: a@b.example\r\nFROM : c@d.example\r\n\r\n"))
        self.assertIsNone(header_from_addresses(b"X: " + b"y" * 300000 + b"\r\n\r\n"))
        self.assertIsNone(header_from_addresses(b"From: " + b"a" * 9000 + b"@x.example\r\n\r\n"))

    def test_send_as_setting_is_validated(self) -> None:
        """A value the rule could not use is refused before it is stored."""
        self.assertEqual(
            validate("smtp.send_as", "*@x.example, bob@y.example"), "*@x.example, bob@y.example"
        )
        for bad in ["bob", "<bob@x.example>", "a b@x.example", 42]:
            with self.assertRaises(ValueError):
                validate("smtp.send_as", bad)
