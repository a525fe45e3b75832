"""cgtwist.runtime.logobservers: twistd's observers get [log] level in both runtimes, the
cheap format and per-turn writes only with ``tuned``, and a Twisted whose observers cannot
be reached is left as it is."""

from __future__ import annotations

import io
import os
import time
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import FileLogObserver, LogLevel, LogPublisher, formatEventAsClassicLogText
from twisted.python.logfile import LogFile
from twisted.trial import unittest

from cgtwist.logs import TurnBufferedFile, fast_text_format, set_level
from cgtwist.runtime import logobservers


def event(level: LogLevel, text: str) -> dict[str, Any]:
    return {
        "log_level": level,
        "log_namespace": "cgtwist.test",
        "log_format": "{text}",
        "text": text,
        "log_time": time.time(),
    }


class ConfigureTests(unittest.TestCase):
    def setUp(self) -> None:
        self.out = io.StringIO()
        self.observer = FileLogObserver(self.out, formatEventAsClassicLogText)
        self.publisher = LogPublisher(self.observer)
        self.reactor = MemoryReactorClock()
        self.addCleanup(set_level, LogLevel.debug)  # the process-wide threshold, for others

    def test_tuned_formats_cheaply_and_writes_per_turn(self) -> None:
        """``tuned``: the line is formatted by fast_text_format and written when the turn
        ends; a debug line below [log] level is dropped."""
        self.assertIsNone(logobservers.configure(self.publisher, self.reactor, "info", True))
        self.assertIs(self.observer.formatEvent, fast_text_format)
        self.assertIsInstance(self.observer._outFile, TurnBufferedFile)
        self.publisher(event(LogLevel.debug, "hidden"))
        self.publisher(event(LogLevel.info, "shown"))
        self.assertEqual(self.out.getvalue(), "")  # gathered for the end of the turn
        self.reactor.advance(0)
        self.assertIn("[cgtwist.test#info] shown", self.out.getvalue())
        self.assertNotIn("hidden", self.out.getvalue())

    def test_plain_keeps_twisteds_path_and_still_filters(self) -> None:
        """``plain``: Twisted's own format and one write per line, and [log] level through
        Twisted's FilteringLogObserver."""
        self.assertIsNone(logobservers.configure(self.publisher, self.reactor, "info", False))
        self.assertIsNot(self.observer.formatEvent, fast_text_format)
        self.assertIs(self.observer._outFile, self.out)
        self.publisher(event(LogLevel.debug, "hidden"))
        self.publisher(event(LogLevel.info, "shown"))
        self.assertIn("[cgtwist.test#info] shown", self.out.getvalue())  # at once
        self.assertNotIn("hidden", self.out.getvalue())

    def test_unreachable_observers_are_left_alone(self) -> None:
        """A publisher without the private observer list (another Twisted): nothing is
        swapped, and configure says why."""

        class Publisher:
            def __init__(self, observer: Any) -> None:
                self.observer = observer

            def __call__(self, e: dict[str, Any]) -> None:
                self.observer(e)

        why = logobservers.configure(Publisher(self.observer), self.reactor, "info", True)
        self.assertIn("_observers", why or "")
        self.assertIs(self.observer._outFile, self.out)
        self.assertIsNot(self.observer.formatEvent, fast_text_format)

    def test_this_twisted_has_what_it_needs(self) -> None:
        self.assertIsNone(logobservers.missing(self.publisher))


class ReplaceLogFileTests(unittest.TestCase):
    def test_twistds_log_file_is_replaced(self) -> None:
        """The FileLogObserver writing to twistd's LogFile gets what ``replace`` made of it."""
        path = self.mktemp()
        os.makedirs(path)
        twistd_file = LogFile("cgtwist.log", path)
        self.addCleanup(twistd_file.close)
        observer = FileLogObserver(twistd_file, formatEventAsClassicLogText)
        publisher = LogPublisher(observer)
        mine = io.StringIO()
        self.assertIs(logobservers.replace_log_file(publisher, lambda old: mine), mine)
        self.assertIs(observer._outFile, mine)
        publisher(event(LogLevel.info, "into the new file"))
        self.assertIn("into the new file", mine.getvalue())

    def test_nothing_to_replace_without_a_log_file(self) -> None:
        """twistd -n logs to standard output: no LogFile, nothing replaced."""
        out = io.StringIO()
        publisher = LogPublisher(FileLogObserver(out, formatEventAsClassicLogText))
        self.assertIsNone(logobservers.replace_log_file(publisher, lambda old: io.StringIO()))
