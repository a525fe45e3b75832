"""LOCAL delivery and the storage quota (issue 14): a message that fits is stored however near
the limit, one that does not is deferred with 4.2.2 and, once it has waited quota.grace
seconds, fails with 5.2.2 (cgtwist.delivery.local, cgtwist.delivery.localquota)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Optional

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cgtwist import account_settings
from cgtwist.account_settings import Effective
from cgtwist.delivery import localquota
from cgtwist.delivery.local import LocalDelivery
from cgtwist.delivery.localquota import GraceClock
from cgtwist.mailstore.quota import Usage, UsageBook, scan_usage
from cgtwist.types import Envelope, LocalDecision, Recipient
from tests.delivery.test_local import FakeNotifier, FakeStore, _capture_log

DATA = b"From: a@example.org\r\nSubject: q\r\n\r\n" + b"x" * 400 + b"\r\n"
HEAD = len(b"Return-Path: <alice@example.org>\r\nDelivered-To: bob@example.com\r\n")
SIZE = HEAD + len(DATA)  # what one delivery stores


class Limits:
    """The account settings source (cgtwist.core.account_limits.AccountLimits)."""

    def __init__(self) -> None:
        self.own: dict[str, object] = {}

    def effective(self, address: str) -> defer.Deferred[Optional[Effective]]:
        return defer.succeed(account_settings.effective({}, {}, self.own))


def inline(fn: Any, *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn, *args)


class GraceClockTests(unittest.TestCase):
    def test_counts_from_the_first_deferral_of_each_message(self) -> None:
        clock = task.Clock()
        grace = GraceClock(clock.seconds, max_kept=2)
        self.assertEqual(grace.waited("m1", "Bob@example.com"), 0)
        clock.advance(30)
        self.assertEqual(grace.waited("m1", "bob@example.com"), 30)
        self.assertEqual(grace.waited("m2", "bob@example.com"), 0)  # its own clock
        grace.done("m1", "bob@example.com")
        self.assertEqual(grace.waited("m1", "bob@example.com"), 0)  # starts again
        grace.waited("m3", "bob@example.com")
        self.assertEqual(len(grace), 2)  # bounded: the oldest went


class LocalQuotaTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="cgtwist-quota-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.clock = task.Clock()
        self.limits = Limits()
        self.usage = UsageBook(inline, self.clock.seconds)
        self.agent = LocalDelivery(
            self.base,
            FakeStore("bob@example.com"),
            FakeNotifier(),
            reactor=reactor,
            clock=self.clock,
            hostname="mx.example",
            limits=self.limits,
            usage=self.usage,
        )
        self.env = Envelope(sender="alice@example.org", recipients=[])
        self.log = _capture_log(self)

    def maildir(self) -> str:
        return os.path.join(self.base, "Domains", "example.com", "bob", "Maildir")

    @defer.inlineCallbacks
    def attempt(self, msg_id: str, data: bytes = DATA) -> Any:
        r = Recipient("bob@example.com", route="LOCAL(bob@example.com)")
        out = yield self.agent.deliver(msg_id, self.env, data, [r])
        return out[0]

    @defer.inlineCallbacks
    def test_fits_then_deferred_then_bounced(self) -> None:
        """Two messages fit exactly; the third is deferred with 4.2.2 (logged) until it has
        waited quota.grace, then fails with 5.2.2; the Maildir holds the two."""
        self.limits.own = {"quota.storage": 2 * SIZE, "quota.grace": 600}
        for i in range(2):
            r = yield self.attempt(f"m{i}")
            self.assertEqual(r.state, "delivered", r.detail)
        r = yield self.attempt("m2")
        self.assertEqual((r.state, r.detail[:9]), ("pending", "452 4.2.2"))
        self.assertTrue(any("deferred: STORAGE quota reached" in line for line in self.log))
        self.clock.advance(599)
        r = yield self.attempt("m2")
        self.assertEqual(r.state, "pending")
        self.clock.advance(1)
        r = yield self.attempt("m2")
        self.assertEqual((r.state, r.detail[:9]), ("failed", "552 5.2.2"))
        self.assertEqual(scan_usage(self.maildir()), Usage(2 * SIZE, 2))
        self.assertEqual(self.usage.known("bob@example.com"), Usage(2 * SIZE, 2))

    @defer.inlineCallbacks
    def test_room_made_meanwhile_is_used(self) -> None:
        """A deferred message is delivered once the owner made room (the count is checked
        against the disk before a refusal older than VERIFY_AFTER)."""
        self.limits.own = {"quota.messages": 1, "quota.grace": 3600}
        r = yield self.attempt("m0")
        self.assertEqual(r.state, "delivered")
        r = yield self.attempt("m1")
        self.assertEqual(r.state, "pending")
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(self.maildir(), sub)):
                os.unlink(os.path.join(self.maildir(), sub, name))  # removed by hand
        self.clock.advance(UsageBook.VERIFY_AFTER + 1)
        r = yield self.attempt("m1")
        self.assertEqual(r.state, "delivered", r.detail)

    @defer.inlineCallbacks
    def test_no_limit_counts_without_scanning(self) -> None:
        """Without a limit nothing is refused and no delivery scans the Maildir; a known
        count still follows what LOCAL stores."""
        r = yield self.attempt("m0")
        self.assertEqual(r.state, "delivered")
        self.assertIsNone(self.usage.known("bob@example.com"))
        usage = yield self.usage.usage("bob@example.com", self.maildir())
        self.assertEqual(usage, Usage(SIZE, 1))
        yield self.attempt("m1")
        self.assertEqual(self.usage.known("bob@example.com"), Usage(2 * SIZE, 2))

    @defer.inlineCallbacks
    def test_no_limit_deliveries_reach_another_process_count(self) -> None:
        """Without a limit LOCAL still tells the account's usage file what it stores, so
        another process (an IMAP worker: its own UsageBook) that counted the account sees
        each delivery at its next look, not at its hourly recount."""
        worker = UsageBook(inline, self.clock.seconds)
        yield self.attempt("m0")
        seen = yield worker.usage("bob@example.com", self.maildir())
        self.assertEqual(seen, Usage(SIZE, 1))
        yield self.attempt("m1")
        seen = yield worker.usage("bob@example.com", self.maildir())
        self.assertEqual(seen, Usage(2 * SIZE, 2))

    @defer.inlineCallbacks
    def test_rules_store_in_is_limited_and_counted(self) -> None:
        """A Rule's "Store in" folder is the same account: what fits is stored there and
        counted, what does not is deferred like INBOX mail."""
        self.agent.rules = lambda account, envelope, data: LocalDecision(folder="Lists")
        self.limits.own = {"quota.messages": 1}
        r = yield self.attempt("m0")
        self.assertEqual((r.state, r.detail), ("delivered", "250 2.0.0 delivered to Lists"))
        self.assertEqual(scan_usage(self.maildir()), Usage(SIZE, 1))
        self.assertEqual(self.usage.known("bob@example.com"), Usage(SIZE, 1))
        r = yield self.attempt("m1")
        self.assertEqual((r.state, r.detail[:9]), ("pending", "452 4.2.2"))

    @defer.inlineCallbacks
    def test_failed_write_gives_the_room_back(self) -> None:
        """A message that was counted but could not be stored is taken off the count."""
        self.limits.own = {"quota.storage": 10 * SIZE}
        yield self.attempt("m0")
        tmp = os.path.join(self.maildir(), "tmp")
        os.rmdir(tmp)
        with open(tmp, "wb"):  # tmp/ unusable: the write fails (also as root)
            pass
        r = yield self.attempt("m1")
        self.assertEqual(r.state, "pending")
        self.assertEqual(self.usage.known("bob@example.com"), Usage(SIZE, 1))
        self.flushLoggedErrors()

    def restart(self) -> None:
        """A restarted server: a new LocalDelivery, nothing in memory. The grace clock's start
        is kept where the queue keeps each recipient's state, the deferral's detail, which
        it journals with the attempt and gives back to the next attempt (``again``)."""
        self.usage = UsageBook(inline, self.clock.seconds)
        self.agent = LocalDelivery(
            self.base,
            FakeStore("bob@example.com"),
            FakeNotifier(),
            reactor=reactor,
            clock=self.clock,
            hostname="mx.example",
            limits=self.limits,
            usage=self.usage,
        )

    @defer.inlineCallbacks
    def again(self, msg_id: str, last: Recipient) -> Any:
        """The next attempt, with the recipient as the queue kept it (its last detail)."""
        r = Recipient("bob@example.com", route="LOCAL(bob@example.com)", detail=last.detail)
        out = yield self.agent.deliver(msg_id, self.env, DATA, [r])
        return out[0]

    @defer.inlineCallbacks
    def test_bounces_when_the_original_grace_ends_after_a_restart(self) -> None:
        """Deferred at T, the server restarts at T+500 of a 600 s grace: the message is
        still deferred just before T+600 and fails with 5.2.2 at T+600, not at T+1100."""
        self.clock.advance(1_780_000_000)
        self.limits.own = {"quota.messages": 1, "quota.grace": 600}
        r = yield self.attempt("m0")
        self.assertEqual(r.state, "delivered")
        r = yield self.attempt("m1")
        self.assertEqual((r.state, r.detail[:9]), ("pending", "452 4.2.2"))
        self.clock.advance(500)
        self.restart()
        r = yield self.again("m1", r)
        self.assertEqual(r.state, "pending", r.detail)
        self.assertTrue(any("failing after 100 s more" in line for line in self.log))
        self.clock.advance(99)
        r = yield self.again("m1", r)
        self.assertEqual(r.state, "pending", r.detail)
        self.clock.advance(1)
        r = yield self.again("m1", r)
        self.assertEqual((r.state, r.detail[:9]), ("failed", "552 5.2.2"))

    @defer.inlineCallbacks
    def test_other_deferrals_keep_the_clock(self) -> None:
        """Over quota, then the account store is down for an attempt (451), then a restart:
        the 451's detail still names the clock's start, so the wait is not begun again."""
        self.clock.advance(1_780_000_000)
        self.limits.own = {"quota.messages": 1, "quota.grace": 600}
        yield self.attempt("m0")
        r = yield self.attempt("m1")
        self.assertEqual(r.state, "pending")
        self.clock.advance(300)
        self.agent.store.broken = True
        self.agent.forget()
        r = yield self.again("m1", r)
        self.assertEqual((r.state, r.detail[:9]), ("pending", "451 4.3.0"))
        self.assertIn("(over quota since 2026-05-28T20:26:40Z)", r.detail)
        self.clock.advance(300)
        self.restart()
        r = yield self.again("m1", r)
        self.assertEqual((r.state, r.detail[:9]), ("failed", "552 5.2.2"))

    def test_marks_are_read_back(self) -> None:
        """The start is named in whole UTC seconds and read back; the earliest of several
        recipients' counts; a detail without one names none."""
        detail = localquota.deferral("STORAGE", 1_780_000_000.7)
        self.assertTrue(detail.startswith("452 4.2.2 mailbox full"), detail)
        later = localquota.marked("451 4.3.0 account store unavailable", 1_780_000_100)
        self.assertEqual(localquota.since_in([later, detail]), 1_780_000_000)
        self.assertEqual(localquota.marked(detail, 5), localquota.deferral("STORAGE", 5))
        self.assertIsNone(localquota.since_in(["452 4.2.2 mailbox full", ""]))
