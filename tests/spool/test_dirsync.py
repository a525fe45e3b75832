"""Tests for the group commit of directory fsyncs among worker threads (cgtwist.durable.DirSync)."""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Any, Callable

from twisted.trial import unittest

from cgtwist.durable import DirSync


def wait_until(cond: Callable[[], bool]) -> None:
    """Wait for another thread to reach a state (bounded; not a timing assertion)."""
    deadline = time.monotonic() + 10
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("other thread never got there")
        time.sleep(0.001)


class Gate:
    """An fsync stand-in: records calls; the first one blocks until released."""

    def __init__(self, fail_second: bool = False) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.fail_second = fail_second

    def __call__(self, path: str) -> None:
        self.calls.append(path)
        if len(self.calls) == 1:
            self.release.wait(10)
        elif self.fail_second:
            raise OSError(errno.EIO, "I/O error")


class DirSyncTests(unittest.TestCase):
    def run_three(self, gate: Gate) -> tuple[DirSync, dict[str, object]]:
        ds = DirSync("/q", fsync=gate)
        results: dict[str, object] = {}

        def call(name: str) -> None:
            try:
                ds.sync()
                results[name] = "ok"
            except OSError as e:
                results[name] = e

        a = threading.Thread(target=call, args=("a",))
        a.start()
        wait_until(lambda: len(gate.calls) == 1)  # a's fsync is running
        others = [threading.Thread(target=call, args=(n,)) for n in ("b", "c")]
        for t in others:
            t.start()
        wait_until(lambda: ds.waiting == 2)
        self.assertEqual(results, {})  # nobody answered before a durable fsync covered them
        gate.release.set()
        for t in [a, *others]:
            t.join(10)
        return ds, results

    def test_late_callers_share_the_next_fsync(self) -> None:
        """Messages committed while a directory fsync runs are not reported durable by it
        (their rename came after it started) and share one more fsync: three messages, two
        fsyncs, every client told only after its own entry is on disk."""
        gate = Gate()
        ds, results = self.run_three(gate)
        self.assertEqual(results, {"a": "ok", "b": "ok", "c": "ok"})
        self.assertEqual(gate.calls, ["/q", "/q"])
        self.assertEqual(ds.syncs, 2)

    def test_failure_reaches_every_caller_it_covered(self) -> None:
        """When the shared fsync fails, every message that waited for it sees the error (its
        client gets a 4xx), and the message whose own fsync succeeded does not."""
        gate = Gate(fail_second=True)
        _ds, results = self.run_three(gate)
        self.assertEqual(results["a"], "ok")
        for name in ("b", "c"):
            self.assertIsInstance(results[name], OSError)

    def test_alone_syncs_at_once(self) -> None:
        """A single caller fsyncs immediately and returns."""
        calls: list[str] = []
        ds = DirSync("/q", fsync=calls.append)
        ds.sync()
        ds.sync()
        self.assertEqual(calls, ["/q", "/q"])


class ReadWholeTests(unittest.TestCase):
    """cgtwist.spool.files.read_whole: exactly the file's bytes, for every size around the
    read-ahead boundary, and a missing file is FileNotFoundError (the spool's KeyError)."""

    def test_sizes(self) -> None:
        from cgtwist.spool.files import read_whole

        d = self.mktemp()
        os.makedirs(d)
        for size in (0, 1, 4095, 4096, 65535, 65536, 65537, 300000):
            p = os.path.join(d, f"f{size}")
            data = os.urandom(size)
            with open(p, "wb") as f:
                f.write(data)
            self.assertEqual(read_whole(p), data, size)

    def test_missing(self) -> None:
        from cgtwist.spool.files import read_whole

        with self.assertRaises(FileNotFoundError):
            read_whole(os.path.join(self.mktemp(), "none"))


class MakeDirsTests(unittest.TestCase):
    def test_the_file_system_is_synced_before_a_new_spool_directory(self) -> None:
        """durable.make_dirs (the spool's and the Maildirs') syncs the file system once before
        it makes the first missing directory (a stale entry of an inode freed without a
        directory fsync must not claim the new directory after a power cut), and not at all
        when nothing is missing."""
        from cgtwist import durable

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        calls: list[str] = []
        real_mkdir = os.mkdir
        self.patch(durable, "sync_filesystem", lambda p: calls.append(f"sync {p}"))

        def mkdir(p: str, *a: Any, **kw: Any) -> None:
            calls.append(f"mkdir {os.path.relpath(p, base)}")
            real_mkdir(p, *a, **kw)

        self.patch(os, "mkdir", mkdir)
        durable.make_dirs(os.path.join(base, "Queue", "finished"))
        self.assertEqual(calls, [f"sync {base}", "mkdir Queue", "mkdir Queue/finished"])
        del calls[:]
        durable.make_dirs(os.path.join(base, "Queue", "finished"))
        self.assertEqual(calls, [])
