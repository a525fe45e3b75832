"""Every Maildir writer makes its new names durable before the operation is acknowledged.

Checked with a recording fake of the os calls (tests/mailstore/oslog.py): what a power cut at
the moment of the acknowledgement would keep. Issue 21: the new/ -> cur/ move at SELECT, APPEND,
COPY, MOVE, EXPUNGE and the uidlist, folder CREATE/RENAME/DELETE. Flag changes in cur/ are
answered before their new names are durable, on purpose: StoreFlagTests checks that every
message keeps a durable name at every moment all the same.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.mail import imap4

from cgtwist.mailstore import (
    MailboxNotifier,
    MaildirAccount,
    MaildirMailbox,
    folder,
    maildir,
    names,
    uidlist,
)
from tests.mailstore.oslog import OsLog
from tests.mailstore.test_mailstore import StoreTestBase, deliver, msg, result


class SelectMoveTests(StoreTestBase):
    def test_move_to_cur_durable_before_new_name_goes(self) -> None:
        """A read-write SELECT moves new mail into cur/: each message's cur/ name is durable
        before its new/ name is removed, and the removals are durable before SELECT is
        answered, with one fsync of cur/ and one of new/ for the whole batch (issue 21 item 6:
        10 messages durable in new/ ended in lost+found after a SELECT and a power cut)."""
        for i in range(10):
            deliver(self.md, msg(f"m{i}"))
        log = OsLog(self)
        box = self.select()
        log.mark("selected")
        self.assertEqual(box.getMessageCount(), 10)
        self.assertEqual(os.listdir(os.path.join(self.md, "new")), [])
        end = log.at("selected")
        new_ino = os.stat(os.path.join(self.md, "new")).st_ino
        cur_ino = os.stat(os.path.join(self.md, "cur")).st_ino
        gone = [(i, e) for i, e in enumerate(log.events) if e[0] == "unname" and e[2] == new_ino]
        self.assertEqual(len(gone), 10)
        for name in os.listdir(os.path.join(self.md, "cur")):
            made = log.last_name(os.path.join(self.md, "cur", name))
            ino = log.events[made][4]
            removed = next(i for i, e in gone if e[4] == ino)
            self.assertTrue(
                any(e == ("fsync", "dir", cur_ino) for e in log.events[made:removed]),
                f"{name} left new/ before its cur/ name was durable",
            )
        last_removal = max(i for i, _ in gone)
        self.assertIn(("fsync", "dir", new_ino), log.events[last_removal:end])
        syncs = [e for e in log.events[:end] if e[0] == "fsync" and e[2] in (new_ino, cur_ino)]
        self.assertEqual(len(syncs), 2)

    def test_move_cut_short_resumes(self) -> None:
        """After a cut between the link into cur/ and the unlink from new/, the next SELECT
        finds one message (not two, not a new UID) and removes the leftover new/ name."""
        name = deliver(self.md, msg("x"))
        box = self.select()
        uid = box.getUID(1)
        box.close()
        (cur,) = os.listdir(os.path.join(self.md, "cur"))
        os.link(os.path.join(self.md, "cur", cur), os.path.join(self.md, "new", name))
        box = self.select(account=self.reopen())
        self.assertEqual((box.getMessageCount(), box.getUID(1)), (1, uid))
        self.assertEqual(os.listdir(os.path.join(self.md, "new")), [])
        self.assertEqual(os.listdir(os.path.join(self.md, "cur")), [cur])

    def test_other_file_with_same_key_left_alone(self) -> None:
        """A different file in new/ under the key of one in cur/ is never linked over it nor
        removed (maildir names are unique; this is another program's mistake)."""
        name = deliver(self.md, msg("x"))
        self.select().close()
        with open(os.path.join(self.md, "new", name), "wb") as f:
            f.write(msg("other"))
        box = self.select(account=self.reopen())
        self.assertEqual(box.getMessageCount(), 1)
        self.assertEqual(os.listdir(os.path.join(self.md, "new")), [name])

    def test_uidlist_durable_before_uids_reach_client(self) -> None:
        """The uidlist naming the moved messages' UIDs is durable when SELECT is answered."""
        deliver(self.md, msg("x"))
        log = OsLog(self)
        self.select()
        log.mark("selected")
        self.assertTrue(
            log.durable_by(os.path.join(self.md, uidlist.UIDLIST_FILE), log.at("selected"))
        )


class WriterTests(StoreTestBase):
    def cur(self, folder: str = "INBOX") -> str:
        return os.path.join(
            self.md if folder == "INBOX" else os.path.join(self.md, "." + folder), "cur"
        )

    def assert_cur_durable(self, log: OsLog, folder: str, end: int) -> None:
        for name in os.listdir(self.cur(folder)):
            self.assertTrue(log.durable_by(os.path.join(self.cur(folder), name), end), name)

    def test_append_durable_with_its_date(self) -> None:
        """APPEND is answered once the message's cur/ name and its INTERNALDATE (set before
        the file's fsync, not after it) are durable."""
        box = self.select()
        log = OsLog(self)
        times: list[tuple[str, object]] = []
        real_utime = os.utime
        self.patch(
            os,
            "utime",
            lambda p, t=None, **kw: (times.append(("utime", p)), real_utime(p, t, **kw))[1],
        )
        os_fsync = os.fsync  # OsLog's, which calls the real one
        self.patch(os, "fsync", lambda fd: (times.append(("fsync", fd)), os_fsync(fd))[1])
        result(box.append(msg("a"), ["\\Seen"], "17-Jul-1996 02:44:25 -0700"))
        log.mark("ok")
        self.assert_cur_durable(log, "INBOX", log.at("ok"))
        self.assertEqual([t[0] for t in times][:2], ["utime", "fsync"])
        self.assertIn("17 Jul 1996 09:44:25", box.message(1).getInternalDate())

    def test_copy_durable_with_link_counts_in_one_directory_fsync(self) -> None:
        """COPY links the files: each linked inode's link count and every new cur/ name are
        durable before the tagged OK, and the destination's cur/ is fsynced once for the batch."""
        for i in range(4):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        trash = self.select("Trash")
        log = OsLog(self)
        self.assertEqual(result(box.copy_uids([1, 2, 3, 4], trash))[1], [1, 2, 3, 4])
        log.mark("ok")
        end = log.at("ok")
        self.assertTrue(any(e[1] == "link" for _, e in log.names_made(end)))
        self.assertTrue(log.links_counted(end))
        self.assert_cur_durable(log, "Trash", end)
        self.assertEqual(log.dir_syncs(self.cur("Trash"), end), 1)

    def test_move_copies_durable_before_originals_go(self) -> None:
        """MOVE removes no original before its copy (name and link count) is durable."""
        for i in range(2):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        trash = self.select("Trash")
        log = OsLog(self)
        result(box.move_uids([1, 2], trash))
        inbox_cur = os.stat(self.cur()).st_ino
        first_unlink = next(
            i for i, e in enumerate(log.events) if e[0] == "unname" and e[2] == inbox_cur
        )
        self.assertTrue(log.links_counted(first_unlink))
        self.assert_cur_durable(log, "Trash", first_unlink)

    def test_failed_copy_leaves_destination_unchanged(self) -> None:
        """EIO from the destination's fsync fails COPY and leaves no copy behind
        (RFC 3501 §6.4.7), so the client's retry does not make two."""
        for i in range(2):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        trash = self.select("Trash")
        real = maildir.fsync_dir

        def eio(path: str) -> None:
            if path == self.cur("Trash"):
                raise OSError(5, "Input/output error")
            real(path)

        self.patch(maildir, "fsync_dir", eio)
        self.assertRaises(OSError, result, box.copy_uids([1, 2], trash))
        self.assertEqual(os.listdir(self.cur("Trash")), [])

    def test_flags_on_message_still_in_new(self) -> None:
        """A flag change on a message still in new/ (the folder seen read-only so far) takes
        it to cur/ the safe way: its cur/ name durable before the new/ name goes."""
        deliver(self.md, msg("x"))
        box = self.select(rw=False)
        log = OsLog(self)
        result(box.folder.set_flags([1], ["\\Seen"], 1))
        log.mark("ok")
        (name,) = os.listdir(self.cur())
        made = log.last_name(os.path.join(self.cur(), name))
        new_ino = os.stat(os.path.join(self.md, "new")).st_ino
        gone = next(i for i, e in enumerate(log.events) if e[0] == "unname" and e[2] == new_ino)
        # (The link count, 2 until the unlink, need not be: see maildir.move_to_cur.)
        self.assertTrue(log.durable_by(os.path.join(self.cur(), name), gone, count=False))
        self.assertLess(made, gone)
        self.assertIn(("fsync", "dir", new_ino), log.events[gone : log.at("ok")])

    def test_expunge_never_resurrects_under_a_new_uid(self) -> None:
        """EXPUNGE makes each removal durable (in new/ as in cur/) before the uidlist forgets
        the key: a removal a cut undid would bring the message back with a new UID."""
        deliver(self.md, msg("in new"))
        box = self.select(rw=False)
        log = OsLog(self)
        result(box.folder.expunge([1]))
        new_ino = os.stat(os.path.join(self.md, "new")).st_ino
        gone = next(i for i, e in enumerate(log.events) if e[0] == "unname" and e[2] == new_ino)
        saved = log.last_name(os.path.join(self.md, uidlist.UIDLIST_FILE))
        self.assertIn(("fsync", "dir", new_ino), log.events[gone:saved])


class FlagTestBase(StoreTestBase):
    """A store whose delayed jobs run on a task.Clock."""

    def setUp(self) -> None:
        super().setUp()
        self.clock = task.Clock()
        self.reopen()

    def reopen(self) -> MaildirAccount:
        self.notifier = MailboxNotifier(timer=self.clock)
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)
        return self.account

    def cur(self) -> str:
        return os.path.join(self.md, "cur")

    def listing(self) -> list[str]:
        return sorted(os.listdir(self.cur()))

    def fill(self, n: int) -> MaildirMailbox:
        for i in range(n):
            deliver(self.md, msg(f"m{i}"))
        return self.select()

    def assert_unlinks_after_fsync(self, log: OsLog) -> None:
        """No cur/ name of a file went before an fsync of cur/ that followed the link giving
        that file its newer name: at every moment each message has a durable name."""
        cur_ino = os.stat(self.cur()).st_ino
        for u, e in enumerate(log.events):
            if e[0] != "unname" or e[2] != cur_ino:
                continue
            made = max(
                (i for i, x in enumerate(log.events[:u]) if x[0] == "name" and x[4] == e[4]),
                default=-1,
            )
            self.assertIn(
                ("fsync", "dir", cur_ino),
                log.events[made + 1 : u],
                f"{e[3]} went before its twin was durable",
            )


class StoreFlagTests(FlagTestBase):
    """STORE links the new cur/ name and answers at once; one later job per burst fsyncs
    cur/ and only then removes the replaced names (issue: an fsync per STORE made it 3-5x
    slower). A power cut at any moment leaves every message a durable name."""

    def test_store_answered_without_fsync(self) -> None:
        """The STORE reply waits for no fsync and removes no name: the old names are still
        there, durable, so a cut before the batch at worst reverts the flags."""
        box = self.fill(3)
        before = self.listing()
        log = OsLog(self)
        got = result(box.store(imap4.MessageSet(1, 3), ["\\Seen", "\\Flagged"], 1, False))
        log.mark("ok")
        self.assertEqual(
            {m: set(f) for m, f in got.items()}, {i: {"\\Seen", "\\Flagged"} for i in (1, 2, 3)}
        )
        self.assertEqual([e for e in log.events[: log.at("ok")] if e[0] in ("fsync", "unname")], [])
        self.assertEqual(len(self.listing()), 6)
        self.assertTrue(set(before) <= set(self.listing()))
        self.clock.advance(folder.STALE_LINGER)
        self.assertEqual(len(self.listing()), 3)
        self.assertTrue(all(n.endswith(":2,FS") for n in self.listing()))
        self.assert_unlinks_after_fsync(log)

    def test_one_fsync_for_a_burst(self) -> None:
        """Many STOREs in a burst (a client flagging one message at a time) cost one fsync
        of cur/ together, and every replaced name goes after it."""
        box = self.fill(20)
        log = OsLog(self)
        for i in range(1, 21):
            result(box.store(imap4.MessageSet(i), ["\\Flagged"], 1, False))
            result(box.store(imap4.MessageSet(i), ["\\Seen"], 1, False))
        self.assertEqual(log.dir_syncs(self.cur(), len(log.events)), 0)
        self.clock.advance(folder.STALE_LINGER)
        self.assertEqual(log.dir_syncs(self.cur(), len(log.events)), 1)
        self.assertEqual(len(self.listing()), 20)
        self.assertTrue(all(n.endswith(":2,FS") for n in self.listing()))
        self.assert_unlinks_after_fsync(log)
        self.assertEqual(self.uids(self.select(account=self.reopen())), list(range(1, 21)))

    def test_a_full_batch_goes_at_once(self) -> None:
        """Once STALE_BATCH names wait, the batch runs without waiting for the timer."""
        box = self.fill(folder.STALE_BATCH)
        result(box.store(imap4.MessageSet(1, None), ["\\Seen"], 1, False))
        self.assertEqual(len(self.listing()), folder.STALE_BATCH)
        self.assertFalse(self.clock.getDelayedCalls())

    def test_flags_toggled_back_before_the_batch(self) -> None:
        """+FLAGS then -FLAGS before the batch ran: the message takes its old name again
        (still there), and the batch removes only the name no longer used."""
        box = self.fill(1)
        (orig,) = self.listing()
        log = OsLog(self)
        result(box.store(imap4.MessageSet(1), ["\\Seen"], 1, False))
        result(box.store(imap4.MessageSet(1), ["\\Flagged"], 1, False))
        result(box.store(imap4.MessageSet(1), ["\\Seen", "\\Flagged"], -1, False))
        self.assertEqual(box.folder.message_path(1), os.path.join(self.cur(), orig))
        self.clock.advance(folder.STALE_LINGER)
        self.assertEqual(self.listing(), [orig])
        self.assert_unlinks_after_fsync(log)
        box2 = self.select(account=self.reopen())
        self.assertEqual((self.uids(box2), set(box2.message(1).getFlags())), ([1], set()))

    def test_expunge_before_the_batch_never_resurrects(self) -> None:
        """STORE \\Deleted then EXPUNGE at once (the batch not run yet): the replaced name
        goes with the message, so a restart before the batch ran does not bring the
        message back under a new UID."""
        box = self.fill(2)
        result(box.store(imap4.MessageSet(2), ["\\Deleted"], 1, False))
        log = OsLog(self)
        self.assertEqual(result(box.expunge()), [2])
        log.mark("ok")
        # The process dies before its batch ran: a restart finds no trace either.
        box2 = self.select(account=self.reopen())
        self.assertEqual((self.uids(box2), box2.getUIDNext()), ([1], 3))
        self.assertEqual(len(self.listing()), 1)
        # Every name of the message is gone durably at the OK.
        cur_ino = os.stat(self.cur()).st_ino
        gone = [
            i
            for i, e in enumerate(log.events[: log.at("ok")])
            if e[0] == "unname" and e[2] == cur_ino
        ]
        self.assertEqual(len(gone), 2)
        self.assertIn(("fsync", "dir", cur_ino), log.events[max(gone) : log.at("ok")])

    def test_close_and_shutdown_run_the_batch(self) -> None:
        """The last session leaving a folder, and the notifier's flush at shutdown, remove
        the replaced names without waiting for the timer."""
        box = self.fill(2)
        result(box.store(imap4.MessageSet(1), ["\\Seen"], 1, False))
        box.close()
        self.assertEqual(len(self.listing()), 2)
        box = self.select()
        result(box.store(imap4.MessageSet(2), ["\\Seen"], 1, False))
        self.assertEqual(len(self.listing()), 3)
        result(self.notifier.flush())
        self.assertEqual(len(self.listing()), 2)
        self.assertFalse(self.clock.getDelayedCalls())


class DuplicateNameTests(FlagTestBase):
    """Two cur/ names of one key: a flag change or a batch cut short by a crash (the same
    file: one message), or another program's mistake (different files: a conflict)."""

    def twin(self, name: str, letters: str) -> str:
        """What a power cut between a flag change's link and its batch leaves: a second
        name of the same file."""
        other = maildir.join_name(maildir.split_name(name)[0], letters)
        os.link(os.path.join(self.cur(), name), os.path.join(self.cur(), other))
        return other

    def test_scan_removes_a_same_inode_twin_after_a_crash(self) -> None:
        """A fresh index (restart after a crash) finds one message, keeps one name and
        removes the other, once cur/ is durable."""
        box = self.fill(2)
        uids = self.uids(box)
        name = os.path.basename(box.folder.message_path(2) or "")
        self.twin(name, "S")
        log = OsLog(self)
        box2 = self.select(account=self.reopen())
        self.assertEqual(self.uids(box2), uids)
        self.assertEqual(len(self.listing()), 2)
        self.assert_unlinks_after_fsync(log)

    def test_scan_keeps_the_index_name(self) -> None:
        """A loaded folder's rescan keeps the name its index has and removes the twin."""
        box = self.fill(1)
        (name,) = self.listing()
        self.twin(name, "FS")
        result(box.folder.refresh(force=True))
        self.assertEqual(self.listing(), [name])
        self.assertEqual((self.uids(box), set(box.message(1).getFlags())), ([1], set()))

    def test_expunge_with_a_leftover_name_is_for_good(self) -> None:
        """EXPUNGE of a message that a crash left with a second name: the UID is gone for
        good, after a rescan and after a restart (the twin never becomes a new message)."""
        box = self.fill(2)
        name = os.path.basename(box.folder.message_path(2) or "")
        box.close()
        self.twin(name, "T")
        box = self.select(account=self.reopen())
        result(box.store(imap4.MessageSet(2), ["\\Deleted"], 1, False))
        self.assertEqual(result(box.expunge()), [2])
        self.clock.advance(folder.STALE_LINGER)
        result(box.folder.refresh(force=True))
        box.sync()
        self.assertEqual(self.uids(box), [1])
        box2 = self.select(account=self.reopen())
        self.assertEqual((self.uids(box2), box2.getUIDNext()), ([1], 3))
        self.assertEqual(len(self.listing()), 1)

    def test_crash_before_the_batch_keeps_the_answered_flags(self) -> None:
        """The process dies (kill -9) after STOREs were answered but before their batch:
        the restart keeps the names those STOREs made (cgtwist-flaglog says which of two
        names is newer), also for flags toggled back, and removes the others."""
        box = self.fill(2)
        result(box.store(imap4.MessageSet(1), ["\\Flagged"], 1, False))
        result(box.store(imap4.MessageSet(2), ["\\Seen"], 1, False))
        result(box.store(imap4.MessageSet(2), ["\\Seen"], -1, False))
        self.assertEqual(len(self.listing()), 4)
        box2 = self.select(account=self.reopen())
        self.assertEqual(self.uids(box2), [1, 2])
        self.assertEqual([set(box2.message(i).getFlags()) for i in (1, 2)], [{"\\Flagged"}, set()])
        self.assertEqual(len(self.listing()), 2)
        # Once a batch has removed the old names, the hint is emptied.
        result(box2.store(imap4.MessageSet(1), ["\\Seen"], 1, False))
        self.clock.advance(folder.STALE_LINGER)
        self.assertEqual(os.path.getsize(os.path.join(self.md, maildir.FLAG_LOG)), 0)

    def test_different_file_with_the_same_key_left_alone_and_logged(self) -> None:
        """A different file under a message's key in cur/ is neither removed nor taken for
        the message, and the administrator is told (once)."""
        box = self.fill(1)
        (name,) = self.listing()
        other = maildir.join_name(maildir.split_name(name)[0], "S")
        with open(os.path.join(self.cur(), other), "wb") as f:
            f.write(msg("someone else's"))
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        box.close()
        for _ in range(2):
            box = self.select(account=self.reopen())
            self.assertEqual((self.uids(box), set(box.message(1).getFlags())), ([1], set()))
            result(box.folder.refresh(force=True))
        self.assertEqual(self.listing(), sorted([name, other]))
        warned = [
            e
            for e in events
            if other in str(e.get("file")) and "different file" in e.get("log_format", "")
        ]
        self.assertEqual(len(warned), 2)  # once per process (each restart here is one)


class ThreadedNotifier(MailboxNotifier):
    """Runs disk work inline but says when it does, so a test can tell a "thread's" file work
    from the reactor's."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False

    def run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        self.inside = True
        try:
            return super().run(fn, *args)
        finally:
            self.inside = False


class FolderOperationTests(StoreTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.notifier = ThreadedNotifier()
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)
        self.outside: list[str] = []
        real_mkdir, real_rename = os.mkdir, os.rename

        def mkdir(path: str, *a: Any, **kw: Any) -> None:
            if not self.notifier.inside:
                self.outside.append(f"mkdir {path}")
            real_mkdir(path, *a, **kw)

        def rename(a: str, b: str, **kw: Any) -> None:
            if not self.notifier.inside:
                self.outside.append(f"rename {a}")
            real_rename(a, b, **kw)

        self.patch(os, "mkdir", mkdir)
        self.patch(os, "rename", rename)

    def test_flag_batch_in_a_thread(self) -> None:
        """The batch after a STORE (its fsync of cur/ and its unlinks) runs in the folder's
        disk job, never on the reactor thread."""
        deliver(self.md, msg("x"))
        box = result(self.account.select("INBOX", True))
        self.outside.clear()  # the test's own delivery above
        outside: list[str] = []
        real_unlink, real_fsync_dir = os.unlink, maildir.fsync_dir

        def unlink(path: str, **kw: Any) -> None:
            if not self.notifier.inside:
                outside.append(f"unlink {path}")
            real_unlink(path, **kw)

        def fsync_dir(path: str) -> None:
            if not self.notifier.inside:
                outside.append(f"fsync {path}")
            real_fsync_dir(path)

        self.patch(os, "unlink", unlink)
        self.patch(maildir, "fsync_dir", fsync_dir)
        result(box.store(imap4.MessageSet(1), ["\\Seen"], 1, False))
        result(self.notifier.flush())
        self.assertEqual(len(os.listdir(os.path.join(self.md, "cur"))), 1)
        self.assertEqual(outside + self.outside, [])

    def test_create_durable_in_a_thread(self) -> None:
        """CREATE (parents too) is answered once every new directory is durable, and that
        file work runs off the reactor thread."""
        log = OsLog(self)
        self.assertTrue(result(self.account.create("Projects/2026/Q1")))
        log.mark("ok")
        made = log.names_made(log.at("ok"))
        self.assertEqual(len(made), 3 * 4)
        for i, e in made:
            self.assertTrue(log.name_durable_at(i, log.at("ok")), e)
        self.assertEqual(self.outside, [])

    def test_rename_durable_in_a_thread(self) -> None:
        """RENAME (sub-folders included) is answered once the new names are durable; a cut
        after the OK keeps the folders under their new names, not in lost+found."""
        result(self.account.create("A/B"))
        log = OsLog(self)
        self.assertTrue(result(self.account.rename("A", "C")))
        log.mark("ok")
        for name in ("C", "C/B"):
            path = names.folder_path(self.md, name)
            self.assertTrue(log.durable_by(path, log.at("ok")), name)
        self.assertEqual(self.outside, [])
        self.assertEqual(sorted(n for n, _ in self.account.listMailboxes("", "C*")), ["C", "C/B"])

    def test_delete_durable_in_a_thread(self) -> None:
        """DELETE is answered once the folder's removal is durable (its rename out of sight
        fsynced in the account's Maildir)."""
        result(self.account.create("Old"))
        log = OsLog(self)
        self.assertTrue(result(self.account.delete("Old")))
        log.mark("ok")
        md_ino = os.stat(self.md).st_ino
        gone = next(i for i, e in enumerate(log.events) if e[0] == "unname" and e[2] == md_ino)
        self.assertIn(("fsync", "dir", md_ino), log.events[gone : log.at("ok")])
        self.assertEqual(self.outside, [])
        self.assertFalse(self.account.exists("Old"))


class QueuedNotifier(MailboxNotifier):
    """Holds the disk work until ``drain()``, as a busy thread pool would."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[tuple[Any, tuple[Any, ...], defer.Deferred[Any]]] = []

    def run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.jobs.append((fn, args, d))
        return d

    def drain(self) -> None:
        while self.jobs:
            fn, args, d = self.jobs.pop(0)
            try:
                r = fn(*args)
            except Exception:
                d.errback()
            else:
                d.callback(r)


class SubscriptionTests(StoreTestBase):
    def test_subscribe_answered_once_durable(self) -> None:
        """SUBSCRIBE and UNSUBSCRIBE are answered after the subscriptions file is durably
        rewritten, not while the write still waits for a thread."""
        notifier = QueuedNotifier()
        account = MaildirAccount(self.md, "a@example.com", notifier)
        path = os.path.join(self.md, "subscriptions")
        for op in (account.subscribe, account.unsubscribe):
            log = OsLog(self)
            d = defer.maybeDeferred(op, "Work")
            d.addCallback(lambda _, log=log: log.mark("ok"))
            notifier.drain()
            result(d)
            self.assertTrue(log.durable_by(path, log.at("ok")), op.__name__)

    def test_failed_write_fails_subscribe(self) -> None:
        """A subscriptions file that cannot be made durable (EIO) fails SUBSCRIBE instead of
        answering OK for a change a restart would not know."""

        def eio(path: str) -> None:
            raise OSError(5, "Input/output error")

        self.patch(maildir, "fsync_dir", eio)
        self.assertRaises(OSError, result, defer.maybeDeferred(self.account.subscribe, "Work"))
        self.flushLoggedErrors(OSError)
