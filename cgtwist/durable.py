"""Durability primitives shared by the spool and the mailstore: full writes, directory fsync,
and the group commit of directory fsyncs among threads.

Owns nothing on disk and knows no layout: the spool (``Queue/``) and the Maildir save path
both build on these, so that the rule "a name is durable once its directory was fsynced after
it was made" is written once. Blocking: every function runs in a worker thread, never on a
reactor. No Twisted, no state at module level.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable, Optional


def fsync_dir(path: str) -> None:
    """fsync the directory ``path``: the names made or removed in it reach the disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: str) -> None:
    """syncfs(2) of the file system holding ``path`` (``os.sync`` where there is none): every
    earlier change on it, each removal among them, is on the disk when this returns.

    Before a directory is created: its inode may be one an earlier unlink or rename freed in a
    directory nobody fsynced since (a replaced state file, a removed SQLite journal, a tmp/
    name). After a power cut that old entry can still lead to the inode, now a directory, and
    e2fsck, finding two entries for one directory, clears one of them: the new Maildir's, and
    the mail in it with it (tests/crash, the account scenario without a journal)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)


def make_dirs(path: str, mode: int = 0o700, *, synced: bool = False) -> bool:
    """``os.makedirs(path, mode, exist_ok=True)``, durably; True when it created anything.

    Each directory made is fsynced in its parent before the next step (the top one first): a
    directory whose entry is lost after a power cut takes every file renamed into it along.
    Unless the caller did (``synced``), the file system is synced before the first directory
    is made (``sync_filesystem``); nothing is synced when nothing is missing."""
    missing: list[str] = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    if missing and not synced:
        sync_filesystem(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            pass  # made meanwhile by someone else; fsync its parent all the same
        fsync_dir(os.path.dirname(d))
    return bool(missing)


def write_all(fd: int, chunks: list[bytes]) -> None:
    """Write every chunk: one writev in the usual case (each system call of a worker thread
    is a GIL hand-off with the reactor), the rest after a short write."""
    n = os.writev(fd, chunks)
    if n == sum(len(c) for c in chunks):
        return
    view = memoryview(b"".join(chunks))[n:]
    while view:
        view = view[os.write(fd, view) :]


class _Batch:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: Optional[BaseException] = None


class DirSync:
    """Group commit for worker threads: ``sync()`` returns once an fsync of the directory that
    started after the call has completed (or raises that fsync's error).

    Called by a writer right after its rename or link, in the same thread job: threads that
    arrive while one fsync runs wait and share the next one, so N concurrent messages cost
    about two directory fsyncs, and the reactor pays one thread hop per message instead of
    two. ``fsync`` replaces ``fsync_dir`` (tests inject failures through it).
    """

    def __init__(self, path: str, fsync: Optional[Callable[[str], None]] = None) -> None:
        self.path = path
        self._fsync = fsync
        self._cond = threading.Condition()
        self._batch = _Batch()  # the callers the next fsync to start will cover
        self._running = False
        self.syncs = 0  # fsyncs started
        self.waiting = 0  # callers waiting for someone else's fsync now

    def sync(self) -> None:
        with self._cond:
            batch = self._batch
            while not batch.done:
                if not self._running:
                    # Lead: every caller that joined ``batch`` renamed before this fsync starts.
                    self._running = True
                    self._batch = _Batch()
                    self.syncs += 1
                    break
                self.waiting += 1
                self._cond.wait()
                self.waiting -= 1
            else:
                if batch.error is not None:
                    raise batch.error
                return
        try:
            (self._fsync or fsync_dir)(self.path)
        except BaseException as e:  # whatever it was, the waiters must not think it durable
            batch.error = e
        finally:
            with self._cond:
                batch.done = True
                self._running = False
                self._cond.notify_all()
        if batch.error is not None:
            raise batch.error


class DirSyncs:
    """One ``DirSync`` per directory, made on first use: the group commit of many directories
    (each Maildir's ``new/`` or ``cur/``) for threads that write into any of them.

    At most ``limit`` are kept; beyond that the map starts afresh (a thread still holding an
    old one syncs correctly, only without company). Thread-safe."""

    def __init__(self, limit: int = 10000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._syncs: dict[str, DirSync] = {}

    def sync(self, path: str) -> None:
        """Return once an fsync of ``path`` that started after this call has completed."""
        with self._lock:
            ds = self._syncs.get(path)
            if ds is None:
                if len(self._syncs) >= self.limit:
                    self._syncs.clear()
                ds = self._syncs[path] = DirSync(path)
        ds.sync()
