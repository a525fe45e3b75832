"""``[server] runtime``: which of the fenced pieces a process runs, chosen once at start.

Owns turning the setting into each piece's switch and saying in the log what runs: with
``tuned`` every piece whose Twisted internals are still there (each module's ``missing``),
the others falling back to Twisted's own with a warning naming what is gone; with ``plain``
Twisted's own throughout. The file-work thread pool is chosen where it is built
(``threadpool.file_pool``, from the same setting); this reports it with the rest.
"""

from __future__ import annotations

from typing import Any, Optional

from cgtwist.logs import Logger
from cgtwist.runtime import collector, fastwrite, logobservers, reactor, threadpool

log = Logger(namespace="cgtwist.runtime")

TUNED = "tuned"
PLAIN = "plain"

# What each piece is with ``tuned`` and what replaces it with ``plain``, for the log.
_PIECES = {
    "reactor": ("direct epoll dispatch", "Twisted's reactor loop"),
    "writes": ("direct socket writes", "transport writes"),
    "pipe": ("direct pipe writes", "transport writes to the server"),
    "threads": ("lean file threads", "Twisted's ThreadPool"),
    "log": ("batched log lines", "Twisted's log observers"),
    "gc": (f"young collections every {collector.YOUNG} allocations", "Python's collector"),
}


class Runtime:
    """``Runtime(mode, reactor)``: one process's pieces. ``start_server(publisher, level)``
    or ``start_worker()`` install them; ``start_pipe(transport)`` (a worker) the pipe to
    the server once it exists. ``tuned[piece]`` says what runs tuned."""

    def __init__(self, mode: str, reactor_: Any) -> None:
        if mode not in (TUNED, PLAIN):
            raise ValueError(f"runtime must be {TUNED} or {PLAIN}, not {mode!r}")
        self.mode = mode
        self.reactor = reactor_
        self.tuned: dict[str, bool] = {}

    @property
    def wanted(self) -> bool:
        return self.mode == TUNED

    def start_server(self, publisher: Any, level: str) -> None:
        """The server: twistd's log observers, the reactor, socket writes, file threads."""
        why = logobservers.configure(publisher, self.reactor, level, self.wanted)
        if why is not None:
            log.warn(
                "twistd's log observers cannot be reached ({why}): [log] level filters "
                "cgtwist's own events only, [log] max_size, keep and daily do not apply, and "
                "log lines take Twisted's own path",
                why=why,
            )
        self.tuned["log"] = self.wanted and why is None
        self._common()
        self._report()

    def start_worker(self) -> None:
        """An SMTP worker: the reactor, socket writes, file threads (its log observer is its
        own, cgtwist.smtpworker.child, batched when ``wanted``)."""
        self._common()

    def start_pipe(self, transport: Any) -> None:
        """An SMTP worker's StandardIO to the server, once it exists; then the report."""
        self._piece("pipe", fastwrite.enable_pipe(self.wanted, transport))
        self._report()

    def _common(self) -> None:
        streamlined = self.wanted and reactor.streamline(self.reactor)
        why = reactor.missing(self.reactor) if self.wanted and not streamlined else None
        self._piece("reactor", why)
        self._piece("writes", fastwrite.enable(self.wanted))
        self._piece("threads", threadpool.missing() if self.wanted else None)
        collector.tune(self.wanted)
        self._piece("gc", None)

    def _piece(self, name: str, why: Optional[str]) -> None:
        self.tuned[name] = self.wanted and why is None
        if why is not None:
            log.warn(
                "runtime tuned: {piece} unavailable ({why}); using {plain} instead",
                piece=_PIECES[name][0],
                why=why,
                plain=_PIECES[name][1],
            )

    def _report(self) -> None:
        pieces = [p for p in _PIECES if p in self.tuned]  # in _PIECES' order
        if self.wanted:
            on = [_PIECES[p][0] for p in pieces if self.tuned[p]]
            log.info("runtime tuned: {pieces}", pieces=", ".join(on) or "nothing")
        else:
            log.info("runtime plain: {pieces}", pieces=", ".join(_PIECES[p][1] for p in pieces))
