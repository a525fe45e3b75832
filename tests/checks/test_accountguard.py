"""The per-account failure budget: guessing one account from many addresses is slowed, then
locked for a while; a Client IP's correct password still gets in; nothing reveals which
accounts exist."""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from cgtwist.checks.accountguard import AccountGuard
from cgtwist.core.auth import AccountChecker, PeerCredentials
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Account

CLIENT = "10.0.0.1"


class Store:
    """alice@example.com with password "right"; counts password checks."""

    main_domain = "example.com"

    def __init__(self) -> None:
        self.checks = 0

    def verify_password(self, name: str, domain: str, password: Any) -> defer.Deferred[Any]:
        self.checks += 1
        ok = (name, domain) == ("alice", "example.com") and password in (b"right", "right")
        return defer.succeed(
            Account("alice", "example.com", services=frozenset({"roaming"})) if ok else None
        )


class GuardTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.holder = SettingsHolder(Settings())
        self.guard = AccountGuard(self.clock, self.holder)

    def fail(self, secret: str, account: str = "alice@example.com") -> float:
        d = self.guard.failed(account, "192.0.2.1", secret)
        waited: list[float] = []
        d.addCallback(waited.append)
        self.clock.advance(20)  # longer than any delay, far shorter than the lock time
        return waited[0]

    def test_delay_grows_then_locks(self) -> None:
        """Delays 1, 2, 4, 8, 16 s (capped), and the 10th wrong password locks the account."""
        delays = []
        for i in range(10):
            self.assertFalse(self.guard.locked("alice@example.com"))
            delays.append(self.fail(f"guess{i}"))
        self.assertEqual(delays, [1, 2, 4, 8, 16, 16, 16, 16, 16, 16])
        self.assertTrue(self.guard.locked("alice@example.com"))
        self.assertFalse(self.guard.locked("bob@example.com"))

    def test_lock_expires(self) -> None:
        """After auth.account_lock_time the account is open again and starts from scratch."""
        self.holder.replace(
            Settings({"auth.account_max_failures": 2, "auth.account_lock_time": 60})
        )
        self.fail("a")
        self.fail("b")
        self.assertTrue(self.guard.locked("alice@example.com"))
        self.clock.advance(60)
        self.assertFalse(self.guard.locked("alice@example.com"))
        self.assertEqual(self.guard.failures("alice@example.com"), 0)

    def test_same_wrong_password_counts_once(self) -> None:
        """A phone retrying its old password does not lock its owner out."""
        for _ in range(30):
            self.fail("old-password")
        self.assertEqual(self.guard.failures("alice@example.com"), 1)
        self.assertFalse(self.guard.locked("alice@example.com"))

    def test_off(self) -> None:
        """auth.account_max_failures 0: no delay, no lock."""
        self.holder.replace(Settings({"auth.account_max_failures": 0}))
        self.assertEqual([self.fail(f"g{i}") for i in range(20)], [0] * 20)
        self.assertFalse(self.guard.locked("alice@example.com"))

    def test_memory_is_bounded(self) -> None:
        """Guessing at a million names keeps at most max_accounts entries."""
        guard = AccountGuard(self.clock, self.holder, max_accounts=100)
        for i in range(1000):
            guard.failed(f"user{i}@example.com", "192.0.2.1", "x")
        self.assertEqual(len(guard._accounts), 100)


class CheckerTests(unittest.TestCase):
    """The guard behind the one AccountChecker every protocol logs in through."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.holder = SettingsHolder(Settings())
        self.store = Store()
        self.checker = AccountChecker(
            self.store,
            is_client_ip=lambda ip: ip == CLIENT,  # type: ignore[arg-type]
            guard=AccountGuard(self.clock, self.holder),
        )
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self, user: str, password: str, ip: str) -> list[Any]:
        """Start a login; the list gets its result (avatar id or Failure) when it ends."""
        d = self.checker.requestAvatarId(PeerCredentials(user.encode(), password.encode(), ip))
        out: list[Any] = []
        d.addBoth(out.append)
        return out

    @staticmethod
    def outcome(out: list[Any]) -> str:
        if not out:
            return "pending"
        if isinstance(out[0], str):
            return "ok"
        out[0].trap(UnauthorizedLogin)
        return "refused"

    def login(self, user: str, password: str, ip: str) -> str:
        """'ok' or 'refused' once the clock has run out any delay."""
        out = self.start(user, password, ip)
        self.clock.advance(20)
        return self.outcome(out)

    def test_ten_addresses_guessing_one_account(self) -> None:
        """Ten IPs guessing alice's password over a minute: at most the budget (10) guesses are
        checked, later ones are refused without a check, the right password from a stranger
        is refused like a wrong one, and from a Client IP it still gets in."""
        ips = [f"192.0.2.{i}" for i in range(1, 11)]
        pending = []
        for round_ in range(8):  # 80 guesses in 60 s, the rate the issue measured
            for ip in ips:
                pending.append(self.start("alice@example.com", f"guess-{ip}-{round_}", ip))
            self.clock.advance(7.5)
        self.clock.advance(20)
        self.assertEqual({self.outcome(out) for out in pending}, {"refused"})
        self.assertEqual(self.store.checks, 10)
        self.assertEqual(self.login("alice@example.com", "right", "203.0.113.7"), "refused")
        self.assertEqual(self.login("alice", "right", CLIENT), "ok")
        texts = [e.get("log_format", "") for e in self.events]
        self.assertEqual(sum(t.startswith("auth account locked") for t in texts), 1)
        self.assertGreater(sum(t.startswith("auth refused") for t in texts), 60)

    def test_unknown_accounts_lock_alike(self) -> None:
        """A name that does not exist is locked exactly like one that does: no enumeration."""
        for i in range(10):
            self.login("nobody@example.com", f"g{i}", "192.0.2.1")
        checks = self.store.checks
        self.assertEqual(self.login("nobody@example.com", "g", "192.0.2.1"), "refused")
        self.assertEqual(self.store.checks, checks)  # locked: not even checked

    def test_client_ip_failures_do_not_count(self) -> None:
        """The office mistyping its password does not lock the account for everyone."""
        for i in range(20):
            self.assertEqual(self.login("alice", f"typo{i}", CLIENT), "refused")
        self.assertEqual(self.login("alice", "right", "203.0.113.7"), "ok")

    def test_delay_before_wrong_password_reply(self) -> None:
        """A wrong password's refusal waits the account's delay on the clock."""
        d = self.checker.requestAvatarId(PeerCredentials(b"alice", b"wrong", "192.0.2.1"))
        out: list[Any] = []
        d.addBoth(out.append)
        self.clock.advance(0.9)
        self.assertEqual(out, [])
        self.clock.advance(0.1)
        self.assertEqual(len(out), 1)
        out[0].trap(UnauthorizedLogin)
