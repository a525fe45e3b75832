"""The per-folder index: MODSEQ per message and HIGHESTMODSEQ that only grow, kept across
restarts, crashes and lost or damaged index files, with the cached facts of each message."""

from __future__ import annotations

import json
import os

from twisted.mail import imap4

from cgtwist import settings
from cgtwist.mailstore import filemeta, index, maildir, uidlist
from cgtwist.mailstore.account import MaildirAccount
from cgtwist.mailstore.mailbox import MaildirMailbox
from cgtwist.mailstore.notifier import MailboxNotifier
from tests.mailstore.test_mailstore import Recorder, StoreTestBase, deliver, msg, result


class IndexTestBase(StoreTestBase):
    def modseqs(self, box: MaildirMailbox) -> dict[int, int]:
        return {u: box.modseq_of(u) or 0 for u in box.uids}

    def store(self, box: MaildirMailbox, uid: int, flags: list[str], mode: int = 1) -> None:
        result(box.store(imap4.MessageSet(uid), flags, mode, True))

    def index_path(self, name: str = index.INDEX_FILE) -> str:
        return os.path.join(self.md, name)


class ModseqTests(IndexTestBase):
    def test_every_change_raises_modseq(self) -> None:
        """A flag change, an expunge and new mail each raise HIGHESTMODSEQ; the changed
        message gets the new value, the others keep theirs (RFC 7162 §3.1)."""
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        before = self.modseqs(box)
        high = box.highest_modseq
        self.assertTrue(all(0 < m <= high for m in before.values()), (before, high))

        self.store(box, 2, ["\\Seen"])
        after = self.modseqs(box)
        self.assertGreater(after[2], high)
        self.assertEqual(box.highest_modseq, after[2])
        self.assertEqual((after[1], after[3]), (before[1], before[3]))

        # A STORE that changes nothing leaves MODSEQ alone.
        self.store(box, 2, ["\\Seen"])
        self.assertEqual(box.modseq_of(2), after[2])

        high = box.highest_modseq
        self.store(box, 3, ["\\Deleted"])
        high2 = box.highest_modseq
        self.assertGreater(high2, high)
        result(box.expunge())
        self.assertGreater(box.highest_modseq, high2)

        high = box.highest_modseq
        [uid] = result(box.folder.add([(msg("appended"), ["\\Flagged"], None)]))
        self.assertGreater(box.modseq_of(uid) or 0, high)
        self.assertEqual(box.highest_modseq, box.modseq_of(uid))

        high = box.highest_modseq
        deliver(self.md, msg("delivered"))
        result(box.refresh())
        self.assertGreater(box.highest_modseq, high)
        self.assertEqual(box.modseq_of(max(box.uids)), box.highest_modseq)

    def test_strictly_increasing_across_two_sessions(self) -> None:
        """Flag changes from two sessions on one folder each get a MODSEQ above every
        earlier one, whichever session made them."""
        for i in range(4):
            deliver(self.md, msg(f"m{i}"))
        one = self.select()
        two = self.select()
        seen = [one.highest_modseq]
        for i in range(20):
            box = one if i % 2 else two
            uid = 1 + i % 4
            self.store(box, uid, ["\\Flagged"], 1 if (i // 4) % 2 == 0 else -1)
            got = box.modseq_of(uid) or 0
            self.assertGreater(got, seen[-1], f"change {i}")
            seen.append(got)
            self.assertEqual(one.highest_modseq, two.highest_modseq)
            self.assertEqual(one.modseq_of(uid), two.modseq_of(uid))

    def test_external_flag_change_raises_modseq(self) -> None:
        """Another program renaming a file to change its flags is seen by the next scan
        as a change with a new MODSEQ."""
        deliver(self.md, msg("x"))
        box = self.select()
        high = box.highest_modseq
        cur = os.path.join(self.md, "cur")
        [name] = os.listdir(cur)
        os.rename(os.path.join(cur, name), os.path.join(cur, name.split(":")[0] + ":2,FS"))
        result(box.folder.refresh(force=True))
        self.assertGreater(box.modseq_of(1) or 0, high)
        self.assertEqual(box.highest_modseq, box.modseq_of(1))


class PersistenceTests(IndexTestBase):
    def setUp(self) -> None:
        super().setUp()
        for i in range(5):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        self.store(box, 1, ["\\Seen"])
        self.store(box, 3, ["\\Flagged", "$Label1"])
        self.store(box, 1, ["\\Answered"])
        self.before = self.modseqs(box)
        self.high = box.highest_modseq
        box.close()

    def test_survives_restart(self) -> None:
        """A restart keeps every message's MODSEQ; HIGHESTMODSEQ never goes down, and the
        next change gets a MODSEQ above every earlier one."""
        box = self.select(account=self.reopen())
        self.assertEqual(self.modseqs(box), self.before)
        self.assertGreaterEqual(box.highest_modseq, self.high)
        self.store(box, 5, ["\\Seen"])
        self.assertGreater(box.modseq_of(5) or 0, max(self.high, box.highest_modseq - 1))

    def test_index_deleted_never_goes_backwards(self) -> None:
        """With the index files gone, the folder is rebuilt from the Maildir (same UIDs and
        flags) and every MODSEQ is above every value handed out before."""
        os.unlink(self.index_path())
        os.unlink(self.index_path(index.LOG_FILE))
        box = self.select(account=self.reopen())
        self.assertEqual(sorted(box.uids), [1, 2, 3, 4, 5])
        self.assertIn("$Label1", box.flags_of(3))
        self.assertTrue(all(m > self.high for m in self.modseqs(box).values()))
        self.assertGreaterEqual(box.highest_modseq, max(self.modseqs(box).values()))
        self.store(box, 2, ["\\Seen"])
        self.assertGreater(box.modseq_of(2) or 0, self.high)
        self.assertTrue(os.path.exists(self.index_path()))

    def test_lost_log_tail_never_goes_backwards(self) -> None:
        """A power cut can lose the last lines of the log (never fsynced): the values they
        held were reserved in the uidlist, so nothing handed out is handed out again."""
        with open(self.index_path(index.LOG_FILE), "rb") as f:
            lines = f.read().split(b"\n")
        with open(self.index_path(index.LOG_FILE), "wb") as f:
            f.write(lines[0] + b"\n")  # every change since the snapshot lost
        box = self.select(account=self.reopen())
        self.store(box, 4, ["\\Seen"])
        self.assertGreater(box.modseq_of(4) or 0, self.high)
        self.assertGreaterEqual(box.highest_modseq, self.high)
        # The changes the log lost are still on disk (file names): new MODSEQs for them.
        for uid in (1, 3):
            self.assertGreater(box.modseq_of(uid) or 0, self.high)

    def test_torn_log_line_is_dropped_and_the_rest_kept(self) -> None:
        """A line cut short (a crash mid-write) ends the replay: the changes before it
        keep their MODSEQ, nothing raises, and later changes are appended after it."""
        with open(self.index_path(index.LOG_FILE), "ab") as f:
            f.write(b'["f",99999,[["')
        box = self.select(account=self.reopen())
        self.assertEqual(self.modseqs(box), self.before)
        self.store(box, 2, ["\\Draft"])
        box.close()
        box = self.select(account=self.reopen())
        self.assertIn("\\Draft", box.flags_of(2))
        self.assertEqual(box.modseq_of(1), self.before[1])
        self.assertGreater(box.modseq_of(2) or 0, self.high)

    def test_damaged_snapshot_is_rebuilt(self) -> None:
        """Garbage in the index file: the folder opens with its messages and flags from the
        Maildir, MODSEQs above the old ones, and a good index is written again."""
        with open(self.index_path(), "wb") as f:
            f.write(b"\x00garbage\n")
        box = self.select(account=self.reopen())
        self.assertEqual(sorted(box.uids), [1, 2, 3, 4, 5])
        self.assertEqual(box.flags_of(1), ["\\Answered", "\\Seen"])
        self.assertTrue(all(m > self.high for m in self.modseqs(box).values()))
        with open(self.index_path(), "rb") as f:
            self.assertEqual(json.loads(f.readline())["v"], 1)

    def test_reservation_in_uidlist(self) -> None:
        """The uidlist (fsynced) holds a MODSEQ reservation at least as high as HIGHESTMODSEQ."""
        ul = uidlist.load(self.md)
        assert ul is not None
        self.assertGreaterEqual(ul.modseq_reserved, self.high)


class IndexFileTests(IndexTestBase):
    def test_change_appends_a_line_not_a_rewrite(self) -> None:
        """A flag change appends its line to the log, with the directory times it found and
        left (for other processes); the snapshot is not rewritten."""
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        snap = os.stat(self.index_path())
        with open(self.index_path(index.LOG_FILE), "rb") as f:
            before = f.read()
        self.store(box, 2, ["\\Seen"])
        with open(self.index_path(index.LOG_FILE), "rb") as f:
            after = f.read()
        self.assertTrue(after.startswith(before))
        # The change's line, its ``d`` line, and the ``d`` line of the removal of the name
        # it replaced (no timer here: at once).
        kinds = [json.loads(line)[0] for line in after[len(before) :].splitlines()]
        self.assertEqual(kinds, ["f", "d", "d"])
        now = os.stat(self.index_path())
        self.assertEqual((now.st_ino, now.st_mtime_ns), (snap.st_ino, snap.st_mtime_ns))

    def test_compaction_keeps_everything(self) -> None:
        """Once the log has grown enough it is folded into a new snapshot; the state read
        back after a restart is the same."""
        self.patch(index, "COMPACT_MIN", 10)
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        for i in range(12):
            self.store(box, 1 + i % 3, ["\\Flagged"], 1 if i % 2 == 0 else -1)
        with open(self.index_path(index.LOG_FILE), "rb") as f:
            # Its header line and fewer than COMPACT_MIN change lines.
            self.assertLessEqual(len(f.read().splitlines()), 10)
        before = self.modseqs(box)
        flags = {u: box.flags_of(u) for u in box.uids}
        box.close()
        box = self.select(account=self.reopen())
        self.assertEqual(self.modseqs(box), before)
        self.assertEqual({u: box.flags_of(u) for u in box.uids}, flags)

    def test_index_holds_cached_facts(self) -> None:
        """The index keeps what SEARCH and FETCH need without opening message files:
        size, INTERNALDATE, the header fields, flags and MODSEQ."""
        deliver(self.md, msg("indexed subject"))
        box = self.select()
        self.store(box, 1, ["\\Seen"])
        loaded = index.FolderIndex(self.md).load()
        [(key, rec)] = loaded.records.items()
        e = box.folder.entries[1]
        self.assertEqual(key, e.key)
        self.assertEqual((rec.uid, rec.modseq, rec.letters), (1, e.modseq, "S"))
        self.assertEqual(rec.meta.headers["subject"], "indexed subject")
        self.assertEqual(rec.meta.size, e.meta.size)
        self.assertEqual(rec.meta.date, e.meta.date)
        self.assertEqual(loaded.highest, box.highest_modseq)

    def test_derived_values_logged_and_read_back_without_the_file(self) -> None:
        """ENVELOPE and BODYSTRUCTURE computed once are kept in the index: after a restart
        they are served with the message file gone from reach."""
        deliver(self.md, msg("x"))
        box = self.select()
        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
        m.memo("envelope-test", lambda: b"ENV")
        m.cached("bodystructure-test", lambda: b"BS")
        result(box.folder.flush())
        box.close()
        box = self.select(account=self.reopen())
        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)

        def never() -> bytes:
            raise AssertionError("recomputed")

        self.assertEqual(m.memo("envelope-test", never), b"ENV")
        self.assertEqual(m.cached("bodystructure-test", never), b"BS")

    def test_old_cache_adopted(self) -> None:
        """A folder indexed by an older version (cgtwist-cache, no index) keeps its UIDs and
        facts without re-reading its messages; the old cache file is then removed."""
        deliver(self.md, msg("old"))
        self.select()
        os.unlink(self.index_path())
        os.unlink(self.index_path(index.LOG_FILE))
        ul = uidlist.load(self.md)
        assert ul is not None
        [name] = os.listdir(os.path.join(self.md, "cur"))
        meta = filemeta.measure(os.path.join(self.md, "cur", name))
        uidlist.save_cache(self.md, {maildir.split_name(name)[0]: meta}, ul.uidvalidity)
        measured: list[str] = []
        real = filemeta.measure
        self.patch(filemeta, "measure", lambda p, *a: measured.append(p) or real(p, *a))
        box = self.select(account=self.reopen())
        self.assertEqual(box.uids, [1])
        self.assertEqual(box.uid_validity, ul.uidvalidity)
        self.assertEqual(measured, [])
        self.assertFalse(os.path.exists(self.index_path(uidlist.CACHE_FILE)))
        self.assertTrue(os.path.exists(self.index_path()))


MULTIPART = (
    b"From: Alice <alice@example.com>\r\nTo: b@example.com\r\nCc: c@example.com\r\n"
    b"Subject: quarterly report\r\nDate: Mon, 06 Jan 2025 10:00:00 +0000\r\n"
    b"Message-ID: <q1@example.com>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\n"
    b"Content-Type: application/octet-stream\r\n\r\nxxxx\r\n--b1--\r\n"
)


class WarmIndexTests(IndexTestBase):
    """SEARCH on flags, dates, sizes and the cached header fields, and FETCH of FLAGS,
    INTERNALDATE, RFC822.SIZE, ENVELOPE and BODYSTRUCTURE, never open a message file once
    the index is warm, also after a restart."""

    QUERY = b"(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)"
    SEARCHES = [
        b"UNSEEN",
        b"FLAGGED",
        b'FROM "alice"',
        b'SUBJECT "quarterly"',
        b"SINCE 1-Jan-2025",
        b"BEFORE 1-Jan-2100",
        b"LARGER 100",
        b'HEADER Message-ID "q1@"',
        b'OR TO "b@example" CC "nobody"',
        b"KEYWORD $label1",
    ]

    def fetch_all(self, box: MaildirMailbox) -> list[bytes]:
        from cgtwist.protocols.imap import fetch as imap_fetch

        parser = imap4._FetchParser()
        parser.parseString(self.QUERY)
        return [
            b"".join(imap_fetch.fetch_response(seq, m, parser.result, True))
            for seq, m in box.fetch(imap4.MessageSet(1, None), False)
        ]

    def search(self, box: MaildirMailbox, spec: bytes) -> list[int]:
        from twisted.internet import task

        from cgtwist.protocols.imap import parse as imap_parse
        from cgtwist.protocols.imap import scan as imap_scan
        from cgtwist.protocols.imap import search as imap_search

        _cs, pred = imap_search.compile_search(imap_parse.tokenize([spec], []))
        clock = task.Clock()
        d = imap_scan.collect(box, None, clock, lambda: False, pred, set(), lambda t, s, u: u)
        out: list[object] = []
        d.addBoth(out.append)
        while not out:
            clock.advance(0)
        assert isinstance(out[0], list), out[0]
        return out[0]

    def test_no_file_opened(self) -> None:
        from cgtwist.mailstore import message

        deliver(self.md, MULTIPART)
        deliver(self.md, msg("other"))
        box = self.select()
        self.store(box, 1, ["\\Flagged", "$Label1"])
        fetched = self.fetch_all(box)
        found = [self.search(box, s) for s in self.SEARCHES]
        self.assertEqual(found[0], [1, 2])
        self.assertEqual(found[1:4], [[1], [1], [1]])
        self.assertEqual(found[4:], [[1, 2], [1, 2], [1], [1], [1, 2], [1]])
        result(box.folder.flush())
        box.close()

        box = self.select(account=self.reopen())
        opened: list[object] = []

        def no_open(*a: object) -> None:
            opened.append(a)
            raise AssertionError("a message file was opened")

        self.patch(message, "_open_entry", no_open)
        self.assertEqual(self.fetch_all(box), fetched)
        self.assertEqual([self.search(box, s) for s in self.SEARCHES], found)
        self.assertEqual(opened, [])


class SearchAccessTests(IndexTestBase):
    def test_message_rows_match_fetch(self) -> None:
        """message_rows (SEARCH's walk) gives what FETCH 1:* gives, flags and \\Recent too."""
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        self.store(box, 2, ["\\Seen"])
        rows = [(s, m.getUID(), m.getFlags()) for s, m in box.message_rows()]
        every = [
            (s, m.getUID(), m.getFlags()) for s, m in box.fetch(imap4.MessageSet(1, None), False)
        ]
        self.assertEqual(rows, every)
        self.assertEqual(rows[-1], box.message_rows()[-1][:1] + rows[-1][1:])

    def test_internal_day_and_search_flags(self) -> None:
        """The day SEARCH compares is INTERNALDATE's UTC day; flags come lower-cased with
        \\Recent for the session that has it."""
        import datetime
        import email.utils

        deliver(self.md, msg("x"))
        box = self.select()
        Recorder().on(box)
        self.store(box, 1, ["\\Flagged"])
        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
        t = email.utils.parsedate_tz(m.getInternalDate())
        assert t is not None
        self.assertEqual(m.internal_day(), datetime.date(t[0], t[1], t[2]))
        self.assertEqual(m.search_flags(), {"\\flagged", "\\recent"})


class AllocatorTests(IndexTestBase):
    def test_reserves_a_block_durably_before_handing_out(self) -> None:
        """A MODSEQ beyond the reservation is only returned once the uidlist on disk
        reserves it; within the block no file is written."""
        ul = uidlist.UidList(uidvalidity=7)
        uidlist.save(self.md, ul)
        alloc = index.ModseqAllocator(self.md, ul, 0)
        saved: list[int] = []
        real = uidlist.save

        def spy(folder: str, u: uidlist.UidList) -> None:
            real(folder, u)
            on_disk = uidlist.load(folder)
            assert on_disk is not None
            saved.append(on_disk.modseq_reserved)

        self.patch(uidlist, "save", spy)
        got = [alloc.next() for _ in range(index.MODSEQ_BLOCK + 1)]
        self.assertEqual(got, list(range(1, index.MODSEQ_BLOCK + 2)))
        self.assertEqual(saved, [index.MODSEQ_BLOCK, 2 * index.MODSEQ_BLOCK])
        # A new process starts above everything reserved, whatever the index says.
        again = uidlist.load(self.md)
        assert again is not None
        self.assertEqual(
            index.ModseqAllocator(self.md, again, 3).next(), 2 * index.MODSEQ_BLOCK + 1
        )

    def test_old_uidlist_without_reservation_is_read(self) -> None:
        """A uidlist written before MODSEQ existed (no M field) loads, reserving nothing."""
        with open(os.path.join(self.md, uidlist.UIDLIST_FILE), "w") as f:
            f.write("cgtwist-uidlist 1 V5 N3\n1 a\n2 b\n")
        ul = uidlist.load(self.md)
        assert ul is not None
        self.assertEqual((ul.uidvalidity, ul.uidnext, ul.modseq_reserved), (5, 3, 0))


class TombstoneTests(IndexTestBase):
    """Expunged UIDs with the MODSEQ of their expunge, for QRESYNC's VANISHED (EARLIER)
    (RFC 7162 §3.2.5.1): kept across restarts and compactions, bounded, and never missing an
    expunge a client could have been told of."""

    def setUp(self) -> None:
        super().setUp()
        for i in range(6):
            deliver(self.md, msg(f"m{i}"))

    def expunge(self, box: MaildirMailbox, *uids: int) -> None:
        for uid in uids:
            self.store(box, uid, ["\\Deleted"])
        result(box.expunge())

    def test_expunges_since_a_modseq(self) -> None:
        box = self.select()
        start = box.highest_modseq
        self.expunge(box, 2)
        middle = box.highest_modseq
        self.expunge(box, 4, 5)
        self.assertEqual(box.folder.vanished_since(start), [2, 4, 5])
        self.assertEqual(box.folder.vanished_since(middle), [4, 5])
        self.assertEqual(box.folder.vanished_since(box.highest_modseq), [])

    def test_kept_across_restart_and_compaction(self) -> None:
        box = self.select()
        start = box.highest_modseq
        self.expunge(box, 1, 3)
        box.close()
        box = self.select(account=self.reopen())
        self.assertEqual(box.folder.vanished_since(start), [1, 3])
        result(box.folder.flush())
        result(box.folder._locked(box.folder._compact_blocking))
        box.close()
        box = self.select(account=self.reopen())
        self.assertEqual(box.folder.vanished_since(start), [1, 3])

    def test_compaction_writes_a_copy_of_the_tombstones(self) -> None:
        """A compaction runs in the folder's thread while the reactor goes on recording
        expunges: it writes a copy of the tombstones, never iterates the live ones (that
        raised 'dictionary changed size during iteration' and lost the compaction)."""
        box = self.select()
        self.expunge(box, 1, 2)
        folder = box.folder
        line = index.tombstone_line

        def meanwhile(uid: int, modseq: int) -> list[object]:
            folder._tombstones([100 + uid], modseq)  # as the reactor would, mid-write
            return line(uid, modseq)

        self.patch(index, "tombstone_line", meanwhile)
        result(folder._locked(folder._compact_blocking))
        self.assertFalse(folder._index.failed)
        self.assertEqual(folder._index.pending, 0)

    def test_lost_log_tail_still_reports_the_expunge(self) -> None:
        """A power cut that loses the log's ``x`` line: the message the index still holds
        is gone from the disk, so the next load tombstones it above every earlier MODSEQ."""
        box = self.select()
        result(box.folder._locked(box.folder._compact_blocking))
        seen = box.highest_modseq
        self.expunge(box, 6)
        box.close()
        with open(self.index_path(index.LOG_FILE), "rb") as f:
            lines = f.read().split(b"\n")
        with open(self.index_path(index.LOG_FILE), "wb") as f:
            f.write(lines[0] + b"\n")
        box = self.select(account=self.reopen())
        self.assertEqual(box.folder.vanished_since(seen), [6])

    def test_without_an_index_nothing_earlier_is_claimed(self) -> None:
        box = self.select()
        start = box.highest_modseq
        self.expunge(box, 2)
        box.close()
        os.unlink(self.index_path())
        os.unlink(self.index_path(index.LOG_FILE))
        box = self.select(account=self.reopen())
        self.assertIsNone(box.folder.vanished_since(start))

    def test_bounded_by_the_setting_read_at_each_expunge(self) -> None:
        """imap.tombstones_kept bounds the tombstones, read at each expunge (the server passes
        the setting to the notifier), so a changed value applies without a restart."""
        kept = [100]
        self.notifier = MailboxNotifier(tombstones_kept=lambda: kept[0])
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)
        box = self.select()
        start = box.highest_modseq
        kept[0] = 2
        self.expunge(box, 1)
        after_first = box.highest_modseq
        self.expunge(box, 2)
        self.expunge(box, 3)
        self.assertEqual(len(box.folder.vanished), 2)
        self.assertIsNone(box.folder.vanished_since(start))
        self.assertEqual(box.folder.vanished_since(after_first), [2, 3])
        self.assertRaises(ValueError, settings.validate, "imap.tombstones_kept", 0)


class PowerCutTests(IndexTestBase):
    """The log is not fsynced: after the machine restarted without a clean close, lines may
    be missing (a flag set and cleared again would look unchanged with its old MODSEQ), so
    every message gets a new MODSEQ; after a kill -9 (same boot) nothing was lost."""

    def setUp(self) -> None:
        super().setUp()
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        self.store(box, 1, ["\\Seen"])
        self.store(box, 1, ["\\Seen"], -1)  # back as it was, at a new MODSEQ
        self.box = box
        self.before = self.modseqs(box)
        self.high = box.highest_modseq

    def reboot(self) -> None:
        self.patch(index, "current_boot", lambda: "another-boot")

    def test_after_a_power_cut_every_modseq_is_new(self) -> None:
        self.box.close()
        self.reboot()
        box = self.select(account=self.reopen())
        self.assertTrue(all(m > self.high for m in self.modseqs(box).values()))

    def test_after_a_clean_close_modseqs_are_kept_across_a_reboot(self) -> None:
        result(self.notifier.flush())
        self.box.close()
        self.reboot()
        box = self.select(account=self.reopen())
        self.assertEqual(self.modseqs(box), self.before)

    def test_clean_close_line_is_in_the_log_when_it_is_fsynced(self) -> None:
        """The shutdown's clean-close line is written before the log's fsync, and is the
        log's last line: it is what makes the MODSEQs trusted after a reboot."""
        real = os.fsync
        seen: list[bytes] = []

        def fsync(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(index.LOG_FILE):
                with open(self.index_path(index.LOG_FILE), "rb") as f:
                    seen.append(f.read().splitlines()[-1])
            real(fd)

        self.patch(os, "fsync", fsync)
        result(self.notifier.flush())
        self.assertEqual(seen, [b'["c"]'])
        with open(self.index_path(index.LOG_FILE), "rb") as f:
            self.assertEqual(f.read().splitlines()[-1], b'["c"]')

    def fail_log_writes(self) -> list[bool]:
        """Writes to the index log fail (ENOSPC) while the returned flag list is empty."""
        real = os.write
        healed: list[bool] = []

        def write(fd: int, data: bytes) -> int:
            if not healed and os.readlink(f"/proc/self/fd/{fd}").endswith(index.LOG_FILE):
                raise OSError(28, "No space left on device")
            return real(fd, data)

        self.patch(os, "write", write)
        return healed

    def test_a_failed_append_drops_the_index_until_it_is_written_whole(self) -> None:
        healed = self.fail_log_writes()
        real = maildir.write_atomic

        def atomic(path: str, data: bytes, sync: bool = True) -> None:
            if not healed and os.path.basename(path).startswith(index.INDEX_FILE):
                raise OSError(28, "No space left on device")
            real(path, data, sync)

        self.patch(maildir, "write_atomic", atomic)
        self.store(self.box, 2, ["\\Flagged"])
        self.assertFalse(os.path.exists(self.index_path()))
        self.assertFalse(os.path.exists(self.index_path(index.LOG_FILE)))
        healed.append(True)
        # The change is answered and kept on disk; a restart now rebuilds above everything.
        self.assertIn("\\Flagged", self.box.flags_of(2))
        self.box.close()
        box = self.select(account=self.reopen())
        self.assertTrue(all(m > self.high for m in self.modseqs(box).values()))
        self.assertIn("\\Flagged", box.flags_of(2))
        self.assertTrue(os.path.exists(self.index_path()))

    def test_compaction_after_a_failed_append_writes_it_whole_again(self) -> None:
        healed = self.fail_log_writes()
        self.store(self.box, 2, ["\\Flagged"])
        healed.append(True)
        self.store(self.box, 3, ["\\Flagged"])  # the next change: the index is written whole
        self.assertTrue(os.path.exists(self.index_path()))
        now = self.modseqs(self.box)
        self.box.close()
        box = self.select(account=self.reopen())
        self.assertEqual(self.modseqs(box), now)
