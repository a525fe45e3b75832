"""Tests for the spool's batching of small file operations into thread jobs (spool.workers:
JobBatch)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.spool.workers import JobBatch


class HeldJobs:
    """An ``in_thread`` whose jobs wait until the test runs them (in the test's thread)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[object, defer.Deferred[object]]] = []

    def __call__(self, fn: object) -> defer.Deferred[object]:
        d: defer.Deferred[object] = defer.Deferred()
        self.jobs.append((fn, d))
        return d

    def run_next(self) -> None:
        fn, d = self.jobs.pop(0)
        d.callback(fn())  # type: ignore[operator]


class JobBatchTests(unittest.TestCase):
    def test_operations_asked_for_during_a_job_share_the_next(self) -> None:
        """The first operation gets a job at once; the three asked for while it runs go
        together, in order, in one more job; each caller gets its own result or error."""
        held = HeldJobs()
        batch = JobBatch(held)
        done: list[object] = []
        first = batch.run(lambda: done.append("a") or "A")
        self.assertEqual(len(held.jobs), 1)
        self.assertEqual(done, [])  # nothing ran here: the job is in the (held) thread
        rest = [
            batch.run(lambda: done.append("b") or "B"),
            batch.run(lambda: 1 / 0),
            batch.run(lambda: done.append("d") or "D"),
        ]
        self.assertEqual(len(held.jobs), 1)  # they wait for the job in flight
        held.run_next()
        self.assertEqual(self.successResultOf(first), "A")
        self.assertEqual(len(held.jobs), 1)  # the next job started as the first ended
        held.run_next()
        self.assertEqual(done, ["a", "b", "d"])
        self.assertEqual(self.successResultOf(rest[0]), "B")
        self.failureResultOf(rest[1], ZeroDivisionError)
        self.assertEqual(self.successResultOf(rest[2]), "D")
        self.assertEqual((batch.jobs, held.jobs), (2, []))

    def test_a_refused_job_fails_each_operation(self) -> None:
        """A pool that refuses the job (stopping) fails every operation in it, and the
        batch takes new work afterwards."""
        calls = []

        def refuse(fn: object) -> defer.Deferred[object]:
            calls.append(fn)
            return defer.fail(RuntimeError("pool stopped"))

        batch = JobBatch(refuse)
        self.failureResultOf(batch.run(lambda: 1), RuntimeError)
        self.failureResultOf(batch.run(lambda: 2), RuntimeError)
        self.assertEqual(len(calls), 2)

    def test_the_commit_runs_once_per_job_before_any_result(self) -> None:
        """The owner's commit (its group fsync) runs once per job, in the job's thread after
        every operation of it and before any result reaches the reactor; when it fails, every
        operation of that job fails with its error (none is reported durable)."""
        held = HeldJobs()
        order: list[str] = []
        fail = [False]

        def commit() -> None:
            order.append("commit")
            if fail[0]:
                raise OSError(5, "I/O error")

        batch = JobBatch(held, commit)
        first = batch.run(lambda: order.append("a") or "A")
        rest = [batch.run(lambda i=i: order.append(f"b{i}") or i) for i in range(3)]
        self.assertFalse(first.called)
        held.run_next()
        self.assertEqual(self.successResultOf(first), "A")
        self.assertEqual(order, ["a", "commit"])
        self.assertFalse(any(d.called for d in rest))
        fail[0] = True
        held.run_next()
        self.assertEqual(order, ["a", "commit", "b0", "b1", "b2", "commit"])
        for d in rest:
            self.failureResultOf(d, OSError)
        self.assertEqual(batch.jobs, 2)

    def test_a_lingering_operation_goes_at_once_after_a_quiet_spell(self) -> None:
        """An operation nobody waits for (a removal) starts its job at once when no job
        started in the last ``linger`` seconds: at a low rate, no waiting."""
        held, clock = HeldJobs(), Clock()
        batch = JobBatch(held, None, clock, 0.01)
        first = batch.run(lambda: 1, urgent=False)
        self.assertEqual(len(held.jobs), 1)
        held.run_next()
        self.assertEqual(self.successResultOf(first), 1)
        clock.advance(0.01)
        second = batch.run(lambda: 2, urgent=False)
        held.run_next()
        self.assertEqual(self.successResultOf(second), 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_lingering_operation_rides_with_the_next_urgent_one(self) -> None:
        """Right after a job started, a lingering operation starts no job of its own; the
        next urgent one (an adoption) takes it along, and its timer is cancelled."""
        held, clock = HeldJobs(), Clock()
        batch = JobBatch(held, None, clock, 0.01)
        batch.run(lambda: "earlier")
        held.run_next()
        order: list[str] = []
        late = batch.run(lambda: order.append("remove") or "removed", urgent=False)
        self.assertEqual(held.jobs, [])
        soon = batch.run(lambda: order.append("adopt") or "adopted")
        self.assertEqual(len(held.jobs), 1)
        held.run_next()
        self.assertEqual(
            (self.successResultOf(late), self.successResultOf(soon)), ("removed", "adopted")
        )
        self.assertEqual(order, ["remove", "adopt"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lingering_operations_go_one_job_per_linger(self) -> None:
        """With no urgent operation coming, lingering ones asked for soon after a job started
        go together when ``linger`` has passed since that start: under load, removals cost
        at most one job (one fsync) per ``linger``."""
        held, clock = HeldJobs(), Clock()
        batch = JobBatch(held, None, clock, 0.01)
        first = batch.run(lambda: 1, urgent=False)
        clock.advance(0.004)
        later = [batch.run(lambda i=i: i, urgent=False) for i in (2, 3)]
        held.run_next()
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(held.jobs, [])  # the job ended: the lingering ones still wait
        clock.advance(0.005)
        self.assertEqual(held.jobs, [])
        clock.advance(0.001)
        held.run_next()
        self.assertEqual([self.successResultOf(d) for d in later], [2, 3])
        self.assertEqual(batch.jobs, 2)

    def test_a_job_takes_at_most_max_batch_operations(self) -> None:
        """A burst asked for while a job runs (a sweep that finds many messages) goes in jobs
        of at most MAX_BATCH, one after the other, so their files are never all in memory."""
        held = HeldJobs()
        batch = JobBatch(held)
        n = JobBatch.MAX_BATCH + 8
        results = [batch.run(lambda i=i: i) for i in range(1 + n)]
        sizes = []
        while held.jobs:
            before = sum(1 for d in results if d.called)
            held.run_next()
            sizes.append(sum(1 for d in results if d.called) - before)
        self.assertEqual(sizes, [1, JobBatch.MAX_BATCH, 8])
        self.assertEqual([self.successResultOf(d) for d in results], list(range(1 + n)))
