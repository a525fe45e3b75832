"""Tests for the worker threads of the spool and Maildir path (spool.workers.WorkerPool)."""

from __future__ import annotations

import threading

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThreadPool
from twisted.trial import unittest

from cgtwist.spool.workers import WorkerPool


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
            [deferToThreadPool(reactor, self.pool, job, i) for i in range(20)])
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
