"""The mail store across real processes: this test process serves sessions on the reactor
(threads for disk work, as the server and an IMAP worker do) while another process
(``tests/mailstore/poke.py``) changes the same account: deliveries, APPEND, STORE,
EXPUNGE, the folder tree, the quota count and the POP3 maildrop lock. The other process is
killed with SIGKILL where that matters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Coroutine

from twisted.internet import defer, reactor, task
from twisted.mail import imap4
from twisted.trial import unittest

from cgtwist.account_settings import QuotaLimits
from cgtwist.mailstore import (
    MailboxNotifier,
    MaildirAccount,
    index,
    maildir,
    pop,
    provision,
    specialuse,
)
from cgtwist.mailstore.folder import Folder
from cgtwist.mailstore.mailbox import MaildirMailbox
from cgtwist.mailstore.quota import Usage
from cgtwist.mailstore.tree import read_subscriptions
from tests.mailstore.poke import _msg
from tests.mailstore.test_mailstore import Recorder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 120.0  # seconds a change may take to arrive on a busy machine before the test fails


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Any]:
    def wrapped(self: Any) -> defer.Deferred[None]:
        return defer.ensureDeferred(test(self))

    wrapped.__name__ = test.__name__
    wrapped.__doc__ = test.__doc__
    return wrapped


class Other:
    """The other process: one command a line, one JSON answer a line."""

    def __init__(self, md: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "tests.mailstore.poke", md],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, *words: object) -> dict[str, Any]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, f"the other process ended (at {words!r})"
        answer: dict[str, Any] = json.loads(line)
        assert "error" not in answer, answer
        return answer

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        for pipe in (self.p.stdin, self.p.stdout):
            if pipe is not None:
                pipe.close()


class CrossProcessBase(unittest.TestCase):
    def setUp(self) -> None:
        self.md = os.path.abspath(os.path.join(self.mktemp(), "Maildir"))
        provision(self.md)
        self.notifier = MailboxNotifier(reactor)
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)
        self.addCleanup(self.notifier.stop_watching)

    def other(self) -> Other:
        o = Other(self.md)
        self.addCleanup(o.kill)
        return o

    async def until(self, cond: Callable[[], Any], what: str) -> None:
        """Wait, serving the reactor, until ``cond()`` holds; fail after DEADLINE."""
        end = time.monotonic() + DEADLINE
        while not cond():
            if time.monotonic() > end:
                self.fail(f"no {what} within {DEADLINE} s")
            await task.deferLater(reactor, 0.005, lambda: None)

    async def select(self, name: str = "INBOX") -> tuple[MaildirMailbox, Recorder]:
        box = await self.account.select(name, True)
        assert box is not None
        self.addCleanup(box.close)
        return box, Recorder().on(box)


class WatchTests(CrossProcessBase):
    """Item 1: a session idle here hears of another process's change without a command."""

    @run
    async def test_delivery_by_another_process_pushed_to_idle_session(self) -> None:
        """LOCAL delivery in another process (no lock: only a file in new/) reaches a
        session idle here at once: EXISTS, without any command from it."""
        self.notifier.watch_other_processes()
        box, idle = await self.select()
        other = self.other()
        other("deliver", "hello")
        await self.until(lambda: ("exists", 1) in idle.events, "EXISTS after the delivery")
        other("deliver", "again")
        await self.until(lambda: ("exists", 2) in idle.events, "EXISTS after the second")

    @run
    async def test_append_store_expunge_of_another_process_pushed(self) -> None:
        """APPEND, STORE and EXPUNGE made by another process reach the idle session as
        EXISTS, FETCH FLAGS and EXPUNGE."""
        self.notifier.watch_other_processes()
        box, idle = await self.select()
        other = self.other()
        uid = other("append", "one")["uid"]
        await self.until(lambda: ("exists", 1) in idle.events, "EXISTS after APPEND")
        other("flag", uid, "\\Flagged")
        await self.until(
            lambda: any(k == "flags" and "\\Flagged" in v.get(1, ()) for k, v in idle.events),
            "FETCH FLAGS after STORE",
        )
        other("expunge", uid)
        await self.until(lambda: ("expunge", [1]) in idle.events, "EXPUNGE")
        self.assertEqual(box.uids, [])

    @run
    async def test_pushes_go_on_after_the_other_process_is_killed(self) -> None:
        """A process killed with SIGKILL in the middle leaves no stale lock and the watch
        stays: the next process's delivery is pushed too."""
        self.notifier.watch_other_processes()
        box, idle = await self.select()
        first = self.other()
        first("append", "before")
        await self.until(lambda: ("exists", 1) in idle.events, "EXISTS before the kill")
        first.kill()
        second = self.other()
        second("append", "after")
        await self.until(lambda: ("exists", 2) in idle.events, "EXISTS after the kill")

    @run
    async def test_watch_ends_when_the_last_session_leaves(self) -> None:
        """Kernel watches only on folders with a session open here."""
        self.notifier.watch_other_processes()
        box, _idle = await self.select()
        watch = self.notifier._watch
        assert watch is not None
        self.assertEqual(watch.watched, 1)
        box.close()
        self.assertEqual(watch.watched, 0)

    @run
    async def test_beyond_the_limit_a_folder_is_checked_periodically(self) -> None:
        """imap.watch_folders reached: the next folder is polled (every
        imap.watch_poll_interval seconds), and still hears of the other process."""
        self.notifier.watch_other_processes(max_folders=lambda: 0, poll_interval=lambda: 0.05)
        box, idle = await self.select()
        watch = self.notifier._watch
        assert watch is not None
        self.assertEqual(watch.watched, 0)
        other = self.other()
        other("deliver", "polled")
        await self.until(lambda: ("exists", 1) in idle.events, "EXISTS by the periodic check")


class PopLockTests(CrossProcessBase):
    """Item 4: RFC 1939's exclusive maildrop lock holds across processes and dies with its
    process."""

    @run
    async def test_maildrop_locked_by_another_process(self) -> None:
        """A POP3 session of the account in another process: a login here is refused
        (-ERR [IN-USE]); once that process is killed with SIGKILL, the kernel has dropped
        its lock and the login here succeeds."""
        other = self.other()
        self.assertEqual(other("pop"), {"ok": True})
        with self.assertRaises(pop.MailboxInUse):
            await pop.PopMailbox.open(self.account)
        other.kill()
        box = await pop.PopMailbox.open(self.account)
        self.addCleanup(box.release)
        # And now this process holds it: the other process is refused in turn.
        self.assertEqual(self.other()("pop"), {"in_use": True})

    @run
    async def test_lock_released_at_quit_is_free_for_another_process(self) -> None:
        box = await pop.PopMailbox.open(self.account)
        other = self.other()
        self.assertEqual(other("pop"), {"in_use": True})
        box.release()
        self.assertEqual(other("pop"), {"ok": True})


class TreeTests(CrossProcessBase):
    """Item 3: the folder tree, subscriptions, keyword letters and UIDVALIDITY across
    processes."""

    @run
    async def test_folder_created_by_another_process_is_listed_and_selectable(self) -> None:
        other = self.other()
        other("create", "Projects")
        self.assertIn("Projects", self.account.folder_names())
        box, _idle = await self.select("Projects")
        self.assertEqual(box.uids, [])

    @run
    async def test_subscriptions_of_another_process_are_seen_and_kept(self) -> None:
        """A SUBSCRIBE in another process shows here (LSUB), and a SUBSCRIBE here does not
        overwrite it."""
        self.assertNotIn("Lists", self.account.subscriptions())  # this process has read it
        other = self.other()
        other("subscribe", "Lists")
        self.assertIn("Lists", self.account.subscriptions())
        await self.account.subscribe("Friends")
        other("subscribe", "Work")
        self.assertTrue({"Lists", "Friends", "Work"} <= read_subscriptions(self.md))
        self.assertTrue({"Lists", "Friends", "Work"} <= set(self.account.subscriptions()))

    @run
    async def test_special_use_of_another_process_is_seen_and_kept(self) -> None:
        """CREATE (USE (\\Archive)) in another process shows here (LIST's attributes), and
        a CREATE (USE ...) here does not overwrite it."""
        self.assertEqual(self.account.special_use_of("Sent"), "\\Sent")  # read here
        other = self.other()
        other("createuse", "Archive", "\\Archive")
        self.assertEqual(self.account.special_use_of("Archive"), "\\Archive")
        await self.account.delete("Trash")
        await self.account.create("Bin", use=["\\Trash"])
        on_disk = specialuse.load(self.md)
        self.assertEqual(on_disk.of("Archive"), ("\\Archive",))
        self.assertEqual(on_disk.of("Bin"), ("\\Trash",))
        self.assertEqual(on_disk.of("Trash"), ())
        other("delete", "Junk")
        other("createuse", "Spam", "\\Junk")
        self.assertEqual(self.account.special_use_of("Spam"), "\\Junk")
        self.assertEqual(self.account.special_use_of("Bin"), "\\Trash")

    @run
    async def test_selected_folder_deleted_by_another_process(self) -> None:
        """The session has the folder selected when another process deletes it: its messages
        are expunged (pushed by the watch), a STORE is answered NO [NONEXISTENT], no
        traceback; the folder is not listed any more."""
        self.notifier.watch_other_processes()
        await self.account.create("Old")
        box, idle = await self.select("Old")
        await box.folder.add([(b"Subject: x\r\n\r\nx\r\n", [], None)], origin=box)
        box.sync()
        other = self.other()
        other("delete", "Old")
        await self.until(lambda: ("expunge", [1]) in idle.events, "EXPUNGE of the deleted folder")
        with self.assertRaises(imap4.MailboxException) as caught:
            await box.store(imap4.MessageSet(1), ["\\Seen"], 1, True)
        self.assertIn("NONEXISTENT", str(caught.exception))
        self.assertNotIn("Old", self.account.folder_names())
        # And the shutdown flush has nothing left to do with it: no failure logged.
        failures: list[object] = []
        self.patch(MailboxNotifier.log, "failure", lambda *a, **k: failures.append(a))
        self.patch(Folder.log, "failure", lambda *a, **k: failures.append(a))
        await self.notifier.flush()
        self.assertEqual(failures, [])

    @run
    async def test_shutdown_flush_of_a_folder_deleted_unnoticed(self) -> None:
        """A flag change here leaves its replaced name to be removed by the next flush; another
        process deletes the folder before this one noticed (no watch): the shutdown flush
        finds it gone and has nothing to do, with no failure logged (it was a traceback in
        every IMAP worker's log after imaptest's stress run)."""
        await self.account.create("Doomed")
        box, _ = await self.select("Doomed")
        await box.folder.add([(b"Subject: x\r\n\r\nx\r\n", [], None)], origin=box)
        box.sync()
        await box.store(imap4.MessageSet(1), ["\\Seen"], 1, True)
        self.other()("delete", "Doomed")
        failures: list[object] = []
        self.patch(MailboxNotifier.log, "failure", lambda *a, **k: failures.append(a))
        self.patch(Folder.log, "failure", lambda *a, **k: failures.append(a))
        await self.notifier.flush()
        self.assertEqual(failures, [])

    @run
    async def test_folder_recreated_by_another_process_is_a_new_folder(self) -> None:
        """Deleted and created again by another process while this one had it open: a new
        SELECT here gets the new folder's UIDVALIDITY (a different one, even within the same
        second) and its messages, not the old folder's."""
        await self.account.create("Again")
        box, idle = await self.select("Again")
        await box.folder.add([(b"Subject: old\r\n\r\nold\r\n", [], None)], origin=box)
        box.sync()
        old_uv = box.uid_validity
        other = self.other()
        other("delete", "Again")
        other("create", "Again")
        new_uv = other("uidvalidity", "Again")["uidvalidity"]
        self.assertNotEqual(new_uv, old_uv)
        other("deliver", "new", "Again")
        # The session that had the old folder selected: its message went, and the new
        # folder's message does not appear in it under the old UIDVALIDITY.
        await box.refresh()
        box.sync()
        self.assertEqual((box.uid_validity, box.uids), (old_uv, []))
        self.assertIn(("expunge", [1]), idle.events)
        fresh, _ = await self.select("Again")
        self.assertEqual((fresh.uid_validity, len(fresh.uids)), (new_uv, 1))

    @run
    async def test_two_processes_recreating_a_folder_get_distinct_uidvalidity(self) -> None:
        one, two = self.other(), self.other()
        seen = []
        for p in (one, two, one, two):
            p("create", "Busy")
            seen.append(p("uidvalidity", "Busy")["uidvalidity"])
            p("delete", "Busy")
        self.assertEqual(len(set(seen)), len(seen), seen)
        self.assertEqual(seen, sorted(seen))

    @run
    async def test_keywords_of_two_processes_get_distinct_letters(self) -> None:
        box, idle = await self.select()
        other = self.other()
        uid = other("append", "kw")["uid"]
        await box.refresh()
        box.sync()
        other("flag", uid, "$Work")
        await box.store(imap4.MessageSet(uid), ["$Home"], 1, True)
        keywords = maildir.read_keywords(self.md)
        self.assertEqual(sorted(keywords.values()), ["$Home", "$Work"])
        await box.refresh()
        box.sync()
        self.assertTrue({"$Home", "$Work"} <= set(box.flags_of(uid)))


class QuotaTests(CrossProcessBase):
    """Item 2: the quota count holds across processes, so a limit is enforced as set
    whichever process stores or removes the mail."""

    async def room(self, octets: int, limit: int) -> str:
        return await self.notifier.usage.room(
            self.account.account, self.md, QuotaLimits(storage=limit), octets, 1
        )

    @run
    async def test_another_process_appending_uses_up_the_room_here(self) -> None:
        """This process counted the account; another one then APPENDs: a check here sees
        that mail at once (not after the hourly recount) and refuses what no longer fits."""
        used = (await self.account.quota_usage()).octets
        self.assertEqual(await self.room(10, used + 200), "")
        other = self.other()
        for i in range(4):
            other("append", f"filler-{i}")
        self.assertEqual(await self.room(10, used + 200), "STORAGE")
        now = await self.account.quota_usage()
        self.assertEqual(now.messages, 4)
        self.assertEqual(now.octets, used + sum(len(_msg(f"filler-{i}")) for i in range(4)))

    @run
    async def test_expunge_of_another_process_counted(self) -> None:
        """Another process's EXPUNGE gives the room back here, and the figure stays right
        after that process is killed with SIGKILL."""
        await self.account.quota_usage()
        other = self.other()
        uid = other("append", "big")["uid"]
        self.assertEqual((await self.account.quota_usage()).messages, 1)
        other("expunge", uid)
        self.assertEqual(await self.account.quota_usage(), Usage(0, 0))
        other("append", "kept")
        other.kill()
        self.assertEqual((await self.account.quota_usage()).messages, 1)

    @run
    async def test_this_process_appending_seen_by_the_other(self) -> None:
        """The other way round: the other process counted first, this one APPENDs, and the
        other refuses what no longer fits."""
        other = self.other()
        self.assertEqual(other("room", 10, 200), {"ok": True, "over": False})
        box, _idle = await self.select()
        for i in range(4):
            await box.folder.add([(_msg(f"here-{i}"), [], None)], origin=box)
        await self.until(
            lambda: other("room", 10, 200)["over"], "the other process seeing this one's mail"
        )

    @run
    async def test_folder_deleted_by_another_process_recounted_here(self) -> None:
        await self.account.create("Big")
        box, _idle = await self.select("Big")
        await box.folder.add([(_msg("in-big"), [], None)], origin=box)
        box.close()
        self.assertEqual((await self.account.quota_usage()).messages, 1)
        self.other()("delete", "Big")
        self.assertEqual((await self.account.quota_usage()).messages, 0)


class RecentTests(CrossProcessBase):
    """RFC 3501 §2.3.2 across processes (issue #17): a message is \\Recent for exactly one
    session in all processes, whichever process added it (imaptest's ``copy`` with its two
    connections in different IMAP workers)."""

    @run
    async def test_append_by_another_process_is_recent_here(self) -> None:
        """APPEND in another process (no session open there): the read-write session
        selected here announces it as RECENT and FETCH FLAGS shows \\Recent."""
        self.notifier.watch_other_processes()
        box, idle = await self.select()
        other = self.other()
        other("append", "one")
        await self.until(lambda: ("exists", 1) in idle.events, "EXISTS after APPEND")
        self.assertEqual(box.getRecentCount(), 1)
        [(_, msg)] = box.fetch(imap4.MessageSet(1, 1), False)
        self.assertIn("\\Recent", msg.getFlags())

    @run
    async def test_status_and_examine_do_not_claim(self) -> None:
        """STATUS and EXAMINE here show another process's message as recent without taking
        it: the next SELECT still gets it."""
        other = self.other()
        other("append", "one")
        ro = await self.account.select("INBOX", False)
        assert ro is not None
        self.assertEqual(ro.requestStatus(["RECENT"]), {"RECENT": 1})
        self.assertEqual(ro.getRecentCount(), 1)
        ro.close()
        box, _ = await self.select()
        self.assertEqual(box.getRecentCount(), 1)

    @run
    async def test_exactly_one_session_in_two_processes(self) -> None:
        """A session selected in each process: an APPEND in either is \\Recent for the
        session of the process that made it, never for the other one too."""
        self.notifier.watch_other_processes()
        other = self.other()
        self.assertEqual(other("select"), {"ok": True, "recent": 0})
        box, idle = await self.select()
        other("append", "there")
        await self.until(lambda: ("exists", 1) in idle.events, "EXISTS after APPEND there")
        self.assertEqual(box.getRecentCount(), 0)
        [uid] = await box.folder.add([(_msg("here"), [], None)], origin=box)
        box.sync()  # the APPEND's command boundary
        self.assertEqual(box.getRecentCount(), 1)
        self.assertIn("\\Recent", box.fetch(imap4.MessageSet(uid), True)[0][1].getFlags())
        seen = other("recent")
        self.assertEqual(seen["uids"], [1, uid])
        self.assertEqual(seen["recent"], [1])

    @run
    async def test_delivery_is_recent_for_the_process_that_scans_it_first(self) -> None:
        """A delivery into new/ (no lock) with a session selected in each process: whichever
        process looks first, exactly one of the two sessions gets \\Recent."""
        self.notifier.watch_other_processes()
        other = self.other()
        other("select")
        box, idle = await self.select()
        for n in range(1, 4):
            maildir.deliver(self.md, _msg(f"d{n}"), to_new=True)
            other("recent")  # a race with the watch here: either may look first
            await self.until(lambda n=n: ("exists", n) in idle.events, f"EXISTS {n} here")
            seen = other("recent")
            uid = box.uids[-1]
            here = "\\Recent" in box.fetch(imap4.MessageSet(uid), True)[0][1].getFlags()
            there = uid in seen["recent"]
            self.assertEqual((uid in seen["uids"], here + there), (True, 1), f"delivery {n}")

    @run
    async def test_unclaimed_stays_recent_for_the_next_select_anywhere(self) -> None:
        """Nobody selected when another process APPENDs: the message stays recent (STATUS
        says so in both processes) until a SELECT in either claims it, then for no one else."""
        other = self.other()
        other("append", "one")
        ro = await self.account.select("INBOX", False)
        assert ro is not None
        self.addCleanup(ro.close)
        self.assertEqual(ro.requestStatus(["RECENT"]), {"RECENT": 1})
        self.assertEqual(other("select"), {"ok": True, "recent": 1})
        self.assertEqual(other("recent")["recent"], [1])
        box, _ = await self.select()
        self.assertEqual(box.getRecentCount(), 0)


class LogLookTests(CrossProcessBase):
    """Another process's logged change is applied here from its index log lines, without
    listing the folder, while the directory times show nothing else moved them; anything
    the log does not account for makes the look list the folder as before."""

    async def settled(self, box: MaildirMailbox) -> list[str]:
        """Looks until the last look vouches for itself (no directory changed within the
        trust window before it); then records which of the folder's directories each
        later look lists (new/, cur/)."""
        folder = box.folder
        end = time.monotonic() + DEADLINE
        await folder.refresh()
        while folder.unconfirmed:
            if time.monotonic() > end:
                self.fail(f"no confirmed look within {DEADLINE} s")
            await task.deferLater(reactor, 0.01, lambda: None)
            await folder.refresh()
        listed: list[str] = []
        real = os.listdir

        def counted(path: Any = ".") -> list[str]:
            if os.path.dirname(os.fspath(path)) == self.md:
                listed.append(os.path.basename(os.fspath(path)))
            return real(path)

        self.patch(os, "listdir", counted)
        return listed

    async def three(self) -> tuple[Other, MaildirMailbox, Recorder, list[int], list[str]]:
        other = self.other()
        uids = [other("append", f"m{i}")["uid"] for i in range(3)]
        box, rec = await self.select()
        listed = await self.settled(box)
        return other, box, rec, uids, listed

    def logged_modseq(self, key: str) -> int:
        return index.FolderIndex(self.md).load().records[key].modseq

    @run
    async def test_store_of_another_process_applied_from_its_log(self) -> None:
        """STORE there: FETCH FLAGS here with the MODSEQ it got there, and no listing."""
        other, box, rec, uids, listed = await self.three()
        other("flag", uids[1], "\\Flagged")
        await box.folder.refresh()
        box.sync()
        self.assertIn("\\Flagged", box.flags_of(uids[1]))
        self.assertTrue(any(k == "flags" and uids[1] in v for k, v in rec.events), rec.events)
        e = box.folder.entries[uids[1]]
        self.assertEqual(e.modseq, self.logged_modseq(e.key))
        self.assertEqual(box.folder.highest_modseq, e.modseq)
        self.assertTrue(os.path.exists(e.path(self.md)))
        self.assertEqual(listed, [])

    @run
    async def test_append_of_another_process_applied_from_its_log(self) -> None:
        """APPEND there: EXISTS here with its UID, \\Recent for the session here, no listing."""
        other, box, rec, uids, listed = await self.three()
        uid = other("append", "new")["uid"]
        await box.folder.refresh()
        box.sync()
        self.assertEqual(box.uids, uids + [uid])
        self.assertIn(("exists", 4), rec.events)
        self.assertIn("\\Recent", box.flags_of(uid))
        self.assertEqual(listed, [])

    @run
    async def test_expunge_of_another_process_applied_from_its_log(self) -> None:
        """EXPUNGE there: EXPUNGE here, remembered for VANISHED (QRESYNC), no listing."""
        other, box, rec, uids, listed = await self.three()
        other("expunge", uids[0])
        await box.folder.refresh()
        box.sync()
        self.assertEqual(box.uids, uids[1:])
        self.assertIn(("expunge", [1]), rec.events)
        self.assertIn(uids[0], box.folder.vanished_since(0) or [])
        self.assertEqual(listed, [])

    @run
    async def test_delivery_lists_new_only(self) -> None:
        """A delivery by LOCAL (into new/, no lock, no log line): new/ alone is listed."""
        other, box, rec, uids, listed = await self.three()
        other("deliver", "local")
        await box.folder.refresh()
        box.sync()
        self.assertEqual(len(box.uids), 4)
        self.assertIn(("exists", 4), rec.events)
        self.assertNotIn("cur", listed)

    @run
    async def test_torn_log_line_makes_a_listing(self) -> None:
        """A line torn by a crash in its write: the look lists the folder and finds what
        the good lines and the disk say."""
        other, box, rec, uids, listed = await self.three()
        other("flag", uids[2], "\\Seen")
        with open(os.path.join(self.md, index.LOG_FILE), "ab") as f:
            f.write(b'["f",99999,[["')
        await box.folder.refresh()
        box.sync()
        self.assertIn("\\Seen", box.flags_of(uids[2]))
        self.assertIn("cur", listed)

    @run
    async def test_change_whose_times_are_not_logged_makes_a_listing(self) -> None:
        """A change whose ``d`` line is missing (its writer killed after its flag line):
        nothing vouches for the directory times, the look lists the folder."""
        other, box, rec, uids, listed = await self.three()
        log = os.path.join(self.md, index.LOG_FILE)
        size = os.path.getsize(log)
        other("flag", uids[0], "\\Answered")
        with open(log, "rb") as f:
            f.seek(size)
            added = f.read().splitlines(keepends=True)
        self.assertEqual([json.loads(line)[0] for line in added], ["f", "d", "d"])
        os.truncate(log, size + len(added[0]))
        await box.folder.refresh()
        box.sync()
        self.assertIn("\\Answered", box.flags_of(uids[0]))
        self.assertIn("cur", listed)

    @run
    async def test_maildir_changed_behind_the_log_makes_a_listing(self) -> None:
        """A user's ``mv`` in cur/ (flags changed outside any log), then a logged STORE
        there: the times do not chain, the look lists and finds both changes."""
        other, box, rec, uids, listed = await self.three()
        e = box.folder.entries[uids[2]]
        os.rename(e.path(self.md), os.path.join(self.md, "cur", maildir.join_name(e.key, "S")))
        other("flag", uids[0], "\\Flagged")
        await box.folder.refresh()
        box.sync()
        self.assertIn("\\Seen", box.flags_of(uids[2]))
        self.assertIn("\\Flagged", box.flags_of(uids[0]))
        self.assertIn("cur", listed)

    @run
    async def test_delivery_moved_to_cur_by_another_process_applied_from_its_log(self) -> None:
        """A delivery that a read-write session in another process moved from new/ to cur/:
        EXISTS here with the UID it got there, the message found in cur/, and cur/ is not
        listed (the move is in that process's log)."""
        other, box, rec, uids, listed = await self.three()
        other("select")
        other("deliver", "local")
        there = other("recent")["uids"]
        self.assertEqual(len(there), 4)
        self.assertEqual(os.listdir(os.path.join(self.md, "new")), [])
        await box.folder.refresh()
        box.sync()
        self.assertEqual(box.uids, there)
        self.assertIn(("exists", 4), rec.events)
        e = box.folder.entries[there[-1]]
        self.assertEqual((e.sub, os.path.exists(e.path(self.md))), ("cur", True))
        self.assertNotIn("cur", listed)

    @run
    async def test_uid_kept_when_the_append_line_is_lost(self) -> None:
        """Another process's APPEND whose log lines were lost (killed after its uidlist
        save): the uidlist is read whole, not moved on from the log, and the message keeps
        the UID it got there instead of a new one."""
        other, box, rec, uids, listed = await self.three()
        log = os.path.join(self.md, index.LOG_FILE)
        size = os.path.getsize(log)
        uid = other("append", "lost")["uid"]
        os.truncate(log, size)
        other("flag", uids[0], "\\Seen")  # a logged change after it: the log has news
        await box.folder.refresh()
        box.sync()
        self.assertEqual(box.uids, uids + [uid])
        self.assertIn("\\Seen", box.flags_of(uids[0]))
        self.assertIn("cur", listed)


class FlagChurnTests(CrossProcessBase):
    """Two processes changing the flags of the same messages, as IMAP workers whose sessions
    STORE on one INBOX: no message ever leaves either process's view, nor the disk."""

    def on_disk(self) -> int:
        """Messages in cur/: their keys (a replaced name not yet removed is a second name)."""
        cur = os.listdir(os.path.join(self.md, "cur"))
        return len({maildir.split_name(n)[0] for n in cur if not n.startswith(".")})

    @run
    async def test_flag_cleared_there_before_the_name_replaced_here_is_removed(self) -> None:
        """STORE +FLAGS here, then STORE -FLAGS of the same messages in another process
        before this one removed the names its change replaced (they linger STALE_LINGER for
        one fsync of cur/): each message is back under such a name, and stays, here (no
        EXPUNGE, EXISTS unchanged) and on disk."""
        other = self.other()
        uids = [other("append", f"m{i}")["uid"] for i in range(6)]
        box, rec = await self.select()
        for uid in uids[1:4]:
            await box.store(imap4.MessageSet(uid), ["\\Flagged"], 1, True)
        # No reactor turn until the other process answered: the replaced names are still
        # on disk, so its change links the message back to one of them.
        for uid in uids[1:4]:
            other("unflag", uid, "\\Flagged")
        await box.folder.refresh()
        box.sync()
        self.assertEqual(box.uids, uids)
        for uid in uids[1:4]:
            self.assertNotIn("\\Flagged", box.flags_of(uid))
        await box.folder.flush()
        await box.folder.refresh(force=True)
        box.sync()
        self.assertEqual(box.uids, uids)
        self.assertFalse([e for e in rec.events if e[0] == "expunge"], rec.events)
        self.assertEqual(self.on_disk(), len(uids))

    @run
    async def test_many_flag_changes_in_two_processes_keep_every_message(self) -> None:
        """Both processes STORE +FLAGS and -FLAGS on overlapping messages, as the sessions of
        two IMAP workers do, with this process's replaced names removed at times of its own
        (STALE_LINGER runs on the reactor between some steps): after every step the session
        here has every message, none was announced EXPUNGEd, and each is on disk."""
        other = self.other()
        uids = [other("append", f"m{i}")["uid"] for i in range(12)]
        box, rec = await self.select()
        for step, uid in enumerate(uids * 2):
            mine = ["\\Flagged"] if step % 3 else ["\\Seen", "\\Flagged"]
            await box.store(imap4.MessageSet(uid), mine, 1, True)
            other("unflag", uid, "\\Flagged")
            if step % 2:
                other("flag", uids[(step + 5) % len(uids)], "\\Answered")
            if step % 4 == 3:
                # Long enough for this process's removal of the names it replaced to run.
                await box.folder.flush()
            await box.folder.refresh()
            box.sync()
            self.assertEqual(box.uids, uids, f"step {step}")
            self.assertEqual(self.on_disk(), len(uids), f"step {step}")
        await box.folder.flush()
        await box.folder.refresh(force=True)
        box.sync()
        self.assertEqual(box.uids, uids)
        self.assertFalse([e for e in rec.events if e[0] == "expunge"], rec.events)
        self.assertEqual(self.on_disk(), len(uids))
