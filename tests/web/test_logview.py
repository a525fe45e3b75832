"""The log viewer's bounded read from the end of the log file and its filters."""

from __future__ import annotations

import os

from twisted.trial import unittest

from cgtwist.web import logview
from cgtwist.web.logview import Filters

LINES = [
    "2026-12-07T12:00:00+0000 [cgtwist.queue#info] queue: AB12 <bob@example.test> LOCAL delivered",
    "2026-12-07T12:00:01+0000 [cgtwist.web#warn] web: POST by Bob@Example.test from 10.0.0.12",
    "2026-12-07T12:00:02+0000 [-] legacy line from 10.0.0.1",
    "2026-12-07T12:00:03+0000 [cgtwist#error] something failed for CD34",
    "\tTraceback (most recent call last):",
    "\t  File x",
    "2026-12-07T12:00:04+0000 [cgtwist#debug] detail of AB12",
]


class LogViewTests(unittest.TestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        with open(self.path, "w") as f:
            f.write("\n".join(LINES) + "\n")

    def texts(self, f: Filters, max_bytes: int = 1 << 20, max_lines: int = 100) -> list[str]:
        return [e.text for e in logview.tail(self.path, f, max_bytes, max_lines).entries]

    def test_levels_and_continuation_lines(self) -> None:
        """Newest first; a traceback's lines belong to their entry; a legacy ``[-]`` line is
        info; ``debug`` shows everything."""
        view = logview.tail(self.path, Filters(level="warn"), 1 << 20, 100)
        self.assertEqual([e.level for e in view.entries], ["error", "warn"])
        self.assertIn("\t  File x".lstrip("\t"), view.entries[0].text)
        self.assertEqual(len(self.texts(Filters(level="debug"))), 5)
        self.assertEqual(len(self.texts(Filters(level="info"))), 4)

    def test_filters(self) -> None:
        """Message id, address (any case) and IP (a whole address: 10.0.0.1 is not 10.0.0.12)
        all have to match."""
        self.assertEqual(len(self.texts(Filters(level="debug", msg_id="AB12"))), 2)
        self.assertEqual(len(self.texts(Filters(address="bob@example.TEST"))), 2)
        only = self.texts(Filters(ip="10.0.0.1"))
        self.assertEqual(only, ["legacy line from 10.0.0.1"])
        self.assertEqual(len(self.texts(Filters(ip="10.0.0.12", address="bob@example.test"))), 1)

    def test_bounded_read(self) -> None:
        """Only the last ``max_bytes`` octets are read (a cut first line is dropped), and at
        most ``max_lines`` entries kept, newest first, with ``more`` set."""
        size = os.path.getsize(self.path)
        tail = len(LINES[-1]) + 10  # the last entry and a piece of the one before
        view = logview.tail(self.path, Filters(level="debug"), tail, 100)
        self.assertEqual(view.size, size)
        self.assertEqual(view.read, tail)
        self.assertEqual([e.text for e in view.entries], ["detail of AB12"])
        view = logview.tail(self.path, Filters(level="debug"), 1 << 20, 2)
        self.assertTrue(view.more)
        self.assertEqual(len(view.entries), 2)
        self.assertEqual(view.entries[0].text, "detail of AB12")

    def test_missing_file(self) -> None:
        view = logview.tail(self.path + ".gone", Filters(), 4096, 10)
        self.assertIn("cannot read", view.error)
