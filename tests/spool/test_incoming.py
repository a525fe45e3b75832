"""The spool's side of SMTP worker processes (Queue/incoming/, adoption) and file recycling."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest as trial

from cgtwist.spool import files as files_mod
from cgtwist.spool.files import Recycler
from cgtwist.spool.format import SpoolCorrupt
from cgtwist.spool.moves import INLINE_READ_MAX
from cgtwist.spool.spool import Spool
from tests.queue.helpers import SyncClock, SyncPool
from tests.spool.test_spool import DATA, SpoolTestBase, envelope


class HeldPool(SyncPool):
    """Holds 'thread' work until ``run_all`` (in the test's thread) and counts the jobs run."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any, tuple[Any, ...]]] = []
        self.done = 0

    def callInThreadWithCallback(self, onResult: Any, func: Any, *args: Any, **kw: Any) -> None:
        self.jobs.append((onResult, func, args))

    def run_all(self) -> None:
        """Run held jobs, and those they start, until none is left."""
        while self.jobs:
            on_result, func, args = self.jobs.pop(0)
            self.done += 1
            super().callInThreadWithCallback(on_result, func, *args)


class IncomingTests(SpoolTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.worker = Spool(self.base, reactor, incoming=True)  # what a worker process builds
        self.incoming = os.path.join(self.qdir, "incoming")

    @defer.inlineCallbacks
    def test_worker_stores_into_incoming_and_server_adopts(self) -> None:
        """A worker's message is durable in Queue/incoming/; adoption links it into Queue/,
        counts it and gives back its envelope and data; a second adoption (and a sweep) finds
        nothing. Its incoming name, the durable one, stays until the message is finished."""
        msg_id = yield self.worker.store(envelope(2), DATA)
        self.assertEqual(os.listdir(self.incoming), [msg_id + ".msg"])
        self.assertEqual(self.spool.message_count(), 0)
        entry = yield self.spool.adopt(msg_id)
        self.assertEqual(entry.data, DATA)
        self.assertEqual(entry.envelope, envelope(2))
        self.assertTrue(os.path.exists(os.path.join(self.qdir, msg_id + ".msg")))
        self.assertEqual(self.spool.message_count(), 1)
        again = yield self.spool.adopt(msg_id)
        self.assertIsNone(again)
        self.assertEqual(self.spool.message_count(), 1)
        swept = yield self.spool.incoming()
        self.assertEqual(swept, [])
        env, data = yield self.spool.load(msg_id)
        self.assertEqual(data, DATA)
        self.assertEqual(os.listdir(self.incoming), [msg_id + ".msg"])
        yield self.spool.remove(msg_id)
        self.assertEqual(os.listdir(self.incoming), [])
        self.assertEqual(self.spool.message_count(), 0)

    def test_adopt_and_remove_touch_no_file_on_the_reactor(self) -> None:
        """The server's per-message queue moves run in threads, never on its reactor (which
        also serves IMAP, POP3 and the web panel): until the thread job runs, nothing has
        moved. Moves asked for while one job runs share the next job; a big file is read in
        a job of its own."""
        pool = HeldPool()
        server = Spool(self.base, SyncClock(), threadpool=pool)  # type: ignore[arg-type]
        worker = Spool(self.base, SyncClock(), threadpool=SyncPool(), incoming=True)  # type: ignore[arg-type]
        ids = [self.successResultOf(worker.store(envelope(1), DATA)) for _ in range(3)]
        big_data = b"Subject: big\r\n\r\n" + b"x" * (INLINE_READ_MAX + 10) + b"\r\n"
        big = self.successResultOf(worker.store(envelope(1), big_data))
        adopted = [server.adopt(i) for i in ids]
        self.assertEqual(
            sorted(os.listdir(self.incoming)), sorted([i + ".msg" for i in ids + [big]])
        )
        self.assertEqual(len(pool.jobs), 1)
        pool.run_all()
        self.assertEqual(pool.done, 2)  # the first adoption, then the other two together
        self.assertEqual([self.successResultOf(d).data for d in adopted], [DATA] * 3)
        self.assertEqual(len(os.listdir(self.incoming)), 4)  # kept until finished
        removed = [server.remove(i) for i in ids]
        self.assertTrue(os.path.exists(os.path.join(self.qdir, ids[0] + ".msg")))
        pool.run_all()
        for d in removed:
            self.successResultOf(d)
        self.assertFalse(any(os.path.exists(os.path.join(self.qdir, i + ".msg")) for i in ids))
        self.assertEqual(os.listdir(self.incoming), [big + ".msg"])
        self.assertEqual(server.message_count(), 0)
        entry = server.adopt(big)
        pool.run_all()
        self.assertEqual(self.successResultOf(entry).data, big_data)
        self.assertEqual(pool.done, 4 + 2)  # removes: 2 jobs; the big one: a move, then its read
        self.assertEqual(server.message_count(), 1)

    def test_removals_and_adoptions_share_a_job_and_need_no_fsync(self) -> None:
        """Moves asked for while a job runs go together in the next; the adoptions and the
        removals of messages delivered at the first attempt fsync nothing there (the removals
        become durable a batch at a time, on their way into the pool); a removal of a message
        with a journal fsyncs Queue/ at once, one fsync for its whole job."""
        from cgtwist.spool import moves as moves_mod

        self.patch(moves_mod, "DONE_BATCH", 32)
        pool = HeldPool()
        server = Spool(self.base, SyncClock(), threadpool=pool)  # type: ignore[arg-type]
        worker = Spool(self.base, SyncClock(), threadpool=SyncPool(), incoming=True)  # type: ignore[arg-type]
        ids = [self.successResultOf(worker.store(envelope(1), DATA)) for _ in range(8)]
        first = server.adopt(ids[0])
        pool.run_all()
        self.successResultOf(first)
        syncs = server._dirsync.syncs
        blocker = server.adopt(ids[1])  # a job in flight; what follows waits for it
        removed = [server.remove(ids[0])]
        adopted = [server.adopt(i) for i in ids[2:]]
        pool.run_all()
        self.assertEqual(pool.done, 1 + 2)
        self.successResultOf(blocker)
        self.successResultOf(removed[0])
        self.assertEqual([self.successResultOf(d).msg_id for d in adopted], ids[2:])
        self.assertEqual(server._dirsync.syncs, syncs)
        journaled = server.record(ids[1], [{"k": "a", "text": "tried"}])
        pool.run_all()
        self.successResultOf(journaled)
        blocker = server.remove(ids[1])
        removed = [server.remove(i) for i in ids[2:]]
        pool.run_all()
        for d in [blocker, *removed]:
            self.successResultOf(d)
        self.assertEqual(server._dirsync.syncs, syncs + 1)  # the journaled one's job
        self.assertFalse(os.path.exists(os.path.join(self.qdir, ids[1] + ".jrn")))
        self.assertEqual(server.message_count(), 0)
        self.assertEqual(os.listdir(self.incoming), [])
        self.assertEqual([n for n in os.listdir(self.qdir) if n.endswith(".msg")], [])

    def test_a_removal_right_after_a_job_rides_with_the_next_adoption(self) -> None:
        """On the server (``remove_linger``), a removal asked for just after a move job
        started waits for the next adoption and goes in its job (one hop, one commit for
        both); with no adoption coming it goes when the delay has passed, and after a quiet
        spell at once."""
        pool, clock = HeldPool(), SyncClock()
        server = Spool(self.base, clock, threadpool=pool, remove_linger=0.01)  # type: ignore[arg-type]
        worker = Spool(self.base, SyncClock(), threadpool=SyncPool(), incoming=True)  # type: ignore[arg-type]
        first, second = (self.successResultOf(worker.store(envelope(1), DATA)) for _ in range(2))
        d = server.adopt(first)
        pool.run_all()
        self.successResultOf(d)
        removed = server.remove(first)
        self.assertEqual(pool.jobs, [])  # waiting for company
        adopted = server.adopt(second)
        pool.run_all()
        self.assertEqual(pool.done, 2)  # the first adoption; then the removal with the second
        self.successResultOf(removed)
        self.assertEqual(self.successResultOf(adopted).data, DATA)
        self.assertFalse(os.path.exists(os.path.join(self.qdir, first + ".msg")))
        self.assertEqual(clock.getDelayedCalls(), [])
        removed = server.remove(second)
        self.assertEqual(pool.jobs, [])
        clock.advance(0.01)
        pool.run_all()
        self.successResultOf(removed)
        self.assertEqual(server.message_count(), 0)
        stored = server.store(envelope(1), DATA)
        pool.run_all()
        third = self.successResultOf(stored)
        clock.advance(0.01)
        removed = server.remove(third)
        self.assertEqual(len(pool.jobs), 1)  # quiet for a while: at once
        pool.run_all()
        self.successResultOf(removed)

    def test_an_adoption_needs_no_fsync_and_an_unreadable_file_is_taken_by_the_next(
        self,
    ) -> None:
        """An adoption does not wait on Queue/'s fsync (a broken one does not fail it): the
        message keeps its durable incoming name meanwhile. If the file cannot be read, the
        adoption fails (the server logs it and the next sweep tries again) and the incoming
        name stays; the next adoption finds the link made before, completes, and the message
        is counted once. A message named twice in one job (a notice and a sweep) is adopted
        once."""
        server = Spool(self.base, SyncClock(), threadpool=SyncPool())  # type: ignore[arg-type]
        worker = Spool(self.base, SyncClock(), threadpool=SyncPool(), incoming=True)  # type: ignore[arg-type]
        msg_id = self.successResultOf(worker.store(envelope(1), DATA))

        def broken(path: str) -> None:
            raise OSError(5, "Input/output error")

        self.patch(server._dirsync, "_fsync", broken)
        self.assertEqual(self.successResultOf(server.adopt(msg_id)).data, DATA)
        self.assertEqual(os.listdir(self.incoming), [msg_id + ".msg"])
        self.assertEqual(server.message_count(), 1)
        self.patch(server._dirsync, "_fsync", None)

        from cgtwist.spool import moves as moves_mod

        unreadable = self.successResultOf(worker.store(envelope(1), DATA))

        def eio(path: str, limit: Any) -> Any:
            raise OSError(5, "Input/output error")

        self.patch(moves_mod, "read_upto", eio)
        self.failureResultOf(server.adopt(unreadable), OSError)
        self.assertEqual(self.successResultOf(server.incoming()), [unreadable])  # for the sweep
        self.patch(moves_mod, "read_upto", files_mod.read_upto)
        self.assertEqual(self.successResultOf(server.adopt(unreadable)).data, DATA)
        self.assertEqual(server.message_count(), 2)

        pool = HeldPool()
        held = Spool(self.base, SyncClock(), threadpool=pool)  # type: ignore[arg-type]
        first, second = (self.successResultOf(worker.store(envelope(1), DATA)) for _ in range(2))
        busy = held.adopt(first)
        twice = [held.adopt(second), held.adopt(second)]
        pool.run_all()
        self.successResultOf(busy)
        self.assertEqual(self.successResultOf(twice[0]).msg_id, second)
        self.assertIsNone(self.successResultOf(twice[1]))
        self.assertEqual(held.message_count(), 2)  # this Spool's own count

    @defer.inlineCallbacks
    def test_an_adopted_message_found_corrupt_later_leaves_no_incoming_name(self) -> None:
        """A message adopted whole and found damaged when it is loaded for delivery goes into
        Queue/corrupt/ with its incoming name (the same file, kept until the message is
        finished), so that no sweep or start adopts the damaged file again."""
        msg_id = yield self.worker.store(envelope(1), DATA)
        yield self.spool.adopt(msg_id)
        with open(os.path.join(self.qdir, msg_id + ".msg"), "r+b") as f:
            f.seek(-10, os.SEEK_END)
            f.write(b"garbage!!\n")
        yield self.assertFailure(self.spool.load(msg_id), SpoolCorrupt)
        self.assertEqual(os.listdir(self.incoming), [])
        self.assertEqual(os.listdir(os.path.join(self.qdir, "corrupt")), [msg_id + ".msg"])
        swept = yield self.spool.incoming()
        self.assertEqual(swept, [])

    @defer.inlineCallbacks
    def test_corrupt_incoming_file_is_quarantined(self) -> None:
        msg_id = yield self.worker.store(envelope(1), DATA)
        path = os.path.join(self.incoming, msg_id + ".msg")
        with open(path, "r+b") as f:
            f.seek(-5, os.SEEK_END)
            f.write(b"XXXX\n")
        entry = yield self.spool.adopt(msg_id)
        self.assertIsNone(entry)
        self.assertEqual(os.listdir(os.path.join(self.qdir, "corrupt")), [msg_id + ".msg"])
        self.assertEqual(self.spool.message_count(), 0)

    @defer.inlineCallbacks
    def test_sweep_lists_messages_and_drops_dead_workers_tmp(self) -> None:
        """Sweeping names every waiting message; a .tmp of a live worker stays, one of a dead
        worker (killed mid-DATA, never answered 250) goes."""
        msg_id = yield self.worker.store(envelope(1), DATA)
        live = os.path.join(self.incoming, "0000000000000001-4242-1.tmp")
        dead = os.path.join(self.incoming, "0000000000000001-4343-1.tmp")
        for p in (live, dead):
            open(p, "wb").close()
        ids = yield self.spool.incoming(frozenset({4242}))
        self.assertEqual(ids, [msg_id])
        self.assertTrue(os.path.exists(live))
        self.assertFalse(os.path.exists(dead))

    @defer.inlineCallbacks
    def test_start_takes_unadopted_messages(self) -> None:
        """After a crash of the server, recovery finds what workers stored but nobody adopted
        and removes their half-written files."""
        msg_id = yield self.worker.store(envelope(1), DATA)
        open(os.path.join(self.incoming, "0000000000000001-4343-1.tmp"), "wb").close()
        ids = yield Spool(self.base, reactor).recover()
        self.assertEqual(ids, [msg_id])
        self.assertEqual(os.listdir(self.incoming), [])


class RecyclingTests(SpoolTestBase):
    @defer.inlineCallbacks
    def test_removed_file_is_reused_for_the_next_message(self) -> None:
        """A finished message's file goes to Queue/free/ and carries the next message: same
        inode, exactly the new content (a shorter message leaves nothing of the old one)."""
        big = yield self.spool.store(envelope(3), DATA * 200)
        inode = os.stat(os.path.join(self.qdir, big + ".msg")).st_ino
        yield self.spool.remove(big)
        self.assertEqual(len(os.listdir(os.path.join(self.qdir, "free"))), 1)
        small = yield self.spool.store(envelope(1), DATA)
        path = os.path.join(self.qdir, small + ".msg")
        self.assertEqual(os.stat(path).st_ino, inode)
        self.assertEqual(os.listdir(os.path.join(self.qdir, "free")), [])
        env, data = yield self.spool.load(small)
        self.assertEqual((env, data), (envelope(1), DATA))
        ids = yield Spool(self.base, reactor).recover()  # the checksum holds: not corrupt
        self.assertEqual(ids, [small])

    def test_pool_is_bounded(self) -> None:
        """Past ``limit`` files a finished one is not kept (the caller deletes it)."""
        pool = Recycler(os.path.join(self.base, "pool"), limit=2)
        results = []
        for i in range(3):
            src = os.path.join(self.base, f"f{i}")
            open(src, "wb").close()
            results.append(pool.give(src, f"f{i}"))
        self.assertEqual(results, [True, True, None])
        self.assertFalse(pool.give(os.path.join(self.base, "missing"), "x"))

    def test_big_files_are_emptied_in_the_pool(self) -> None:
        """The pool keeps inodes, not big messages' disk blocks."""
        pool = Recycler(os.path.join(self.base, "pool"), keep_bytes=1000)
        for name, size in (("small", 1000), ("big", 1001)):
            with open(os.path.join(self.base, name), "wb") as f:
                f.write(b"x" * size)
            self.assertTrue(pool.give(os.path.join(self.base, name), name))
        sizes = {n: os.path.getsize(os.path.join(self.base, "pool", n)) for n in ("small", "big")}
        self.assertEqual(sizes, {"small": 1000, "big": 0})

    def test_a_worker_refills_its_reserve_once_in_dozens_of_messages(self) -> None:
        """A worker's reserve of pool files is refilled (one thread job, one fsync of the pool
        directory) once per 32 messages, the rate at which the server gives finished files
        back (issue 17: at once per 8 it was a sixteenth of a worker's flushes)."""
        server = Spool(self.base, SyncClock(), threadpool=SyncPool())  # type: ignore[arg-type]
        for msg_id in [self.successResultOf(server.store(envelope(1), DATA)) for _ in range(80)]:
            self.successResultOf(server.remove(msg_id))
        worker = Spool(self.base, SyncClock(), threadpool=SyncPool(), incoming=True)  # type: ignore[arg-type]
        pool_syncs = worker._recycler._taken
        before = pool_syncs.syncs
        for _ in range(64):
            self.successResultOf(worker.store(envelope(1), DATA))
        # the first message's pool file, the first refill, one more after 32 messages
        self.assertLessEqual(pool_syncs.syncs - before, 3)

    def test_take_from_another_process_pool(self) -> None:
        """A worker's Recycler finds files the server's gave (by listing the directory), and a
        file taken once cannot be taken again."""
        path = os.path.join(self.base, "pool")
        server, worker = Recycler(path), Recycler(path)
        src = os.path.join(self.base, "done")
        with open(src, "wb") as f:
            f.write(b"old")
        self.assertTrue(server.give(src, "done"))
        dest = os.path.join(self.base, "new.tmp")
        self.assertTrue(worker.take(dest))
        with open(dest, "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertFalse(server.take(os.path.join(self.base, "other.tmp")))


class PoolSharingTests(trial.TestCase):
    """Several SMTP workers refill their reserves from one pool directory."""

    def test_refills_do_not_stumble_over_files_another_worker_took(self) -> None:
        """Two workers take turns refilling from one pool: each refill takes its files from
        what the pool holds now, not from a listing made before the other worker's last
        refill (whose every name would be a rename finding nothing: half of a worker's pool
        renames at 10 sessions, bench/smtp-syscalls.sh)."""
        from unittest import mock

        base = self.mktemp()
        pool = os.path.join(base, "free")
        workers = []
        for i in range(2):
            reserve = os.path.join(base, f"incoming{i}")
            os.makedirs(reserve)
            workers.append(Recycler(pool, reserve_dir=reserve))
        for i in range(400):
            with open(os.path.join(pool, f"old{i}"), "wb") as f:
                f.write(b"x")
        missed = []
        rename = os.rename

        def counting(src: str, dest: str) -> None:
            try:
                rename(src, dest)
            except FileNotFoundError:
                missed.append(src)
                raise

        taken = 0
        with mock.patch.object(files_mod.os, "rename", counting):
            for _ in range(3):
                for worker in workers:
                    while worker.claim() is not None:  # the reserve used up
                        pass
                    taken += worker.refill()
        self.assertEqual(taken, 6 * Recycler.RESERVE)
        self.assertLess(len(missed), taken // 10)
