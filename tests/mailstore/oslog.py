"""A recording fake of the os calls that make names durable, for ordering tests.

``OsLog(testcase)`` patches ``os.mkdir``, ``link``, ``rename``, ``replace``, ``unlink`` and
``fsync`` for the rest of the test; the real calls still run, and each one is logged with the
inodes involved (a directory is known by its inode, so the same directory reached by two paths
is one). ``mark(label)`` logs a point, e.g. where a command was acknowledged. The checks ask
what a power cut at that point would keep: a name is durable once its directory was fsynced
after the name was made, and an inode's link count once the inode was fsynced after a link.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Optional

from twisted.trial import unittest

Event = tuple[Any, ...]


class OsLog:
    def __init__(self, testcase: unittest.TestCase) -> None:
        self.events: list[Event] = []
        real = {
            n: getattr(os, n) for n in ("mkdir", "link", "rename", "replace", "unlink", "fsync")
        }

        def dir_ino(path: str, dir_fd: Optional[int] = None) -> int:
            parent = os.path.dirname(path) or "."
            return os.stat(parent, dir_fd=dir_fd).st_ino

        def mkdir(path: str, mode: int = 0o777, *, dir_fd: Optional[int] = None) -> None:
            real["mkdir"](path, mode, dir_fd=dir_fd)
            self.events.append(
                (
                    "name",
                    "mkdir",
                    dir_ino(path, dir_fd),
                    os.path.basename(path),
                    os.stat(path, dir_fd=dir_fd).st_ino,
                )
            )

        def link(src: Any, dst: str, **kw: Any) -> None:
            real["link"](src, dst, **kw)
            self.events.append(
                (
                    "name",
                    "link",
                    dir_ino(dst, kw.get("dst_dir_fd")),
                    os.path.basename(dst),
                    os.stat(dst).st_ino,
                )
            )

        def renamer(op: str) -> Any:
            def rename(src: str, dst: str, **kw: Any) -> None:
                ino = os.lstat(src).st_ino
                src_dir = dir_ino(src)
                real[op](src, dst, **kw)
                self.events.append(("unname", op, src_dir, os.path.basename(src), ino))
                self.events.append(("name", op, dir_ino(dst), os.path.basename(dst), ino))

            return rename

        def unlink(path: str, *, dir_fd: Optional[int] = None) -> None:
            try:
                ino = os.lstat(path, dir_fd=dir_fd).st_ino
            except OSError:
                ino = -1
            parent = dir_ino(path, dir_fd)
            real["unlink"](path, dir_fd=dir_fd)
            self.events.append(("unname", "unlink", parent, os.path.basename(path), ino))

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            real["fsync"](fd)
            self.events.append(("fsync", "dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))

        testcase.patch(os, "mkdir", mkdir)
        testcase.patch(os, "link", link)
        testcase.patch(os, "rename", renamer("rename"))
        testcase.patch(os, "replace", renamer("replace"))
        testcase.patch(os, "unlink", unlink)
        testcase.patch(os, "fsync", fsync)

    def mark(self, label: str) -> None:
        self.events.append(("mark", label))

    def at(self, label: str) -> int:
        """Index of the mark ``label``."""
        return self.events.index(("mark", label))

    def _synced(self, ino: int, start: int, end: int) -> bool:
        return any(e[0] == "fsync" and e[2] == ino for e in self.events[start + 1 : end])

    def last_name(self, path: str, end: Optional[int] = None) -> int:
        """Index of the event that last made the name ``path`` before ``end``."""
        d = os.stat(os.path.dirname(path)).st_ino
        base = os.path.basename(path)
        end = len(self.events) if end is None else end
        for i in range(end - 1, -1, -1):
            e = self.events[i]
            if e[0] == "name" and e[2] == d and e[3] == base:
                return i
        raise AssertionError(f"{path} was never made")

    def durable_by(self, path: str, end: int, count: bool = True) -> bool:
        """Whether the name ``path`` (and, if a link made it and ``count``, its inode's link
        count) was durable at event ``end``."""
        i = self.last_name(path, end)
        _, op, d, _, ino = self.events[i]
        if not self._synced(d, i, end):
            return False
        return not count or op != "link" or self._synced(ino, i, end)

    def links_counted(self, end: int) -> bool:
        """Whether every inode a link gave another name was fsynced after it, before ``end``."""
        return all(self._synced(e[4], i, end) for i, e in self.names_made(end) if e[1] == "link")

    def dir_syncs(self, path: str, end: int) -> int:
        """How many fsyncs of the directory ``path`` happened before ``end``."""
        ino = os.stat(path).st_ino
        return sum(1 for e in self.events[:end] if e[0] == "fsync" and e[2] == ino)

    def names_made(self, end: Optional[int] = None) -> list[tuple[int, Event]]:
        """(index, event) of every name made before ``end``."""
        end = len(self.events) if end is None else end
        return [(i, e) for i, e in enumerate(self.events[:end]) if e[0] == "name"]

    def name_durable_at(self, index: int, end: int) -> bool:
        """Whether the name made by event ``index`` was durable at event ``end``."""
        _, op, d, _, ino = self.events[index]
        return self._synced(d, index, end) and (op != "link" or self._synced(ino, index, end))
