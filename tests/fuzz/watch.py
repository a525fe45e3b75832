"""What every fuzz driver checks besides the replies: reactor stalls and logged tracebacks."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from twisted.logger import globalLogPublisher

# A reply that keeps the reactor busy longer than this stalls every other session; the suite
# fails on it. Measured as the CPU time of the in-process call on this thread (nothing in the
# drivers waits for I/O), so a busy machine that merely schedules us late does not count.
STALL_LIMIT = 1.0


class Stall(AssertionError):
    """One call into the protocol kept the (simulated) reactor thread busy too long."""


class Watch:
    """Collects log events with a traceback while active, and times calls into the protocol."""

    def __init__(self) -> None:
        self.failures: list[dict[str, Any]] = []
        self.slowest = 0.0

    def _observe(self, event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            self.failures.append(event)

    @contextmanager
    def active(self) -> Iterator[Watch]:
        globalLogPublisher.addObserver(self._observe)
        try:
            yield self
        finally:
            globalLogPublisher.removeObserver(self._observe)

    def timed(self, what: str, fn: Callable[[], Any]) -> None:
        start = time.thread_time()
        fn()
        took = time.thread_time() - start
        self.slowest = max(self.slowest, took)
        if took > STALL_LIMIT:
            raise Stall(f"{what!r} kept the reactor busy for {took:.2f} s of CPU")

    def assert_no_traceback(self, transcript: list[Any]) -> None:
        if self.failures:
            ev = self.failures[0]
            failure = ev.get("log_failure")
            detail = failure.getTraceback() if failure is not None else repr(ev)
            raise AssertionError(f"traceback logged after {transcript[-3:]!r}:\n{detail}")
