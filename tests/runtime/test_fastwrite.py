"""cgtwist.runtime.fastwrite: a line to the server goes straight into the pipe when nothing
is queued before it, and never overtakes what is."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.process import ProcessWriter
from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from cgtwist.runtime.fastwrite import write_pipe_now


class _Proc:
    def childConnectionLost(self, name: Any) -> None:
        pass


class _Transport:
    """StandardIO's shape: ``_writer`` and ``write``."""

    def __init__(self, writer: ProcessWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.write(data)


class WritePipeNowTests(unittest.TestCase):
    def setUp(self) -> None:
        self.r, w = os.pipe()
        self.addCleanup(os.close, self.r)
        self.writer = ProcessWriter(MemoryReactor(), _Proc(), "write", w)
        self.writer.connected = 1
        self.addCleanup(os.close, w)
        os.set_blocking(self.r, False)

    def test_straight_into_the_pipe(self) -> None:
        """With nothing buffered the line is in the pipe at once (no reactor turn)."""
        write_pipe_now(_Transport(self.writer), b"Q 1\n")
        self.assertEqual(os.read(self.r, 100), b"Q 1\n")
        self.assertFalse(self.writer.dataBuffer or self.writer._tempDataBuffer)

    def test_never_overtakes_buffered_output(self) -> None:
        """Output already waiting in the writer keeps its place: the new line queues after it."""
        self.writer.write(b"R\n")  # buffered: MemoryReactor never makes it writable
        write_pipe_now(_Transport(self.writer), b"Q 2\n")
        with self.assertRaises(BlockingIOError):
            os.read(self.r, 100)
        self.writer.doWrite()
        self.assertEqual(os.read(self.r, 100), b"R\nQ 2\n")
