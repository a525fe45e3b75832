"""``JobBatch``, which gathers small file operations of the spool into few thread jobs.

Owns batching and ordering those operations and delivering each one's result; the threads
they run in are the owner's (``in_thread``, a deferToThreadPool over the server's file-work
pool, cgtwist.runtime.threadpool).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.typedtwisted import current_failure


class JobBatch:
    """``JobBatch(in_thread, commit=None, clock=None, linger=0)``: small file operations run in
    threads, gathered into few jobs, each ending in one shared commit.

    ``run(fn)`` returns a Deferred of ``fn()``, run off the reactor. One job is in flight at a
    time; operations asked for while it runs wait for it and then go together, in order, in
    the next job. The server's per-message queue moves (adopt: a link and the read of a small
    file; remove: a rename into ``Queue/finished/``) are each cheaper than the
    thread hop that carries them (a queue put, a thread wake-up, a callFromThread), so under
    load several share one hop; on an idle server each still gets its own job at once.
    ``in_thread(f)`` is the owner's deferToThreadPool; an operation that needs long (a big
    file's read) gets its own job from the owner instead, so it never holds up the ones behind.

    ``commit()``, if given, runs in the same thread after a job's operations and before any of
    their results is delivered: the owner's group commit (the operations leave their durable
    steps to it, so a job of N moves costs one fsync, not N). If it raises, every operation of
    the job fails with its error; an owner that can tell which operations a failed step concerns
    reports that through their results instead.

    A job takes at most ``MAX_BATCH`` operations, so a burst (a sweep that finds many
    messages) neither holds all their files in memory at once nor keeps the reactor busy for
    long with their results; the rest go in the next jobs.

    With a ``clock`` and a positive ``linger``, an operation nobody waits for (``urgent=False``:
    removing a finished message) starts a job at once only if no job started in the last
    ``linger`` seconds; otherwise it rides along with the next urgent one, or goes when
    ``linger`` has passed since the last job started, whichever comes first. At a low rate each
    removal thus goes at once (the window in which a crash delivers a finished message again
    stays one thread hop), and under load removals cost at most one job (and one commit) per
    ``linger``, however many messages finish.
    """

    MAX_BATCH = 32

    def __init__(
        self,
        in_thread: Callable[[Callable[[], list[tuple[bool, Any]]]], Any],
        commit: Optional[Callable[[], None]] = None,
        clock: Any = None,
        linger: float = 0.0,
    ) -> None:
        self._in_thread = in_thread
        self._commit = commit
        self._clock = clock if linger > 0 else None  # None: every operation is urgent
        self._linger = linger
        self._waiting: list[tuple[Callable[[], Any], Any]] = []
        self._urgent = False  # an urgent operation is among those waiting
        self._timer: Any = None  # IDelayedCall that starts a job for lingering operations
        self._started = float("-inf")  # when the last job started (clock seconds)
        self._running = False
        self.jobs = 0  # thread jobs started (operations / jobs: how much batching saved)

    def run(self, fn: Callable[[], Any], urgent: bool = True) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiting.append((fn, d))
        self._urgent = self._urgent or urgent or self._clock is None
        if not self._running:
            self._next()
        return d

    def _next(self) -> None:
        """Start a job now if an urgent operation waits or the last job started ``linger``
        ago; else make sure the timer runs."""
        if self._urgent:
            self._start()
            return
        assert self._clock is not None  # without one, every operation is urgent
        wait = self._started + self._linger - self._clock.seconds()
        if wait <= 0:
            self._start()
        elif self._timer is None:
            self._timer = self._clock.callLater(wait, self._lingered)

    def _lingered(self) -> None:
        self._timer = None
        if not self._running and self._waiting:
            self._start()

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting[: self.MAX_BATCH], self._waiting[self.MAX_BATCH :]
        self._urgent = bool(self._waiting)  # what is left over goes as soon as this job ends
        self._running = True
        self.jobs += 1
        if self._clock is not None:
            self._started = self._clock.seconds()
        commit = self._commit

        def work() -> list[tuple[bool, Any]]:
            """Thread: every operation, each failure kept apart from the others; then the
            commit, whose failure is every operation's."""
            results: list[tuple[bool, Any]] = []
            for fn, _ in batch:
                try:
                    results.append((True, fn()))
                except BaseException:
                    results.append((False, current_failure()))
            if commit is not None:
                try:
                    commit()
                except BaseException:
                    failed = current_failure()
                    results = [(False, failed)] * len(batch)
            return results

        def done(results: Any) -> None:
            self._running = False
            if self._waiting:  # the next job runs while these results are worked on here
                self._next()
            if isinstance(results, Failure):  # the pool refused the job (stopping)
                results = [(False, results)] * len(batch)
            for (_, d), (ok, value) in zip(batch, results, strict=True):
                if ok:
                    d.callback(value)
                else:
                    d.errback(value)

        self._in_thread(work).addBoth(done)
