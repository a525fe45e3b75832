"""The spool under power loss: the order of its durable steps, checked on every crash state.

Each test records the spool's file-system calls (``fsmodel.FsRecorder``) and asserts what must
hold after a power cut at any point: no name of a message is removed before the fsync that
makes its new name durable, no pool name survives beside a ``.msg`` on the same inode, every new
directory is named durably, and a finished message is never delivered again after a restart.
"""

from __future__ import annotations

import os
from typing import Any

from cgtwist.spool import donelog
from cgtwist.spool import format as fmt
from cgtwist.spool.spool import Spool
from tests.queue.helpers import SyncClock, SyncPool
from tests.spool.fsmodel import FsRecorder
from tests.spool.test_spool import DATA, SpoolTestBase, envelope


class Crash(BaseException):
    """The process ends here (what a test injects in place of a power cut)."""


def sync_spool(base: str, incoming: bool = False) -> Spool:
    return Spool(base, SyncClock(), threadpool=SyncPool(), incoming=incoming)  # type: ignore[arg-type]


class DurabilityTests(SpoolTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.incoming = os.path.join(self.qdir, "incoming")
        self.free = os.path.join(self.qdir, "free")
        self.finished = os.path.join(self.qdir, "finished")
        self.server = sync_spool(self.base)
        self.worker = sync_spool(self.base, incoming=True)

    def assert_always_named(self, rec: FsRecorder, token: int) -> None:
        """In every crash state of every point, some directory names the message's inode
        as a ``.msg`` (it was answered 250 before the first recorded call)."""
        for i in range(-1, len(rec.ops)):
            for state in rec.crash_states(i):
                names = [
                    n
                    for entries in state.values()
                    for n, t in entries.items()
                    if t == token and n.endswith(".msg")
                ]
                self.assertTrue(
                    names,
                    f"a power cut after {rec.ops[i] if i >= 0 else 'start'} "
                    f"can leave the message in no directory: {state}",
                )

    def test_an_adopted_message_is_named_in_some_directory_at_every_cut(self) -> None:
        """Adopting a worker's message (answered 250 already) never leaves a crash state
        in which neither Queue/ nor Queue/incoming/ names it, even when the worker's next
        commit fsyncs incoming/ right after: the new name is fsynced before the old goes."""
        msg_id = self.successResultOf(self.worker.store(envelope(1), DATA))
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free])
        token = rec.token(os.path.join(self.incoming, msg_id + ".msg"))
        entry = self.successResultOf(self.server.adopt(msg_id))
        self.assertEqual(entry.data, DATA)
        self.successResultOf(self.worker.store(envelope(1), DATA))  # fsyncs incoming/
        rec.index("fsync", self.incoming)
        self.assert_always_named(rec, token)

    def test_an_adopted_message_is_durably_unnamed_before_its_file_is_reused(self) -> None:
        """Adopted (its incoming name kept, its link into Queue/ not fsynced), delivered and
        removed, its file goes into the pool and holds the next message: no crash state on
        the way names the inode both as the old message (in Queue/ or Queue/incoming/) and
        as a pool file or another message, and until its removal some directory names it."""
        from cgtwist.spool import moves as moves_mod

        self.patch(moves_mod, "DONE_BATCH", 1)
        msg_id = self.successResultOf(self.worker.store(envelope(1), DATA))
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free, self.finished])
        old = msg_id + ".msg"
        token = rec.token(os.path.join(self.incoming, old))
        self.successResultOf(self.server.adopt(msg_id))
        self.assert_always_named(rec, token)
        self.successResultOf(self.server.remove(msg_id))
        self.assertEqual(os.listdir(self.free), [msg_id])
        new = self.successResultOf(self.server.store(envelope(1), DATA))
        self.assertEqual(rec.token(os.path.join(self.qdir, new + ".msg")), token)  # reused
        for i in range(-1, len(rec.ops)):
            for state in rec.crash_states(i):
                olds = [
                    n
                    for d in (self.qdir, self.incoming)
                    for n, t in state[d].items()
                    if t == token and n == old
                ]
                reused = [n for n, t in state[self.free].items() if t == token] + [
                    n for n, t in state[self.qdir].items() if t == token and n.startswith(new)
                ]
                self.assertFalse(
                    olds and reused,
                    f"after {rec.ops[i] if i >= 0 else 'start'}: {olds} beside {reused}",
                )

    def test_recovery_takes_incoming_messages_in_the_same_order(self) -> None:
        """At start, messages left in Queue/incoming/ move into Queue/ with the same order
        of durable steps as an adoption (link, fsync Queue/, unlink), so a cut during or right
        after recovery never loses one."""
        msg_id = self.successResultOf(self.worker.store(envelope(1), DATA))
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free])
        token = rec.token(os.path.join(self.incoming, msg_id + ".msg"))
        restarted = sync_spool(self.base)
        self.assertEqual(self.successResultOf(restarted.recover()), [msg_id])
        self.successResultOf(self.worker.store(envelope(1), DATA))  # a worker starts, stores
        self.assert_always_named(rec, token)
        self.assertEqual(
            os.listdir(self.incoming),
            [n for n in os.listdir(self.incoming) if not n.startswith(msg_id)],
        )

    def test_a_recycled_file_never_keeps_its_pool_name_beside_a_msg(self) -> None:
        """A new message written over a pool file: after its 250, no crash state names the
        inode both in Queue/free/ and as a .msg (the pool name would be handed out again and
        the next message would overwrite this one: "header names another message id")."""
        old = self.successResultOf(self.server.store(envelope(1), DATA))
        self.successResultOf(self.server.remove(old))
        self.assertEqual(os.listdir(self.free), [old])
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free])
        token = rec.token(os.path.join(self.free, old))
        new = self.successResultOf(self.server.store(envelope(1), DATA))
        self.assertEqual(rec.token(os.path.join(self.qdir, new + ".msg")), token)  # reused
        for i in range(-1, len(rec.ops)):
            for state in rec.crash_states(i):
                pool = [n for n, t in state[self.free].items() if t == token]
                msgs = [n for n, t in state[self.qdir].items() if t == token and n.endswith(".msg")]
                self.assertFalse(
                    pool and msgs,
                    f"after {rec.ops[i] if i >= 0 else 'start'}: "
                    f"pool name {pool} and {msgs} on one inode",
                )

    def test_a_reserved_pool_file_costs_no_pool_fsync_before_the_250(self) -> None:
        """After a store, the spool moves pool files into a reserve in Queue/ and fsyncs the
        pool directory then, off the reply's path; the next message reuses a reserved file
        with no fsync of free/ between its data and its 250, and still no crash state names
        the inode in free/ beside a .msg, while every state after the commit names the .msg."""
        a = self.successResultOf(self.server.store(envelope(1), DATA))
        b = self.successResultOf(self.server.store(envelope(1), DATA))
        self.successResultOf(self.server.remove(a))
        self.successResultOf(self.server.remove(b))
        self.assertEqual(len(os.listdir(self.free)), 2)
        self.successResultOf(self.server.store(envelope(1), DATA))  # takes one, reserves one
        reserve = [n for n in os.listdir(self.qdir) if n.endswith(".rsv")]
        self.assertEqual((len(reserve), os.listdir(self.free)), (1, []))
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free])
        token = rec.token(os.path.join(self.qdir, reserve[0]))
        new = self.successResultOf(self.server.store(envelope(1), DATA))
        self.assertEqual(rec.token(os.path.join(self.qdir, new + ".msg")), token)  # reused
        self.assertEqual([op for op in rec.ops if op[0] == "fsync" and op[1] == self.free], [])
        commit = rec.index("fsync", self.qdir)
        for i in range(-1, len(rec.ops)):
            for state in rec.crash_states(i):
                pool = [n for n, t in state[self.free].items() if t == token]
                msgs = [n for n, t in state[self.qdir].items() if t == token and n.endswith(".msg")]
                self.assertFalse(pool and msgs, f"after {rec.ops[i] if i >= 0 else 'start'}")
                if i >= commit:
                    self.assertEqual(msgs, [new + ".msg"], f"after {rec.ops[i]}: {state}")

    def test_a_reserved_file_is_written_under_its_reserve_name(self) -> None:
        """A message written into a reserved file is written and fsynced under the ``.rsv``
        name, then renamed once to its ``.msg``: no rename to a ``.tmp`` before the data,
        which on ext4 without a journal made the file's fsync write the directory too (its
        NEWENTRY state), one synchronous directory write more between the data and the 250
        (issue 17)."""
        for msg_id in [self.successResultOf(self.server.store(envelope(1), DATA)) for _ in "ab"]:
            self.successResultOf(self.server.remove(msg_id))
        self.successResultOf(self.server.store(envelope(1), DATA))  # takes one, reserves one
        reserve = [n for n in os.listdir(self.qdir) if n.endswith(".rsv")]
        self.assertEqual(len(reserve), 1)
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free])
        new = self.successResultOf(self.server.store(envelope(1), DATA))
        rsv, msg = os.path.join(self.qdir, reserve[0]), os.path.join(self.qdir, new + ".msg")
        self.assertEqual([op[:3] for op in rec.ops if op[0] == "rename"], [("rename", rsv, msg)])
        self.assertLess(rec.index("fsync", rsv), rec.index("rename", rsv), rec.ops)
        self.assertLess(rec.index("rename", rsv), rec.index("fsync", self.qdir), rec.ops)
        self.assertEqual(self.successResultOf(self.server.load(new))[1], DATA)

    def test_a_reserved_file_deleted_meanwhile_costs_no_message(self) -> None:
        """Recovery and the sweep delete ``.rsv`` files, also those a writer still counts in
        its reserve: a message whose reserved file vanished is written into another file and
        stored all the same."""
        ids = [self.successResultOf(self.server.store(envelope(1), DATA)) for _ in range(3)]
        for msg_id in ids:
            self.successResultOf(self.server.remove(msg_id))
        self.successResultOf(self.server.store(envelope(1), DATA))  # reserves the pool files
        reserve = [n for n in os.listdir(self.qdir) if n.endswith(".rsv")]
        self.assertTrue(reserve)
        for name in reserve:
            os.unlink(os.path.join(self.qdir, name))
        new = self.successResultOf(self.server.store(envelope(1), DATA))
        self.assertEqual(self.successResultOf(self.server.load(new))[1], DATA)
        self.assertEqual([n for n in os.listdir(self.qdir) if n.endswith((".rsv", ".tmp"))], [])

    def test_a_refill_offers_nothing_whose_pool_name_may_survive(self) -> None:
        """Reserved files are offered only after the pool directory's fsync: when it fails,
        none is used and the next message gets a file of its own."""
        a = self.successResultOf(self.server.store(envelope(1), DATA))
        self.successResultOf(self.server.remove(a))
        recycler = self.server._recycler

        def broken() -> None:
            raise OSError(5, "Input/output error")

        self.patch(recycler._taken, "sync", broken)
        self.assertRaises(OSError, recycler.refill)
        self.assertEqual(recycler._reserve, [])
        self.assertIsNone(recycler.claim())
        self.assertFalse(recycler.take(os.path.join(self.qdir, "x.tmp")))  # pool: empty

    def test_recovery_deletes_reserved_files(self) -> None:
        """Reserve files (pool files a process moved into its directory) are nobody's mail:
        at start the server deletes them in Queue/ and Queue/incoming/, and a sweep deletes
        those of a worker that ended."""
        names = [
            os.path.join(self.qdir, "0000000000000001-1-1.rsv"),
            os.path.join(self.incoming, "0000000000000001-2-1.rsv"),
        ]
        for n in names:
            with open(n, "wb") as f:
                f.write(DATA)
        self.assertEqual(self.successResultOf(sync_spool(self.base).recover()), [])
        self.assertEqual([os.path.exists(n) for n in names], [False, False])
        with open(names[1], "wb") as f:
            f.write(DATA)
        self.assertEqual(self.successResultOf(self.server.incoming(frozenset({os.getpid()}))), [])
        self.assertFalse(os.path.exists(names[1]))

    def test_recovery_drops_a_pool_name_that_shares_a_messages_inode(self) -> None:
        """After a cut that kept both names of an inode (e2fsck: "ref count is 1, should be
        2"), recovery deletes the pool name, so the next message does not overwrite the
        spooled one, which is delivered intact."""
        kept = self.successResultOf(self.server.store(envelope(1), DATA))
        os.link(
            os.path.join(self.qdir, kept + ".msg"), os.path.join(self.free, "0000000000000001-1-1")
        )
        restarted = sync_spool(self.base)
        self.assertEqual(self.successResultOf(restarted.recover()), [kept])
        self.successResultOf(restarted.store(envelope(2), b"Subject: other\r\n\r\nother\r\n"))
        env, data = self.successResultOf(restarted.load(kept))
        self.assertEqual((env, data), (envelope(1), DATA))
        self.assertEqual(os.listdir(os.path.join(self.qdir, "corrupt")), [])
        self.assertEqual(os.listdir(self.free), [])

    def test_every_new_spool_directory_is_named_durably(self) -> None:
        """A new base directory: each directory the spool creates (Queue/, corrupt/,
        incoming/, free/) is fsynced in its parent before the spool is used."""
        fresh = os.path.join(self.base, "fresh")
        os.mkdir(fresh)
        rec = FsRecorder(self, [])
        sync_spool(fresh)
        made = [op[1] for op in rec.ops if op[0] == "mkdir"]
        self.assertEqual(
            sorted(os.path.relpath(d, fresh) for d in made),
            ["Queue", "Queue/corrupt", "Queue/finished", "Queue/free", "Queue/incoming"],
        )
        for d in made:
            rec.index("fsync", os.path.dirname(d), start=rec.index("mkdir", d))

    def test_a_finished_message_is_named_durably_before_it_is_removed(self) -> None:
        """Removing a finished message: it is renamed into Queue/finished/ and Queue/ fsynced
        before its file is renamed into the pool, deleted or (a big one) emptied; and
        Queue/incoming/ is fsynced before that too (an adopted message's old name)."""
        from cgtwist.spool import moves as moves_mod

        self.patch(moves_mod, "DONE_BATCH", 1)
        msg_id = self.successResultOf(self.server.store(envelope(1), DATA))
        rec = FsRecorder(self, [self.qdir, self.free, self.incoming, self.finished])
        self.successResultOf(self.server.remove(msg_id))
        msg = os.path.join(self.qdir, msg_id + ".msg")
        done = os.path.join(self.qdir, "finished", msg_id)
        marked = rec.index("rename", msg)
        self.assertEqual(rec.ops[marked][2], done)
        first_change = min(
            i
            for i, op in enumerate(rec.ops)
            if op[0] in ("rename", "unlink", "truncate") and op[1] == done
        )
        synced = rec.index("fsync", self.qdir, start=marked)
        self.assertLess(synced, first_change, rec.ops)
        self.assertLess(rec.index("fsync", self.incoming, start=marked), first_change, rec.ops)
        self.assertEqual(os.listdir(self.free), [msg_id])

    def test_a_removal_and_an_adoption_cost_no_flush(self) -> None:
        """A move job that removes a message delivered at the first attempt and adopts a new
        one fsyncs nothing (issue 17: its fsync of Queue/ was one of five flushes per message
        on the SMTP path; issue 21: the done log's fdatasync had been a sixth)."""
        from cgtwist.spool import moves as moves_mod

        self.patch(moves_mod, "DONE_BATCH", 32)
        server = Spool(self.base, SyncClock(), threadpool=SyncPool(), remove_linger=10.0)  # type: ignore[arg-type]
        finished = self.successResultOf(server.store(envelope(1), DATA))
        first, new = (self.successResultOf(self.worker.store(envelope(1), DATA)) for _ in "ab")
        self.successResultOf(server.adopt(first))  # a job has just started: removals wait
        synced: list[str] = []
        real_fsync, real_fdatasync = os.fsync, os.fdatasync
        self.patch(os, "fsync", lambda fd: (synced.append("fsync"), real_fsync(fd)))
        self.patch(os, "fdatasync", lambda fd: (synced.append("fdatasync"), real_fdatasync(fd)))
        removed = server.remove(finished)
        self.assertNoResult(removed)
        self.assertIsNotNone(self.successResultOf(server.adopt(new)))
        self.successResultOf(removed)
        self.assertEqual(synced, [])
        self.assertEqual(
            sorted(n for n in os.listdir(self.qdir) if "." in n),
            sorted([first + ".msg", new + ".msg"]),
        )
        self.assertEqual(os.listdir(self.finished), [finished])

    def test_finished_files_reach_the_pool_in_batches_or_after_a_while(self) -> None:
        """Finished messages wait in Queue/finished/ until DONE_BATCH of them go into the pool
        together (one fsync of incoming/ for all), or RECYCLE_AFTER seconds have passed: an
        idle server keeps none for long."""
        from cgtwist.spool import moves as moves_mod
        from cgtwist.spool import spool as spool_mod

        self.patch(moves_mod, "DONE_BATCH", 3)
        clock = SyncClock()
        server = Spool(self.base, clock, threadpool=SyncPool(), remove_linger=0.01)  # type: ignore[arg-type]
        ids = [self.successResultOf(server.store(envelope(1), DATA)) for _ in range(4)]

        def remove(*some: str) -> None:
            removed = [server.remove(msg_id) for msg_id in some]
            clock.advance(0.01)  # their lingering job
            for d in removed:
                self.successResultOf(d)

        remove(ids[0], ids[1])
        self.assertEqual(sorted(os.listdir(self.finished)), sorted(ids[:2]))
        self.assertEqual(os.listdir(self.free), [])
        remove(ids[2])
        self.assertEqual(os.listdir(self.finished), [])
        self.assertEqual(sorted(os.listdir(self.free)), sorted(ids[:3]))
        remove(ids[3])
        self.assertEqual(os.listdir(self.finished), [ids[3]])
        clock.advance(spool_mod.RECYCLE_AFTER)
        self.assertEqual(os.listdir(self.finished), [])
        self.assertEqual(sorted(os.listdir(self.free)), sorted(ids))
        self.assertEqual(clock.getDelayedCalls(), [])

    def _crash_on(self, kinds: tuple[str, ...], path: str) -> list[Any]:
        """Until the patches returned are restored, the process 'dies' at any ``kinds`` call
        on ``path``."""
        patches = []
        for kind in kinds:
            real = getattr(os, kind)

            def fake(src: Any, *a: Any, _real: Any = real, **kw: Any) -> Any:
                if os.path.abspath(src) == path:
                    raise Crash()
                return _real(src, *a, **kw)

            patches.append(self.patch(os, kind, fake))
        return patches

    def test_a_message_finished_before_a_crash_is_not_delivered_again(self) -> None:
        """A crash after every recipient was delivered but before the spool file left
        Queue/: after the restart, recovery removes it (it is in Queue/finished/) instead of
        delivering it a second time (fewer duplicates than at-least-once allows)."""
        from cgtwist.spool import moves as moves_mod

        self.patch(moves_mod, "DONE_BATCH", 1)
        msg_id = self.successResultOf(self.server.store(envelope(1), DATA))
        msg = os.path.join(self.qdir, msg_id + ".msg")
        done = os.path.join(self.qdir, "finished", msg_id)
        crashing = self._crash_on(("rename", "unlink", "truncate"), done)
        self.failureResultOf(self.server.remove(msg_id), Crash)
        self.assertTrue(os.path.exists(done))
        for p in crashing:
            p.restore()
        restarted = sync_spool(self.base)
        self.assertEqual(self.successResultOf(restarted.recover()), [])
        self.assertFalse(os.path.exists(msg))
        self.assertEqual(os.listdir(os.path.join(self.qdir, "corrupt")), [])

    def test_a_big_message_emptied_on_its_way_to_the_pool_is_not_quarantined(self) -> None:
        """A big finished message is emptied before it moves into the pool; a crash between
        the two leaves an empty .msg, which recovery removes as finished, not quarantines."""
        from cgtwist.spool import moves as moves_mod

        self.patch(moves_mod, "DONE_BATCH", 1)
        big = b"Subject: big\r\n\r\n" + b"x" * (256 << 10) + b"\r\n"
        msg_id = self.successResultOf(self.server.store(envelope(1), big))
        msg = os.path.join(self.qdir, msg_id + ".msg")
        done = os.path.join(self.qdir, "finished", msg_id)
        crashing = self._crash_on(("rename",), done)
        self.failureResultOf(self.server.remove(msg_id), Crash)
        self.assertEqual(os.path.getsize(done), 0)
        for p in crashing:
            p.restore()
        restarted = sync_spool(self.base)
        self.assertEqual(self.successResultOf(restarted.recover()), [])
        self.assertEqual(os.listdir(os.path.join(self.qdir, "corrupt")), [])
        self.assertFalse(os.path.exists(msg))
        self.assertFalse(os.path.exists(done))


class DoneLogTests(SpoolTestBase):
    def test_a_torn_or_zeroed_tail_names_no_message(self) -> None:
        """After a power cut the log may end in a torn line (a prefix of an id can be
        another valid id) or in zeros; only complete lines whose CRC matches count."""
        a, b = "0000000000000001-1-12", "0000000000000002-1-1"
        good = donelog.line(a) + donelog.line(b)
        self.assertEqual(donelog.parse(good), {a, b})
        self.assertEqual(donelog.parse(donelog.line(a) + donelog.line(b)[:-1]), {a})
        torn = donelog.line(a)[:-2] + b"\n"  # "...-1\n": a valid id, the wrong message
        self.assertEqual(donelog.parse(torn + donelog.line(b)), {b})
        self.assertEqual(donelog.parse(good + b"\0" * 4096), {a, b})
        self.assertEqual(donelog.parse(b"zz " + a.encode() + b"\n\xff\n"), set())

    def test_a_log_of_an_earlier_version_is_honoured_once(self) -> None:
        """A done log left by an earlier version (an upgrade after a power cut) still keeps
        the messages it names from being delivered again; recovery then deletes it."""
        server = sync_spool(self.base)
        ids = [self.successResultOf(server.store(envelope(1), DATA)) for _ in range(2)]
        path = os.path.join(self.qdir, donelog.NAME)
        with open(path, "wb") as f:
            f.write(donelog.line(ids[0]))
        self.assertEqual(self.successResultOf(sync_spool(self.base).recover()), [ids[1]])
        self.assertFalse(os.path.exists(path))


class InPlaceCommitTests(SpoolTestBase):
    """An SMTP worker commits a message into a reserved file under that file's own name
    (``<id>.rsv``, made durable by the refill that reserved it): one fsync before the 250
    instead of the file's and then the directory's (issue 17, lever 5)."""

    def setUp(self) -> None:
        super().setUp()
        from cgtwist.spool import moves as moves_mod

        self.patch(moves_mod, "DONE_BATCH", 1)
        self.incoming = os.path.join(self.qdir, "incoming")
        self.free = os.path.join(self.qdir, "free")
        self.server = sync_spool(self.base)
        self.worker = sync_spool(self.base, incoming=True)
        # three finished messages' files in the pool, for the worker's reserve
        ids = [self.successResultOf(self.server.store(envelope(1), DATA)) for _ in range(3)]
        for msg_id in ids:
            self.successResultOf(self.server.remove(msg_id))
        self.assertEqual(len(os.listdir(self.free)), 3)

    def reserve(self) -> list[str]:
        return sorted(n for n in os.listdir(self.incoming) if n.endswith(".rsv"))

    def test_a_message_is_committed_by_one_fsync_under_its_durable_reserve_name(self) -> None:
        """From the reserving refill on: the message's only durable step before its 250 is
        the fsync of its file, and at every cut after it Queue/incoming/ names the file as
        ``<id>.rsv``. Fails when the refill does not fsync incoming/ after moving the pool
        files in (the reserve name would not be durable when the 250 goes)."""
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free])
        first = self.successResultOf(self.worker.store(envelope(1), DATA))  # then reserves
        self.assertTrue(os.path.exists(os.path.join(self.incoming, first + ".msg")))
        reserved = self.reserve()  # the first took a pool file itself
        self.assertEqual(len(reserved), 2)
        start = len(rec.ops)
        msg_id = self.successResultOf(self.worker.store(envelope(1), DATA))
        self.assertEqual(msg_id + ".rsv", reserved[0])  # the oldest reserve name first
        path = os.path.join(self.incoming, msg_id + ".rsv")
        token = rec.token(path)
        ops = rec.ops[start:]
        self.assertEqual([op[0] for op in ops], ["truncate", "fsync"], ops)
        self.assertEqual(ops[-1], ("fsync", path))
        for i in range(start + 1, len(rec.ops)):
            for state in rec.crash_states(i):
                self.assertEqual(
                    [n for n, t in state[self.incoming].items() if t == token],
                    [msg_id + ".rsv"],
                    f"a power cut after {rec.ops[i]} can lose the name: {state}",
                )
        self.assertEqual(self.worker.message_count(), 2)

    def test_recovery_takes_a_committed_reserve_and_deletes_the_others(self) -> None:
        """At start the server adopts a message committed in place and deletes the unused
        reserve files, which still hold finished messages (whole and valid, but under another
        id): those are never delivered again."""
        self.successResultOf(self.worker.store(envelope(1), DATA))  # fills the reserve
        msg_id = self.successResultOf(self.worker.store(envelope(2), b"Subject: x\r\n\r\nx\r\n"))
        self.assertEqual(len(self.reserve()), 2)  # 1 unused, 1 holding msg_id
        restarted = sync_spool(self.base)
        ids = self.successResultOf(restarted.recover())
        self.assertIn(msg_id, ids)
        self.assertEqual(len(ids), 2)
        env, data = self.successResultOf(restarted.load(msg_id))
        self.assertEqual((env, data), (envelope(2), b"Subject: x\r\n\r\nx\r\n"))
        self.assertEqual(self.reserve(), [])
        self.assertEqual(os.listdir(os.path.join(self.qdir, "corrupt")), [])

    def test_adoption_and_removal_of_a_message_committed_in_place(self) -> None:
        """The server adopts ``<id>.rsv`` as ``Queue/<id>.msg``, keeps the incoming name
        while delivering, and drops it when the message is finished."""
        self.successResultOf(self.worker.store(envelope(1), DATA))
        msg_id = self.successResultOf(self.worker.store(envelope(1), DATA))
        entry = self.successResultOf(self.server.adopt(msg_id))
        self.assertEqual(entry.data, DATA)
        self.assertTrue(os.path.exists(os.path.join(self.incoming, msg_id + ".rsv")))
        self.assertIsNone(self.successResultOf(self.server.adopt(msg_id)))  # a second notice
        self.successResultOf(self.server.remove(msg_id))
        self.assertFalse(os.path.exists(os.path.join(self.incoming, msg_id + ".rsv")))
        self.assertFalse(os.path.exists(os.path.join(self.qdir, msg_id + ".msg")))

    def test_a_sweep_adopts_a_gone_workers_committed_reserve_only(self) -> None:
        """A worker that ended between its 250 and its notice: the sweep names its message
        committed in place and deletes its unused reserve; a live worker's reserve files are
        left alone (one may be half written)."""
        self.successResultOf(self.worker.store(envelope(1), DATA))
        first = sorted(n for n in os.listdir(self.incoming) if n.endswith(".msg"))[0][:-4]
        msg_id = self.successResultOf(self.worker.store(envelope(1), DATA))
        live = frozenset({os.getpid()})
        self.assertEqual(self.successResultOf(self.server.incoming(live)), [first])
        self.assertEqual(len(self.reserve()), 2)
        self.assertEqual(
            self.successResultOf(self.server.incoming(frozenset())), sorted([first, msg_id])
        )
        self.assertEqual(self.reserve(), [msg_id + ".rsv"])
        self.assertEqual(self.successResultOf(self.server.adopt(msg_id)).data, DATA)

    def test_a_sweep_retries_a_live_workers_committed_reserve_once_it_is_old(self) -> None:
        """A live worker's message whose notice was lost or whose adoption failed is named by
        a sweep once it was written ``ORPHAN_AGE`` ago (as a ``.msg`` was at any sweep);
        a younger one may still be in its commit, and unused reserves stay untouched."""
        from cgtwist.spool import spool as spool_mod

        self.successResultOf(self.worker.store(envelope(1), DATA))
        first = sorted(n for n in os.listdir(self.incoming) if n.endswith(".msg"))[0][:-4]
        msg_id = self.successResultOf(self.worker.store(envelope(1), DATA))
        live = frozenset({os.getpid()})
        self.assertEqual(self.successResultOf(self.server.incoming(live)), [first])
        old = os.stat(os.path.join(self.incoming, msg_id + ".rsv")).st_mtime
        self.patch(spool_mod.time, "time", lambda: old + spool_mod.ORPHAN_AGE)
        self.assertEqual(self.successResultOf(self.server.incoming(live)), sorted([first, msg_id]))
        self.assertEqual(len(self.reserve()), 2)  # the unused one is still there
        self.assertEqual(self.successResultOf(self.server.adopt(msg_id)).data, DATA)
        self.assertEqual(self.successResultOf(self.server.incoming(live)), [first])

    def test_only_a_workers_refill_fsyncs_the_reserve_directory(self) -> None:
        """The server renames a reserved file to its ``.msg`` at each commit (whose directory
        fsync makes that name durable), so its refill fsyncs the pool directory only; a
        worker's fsyncs incoming/ too, as it commits under the reserve names."""
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free])
        self.assertEqual(self.server._recycler.refill(), 3)
        self.assertEqual([op for op in rec.ops if op[0] == "fsync"], [("fsync", self.free)])
        msg_id = self.successResultOf(self.server.store(envelope(1), DATA))
        self.successResultOf(self.server.remove(msg_id))  # one file back in the pool
        start = len(rec.ops)
        self.assertEqual(self.worker._recycler.refill(), 1)
        fsyncs = [op for op in rec.ops[start:] if op[0] == "fsync"]
        self.assertEqual(fsyncs, [("fsync", self.free), ("fsync", self.incoming)])

    def test_a_half_written_reserve_is_no_message(self) -> None:
        """A reserve file whose write stopped before its end (the worker killed before the
        fsync: no 250) names no message: recovery deletes it, quarantines nothing."""
        self.successResultOf(self.worker.store(envelope(1), DATA))
        name = self.reserve()[0]
        path = os.path.join(self.incoming, name)
        chunks, size = fmt.encode(name[:-4], fmt.envelope_json(envelope(1), 0.0), DATA)
        with open(path, "r+b") as f:
            f.write(b"".join(chunks)[: size - 10])
        ids = self.successResultOf(sync_spool(self.base).recover())
        self.assertNotIn(name[:-4], ids)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(os.listdir(os.path.join(self.qdir, "corrupt")), [])

    def test_a_worker_that_reserves_at_start_commits_its_first_message_in_place(self) -> None:
        """``reserve`` (an SMTP worker calls it once open) fills the reserve before any
        message: the first one is committed by one fsync, no rename, no directory fsync."""
        self.worker.reserve()
        self.assertEqual(len(self.reserve()), 3)
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free])
        msg_id = self.successResultOf(self.worker.store(envelope(1), DATA))
        path = os.path.join(self.incoming, msg_id + ".rsv")
        self.assertEqual(rec.ops, [("truncate", path), ("fsync", path)])
