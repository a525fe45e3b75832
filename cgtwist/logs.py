"""Log output for a busy server: cheap formatting, level filtering and batched writes.

Owns how an event becomes a line in twistd's log file (or a worker's standard error): the
classic ``time [system] text`` format with a timestamp formatted once per second and plain
templates formatted by ``str.format_map``; a level filter of one comparison; a file
wrapper that writes the lines of one reactor turn with one system call; and the log file
that rotates by size and/or day and keeps a bounded number of old files. Each of these was a
measurable share of the reactor's time under mail load (see bench/smtp-cpu-profile.sh).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Optional

from twisted.logger import ILogObserver, LogLevel, formatEventAsClassicLogText, formatTime
from twisted.logger import Logger as _TwistedLogger
from twisted.python import threadable
from twisted.python.logfile import LogFile
from zope.interface import implementer

_time_cache: dict[int, str] = {}

# Levels as numbers: comparing two of Twisted's LogLevel constants walks the constants.
_RANK = {
    LogLevel.debug: 0,
    LogLevel.info: 1,
    LogLevel.warn: 2,
    LogLevel.error: 3,
    LogLevel.critical: 4,
}
# The least level any of this process's log outputs keeps (set_level); 0 until then, so
# that tests and tools that observe every event see them all.
_threshold = [0]


def set_level(level: LogLevel) -> None:
    """The process logs ``level`` and above: Logger drops lesser events before building them.
    Called once by the server (and each SMTP worker) when it applies ``[log] level``."""
    _threshold[0] = _RANK.get(level, 0)


def enabled(level: LogLevel) -> bool:
    """Whether this process logs ``level`` at all (``set_level``): for a caller whose event
    is dear to build, such as a line made from many parts, so that it is not built to be
    dropped."""
    return _RANK.get(level, 4) >= _threshold[0]


class Logger(_TwistedLogger):
    """``twisted.logger.Logger`` for cgtwist: the same events, cheaper on the mail path.

    An event below the process's log level (``set_level``) returns at once instead of being
    built and carried to the filter, and a valid level is looked up in a dict instead of
    Twisted's walk over ``LogLevel.iterconstants()``. Every message passes about half a
    dozen log calls (most of them debug), so each was a measurable share of a message's
    CPU time. An unknown level goes to Twisted's ``emit``, which reports it."""

    def __get__(self, instance: object, owner: Optional[type] = None) -> Logger:
        """As a class attribute (``log = Logger()``): one Logger per class, made once, where
        Twisted makes a new one at every ``self.log`` (a few per message). Its source is
        the class, not the instance; no observer of ours reads it."""
        assert owner is not None
        cached = owner.__dict__.get("_cgtwist_logger")
        if cached is None or cached.observer is not self.observer:
            cached = self.__class__(
                ".".join([owner.__module__, owner.__name__]), owner, observer=self.observer
            )
            type.__setattr__(owner, "_cgtwist_logger", cached)
        return cached

    def emit(self, level: LogLevel, format: Optional[str] = None, **kwargs: object) -> None:
        rank = _RANK.get(level)
        if rank is None:
            super().emit(level, format, **kwargs)
            return
        if rank >= _threshold[0]:
            self._publish(level, format, kwargs)

    def _publish(self, level: LogLevel, format: Optional[str], kwargs: dict[str, object]) -> None:
        """Complete the event (``kwargs``, a dict of its own) and give it to the observer."""
        kwargs.update(
            log_logger=self,
            log_level=level,
            log_namespace=self.namespace,
            log_source=self.source,
            log_format=format,
            log_time=time.time(),
        )
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(kwargs)

    # Each level's method publishes its own keyword dict: Twisted's pass theirs on to
    # ``emit`` as keywords, which copies them into a new dict, and look the level up again
    # (a few calls per message, most of them debug and dropped here at once).
    def debug(self, format: Optional[str] = None, **kwargs: object) -> None:
        if _threshold[0] <= 0:
            self._publish(LogLevel.debug, format, kwargs)

    def info(self, format: Optional[str] = None, **kwargs: object) -> None:
        if _threshold[0] <= 1:
            self._publish(LogLevel.info, format, kwargs)

    def warn(self, format: Optional[str] = None, **kwargs: object) -> None:
        if _threshold[0] <= 2:
            self._publish(LogLevel.warn, format, kwargs)

    def error(self, format: Optional[str] = None, **kwargs: object) -> None:
        if _threshold[0] <= 3:
            self._publish(LogLevel.error, format, kwargs)

    def critical(self, format: Optional[str] = None, **kwargs: object) -> None:
        self._publish(LogLevel.critical, format, kwargs)


def cached_time(when: Optional[float]) -> str:
    """RFC 3339 local time of an event, formatted once per second (Twisted's formatTime looks
    the time zone up for every line: a tenth of the reactor's time under mail load)."""
    if when is None:
        return "-"
    second = int(when)
    text = _time_cache.get(second)
    if text is None:
        if len(_time_cache) > 4:
            _time_cache.clear()
        text = _time_cache[second] = formatTime(second)
    return text


def plain_text(event: Any) -> str:
    """The text of an event whose format is a plain ``str.format`` template over its own keys
    (ours and most of Twisted's), by ``str.format_map`` in C; "" for anything else (a
    failure, call syntax ``{f()}``, a legacy event), which the caller formats the full way
    with Twisted's ``formatEvent``: its ``string.Formatter`` subclass, in Python, was the
    largest part of the cost of a log line."""
    fmt = event.get("log_format")
    if type(fmt) is str and "log_failure" not in event:
        try:
            return fmt.format_map(event)
        except Exception:
            return ""
    return ""


def fast_text_format(event: Any) -> Any:
    """twistd's classic log line format (``time [system] text``), with the cached timestamp.

    Our events (and most of Twisted's) are a plain ``str.format`` template over the event's
    own keys: those are formatted by ``str.format_map`` in C, not by Twisted's
    ``string.Formatter`` subclass in Python, which was the largest part of the cost of a log
    line. Anything else (failures, call syntax ``{f()}``, legacy events) goes the full way,
    so the output is the same."""
    text = plain_text(event)
    if text:
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
        return f"{cached_time(event.get('log_time'))} [{system}] {text.replace(chr(10), chr(10) + chr(9))}\n"
    return formatEventAsClassicLogText(event, formatTime=cached_time)


@implementer(ILogObserver)
class LevelFilter:
    """Pass events at ``level`` or above to ``observer``: one comparison, where Twisted's
    FilteringLogObserver walks a per-namespace predicate for every event."""

    def __init__(self, observer: Any, level: Any) -> None:
        self.observer = observer
        self.level = level
        self._rank = _RANK.get(level, 0)

    def __call__(self, event: Any) -> None:
        level = event.get("log_level")
        if level is None or _RANK.get(level, 4) >= self._rank:
            self.observer(event)


class TurnBufferedFile:
    """Wraps a log file so that lines written on the reactor thread are gathered and written
    once per turn of the reactor (``callLater(0)``), instead of one unbuffered ``write`` per
    line: each system call on the reactor thread releases the GIL, and getting it back from
    busy worker threads cost more than the write. Lines from other threads are written at
    once, after what is gathered. A process killed with SIGKILL loses at most the lines of
    the turn it was in; an orderly stop flushes and stops gathering (``unbuffer``, after the
    reactor's shutdown): the reactor's own last line ("Main loop terminated.") and twistd's
    after it are written once no turn would ever come to flush them."""

    def __init__(self, target: Any, reactor: Any) -> None:
        self.target = target
        self.reactor = reactor
        self._buf: list[Any] = []
        self._scheduled = False
        self._direct = False  # set by unbuffer: every line written at once
        # Reentrant: a signal handler runs on the reactor thread between any two bytecodes,
        # also inside write or flush_now, and Twisted's logs ("Received SIGTERM"); with a
        # plain Lock that line waited for ever on the lock its own thread held.
        self._lock = threading.RLock()
        self._thread = threading.get_ident()  # built on the reactor thread

    def write(self, data: Any) -> None:
        if self._direct or threading.get_ident() != self._thread:
            with self._lock:
                self._write_out(self._take() + [data])
            return
        with self._lock:
            self._buf.append(data)
        if not self._scheduled:
            self._scheduled = True
            try:
                self.reactor.callLater(0, self.flush_now)
            except Exception:  # a reactor that is gone: write now
                self.flush_now()

    def flush(self) -> None:
        """FileLogObserver flushes after every line; the turn's end does it instead."""

    def flush_now(self) -> None:
        self._scheduled = False
        with self._lock:
            self._write_out(self._take())

    def unbuffer(self) -> None:
        """Write what is gathered and every later line at once: for the reactor's
        ``after shutdown``, when no turn is left to flush them."""
        with self._lock:
            self._direct = True
        self.flush_now()

    def _take(self) -> list[Any]:
        buf, self._buf = self._buf, []
        return buf

    def _write_out(self, parts: list[Any]) -> None:
        if not parts:
            return
        joined = (b"" if isinstance(parts[0], bytes) else "").join(parts)
        self.target.write(joined)
        self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def _local_date(when: Optional[float]) -> tuple[int, int, int]:
    year, month, day = time.localtime(when)[:3]
    return year, month, day


class RotatingLogFile(LogFile):
    """twistd's ``--logfile``, rotated by size and/or at the first line of a new day, keeping
    ``keep`` old files (``name.1`` the newest, up to ``name.N``; older ones are deleted).

    twistd's own LogFile rotates at 1 MB and keeps every file: a busy server filled its
    disk with them. Rotated files are named by number either way, so ``keep`` bounds them
    whichever reason rotated them. ``mode`` is the mode of the file and of every new one
    (an existing file is set to it when opened). ``today`` gives the local date, for tests."""

    synchronized = ["write"]  # rotate is LogFile's, synchronized there

    def __init__(
        self,
        path: str,
        max_size: int,
        keep: int,
        daily: bool,
        mode: int,
        today: Callable[[Optional[float]], tuple[int, int, int]] | None = None,
    ) -> None:
        self._today = today or _local_date
        self.daily = daily
        path = os.path.abspath(path)
        super().__init__(  # type: ignore[no-untyped-call]
            os.path.basename(path),
            os.path.dirname(path),
            rotateLength=max_size,
            defaultMode=mode,
            maxRotatedFiles=keep,
        )

    def _openFile(self) -> None:
        super()._openFile()  # type: ignore[no-untyped-call]
        self.day = self._today(os.stat(self.path).st_mtime)

    def shouldRotate(self) -> bool:
        if self.daily and self._today(None) > self.day:
            return True
        return bool(self.rotateLength and self.size >= self.rotateLength)

    def write(self, data: Any) -> None:
        super().write(data)  # type: ignore[no-untyped-call]
        self.day = max(self.day, self._today(None))


threadable.synchronize(RotatingLogFile)  # type: ignore[no-untyped-call]
