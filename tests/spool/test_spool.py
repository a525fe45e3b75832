"""Tests for cgtwist.spool: the durable Queue/ folder, its file format, journal and recovery."""

from __future__ import annotations

import errno
import os
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from cgtwist import durable
from cgtwist.errors import MailError
from cgtwist.spool import format as fmt
from cgtwist.spool import moves as moves_mod
from cgtwist.spool.spool import Spool
from cgtwist.types import Envelope, Recipient


def envelope(n: int = 2) -> Envelope:
    return Envelope(
        sender="alice@example.com",
        recipients=[Recipient(f"u{i}@example.org") for i in range(n)],
        submit={
            "peer": "192.0.2.1",
            "helo": "client.example",
            "protocol": "ESMTP",
            "account": "",
            "tls": "TLSv1.3",
        },
        params={"BODY": "8BITMIME"},
    )


DATA = b"Subject: hi\r\n\r\nbody \x00\xff\r\n.dots\r\n"


class SpoolTestBase(unittest.TestCase):
    def setUp(self) -> None:
        # Finished messages go into the pool at their removal's commit, not in batches, so
        # the tests see Queue/ settle (the batch has its own test, test_durability).
        self.patch(moves_mod, "DONE_BATCH", 1)
        self.base = tempfile.mkdtemp(prefix="cgtwist-spool-")
        self.addCleanup(_rmtree, self.base)
        self.spool = Spool(self.base, reactor)
        self.qdir = os.path.join(self.base, "Queue")
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class FormatTests(unittest.TestCase):
    def test_round_trip(self) -> None:
        """A spooled envelope and message come back exactly as they went in, binary included."""
        env = envelope(3)
        env.recipients[1].state = "delivered"
        chunks, size = fmt.encode("0000000000000001-1-1", fmt.envelope_json(env, 12.5), DATA)
        raw = b"".join(chunks)
        self.assertEqual(len(raw), size)
        env2, queued, data = fmt.decode("0000000000000001-1-1", raw)
        self.assertEqual(env2, env)
        self.assertEqual(queued, 12.5)
        self.assertEqual(data, DATA)

    def test_corruptions_detected(self) -> None:
        """Truncated, bit-flipped, empty, garbage or misnamed files are never taken for mail."""
        mid = "0000000000000001-1-1"
        raw = b"".join(fmt.encode(mid, fmt.envelope_json(envelope(), 1.0), DATA)[0])
        flipped = bytearray(raw)
        flipped[len(raw) // 2] ^= 0x01
        cases = {
            "truncated": raw[:-10],
            "no trailer": raw[: -fmt.TRAILER_LEN],
            "bad checksum": bytes(flipped),
            "zero": b"",
            "garbage": os.urandom(300),
            "appended": raw + b"x",
        }
        for name, bad in cases.items():
            with self.assertRaises(fmt.SpoolCorrupt, msg=name):
                fmt.decode(mid, bad)
        with self.assertRaises(fmt.SpoolCorrupt):
            fmt.decode("0000000000000002-1-1", raw)

    def test_journal_torn_line_ignored(self) -> None:
        """A journal line cut short by a crash, or damaged, is ignored; the others apply."""
        good = fmt.journal_line({"k": "r", "i": 0, "s": "delivered", "ro": "", "d": "ok"})
        damaged = bytearray(fmt.journal_line({"k": "r", "i": 1, "s": "failed", "ro": "", "d": "x"}))
        damaged[12] ^= 0x20
        torn = fmt.journal_line({"k": "r", "i": 1, "s": "delivered", "ro": "", "d": ""})[:-5]
        records, bad = fmt.parse_journal(good + bytes(damaged) + torn)
        self.assertEqual(len(records), 1)
        self.assertEqual(bad, 2)
        entry = fmt.SpoolEntry("x", envelope(), 0.0)
        fmt.apply_journal(entry, records)
        self.assertEqual([r.state for r in entry.envelope.recipients], ["delivered", "pending"])


class StoreTests(SpoolTestBase):
    def test_interface(self) -> None:
        """Spool provides ISpool, the contract the rest of the server codes against."""
        from zope.interface.verify import verifyObject

        from cgtwist.interfaces import ISpool

        self.assertTrue(verifyObject(ISpool, self.spool))

    @defer.inlineCallbacks
    def test_store_load_round_trip(self) -> None:
        """A stored message loads back byte-exact with its envelope and submit info."""
        env = envelope()
        msg_id = yield self.spool.store(env, DATA)
        self.assertTrue(fmt.valid_id(msg_id))
        self.assertEqual(
            sorted(os.listdir(self.qdir)),
            [msg_id + ".msg", "corrupt", "finished", "free", "incoming"],
        )
        env2, data = yield self.spool.load(msg_id)
        self.assertEqual(data, DATA)
        self.assertEqual(env2.sender, env.sender)
        self.assertEqual(env2.submit["helo"], "client.example")
        self.assertEqual([r.address for r in env2.recipients], [r.address for r in env.recipients])
        self.assertEqual(self.spool.message_count(), 1)

    @defer.inlineCallbacks
    def test_ids_sortable_and_unique(self) -> None:
        """Message ids are unique and sort in the order the messages were accepted."""
        ids = []
        for _ in range(5):
            ids.append((yield self.spool.store(envelope(1), b"x\r\n")))
        self.assertEqual(len(set(ids)), 5)
        self.assertEqual(sorted(ids), ids)

    @defer.inlineCallbacks
    def test_fsync_order(self) -> None:
        """The Deferred (the 250) fires only after fsync(file) < rename < fsync(directory)."""
        calls: list[tuple[str, Any]] = []
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def rename(a: str, b: str) -> None:
            calls.append(("rename", b))
            real_rename(a, b)

        self.patch(os, "fsync", fsync)
        self.patch(os, "rename", rename)
        msg_id = yield self.spool.store(envelope(), DATA)
        calls.append(("fired", msg_id))
        kinds = [(k, os.path.basename(v) if k != "fired" else v) for k, v in calls]
        self.assertEqual(
            kinds,
            [
                ("fsync", msg_id + ".tmp"),
                ("rename", msg_id + ".msg"),
                ("fsync", "Queue"),
                ("fired", msg_id),
            ],
        )

    @defer.inlineCallbacks
    def test_group_commit(self) -> None:
        """Many concurrent messages share directory fsyncs instead of one each."""
        ds = [self.spool.store(envelope(1), b"m%d\r\n" % i) for i in range(20)]
        ids = yield defer.gatherResults(ds)
        self.assertEqual(len(set(ids)), 20)
        self.assertLess(self.spool._dirsync.syncs, 20)

    @defer.inlineCallbacks
    def test_enospc_removes_tmp(self) -> None:
        """A full disk while writing answers 452 4.3.1 and leaves no partial file behind."""
        real_write = os.write

        def write(fd: int, data: Any) -> int:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        def writev(fd: int, chunks: Any) -> int:
            return write(fd, b"".join(chunks))

        self.patch(os, "write", write)
        self.patch(os, "writev", writev)
        with self.assertRaises(MailError) as cm:
            yield self.spool.store(envelope(), DATA)
        self.assertEqual((cm.exception.code, cm.exception.enhanced), (452, "4.3.1"))
        self.assertEqual([n for n in os.listdir(self.qdir) if "." in n], [])
        self.assertEqual(self.spool.message_count(), 0)

    @defer.inlineCallbacks
    def test_eio_on_fsync(self) -> None:
        """An I/O error at fsync answers 451 4.3.0 and leaves no file behind."""

        def fsync(fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        self.patch(os, "fsync", fsync)
        with self.assertRaises(MailError) as cm:
            yield self.spool.store(envelope(), DATA)
        self.assertEqual((cm.exception.code, cm.exception.enhanced), (451, "4.3.0"))
        self.assertEqual([n for n in os.listdir(self.qdir) if "." in n], [])

    @defer.inlineCallbacks
    def test_directory_fsync_failure_withdraws_message(self) -> None:
        """If the directory cannot be synced the client gets 451 and the file is withdrawn."""

        def bad(path: str) -> None:
            raise OSError(errno.EIO, "I/O error")

        self.patch(durable, "fsync_dir", bad)
        with self.assertRaises(MailError) as cm:
            yield self.spool.store(envelope(), DATA)
        self.assertEqual(cm.exception.code, 451)
        self.assertEqual([n for n in os.listdir(self.qdir) if "." in n], [])

    @defer.inlineCallbacks
    def test_remove(self) -> None:
        """A finished message leaves the spool with its journal."""
        msg_id = yield self.spool.store(envelope(), DATA)
        env, _ = yield self.spool.load(msg_id)
        env.recipients[0].state = "delivered"
        yield self.spool.update(msg_id, env)
        yield self.spool.remove(msg_id)
        self.assertEqual([n for n in os.listdir(self.qdir) if "." in n], [])
        self.assertEqual(self.spool.message_count(), 0)

    def test_bad_id_never_becomes_a_path(self) -> None:
        """An id from the admin command line cannot name a file outside the queue."""
        d = self.spool.load("../../etc/passwd")
        self.failureResultOf(d, KeyError)
        self.failureResultOf(self.spool.remove("../x"), KeyError)


class JournalTests(SpoolTestBase):
    @defer.inlineCallbacks
    def test_journal_resume_after_crash(self) -> None:
        """After a crash, recipients already delivered stay delivered; only the rest are pending."""
        msg_id = yield self.spool.store(envelope(3), DATA)
        env, _ = yield self.spool.load(msg_id)
        env.recipients[0].state = "delivered"
        env.recipients[0].detail = "250 ok"
        yield self.spool.update(msg_id, env)
        env.recipients[2].state = "failed"
        env.recipients[2].detail = "550 5.1.1 unknown"
        yield self.spool.update(msg_id, env)
        yield self.spool.record(msg_id, [{"k": "a", "t": 1.0, "q": "LOCAL(a@b)", "res": "x"}])
        # "Crash": a new Spool instance over the same directory.
        spool2 = Spool(self.base, reactor)
        ids = yield spool2.recover()
        self.assertEqual(ids, [msg_id])
        entry = yield spool2.load_entry(msg_id)
        self.assertEqual(
            [r.state for r in entry.envelope.recipients], ["delivered", "pending", "failed"]
        )
        self.assertEqual(entry.envelope.recipients[2].detail, "550 5.1.1 unknown")
        self.assertEqual(len(entry.history), 1)

    @defer.inlineCallbacks
    def test_update_writes_only_changes(self) -> None:
        """Each update journals only the recipients that changed, keeping the journal small."""
        msg_id = yield self.spool.store(envelope(50), DATA)
        env, _ = yield self.spool.load(msg_id)
        env.recipients[7].state = "delivered"
        yield self.spool.update(msg_id, env)
        with open(os.path.join(self.qdir, msg_id + ".jrn"), "rb") as f:
            records, _ = fmt.parse_journal(f.read())
        self.assertEqual([r["i"] for r in records], [7])

    @defer.inlineCallbacks
    def test_concurrent_updates_journal_each_change_once(self) -> None:
        """Many deliveries of one message finishing while earlier journal writes are still
        queued (a list post's 100 domains) journal each recipient's change once, not again
        with every later update; a failed write makes the next update journal everyone."""
        msg_id = yield self.spool.store(envelope(200), DATA)
        env, _ = yield self.spool.load(msg_id)
        updates = []
        for k in range(20):
            for r in env.recipients[k * 10 : (k + 1) * 10]:
                r.state, r.detail = "delivered", "250 ok"
            updates.append(self.spool.update(msg_id, env))
        yield defer.gatherResults(updates)
        path = os.path.join(self.qdir, msg_id + ".jrn")
        with open(path, "rb") as f:
            records, _ = fmt.parse_journal(f.read())
        self.assertEqual(sorted(r["i"] for r in records), list(range(200)))

        def eio(fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        env2, _ = yield self.spool.load(msg_id)
        self.patch(os, "fsync", eio)
        with self.assertRaises(OSError):
            yield self.spool.update(msg_id, env2, [{"k": "a", "t": 1.0, "q": "x", "r": []}])
        self.patch(os, "fsync", lambda fd: None)
        size = os.path.getsize(path)
        yield self.spool.update(msg_id, env2)
        with open(path, "rb") as f:
            f.seek(size)
            again, _ = fmt.parse_journal(f.read())
        self.assertEqual(len(again), 200)

    @defer.inlineCallbacks
    def test_update_of_named_recipients_compares_only_them(self) -> None:
        """Told which recipients one delivery changed, an update journals those that did
        change without comparing the whole envelope (a list post's 10,000 recipients after
        each of 100 deliveries), and a later full update still sees what it was not told."""
        msg_id = yield self.spool.store(envelope(50), DATA)
        env, _ = yield self.spool.load(msg_id)
        for r in env.recipients[10:20]:
            r.state, r.detail = "delivered", "250 ok"
        env.recipients[30].state = "failed"  # changed, but not named: not compared now
        compared: list[int] = []
        real = fmt.recipient_record
        self.patch(fmt, "recipient_record", lambda i, r, t: compared.append(i) or real(i, r, t))
        yield self.spool.update(msg_id, env, changed=list(range(5, 20)))
        self.assertEqual(compared, list(range(10, 20)))
        yield self.spool.update(msg_id, env)
        self.assertEqual(compared[10:], [30])
        spool2 = Spool(self.base, reactor)
        yield spool2.recover()
        entry = yield spool2.load_entry(msg_id)
        states = [r.state for r in entry.envelope.recipients]
        self.assertEqual(states.count("delivered"), 10)
        self.assertEqual(states[30], "failed")


class RecoverTests(SpoolTestBase):
    @defer.inlineCallbacks
    def test_recover_quarantines_and_cleans(self) -> None:
        """On start, stale .tmp and orphan journals go, corrupt files move to corrupt/ with a log
        line, and good messages are re-queued."""
        good = yield self.spool.store(envelope(), DATA)
        with open(os.path.join(self.qdir, good + ".msg"), "rb") as f:
            raw = f.read()
        planted = {
            "0000000000000001-1-1": raw.replace(good.encode(), b"0000000000000001-1-1")[:-20],
            "0000000000000002-1-1": b"",
            "0000000000000003-1-1": os.urandom(500),
        }
        bad_sum = bytearray(raw.replace(good.encode(), b"0000000000000004-1-1"))
        bad_sum[100] ^= 0x40
        planted["0000000000000004-1-1"] = bytes(bad_sum)
        for mid, content in planted.items():
            with open(os.path.join(self.qdir, mid + ".msg"), "wb") as f:
                f.write(content)
        for name in ("0000000000000005-1-1.tmp", "0000000000000006-1-1.jrn"):
            with open(os.path.join(self.qdir, name), "wb") as f:
                f.write(b"partial")
        with open(os.path.join(self.qdir, "not-an-id.msg"), "wb") as f:
            f.write(raw)
        spool2 = Spool(self.base, reactor)
        ids = yield spool2.recover()
        self.assertEqual(ids, [good])
        self.assertEqual(spool2.message_count(), 1)
        self.assertEqual(
            sorted(os.listdir(self.qdir)),
            [good + ".msg", "corrupt", "finished", "free", "incoming"],
        )
        self.assertEqual(
            sorted(os.listdir(os.path.join(self.qdir, "corrupt"))),
            sorted([m + ".msg" for m in planted] + ["not-an-id.msg"]),
        )
        logged = [e for e in self.events if "is corrupt" in e.get("log_format", "")]
        self.assertEqual(len(logged), 5)

    @defer.inlineCallbacks
    def test_load_quarantines_late_corruption(self) -> None:
        """A file damaged after start-up is caught at load and quarantined, not delivered."""
        msg_id = yield self.spool.store(envelope(), DATA)
        path = os.path.join(self.qdir, msg_id + ".msg")
        with open(path, "r+b") as f:
            f.seek(60)
            f.write(b"X")
        with self.assertRaises(fmt.SpoolCorrupt):
            yield self.spool.load(msg_id)
        self.assertTrue(os.path.exists(os.path.join(self.qdir, "corrupt", msg_id + ".msg")))
        self.assertEqual(self.spool.message_count(), 0)


class RecoveredJournalTests(SpoolTestBase):
    """A restart's drain: messages recovered without a journal are read and removed as
    messages stored since the start are; one with a journal keeps every journal step."""

    @defer.inlineCallbacks
    def _recovered(self) -> Any:
        plain = yield self.spool.store(envelope(), DATA)
        journaled = yield self.spool.store(envelope(), DATA)
        yield self.spool.record(journaled, [{"k": "h", "v": True}])
        self.patch(moves_mod, "DONE_BATCH", 32)  # no batch into the pool during the test
        spool2 = Spool(self.base, reactor)
        ids = yield spool2.recover()
        self.assertEqual(sorted(ids), sorted([plain, journaled]))
        return spool2, plain, journaled

    @defer.inlineCallbacks
    def test_recovered_message_without_journal_is_removed_without_a_queue_fsync(self) -> None:
        """Removing a recovered message that never had a journal costs no fsync of Queue/
        (its removal is made durable with the next batch into the pool, as for any message
        delivered at its first attempt); one with a journal still has its removal made
        durable before its journal goes."""
        spool2, plain, journaled = yield self._recovered()
        before = spool2._dirsync.syncs
        yield spool2.remove(plain)
        self.assertEqual(spool2._dirsync.syncs, before)
        yield spool2.remove(journaled)
        self.assertEqual(spool2._dirsync.syncs, before + 1)
        self.assertFalse(os.path.exists(os.path.join(self.qdir, journaled + ".jrn")))
        self.assertEqual(spool2.message_count(), 0)

    @defer.inlineCallbacks
    def test_recovered_journals_are_read_also_when_written_after_the_start(self) -> None:
        """The journal of a recovered message is applied at load; a message recovered
        without one that is journaled later (held by the administrator) has that read too."""
        spool2, plain, journaled = yield self._recovered()
        entry = yield spool2.load_entry(journaled)
        self.assertTrue(entry.held)
        entry = yield spool2.load_entry(plain)
        self.assertFalse(entry.held)
        yield spool2.record(plain, [{"k": "h", "v": True}])
        entry = yield spool2.load_entry(plain)
        self.assertTrue(entry.held)


class RecoverWhileRunningTests(SpoolTestBase):
    @defer.inlineCallbacks
    def test_recover_spares_our_own_tmp(self) -> None:
        """A message being received while the queue starts up is not deleted under it; a stale
        .tmp of a dead process is."""
        ours = f"1000000000000000-{os.getpid()}-99.tmp"
        stale = "1000000000000000-1-99.tmp"
        for name in (ours, stale):
            with open(os.path.join(self.qdir, name), "wb") as f:
                f.write(b"partial")
        yield self.spool.recover()
        self.assertTrue(os.path.exists(os.path.join(self.qdir, ours)))
        self.assertFalse(os.path.exists(os.path.join(self.qdir, stale)))
