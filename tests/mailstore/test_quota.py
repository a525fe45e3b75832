"""The mailbox usage count (cgtwist.mailstore.quota) and its upkeep by the mailstore: APPEND,
COPY, MOVE, EXPUNGE and folder deletion change it, a scan recounts it when unknown, stale or
found wrong, and APPEND or COPY that would exceed the quota store nothing."""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.trial import unittest

from cgtwist.account_settings import QuotaLimits
from cgtwist.mailstore import MailboxNotifier, MaildirAccount, provision, quota
from cgtwist.mailstore import maildir as md
from cgtwist.mailstore.account import MailboxError
from cgtwist.mailstore.mailbox import MaildirMailbox
from cgtwist.mailstore.quota import Usage, UsageBook, scan_usage, size_in_name

MSG = b"From: a@example.org\r\nSubject: q\r\n\r\n" + b"x" * 200 + b"\r\n"


def new_maildir(testcase: unittest.TestCase) -> str:
    path = os.path.join(os.path.abspath(testcase.mktemp()), "Maildir")
    provision(path)
    return path


class ScanTests(unittest.TestCase):
    def test_counts_every_folder_not_tmp_nor_deleted(self) -> None:
        """A scan counts the files of cur/ and new/ of INBOX and each folder; tmp/, dot
        files and a DELETE's folder on its way out are not mail the account keeps."""
        path = new_maildir(self)
        md.MaildirWriter("h").deliver(path, [b"a" * 100])  # LOCAL: size in the name
        md.deliver(os.path.join(path, ".Sent"), b"b" * 50)  # APPEND: no size in the name
        with open(os.path.join(path, "tmp", "partial"), "wb") as f:
            f.write(b"c" * 1000)
        with open(os.path.join(path, "cur", ".hidden"), "wb") as f:
            f.write(b"d" * 1000)
        gone = os.path.join(path, "cgtwist-deleted-00")
        md.ensure(gone)
        md.deliver(gone, b"e" * 1000)
        self.assertEqual(scan_usage(path), Usage(150, 2))

    def test_missing_maildir_keeps_nothing(self) -> None:
        self.assertEqual(scan_usage(os.path.join(self.mktemp(), "none")), Usage(0, 0))

    def test_size_in_name(self) -> None:
        self.assertEqual(size_in_name("1.M2P3Q4.h,S=1234"), 1234)
        self.assertEqual(size_in_name("1.M2P3Q4.h,S=1234,W=1300:2,S"), 1234)
        self.assertIsNone(size_in_name("1.M2P3Q4.h:2,S"))

    def test_kib_rounds_up(self) -> None:
        """RFC 9208 §5.1: STORAGE is in units of 1024 octets."""
        self.assertEqual([Usage(n, 0).kib for n in (0, 1, 1024, 1025)], [0, 1, 1, 2])


class BookTests(unittest.TestCase):
    """The count in memory: scans only when it must, one at a time per account."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.scans: list[defer.Deferred[Any]] = []
        self.disk = Usage(1000, 10)
        self.book = UsageBook(self.scan, self.clock.seconds)

    def scan(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """A scan the test finishes by hand, answering ``self.disk``; the usage file's other
        work (appending a change, dropping it) is done at once, as on a Maildir that cannot
        hold the file (this process's figure alone)."""
        if fn is not quota._look:
            return defer.succeed([] if fn is quota._append else None)
        d: defer.Deferred[Any] = defer.Deferred()
        self.scans.append(d)
        return d

    def room(self, *args: Any, **kw: Any) -> defer.Deferred[str]:
        return defer.ensureDeferred(self.book.room(*args, **kw))

    def finish(self) -> None:
        self.scans.pop(0).callback(quota._Seen(self.disk, True, "", "", 0, None, scanned=True))

    def test_unknown_is_scanned_once_for_all_callers(self) -> None:
        a = self.book.usage("Bob@example.com", "/nowhere")
        b = self.book.usage("bob@example.com", "/nowhere")
        self.assertEqual(len(self.scans), 1)
        self.finish()
        self.assertEqual(self.successResultOf(a), Usage(1000, 10))
        self.assertEqual(self.successResultOf(b), Usage(1000, 10))
        self.book.change("bob@example.com", 500, 1)
        self.assertEqual(
            self.successResultOf(self.book.usage("bob@example.com", "/")), Usage(1500, 11)
        )
        self.assertEqual(self.scans, [])  # no scan per use

    def test_stale_figure_is_counted_again(self) -> None:
        """Changes made behind the server's back (another program on the Maildir) are seen
        within RECOUNT_AFTER."""
        self.book.usage("bob@example.com", "/")
        self.finish()
        self.disk = Usage(10, 1)
        self.clock.advance(self.book.RECOUNT_AFTER + 1)
        d = self.book.usage("bob@example.com", "/")
        self.finish()
        self.assertEqual(self.successResultOf(d), Usage(10, 1))

    def test_negative_figure_is_forgotten(self) -> None:
        """A count that would go below zero is wrong: the next use scans."""
        self.book.usage("bob@example.com", "/")
        self.finish()
        self.book.change("bob@example.com", -5000, -1)
        self.assertIsNone(self.book.known("bob@example.com"))
        d = self.book.usage("bob@example.com", "/")
        self.assertEqual(len(self.scans), 1)
        self.finish()
        self.assertEqual(self.successResultOf(d), Usage(1000, 10))

    def test_change_during_a_scan_recounts_soon(self) -> None:
        """A change while a scan runs may or may not be in what it saw: the figure is taken
        and counted again SETTLE seconds later."""
        d = self.book.usage("bob@example.com", "/")
        self.book.change("bob@example.com", 100, 1)
        self.finish()
        self.successResultOf(d)
        self.clock.advance(self.book.SETTLE - 1)
        self.book.usage("bob@example.com", "/")
        self.assertEqual(self.scans, [])
        self.clock.advance(2)
        self.book.usage("bob@example.com", "/")
        self.assertEqual(len(self.scans), 1)

    def test_room(self) -> None:
        """What fits is allowed up to the limit exactly; a reservation counts at once; a
        refusal rests on a count no older than VERIFY_AFTER."""
        limits = QuotaLimits(storage=2000, messages=12)
        d = self.room("bob@example.com", "/", limits, 1000, 1, reserve=True)
        self.finish()
        self.assertEqual(self.successResultOf(d), "")  # 1000 + 1000 = the limit: fits
        self.assertEqual(self.book.known("bob@example.com"), Usage(2000, 11))
        d = self.room("bob@example.com", "/", limits, 1, 1)
        self.assertEqual(self.successResultOf(d), "STORAGE")  # the scan is fresh: no rescan
        self.assertEqual(self.scans, [])
        self.clock.advance(self.book.VERIFY_AFTER + 1)
        self.disk = Usage(0, 0)  # the user cleaned up with another program
        d = self.room("bob@example.com", "/", limits, 1, 1)
        self.finish()
        self.assertEqual(self.successResultOf(d), "")
        over = self.successResultOf(
            self.room("bob@example.com", "/", QuotaLimits(messages=1), 0, 1)
        )
        self.assertEqual(over, "")  # 0 kept + 1
        self.book.change("bob@example.com", 10, 1)
        over = self.successResultOf(
            self.room("bob@example.com", "/", QuotaLimits(messages=1), 10, 1)
        )
        self.assertEqual(over, "MESSAGE")

    def test_concurrent_reservations_share_the_room(self) -> None:
        """Deliveries waiting on one scan each see the others' reservations: of two that
        would each fit alone, one is refused (no overshoot under concurrency)."""
        limits = QuotaLimits(storage=1500)
        a = self.room("bob@example.com", "/", limits, 400, 1, reserve=True)
        b = self.room("bob@example.com", "/", limits, 400, 1, reserve=True)
        self.finish()
        self.assertEqual(
            sorted([self.successResultOf(a), self.successResultOf(b)]), ["", "STORAGE"]
        )
        self.assertEqual(self.book.known("bob@example.com"), Usage(1400, 11))

    def test_no_limit_never_counts(self) -> None:
        d = self.room("bob@example.com", "/", QuotaLimits(), 10**12, 1)
        self.assertEqual(self.successResultOf(d), "")
        self.assertEqual(self.scans, [])

    def test_failed_scan_reaches_every_caller(self) -> None:
        a = self.book.usage("bob@example.com", "/")
        b = self.book.usage("bob@example.com", "/")
        self.scans.pop().errback(OSError(13, "Permission denied"))
        self.failureResultOf(a, OSError)
        self.failureResultOf(b, OSError)
        self.flushLoggedErrors(OSError)
        self.book.usage("bob@example.com", "/")
        self.assertEqual(len(self.scans), 1)  # tried again at the next use


class MailstoreCountTests(unittest.TestCase):
    """The count kept by APPEND, COPY, MOVE, EXPUNGE and DELETE equals a fresh scan."""

    def setUp(self) -> None:
        self.path = new_maildir(self)
        self.limits = QuotaLimits()
        self.notifier = MailboxNotifier()  # disk work inline
        self.account = MaildirAccount(
            self.path,
            "bob@example.com",
            self.notifier,
            quota_limits=lambda: defer.succeed(self.limits),
        )

    def box(self, name: str = "INBOX") -> MaildirMailbox:
        box = self.successResultOf(self.account.select(name))
        assert box is not None
        self.addCleanup(box.close)
        return box

    def counted(self) -> Usage:
        return self.successResultOf(self.account.quota_usage())

    def assertCountIsTheDisk(self) -> None:
        self.assertEqual(self.notifier.usage.known("bob@example.com"), scan_usage(self.path))

    def test_count_follows_every_change(self) -> None:
        self.assertEqual(self.counted(), Usage(0, 0))
        inbox = self.box()
        self.successResultOf(inbox.append_all([(MSG, [], None), (MSG * 2, [], None)]))
        self.assertEqual(self.counted(), Usage(3 * len(MSG), 2))
        trash = self.box("Trash")
        self.successResultOf(inbox.copy_uids(inbox.uids, trash))
        self.assertEqual(self.counted(), Usage(6 * len(MSG), 4))
        self.assertCountIsTheDisk()
        self.successResultOf(trash.move_uids(trash.uids, self.box("Junk")))
        self.assertEqual(self.counted(), Usage(6 * len(MSG), 4))
        inbox.sync()  # the client hears of its messages: they can be flagged and expunged
        self.successResultOf(inbox.store(inbox_set(inbox), ["\\Deleted"], 1, True))
        status = inbox.requestStatus(["DELETED", "DELETED-STORAGE"])
        kib = -(-3 * len(MSG) // 1024)  # RFC 9208: in units of 1024 octets, as STORAGE
        self.assertEqual(status, {"DELETED": 2, "DELETED-STORAGE": kib})
        self.successResultOf(inbox.expunge())
        self.assertEqual(self.counted(), Usage(3 * len(MSG), 2))
        self.assertCountIsTheDisk()
        self.successResultOf(self.account.delete("Junk"))
        self.assertIsNone(self.notifier.usage.known("bob@example.com"))
        self.assertEqual(self.counted(), Usage(0, 0))  # recounted after the DELETE

    def test_append_over_quota_stores_nothing(self) -> None:
        """RFC 9208 §4.3: APPEND over quota is NO [OVERQUOTA]; a MULTIAPPEND is all or
        nothing; what fits exactly is stored."""
        self.limits = QuotaLimits(storage=2 * len(MSG))
        inbox = self.box()
        f = self.failureResultOf(
            inbox.append_all([(MSG, [], None), (MSG, [], None), (MSG, [], None)]),
            MailboxError,
        )
        self.assertIn("[OVERQUOTA]", str(f.value))
        self.assertEqual(scan_usage(self.path), Usage(0, 0))
        self.successResultOf(inbox.append_all([(MSG, [], None), (MSG, [], None)]))
        self.failureResultOf(inbox.append(MSG), MailboxError)
        self.assertEqual(scan_usage(self.path), Usage(2 * len(MSG), 2))

    def test_copy_over_quota_stores_nothing_move_is_allowed(self) -> None:
        """COPY that would exceed the quota stores nothing; a MOVE within the account
        adds nothing, so it is allowed even at the limit (moving mail to Trash)."""
        inbox = self.box()
        self.successResultOf(inbox.append_all([(MSG, [], None), (MSG, [], None)]))
        inbox.sync()
        self.limits = QuotaLimits(messages=3)
        trash = self.box("Trash")
        f = self.failureResultOf(inbox.copy_uids(inbox.uids, trash), MailboxError)
        self.assertIn("[OVERQUOTA]", str(f.value))
        self.assertEqual(trash.folder.uids, [])
        self.limits = QuotaLimits(messages=2)
        self.successResultOf(inbox.move_uids(inbox.uids, trash))
        self.assertEqual(self.counted(), Usage(2 * len(MSG), 2))
        self.assertCountIsTheDisk()

    def test_count_after_restart_is_the_disk(self) -> None:
        """A new process (after a crash: the count was only in memory) scans."""
        self.successResultOf(self.box().append_all([(MSG, [], None)]))
        md.MaildirWriter("h").deliver(self.path, [MSG])  # LOCAL in the crashed process
        fresh = MaildirAccount(self.path, "bob@example.com", MailboxNotifier())
        self.assertEqual(self.successResultOf(fresh.quota_usage()), Usage(2 * len(MSG), 2))


def inbox_set(box: MaildirMailbox) -> Any:
    from twisted.mail import imap4

    return imap4.MessageSet(min(box.uids), max(box.uids))


class SharedFileTests(unittest.TestCase):
    """The account's usage file between two UsageBooks (two processes), disk work inline."""

    def setUp(self) -> None:
        self.md = os.path.abspath(os.path.join(self.mktemp(), "Maildir"))
        provision(self.md)
        md.deliver(self.md, b"x" * 100)
        self.clock = task.Clock()
        self.one = UsageBook(_inline, self.clock.seconds)
        self.two = UsageBook(_inline, self.clock.seconds)

    def usage(self, book: UsageBook) -> Usage:
        return self.successResultOf(book.usage("bob@example.com", self.md))

    def test_long_file_is_written_anew_and_stays_exact(self) -> None:
        """Past COMPACT_AT bytes a reader writes the file anew with its figure: the file
        stays short and both processes keep the exact figure."""
        self.patch(quota, "COMPACT_AT", 200)
        self.assertEqual(self.usage(self.one), Usage(100, 1))
        self.assertEqual(self.usage(self.two), Usage(100, 1))
        for i in range(40):
            (self.one if i % 2 else self.two).change("bob@example.com", 10, 1, self.md)
        self.assertEqual(self.usage(self.two), Usage(500, 41))
        self.assertLess(os.path.getsize(os.path.join(self.md, quota.USAGE_FILE)), 100)
        self.assertEqual(self.usage(self.one), Usage(500, 41))
        self.one.change("bob@example.com", -10, -1, self.md)
        self.assertEqual(self.usage(self.two), Usage(490, 40))
        self.assertEqual(self.usage(self.one), Usage(490, 40))


def _inline(fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(fn, *args)
