"""A lean pool of worker threads for blocking file work (spool, Maildir), for deferToThreadPool.

Owns only running submitted functions in a fixed set of threads and reporting each result
through the callback it was given. Twisted's ThreadPool does the same through a coordinator,
per-worker queues, Conditions and a log-context copy per job: several lock hand-offs on the
reactor thread per call, which showed as the largest single cost (``Condition.notify``) of the
reactor on the SMTP -> spool -> Maildir path. Here a call is one ``SimpleQueue.put``.
It never touches the reactor itself: ``twisted.internet.threads.deferToThreadPool`` passes an
``onResult`` that uses ``reactor.callFromThread``.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Optional

from twisted.python.failure import Failure

_Job = Optional[tuple[Optional[Callable[[bool, Any], None]], Callable[..., Any], tuple[Any, ...],
                      dict[str, Any]]]


class WorkerPool:
    """``WorkerPool(size, name)``: ``start()``, ``callInThreadWithCallback``, ``stop()``.

    The part of ``twisted.python.threadpool.ThreadPool``'s interface that
    ``deferToThreadPool`` and ``callInThread`` users need. Threads start at ``start()``;
    ``stop()`` lets queued jobs finish, then joins the threads.
    """

    def __init__(self, size: int, name: str = "workers") -> None:
        self.size = max(1, size)
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
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
            self._jobs.put(None)
        for t in self._threads:
            t.join()
        self._threads = []

    def callInThreadWithCallback(self, onResult: Optional[Callable[[bool, Any], None]],
                                 func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        """Run ``func(*args, **kw)`` in a worker; then ``onResult(True, result)`` or
        ``onResult(False, Failure)``, in that worker thread."""
        self._jobs.put((onResult, func, args, kw))

    def callInThread(self, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self._jobs.put((None, func, args, kw))

    def _work(self) -> None:
        get = self._jobs.get
        while True:
            job = get()
            if job is None:
                return
            on_result, func, args, kw = job
            try:
                result = func(*args, **kw)
                ok = True
            except BaseException:
                result, ok = Failure(), False
            del job, func, args, kw
            if on_result is not None:
                try:
                    on_result(ok, result)
                except BaseException:  # never lose the thread (deferToThreadPool's cannot fail)
                    pass
            del result, on_result
