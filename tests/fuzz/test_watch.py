"""The fuzz suite's own checks catch what they are there for (a suite that cannot fail is no
guard): a CPU stall, a logged traceback, a missing or doubled reply."""

from __future__ import annotations

import time

from twisted.logger import Logger
from twisted.trial import unittest

from tests.fuzz import watch as watch_module
from tests.fuzz.drivers import SMTPDriver, imap_lines
from tests.fuzz.watch import Stall, Watch


class WatchTests(unittest.TestCase):
    def test_stall_is_cpu_time(self) -> None:
        """Busy CPU over the limit fails; the limit is CPU time, so waiting would not."""
        self.patch(watch_module, "STALL_LIMIT", 0.02)
        w = Watch()

        def spin() -> None:
            end = time.thread_time() + 0.05
            while time.thread_time() < end:
                pass

        self.assertRaises(Stall, w.timed, b"spin", spin)

    def test_traceback_is_reported(self) -> None:
        w = Watch()
        with w.active():
            try:
                raise ZeroDivisionError("boom")
            except ZeroDivisionError:
                Logger().failure("boom")
        self.assertRaises(AssertionError, w.assert_no_traceback, [])
        self.flushLoggedErrors(ZeroDivisionError)

    def test_smtp_reply_count_is_checked(self) -> None:
        """A command answered twice (two final lines) fails the driver."""
        w = Watch()
        d = SMTPDriver("fresh", w)
        self.addCleanup(d.close)
        d.h.proto.dataReceived = lambda data: d.h.transport.write(b"250 2.0.0 a\r\n250 2.0.0 b\r\n")  # type: ignore[method-assign]
        self.assertRaises(AssertionError, d.send, b"NOOP")

    def test_imap_literals_are_skipped(self) -> None:
        """Message text inside a FETCH literal is not mistaken for response lines."""
        data = b"* 1 FETCH (BODY[] {12}\r\nA1 OK fake\r\n)\r\nA2 OK done\r\n"
        self.assertEqual(imap_lines(data), [b"* 1 FETCH (BODY[] {12}<literal>)", b"A2 OK done"])
