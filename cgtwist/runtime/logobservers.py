"""twistd's own log observers: the level filter, the cheap path, and the rotating log file.

Owns reaching the observers twistd installed before the service started (a FileLogObserver
over ``--logfile`` or standard output, or syslog's) and changing them; what a line looks like
and how the log file rotates belong to cgtwist.logs. Twisted has no public way to list a
publisher's observers or to change a FileLogObserver's file or format, so this reads
``LogPublisher._observers`` and sets ``FileLogObserver._outFile`` and ``formatEvent``;
``missing`` checks first that they are still what ``FileLogObserver`` writes through.

With ``[server] runtime = tuned`` each FileLogObserver formats by ``fast_text_format`` and
writes the lines of one reactor turn at once (``TurnBufferedFile``): under mail load
Twisted's formatter was a quarter of the reactor's time, its per-line time-zone lookup a
tenth, and the unbuffered write of each line made the reactor wait for the GIL (commits
19f31ac, 25357b6, 55f5f55). With ``plain`` the observers keep Twisted's format and writes and
``[log] level`` is Twisted's FilteringLogObserver; with ``tuned`` it is LevelFilter, one
comparison per event.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
)
from twisted.python.logfile import LogFile

from cgtwist.logs import LevelFilter, TurnBufferedFile, fast_text_format, set_level

T = TypeVar("T")


def missing(publisher: Any) -> Optional[str]:
    """What reaching twistd's observers relies on that this Twisted lacks (a sentence for
    the log), or None."""
    if not isinstance(getattr(publisher, "_observers", None), list):
        return "LogPublisher._observers is gone or no longer a list"
    written_through = FileLogObserver.__call__.__code__.co_names
    for name in ("formatEvent", "_outFile"):
        if name not in written_through:
            return f"FileLogObserver no longer writes through {name}"
    return None


def _observers(publisher: Any) -> list[Any]:
    return list(publisher._observers) if missing(publisher) is None else []


def configure(publisher: Any, reactor: Any, level: str, tuned: bool) -> Optional[str]:
    """Apply ``[log] level`` to twistd's observers on ``publisher``, and with ``tuned`` the
    cheap format and per-turn writes. Returns why the observers could not be reached (then
    only cgtwist's own events are filtered by level, and lines keep Twisted's path)."""
    why = missing(publisher)
    observers = _observers(publisher)
    if tuned:
        for observer in observers:
            if isinstance(observer, FileLogObserver):
                observer.formatEvent = fast_text_format
                out = getattr(observer, "_outFile", None)
                if out is not None and not isinstance(out, TurnBufferedFile):
                    buffered = TurnBufferedFile(out, reactor)
                    observer._outFile = buffered  # type: ignore[assignment]
                    reactor.addSystemEventTrigger("after", "shutdown", buffered.unbuffer)
    if level != "debug":
        log_level = LogLevel.levelWithName(level)
        set_level(log_level)  # cgtwist's Logger drops lesser events before building them
        for observer in observers:
            publisher.removeObserver(observer)
            publisher.addObserver(
                LevelFilter(observer, log_level)
                if tuned
                else FilteringLogObserver(observer, [LogLevelFilterPredicate(log_level)])
            )
    return why


def replace_log_file(publisher: Any, replace: Callable[[LogFile], T]) -> Optional[T]:
    """twistd's ``--logfile`` (a plain LogFile under a FileLogObserver) swapped for
    ``replace(it)``, which is returned; None when twistd logs elsewhere (standard output,
    syslog) or its observers cannot be reached (``missing``)."""
    new: Optional[T] = None
    for observer in _observers(publisher):
        out = getattr(observer, "_outFile", None)
        if isinstance(observer, FileLogObserver) and type(out) is LogFile:
            new = replace(out)
            observer._outFile = new  # type: ignore[assignment]
    return new
