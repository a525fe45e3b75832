"""Tests for the lean thread pool of the spool and Maildir path (runtime.threadpool)."""

from __future__ import annotations

import threading
from unittest.mock import patch

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from cgtwist.runtime import threadpool
from cgtwist.runtime.threadpool import WorkerPool, file_pool, missing


class WorkerPoolTests(unittest.TestCase):
    def setUp(self) -> None:
        self.pool = WorkerPool(4, "test")
        self.pool.start()
        self.addCleanup(self.pool.stop)

    @defer.inlineCallbacks
    def test_results_come_back_on_the_reactor(self) -> None:
        """Blocking work runs off the reactor thread and its result fires the caller's
        Deferred back on the reactor thread."""
        main = threading.current_thread()
        seen: list[threading.Thread] = []

        def job(x: int) -> int:
            seen.append(threading.current_thread())
            return x * 2

        results = yield defer.gatherResults(
            [deferToThreadPool(reactor, self.pool, job, i) for i in range(20)]
        )
        self.assertEqual(results, [i * 2 for i in range(20)])
        self.assertNotIn(main, seen)

    @defer.inlineCallbacks
    def test_errors_become_failures(self) -> None:
        """An exception in the work (a full disk) errbacks with it; the pool keeps working."""

        def bad() -> None:
            raise OSError(28, "No space left on device")

        with self.assertRaises(OSError):
            yield deferToThreadPool(reactor, self.pool, bad)
        self.assertEqual((yield deferToThreadPool(reactor, self.pool, lambda: "ok")), "ok")

    def test_one_job_at_a_time_wakes_the_same_thread(self) -> None:
        """A job wakes one idle thread, the last to go idle: a server passing one message at
        a time keeps one hot thread and wakes no other for nothing (a shared SimpleQueue
        hands each job to a different thread, after waking one more that finds nothing)."""
        pool = WorkerPool(4, "hot")
        pool.start()
        self.addCleanup(pool.stop)
        ran: list[str] = []
        for _ in range(20):
            done = threading.Event()
            pool.callInThread(lambda d=done: (ran.append(threading.current_thread().name), d.set()))
            self.assertTrue(done.wait(10))
            for _ in range(10000):  # until the thread is back on the idle stack (not timing)
                if len(pool._idle) == 4:
                    break
                threading.Event().wait(0.001)
        self.assertEqual(len(set(ran)), 1, ran)

    def test_jobs_from_many_threads_all_run(self) -> None:
        """Jobs queued from several threads at once while the workers go idle and wake: none
        is lost, and stop() returns once all have run."""
        pool = WorkerPool(3, "race")
        pool.start()
        count = [0]
        lock = threading.Lock()

        def job() -> None:
            with lock:
                count[0] += 1

        def producer() -> None:
            for _ in range(2000):
                pool.callInThread(job)

        producers = [threading.Thread(target=producer) for _ in range(4)]
        for t in producers:
            t.start()
        for t in producers:
            t.join()
        pool.stop()
        self.assertEqual(count[0], 8000)

    def test_stop_finishes_queued_work(self) -> None:
        """Stopping the server lets work already handed over (a message being written)
        finish before the threads end."""
        pool = WorkerPool(1, "one")
        pool.start()
        gate = threading.Event()
        done: list[int] = []
        pool.callInThread(gate.wait, 10)
        for i in range(5):
            pool.callInThread(done.append, i)
        gate.set()
        pool.stop()
        self.assertEqual(done, [0, 1, 2, 3, 4])


class FilePoolTests(unittest.TestCase):
    def test_tuned_is_the_lean_pool_plain_is_twisteds(self) -> None:
        """``runtime = tuned`` gives WorkerPool, ``plain`` Twisted's ThreadPool of the same
        size; both run deferToThreadPool work."""
        self.assertIsInstance(file_pool(4, "t", tuned=True), WorkerPool)
        plain = file_pool(4, "p", tuned=False)
        self.assertIsInstance(plain, ThreadPool)
        self.assertEqual(plain.max, 4)

    @defer.inlineCallbacks
    def test_plain_pool_runs_work(self) -> None:
        pool = file_pool(2, "plain", tuned=False)
        pool.start()
        self.addCleanup(pool.stop)
        self.assertEqual((yield deferToThreadPool(reactor, pool, lambda: 7)), 7)

    def test_this_twisted_has_what_it_needs(self) -> None:
        """deferToThreadPool of the installed Twisted hands jobs over the way WorkerPool
        takes them."""
        self.assertIsNone(missing())

    def test_a_changed_hand_over_falls_back_to_twisteds_pool(self) -> None:
        """A deferToThreadPool that no longer calls callInThreadWithCallback (another
        Twisted) is refused: file_pool then gives Twisted's ThreadPool even when tuned."""

        def other(reactor: object, pool: object, f: object) -> None:
            pool.submit(f)  # type: ignore[attr-defined]

        self.assertIn("callInThreadWithCallback", missing(other) or "")
        with patch.object(threadpool, "deferToThreadPool", other):
            self.assertIsInstance(file_pool(4, "t", tuned=True), ThreadPool)
