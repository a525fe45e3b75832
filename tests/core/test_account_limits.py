"""A local recipient's maximum message size (mail.max_message_size, inherited server ->
domain -> account) refused at RCPT for a declared SIZE, after DATA otherwise
(cgtwist.core.account_limits through BasicPolicy)."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.core.account_limits import AccountLimits
from cgtwist.core.policy import BasicPolicy
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, Recipient
from tests.core.test_policy import ROUTES, FakeRouter, session


class ScopedAccounts:
    """get_scoped_settings as AccountStore answers it; counts the reads."""

    def __init__(self) -> None:
        self.domains: dict[str, dict[str, object]] = {"ours.example": {}}
        self.accounts: dict[str, dict[str, object]] = {"alice@ours.example": {}}
        self.reads = 0
        self.broken = False
        self.held: Optional[list[defer.Deferred[Any]]] = None  # answers the test releases
        self.services = frozenset({"mail", "pop", "imap", "relay", "roaming"})

    def get_scoped_settings(
        self, name: str, domain: str
    ) -> defer.Deferred[Optional[tuple[dict[str, object], dict[str, object], frozenset[str]]]]:
        self.reads += 1
        if self.broken:
            return defer.fail(RuntimeError("db down"))
        own = self.accounts.get(f"{name}@{domain}")
        answer = None if own is None else (self.domains[domain], own, self.services)
        if self.held is not None:
            d: defer.Deferred[Any] = defer.Deferred()
            self.held.append(d)
            d.addCallback(lambda _: answer)
            return d
        return defer.succeed(answer)


class PolicyCase(unittest.TestCase):
    """BasicPolicy with AccountLimits over ScopedAccounts, on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = ScopedAccounts()
        self.settings = SettingsHolder()
        self.limits = AccountLimits(self.store, self.settings, now=self.clock.seconds)
        self.router = FakeRouter(ROUTES)
        self.policy = BasicPolicy(self.router, self.settings, limits=self.limits)

    def rcpt(self, rcpt: str, size: str = "") -> Any:
        out: list[Any] = []
        params = {"SIZE": size} if size else {}
        self.policy.rcpt_to(session(), "s@far.example", rcpt, params).addBoth(out.append)
        return out[0]

    def data(self, size: int, *rcpts: str) -> Any:
        out: list[Any] = []
        env = Envelope("s@far.example", [Recipient(r) for r in rcpts])
        self.policy.check_message(session(), env, b"x" * size).addBoth(out.append)
        return out[0]


class SizeTests(PolicyCase):
    def test_domain_limit_refuses_a_larger_declared_size_at_rcpt(self) -> None:
        self.store.domains["ours.example"]["mail.max_message_size"] = 1000
        self.assertEqual(self.rcpt("alice@ours.example", "1000"), "alice@ours.example")
        self.assertEqual(
            self.rcpt("alice@ours.example", "3739").value.reply(),
            "552 5.3.4 Message size exceeds the limit of <alice@ours.example> (1000 octets)",
        )
        # other routes are not this account's business
        self.assertEqual(self.rcpt("list@ours.example", "3739"), "list@ours.example")

    def test_a_recipient_is_routed_once_at_rcpt(self) -> None:
        """The SIZE check uses the route RCPT already has: one Router question a recipient."""
        self.store.domains["ours.example"]["mail.max_message_size"] = 1000
        self.assertEqual(self.rcpt("alice@ours.example", "3739").value.code, 552)
        self.assertEqual(self.router.asked, [("alice@ours.example", "mail")])

    def test_without_size_the_limit_applies_after_data(self) -> None:
        self.store.domains["ours.example"]["mail.max_message_size"] = 1000
        self.assertEqual(self.rcpt("alice@ours.example"), "alice@ours.example")
        self.assertEqual(self.data(3739, "alice@ours.example").value.code, 552)
        self.assertIsNone(self.data(1000, "alice@ours.example"))
        self.flushLoggedErrors()

    def test_after_data_the_accounts_read_at_rcpt_answer(self) -> None:
        """The size check after DATA uses the account RCPT read moments ago (no store read);
        once that answer has expired it reads the account again, with the same verdict."""
        self.store.domains["ours.example"]["mail.max_message_size"] = 1000
        self.assertEqual(self.rcpt("alice@ours.example"), "alice@ours.example")
        self.assertEqual(self.data(3739, "alice@ours.example").value.code, 552)
        self.assertIsNone(self.data(1000, "alice@ours.example"))
        self.assertEqual(self.store.reads, 1)
        self.clock.advance(AccountLimits.TTL + 1)
        self.assertEqual(self.data(3739, "alice@ours.example").value.code, 552)
        self.assertEqual(self.store.reads, 2)
        self.store.held = []  # the next read is not answered yet: the check waits for it
        self.clock.advance(AccountLimits.TTL + 1)
        out: list[Any] = []
        env = Envelope("s@far.example", [Recipient("alice@ours.example")])
        self.policy.check_message(session(), env, b"x" * 3739).addBoth(out.append)
        self.assertEqual(out, [])
        self.store.held[0].callback(None)
        self.assertEqual(out[0].value.code, 552)

    def test_account_overrides_domain_overrides_server(self) -> None:
        self.settings.replace(Settings({"account_defaults.mail.max_message_size": 500}))
        self.assertEqual(self.data(600, "alice@ours.example").value.code, 552)
        self.store.domains["ours.example"]["mail.max_message_size"] = 700
        self.settings.replace(Settings({"account_defaults.mail.max_message_size": 500}))
        self.assertIsNone(self.data(600, "alice@ours.example"))
        self.store.accounts["alice@ours.example"]["mail.max_message_size"] = 0
        self.settings.replace(Settings({"account_defaults.mail.max_message_size": 500}))
        self.assertIsNone(self.data(5000, "alice@ours.example"))

    def test_answers_are_cached_briefly_and_dropped_on_reload(self) -> None:
        self.rcpt("alice@ours.example", "10")
        self.rcpt("alice@ours.example", "10")
        self.assertEqual(self.store.reads, 1)
        self.clock.advance(AccountLimits.TTL + 1)
        self.rcpt("alice@ours.example", "10")
        self.assertEqual(self.store.reads, 2)
        self.settings.replace(Settings())
        self.rcpt("alice@ours.example", "10")
        self.assertEqual(self.store.reads, 3)

    def test_concurrent_recipients_of_one_account_read_once(self) -> None:
        """RCPTs to one account from many sessions at once (a burst) wait for the one store
        read in flight instead of each reading the account's settings."""
        self.store.held = []
        out: list[Any] = []
        for _ in range(3):
            self.policy.rcpt_to(session(), "s@far.example", "alice@ours.example", {}).addBoth(
                out.append
            )
        self.assertEqual(self.store.reads, 1)
        self.store.held[0].callback(None)
        self.assertEqual(out, ["alice@ours.example"] * 3)

    def test_a_store_failure_is_a_temporary_refusal(self) -> None:
        self.store.broken = True
        self.assertEqual(self.rcpt("alice@ours.example", "10").value.code, 451)
        self.flushLoggedErrors()


class MailServiceTests(PolicyCase):
    def test_mail_service_off_refuses_the_recipient(self) -> None:
        """CommuniGate's Mail service: off, the account receives nothing (550 5.2.1)."""
        self.assertEqual(self.rcpt("alice@ours.example"), "alice@ours.example")
        self.store.services = frozenset({"imap"})
        self.settings.replace(Settings())
        self.assertEqual(
            self.rcpt("alice@ours.example").value.reply(),
            "550 5.2.1 <alice@ours.example>: Mailbox disabled, not accepting mail",
        )
