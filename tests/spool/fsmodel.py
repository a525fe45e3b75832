"""A recording fake of the spool's file-system calls and the crash states they allow.

``FsRecorder`` wraps ``os.open/close/link/rename/unlink/mkdir/truncate/ftruncate/fsync/
fdatasync`` (the calls still happen, on a real temporary directory) and keeps their order, as
``strace`` would. ``crash_states`` replays that order on a model of directory entries: a
directory's entries reach the disk only when it is fsynced, but the kernel may also write any
later state of it back at any moment (a file system without a journal: each directory block is
written on its own), so after a power cut each directory may hold any of its states since its
last fsync, independently of the others. Tests assert what must hold in every such state (a
message answered 250 is named somewhere; no inode has a pool name and a ``.msg`` name).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterator

from twisted.trial import unittest

Entries = dict[str, int]  # name -> inode token, one directory


class FsRecorder:
    """``FsRecorder(test, dirs)``: record the calls under way from now until the test ends.

    ``dirs`` are the directories modelled (their entries now count as durable)."""

    def __init__(self, test: unittest.TestCase, dirs: list[str]) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.ops: list[tuple[str, ...]] = []
        self._fds: dict[int, str] = {}
        self._real = {
            n: getattr(os, n)
            for n in (
                "open",
                "close",
                "link",
                "rename",
                "unlink",
                "mkdir",
                "truncate",
                "ftruncate",
                "fsync",
                "fdatasync",
            )
        }
        self._tokens = itertools.count(1)
        self.start: dict[str, Entries] = {}
        self._live: dict[str, Entries] = {}
        for d in self.dirs:
            entries = {n: self._real_ino(os.path.join(d, n)) for n in os.listdir(d)}
            self.start[d] = dict(entries)
            self._live[d] = entries
        # states[i][d]: directory d's entries after op i (i = -1: the start)
        self.states: list[dict[str, Entries]] = []
        for name in self._real:
            test.patch(os, name, getattr(self, "_" + name))

    # -- the model ---------------------------------------------------------------------
    @staticmethod
    def _real_ino(path: str) -> int:
        return -os.lstat(path).st_ino  # negative: never equal to a token made here

    def _split(self, path: str) -> tuple[str, str]:
        full = os.path.abspath(path)
        return os.path.dirname(full), os.path.basename(full)

    def _get(self, path: str) -> int:
        d, n = self._split(path)
        if d in self._live and n in self._live[d]:
            return self._live[d][n]
        return self._real_ino(path)

    def _set(self, path: str, token: int) -> None:
        d, n = self._split(path)
        if d in self._live:
            self._live[d][n] = token

    def _drop(self, path: str) -> None:
        d, n = self._split(path)
        if d in self._live:
            self._live[d].pop(n, None)

    def _record(self, *op: str) -> None:
        self.ops.append(op)
        self.states.append({d: dict(e) for d, e in self._live.items()})

    # -- the wrapped calls -------------------------------------------------------------------
    def _open(self, path: Any, flags: int, *a: Any, **kw: Any) -> int:
        full = os.path.abspath(path)
        existed = os.path.lexists(full)
        fd: int = self._real["open"](path, flags, *a, **kw)
        self._fds[fd] = full
        if not existed and flags & os.O_CREAT:
            self._set(full, next(self._tokens))
            self._record("create", full)
        return fd

    def _close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        self._real["close"](fd)

    def _link(self, src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        self._real["link"](src, dst, *a, **kw)
        self._set(dst, self._get(src))
        self._record("link", os.path.abspath(src), os.path.abspath(dst))

    def _rename(self, src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        token = self._get(src)
        self._real["rename"](src, dst, *a, **kw)
        self._drop(src)
        self._set(dst, token)
        self._record("rename", os.path.abspath(src), os.path.abspath(dst))

    def _unlink(self, path: Any, *a: Any, **kw: Any) -> None:
        self._real["unlink"](path, *a, **kw)
        self._drop(path)
        self._record("unlink", os.path.abspath(path))

    def _mkdir(self, path: Any, *a: Any, **kw: Any) -> None:
        self._real["mkdir"](path, *a, **kw)
        self._record("mkdir", os.path.abspath(path))

    def _truncate(self, path: Any, length: int) -> None:
        self._real["truncate"](path, length)
        self._record("truncate", os.path.abspath(path))

    def _ftruncate(self, fd: int, length: int) -> None:
        self._real["ftruncate"](fd, length)
        self._record("truncate", self._fds.get(fd, "?"))

    def _fsync(self, fd: int) -> None:
        self._real["fsync"](fd)
        self._record("fsync", self._fds.get(fd, "?"))

    def _fdatasync(self, fd: int) -> None:
        self._real["fdatasync"](fd)
        self._record("fsync", self._fds.get(fd, "?"))

    # -- questions ---------------------------------------------------------------------------
    def token(self, path: str) -> int:
        """The model's identity of the file now named ``path`` (follows links and renames)."""
        return self._get(path)

    def index(self, kind: str, path: str, start: int = 0) -> int:
        """The first op of ``kind`` whose first path is ``path`` at or after ``start``."""
        full = os.path.abspath(path)
        for i in range(start, len(self.ops)):
            if self.ops[i][0] == kind and self.ops[i][1] == full:
                return i
        raise AssertionError(f"no {kind} of {path} in {self.ops[start:]}")

    def crash_states(self, after: int) -> Iterator[dict[str, Entries]]:
        """Every combination of directory states a power cut right after op ``after`` may
        leave (``after`` = -1: before the first op)."""
        choices = []
        for d in self.dirs:
            synced = -1
            for i in range(after + 1):
                if self.ops[i][0] == "fsync" and self.ops[i][1] == d:
                    synced = i
            seen: list[Entries] = []
            for i in range(synced, after + 1):
                e = self.start[d] if i < 0 else self.states[i][d]
                if e not in seen:
                    seen.append(e)
            choices.append(seen)
        for combo in itertools.product(*choices):
            yield dict(zip(self.dirs, combo, strict=True))
