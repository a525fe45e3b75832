"""cgtwist.logs: the log line format, the level filter and per-turn batched writes."""

from __future__ import annotations

import io
import os
import stat
import threading
import time
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEventAsClassicLogText
from twisted.python.failure import Failure
from twisted.trial import unittest

from cgtwist.logs import (
    LevelFilter,
    Logger,
    RotatingLogFile,
    TurnBufferedFile,
    cached_time,
    enabled,
    fast_text_format,
    plain_text,
    set_level,
)


def event(**kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = dict(
        log_time=time.time(), log_level=LogLevel.info, log_namespace="cgtwist.queue"
    )
    e.update(kw)
    return e


class FormatTests(unittest.TestCase):
    def same(self, e: dict[str, Any]) -> None:
        self.assertEqual(
            fast_text_format(e), formatEventAsClassicLogText(e, formatTime=cached_time)
        )

    def test_lines_are_those_twisted_would_write(self) -> None:
        """The fast path writes exactly the classic twistd line, for plain templates, format
        specs and conversions, a log_system, and multi-line text (continuations indented)."""
        self.same(
            event(
                log_format="queue: {msg_id} <{rcpt}> {n:03d} {r!r}",
                msg_id="1-2-3",
                rcpt="a@b.test",
                n=7,
                r=b"x",
            )
        )
        self.same(event(log_format="{text}", text="relayed", log_system="smtp-worker-1"))
        self.same(event(log_format="two\nlines {x}", x="here"))
        self.same(event(log_format="{x.real}", x=3))

    def test_anything_else_goes_twisteds_way(self) -> None:
        """Call syntax, failures and events without a template are formatted by Twisted."""
        self.same(event(log_format="{f()}", f=lambda: "called"))
        self.assertIn("called", fast_text_format(event(log_format="{f()}", f=lambda: "called")))
        f = Failure(ZeroDivisionError("division by zero"))
        line = fast_text_format(event(log_format="failed {x}", x=1, log_failure=f))
        self.assertIn("ZeroDivisionError", line)
        self.assertIsNone(fast_text_format(event()))

    def test_plain_text_is_twisteds_text_or_nothing(self) -> None:
        """What an SMTP worker relays as a log line's text: Twisted's own text for a plain
        template, "" (the caller then asks Twisted) where only Twisted can format it."""
        from twisted.logger import formatEvent

        e = event(
            log_format="accepted msg_id={msg_id} recipients={rcpt} size={n}",
            msg_id="1-2-3",
            rcpt=["a@b.test"],
            n=5280,
        )
        self.assertEqual(plain_text(e), formatEvent(e))
        self.assertEqual(plain_text(event(log_format="{f()}", f=lambda: "called")), "")
        self.assertEqual(plain_text(event(log_format="x", log_failure=Failure(ValueError()))), "")
        self.assertEqual(plain_text(event()), "")


class LevelFilterTests(unittest.TestCase):
    def test_only_events_at_or_above_the_level_pass(self) -> None:
        seen: list[Any] = []
        f = LevelFilter(seen.append, LogLevel.info)
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error):
            f(event(log_level=level, log_format=level.name))
        self.assertEqual([e["log_format"] for e in seen], ["info", "warn", "error"])


class TurnBufferTests(unittest.TestCase):
    def test_lines_of_one_turn_are_one_write(self) -> None:
        """Lines logged during one turn reach the file together when the turn ends, in order,
        with one write; nothing is lost and the next turn starts a new batch."""
        clock = Clock()
        target = _CountingFile()
        out = TurnBufferedFile(target, clock)
        out.write(b"one\n")
        out.flush()  # what FileLogObserver does after each line: no write yet
        out.write(b"two\n")
        self.assertEqual(target.getvalue(), b"")
        clock.advance(0)
        self.assertEqual((target.getvalue(), target.writes), (b"one\ntwo\n", 1))
        out.write(b"three\n")
        clock.advance(0)
        self.assertEqual((target.getvalue(), target.writes), (b"one\ntwo\nthree\n", 2))

    def test_other_threads_write_at_once_after_the_gathered_lines(self) -> None:
        clock = Clock()
        target = _CountingFile()
        out = TurnBufferedFile(target, clock)
        out.write(b"reactor\n")
        t = threading.Thread(target=out.write, args=(b"thread\n",))
        t.start()
        t.join()
        self.assertEqual(target.getvalue(), b"reactor\nthread\n")

    def test_flush_now_at_stop(self) -> None:
        target = _CountingFile()
        out = TurnBufferedFile(target, Clock())
        out.write(b"last words\n")
        out.flush_now()
        self.assertEqual(target.getvalue(), b"last words\n")

    def test_a_signal_handler_logging_during_a_write_does_not_deadlock(self) -> None:
        """Twisted's SIGTERM handler logs ("Received SIGTERM") on the reactor thread at any
        point, also while that thread is inside this file's write: the line is kept for the
        next turn instead of waiting for ever on the lock the interrupted write holds (a
        server that stopped nothing after SIGTERM under load, its workers left unreaped)."""
        finished = threading.Event()
        result: dict[str, Any] = {}

        def reactor_thread() -> None:  # the file belongs to the thread that built it
            clock = Clock()
            target = _InterruptedFile()
            out = TurnBufferedFile(target, clock)
            target.handler = lambda: out.write(b"Received SIGTERM\n")
            out.write(b"one\n")
            out.flush_now()  # its write to the file is "interrupted" by the handler
            clock.advance(0)
            result["text"] = target.getvalue()
            finished.set()

        t = threading.Thread(target=reactor_thread, daemon=True)
        t.start()
        self.assertTrue(finished.wait(30), "the handler's write waited for ever on the lock")
        self.assertEqual(result["text"], b"one\nReceived SIGTERM\n")


class _InterruptedFile(io.BytesIO):
    """A file whose first write is interrupted by a signal handler that logs."""

    handler: Any = None

    def write(self, data: Any) -> int:
        handler, self.handler = self.handler, None
        if handler is not None:
            handler()
        return super().write(data)


class _CountingFile(io.BytesIO):
    writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


class LoggerTests(unittest.TestCase):
    """cgtwist.logs.Logger: the events of twisted.logger.Logger, minus those below the level."""

    def setUp(self) -> None:
        self.addCleanup(set_level, LogLevel.debug)
        self.seen: list[dict[str, Any]] = []
        self.log = Logger(namespace="cgtwist.test", observer=self.seen.append)

    def test_same_event_as_twisted(self) -> None:
        """An admitted event carries the keys Twisted's Logger gives it, so every observer
        and formatter reads it the same way."""
        from twisted.logger import Logger as TwistedLogger

        theirs: list[dict[str, Any]] = []
        TwistedLogger(namespace="cgtwist.test", observer=theirs.append).info("hello {who}", who="x")
        self.log.info("hello {who}", who="x")
        self.assertEqual(set(self.seen[0]), set(theirs[0]))
        self.assertEqual(self.seen[0]["log_level"], LogLevel.info)
        self.assertEqual(self.seen[0]["log_format"], "hello {who}")

    def test_every_level_method_gives_twisteds_event(self) -> None:
        """debug, info, warn, error and critical publish the event Twisted's would (keys,
        level, format, fields), each with a dict of its own."""
        from twisted.logger import Logger as TwistedLogger

        theirs: list[dict[str, Any]] = []
        twisted_log = TwistedLogger(namespace="cgtwist.test", observer=theirs.append)
        for name in ("debug", "info", "warn", "error", "critical"):
            getattr(twisted_log, name)("{name} {n}", name=name, n=1)
            getattr(self.log, name)("{name} {n}", name=name, n=1)
        self.assertEqual(len(self.seen), 5)
        for mine, twisted in zip(self.seen, theirs, strict=True):
            self.assertEqual(set(mine), set(twisted))
            for key in ("log_level", "log_format", "log_namespace", "name", "n"):
                self.assertEqual(mine[key], twisted[key])
        self.assertEqual(len({id(e) for e in self.seen}), 5)

    def test_events_below_the_level_are_dropped(self) -> None:
        set_level(LogLevel.info)
        self.log.debug("not wanted")
        self.log.info("wanted")
        self.log.error("also wanted")
        self.assertEqual([e["log_format"] for e in self.seen], ["wanted", "also wanted"])
        set_level(LogLevel.error)
        self.log.info("not wanted")
        self.log.warn("not wanted")
        self.log.emit(LogLevel.warn, "not wanted")
        self.log.critical("critical")
        self.assertEqual(self.seen[-1]["log_format"], "critical")
        self.assertEqual(len(self.seen), 3)
        set_level(LogLevel.debug)
        self.log.debug("wanted now")
        self.assertEqual(self.seen[-1]["log_format"], "wanted now")

    def test_enabled_says_whether_a_level_is_logged(self) -> None:
        """What a caller asks before building a dear debug line (the verdict of every Client
        IP message): false below the process's level, true at or above it."""
        set_level(LogLevel.info)
        self.assertFalse(enabled(LogLevel.debug))
        self.assertTrue(enabled(LogLevel.info))
        self.assertTrue(enabled(LogLevel.critical))
        set_level(LogLevel.debug)
        self.assertTrue(enabled(LogLevel.debug))

    def test_invalid_level_is_reported(self) -> None:
        self.log.emit("loud", "x")  # type: ignore[arg-type]
        self.assertEqual(len(self.seen), 1)
        self.assertIn("invalid log level", self.seen[0]["log_format"])


class _Owner:
    log = Logger()


class _Child(_Owner):
    pass


class LoggerDescriptorTests(unittest.TestCase):
    def test_one_logger_per_class_named_after_it(self) -> None:
        """``self.log`` is made once per class (Twisted makes one per access), with the
        namespace Twisted would give it, and a subclass gets its own."""
        a, b = _Owner(), _Owner()
        self.assertIs(a.log, b.log)
        self.assertEqual(a.log.namespace, f"{__name__}._Owner")
        self.assertEqual(_Child().log.namespace, f"{__name__}._Child")
        self.assertIsNot(_Child().log, a.log)


class RotatingLogFileTests(unittest.TestCase):
    """twistd's --logfile kept every rotated file (17 after a 4-minute soak); ours keeps N."""

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "cgtwist.log")

    def rotated(self) -> list[str]:
        return sorted(n for n in os.listdir(self.dir) if n != "cgtwist.log")

    def test_size_rotation_keeps_only_the_newest_files(self) -> None:
        """Past max_size the file rotates; only ``keep`` old files remain, the newest .1."""
        f = RotatingLogFile(self.path, 1000, 3, False, 0o600)
        for i in range(40):
            f.write(f"line {i:03d} ".ljust(99) + "\n")
        f.close()
        self.assertEqual(self.rotated(), ["cgtwist.log.1", "cgtwist.log.2", "cgtwist.log.3"])
        with open(self.path + ".1") as old:
            self.assertTrue(old.read().startswith("line 020"))
        with open(self.path) as new:
            self.assertEqual(new.read().splitlines()[-1].split()[1], "039")

    def test_old_files_beyond_keep_are_deleted_at_the_next_rotation(self) -> None:
        """Files left by twistd's unbounded rotation are removed when ours first rotates."""
        for i in range(1, 18):
            with open(f"{self.path}.{i}", "w") as old:
                old.write("old\n")
        f = RotatingLogFile(self.path, 0, 2, False, 0o600)
        f.write("a\n")
        f.rotate()
        f.close()
        self.assertEqual(self.rotated(), ["cgtwist.log.1", "cgtwist.log.2"])

    def test_daily_rotation_at_the_first_line_of_a_new_day(self) -> None:
        """With daily on, the first line written on a new day starts a new file."""
        day = [(2026, 12, 7)]
        f = RotatingLogFile(self.path, 0, 5, True, 0o600, today=lambda when: day[0])
        f.write("monday\n")
        f.write("still monday\n")
        self.assertEqual(self.rotated(), [])
        day[0] = (2026, 12, 8)
        f.write("tuesday\n")
        f.close()
        self.assertEqual(self.rotated(), ["cgtwist.log.1"])
        with open(self.path + ".1") as old:
            self.assertEqual(old.read(), "monday\nstill monday\n")
        with open(self.path) as new:
            self.assertEqual(new.read(), "tuesday\n")

    def test_existing_and_new_files_get_the_given_mode(self) -> None:
        """A log file another version left world-readable is set to the mode given, and so
        is each new file after a rotation."""
        with open(self.path, "w") as old:
            old.write("x\n")
        os.chmod(self.path, 0o644)
        f = RotatingLogFile(self.path, 0, 2, False, 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        f.rotate()
        f.write("y\n")
        f.close()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
