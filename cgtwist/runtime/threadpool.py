"""A lean pool of worker threads for blocking file work (spool, Maildir), for deferToThreadPool.

Owns only running submitted functions in a fixed set of threads and reporting each result
through the callback it was given. Twisted's ThreadPool does the same through a coordinator,
per-worker queues, Conditions and a log-context copy per job: several lock hand-offs on the
reactor thread per call, which showed as the largest single cost (``Condition.notify``) of the
reactor on the SMTP -> spool -> Maildir path. Here a call appends to a deque and wakes one
idle thread, the one that went idle last, through that thread's own lock. (A shared
``queue.SimpleQueue`` wakes two: the taker passes the queue's lock on to the next waiter,
which finds nothing and sleeps again, and under a busy reactor that wasted wake-up is GIL
traffic too: 8% of the server's CPU per message, 9% of its throughput, on the SMTP path.)
It never touches the reactor itself: ``twisted.internet.threads.deferToThreadPool`` passes an
``onResult`` that uses ``reactor.callFromThread``.

``file_pool`` makes the server's file-work pool: this one when ``[server] runtime`` is
``tuned`` and ``deferToThreadPool`` still hands jobs over through the one method it
implements (``missing``), else Twisted's own ThreadPool.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Optional

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from cgtwist.typedtwisted import current_failure

_Job = Optional[
    tuple[
        Optional[Callable[[bool, Any], None]], Callable[..., Any], tuple[Any, ...], dict[str, Any]
    ]
]


class WorkerPool:
    """``WorkerPool(size, name)``: ``start()``, ``callInThreadWithCallback``, ``stop()``.

    The part of ``twisted.python.threadpool.ThreadPool``'s interface that
    ``deferToThreadPool`` and ``callInThread`` users need. Threads start at ``start()``;
    ``stop()`` lets queued jobs finish, then joins the threads.
    """

    def __init__(self, size: int, name: str = "workers") -> None:
        self.size = max(1, size)
        self.name = name
        self._queue: collections.deque[_Job] = collections.deque()
        self._idle: list[threading.Lock] = []
        self._mutex = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started = False

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        for i in range(self.size):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for _ in self._threads:
            self._put(None)
        for t in self._threads:
            t.join()
        self._threads = []

    def callInThreadWithCallback(
        self,
        onResult: Optional[Callable[[bool, Any], None]],
        func: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        """Run ``func(*args, **kw)`` in a worker; then ``onResult(True, result)`` or
        ``onResult(False, Failure)``, in that worker thread."""
        self._put((onResult, func, args, kw))

    def callInThread(self, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self._put((None, func, args, kw))

    def _put(self, job: _Job) -> None:
        """Queue ``job`` and wake one idle thread, if any (a busy one takes it when done)."""
        with self._mutex:
            self._queue.append(job)
            waker = self._idle.pop() if self._idle else None
        if waker is not None:
            waker.release()

    def _work(self) -> None:
        """Thread: take jobs while there are any; when none is left, go on the idle stack and
        sleep on this thread's own lock until ``_put`` releases it. A job meant for a woken
        thread may be taken first by one that just finished; the woken one sleeps again."""
        wake = threading.Lock()
        wake.acquire()
        mutex, jobs, idle = self._mutex, self._queue, self._idle
        while True:
            with mutex:
                if jobs:
                    job = jobs.popleft()
                    waiting = False
                else:
                    idle.append(wake)
                    waiting = True
            if waiting:
                wake.acquire()
                continue
            if job is None:
                return
            on_result, func, args, kw = job
            try:
                result = func(*args, **kw)
                ok = True
            except BaseException:
                result, ok = current_failure(), False
            del job, func, args, kw
            if on_result is not None:
                try:
                    on_result(ok, result)
                except BaseException:  # never lose the thread (deferToThreadPool's cannot fail)
                    pass
            del result, on_result


def missing(defer_to_pool: Optional[Callable[..., Any]] = None) -> Optional[str]:
    """What WorkerPool relies on that this Twisted lacks (a sentence for the log), or None:
    ``deferToThreadPool`` must hand its job over by ``callInThreadWithCallback``, the part of
    ThreadPool's interface WorkerPool implements."""
    code = getattr(defer_to_pool or deferToThreadPool, "__code__", None)
    if code is None or "callInThreadWithCallback" not in code.co_names:
        return "deferToThreadPool no longer calls callInThreadWithCallback"
    return None


def file_pool(size: int, name: str, tuned: bool) -> WorkerPool | ThreadPool:
    """The pool for blocking file work, not yet started: a WorkerPool when ``tuned`` (and
    ``missing`` finds nothing), else Twisted's ThreadPool of the same size."""
    if tuned and missing() is None:
        return WorkerPool(size, name)
    return ThreadPool(0, max(1, size), name)
