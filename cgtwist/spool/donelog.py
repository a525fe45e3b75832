"""The spool's log of finished messages (``Queue/done``): which ids recovery must not deliver.

Owns one append-only file of ``<crc32 hex> <id>\\n`` lines. A message whose every recipient is
settled is named here, and the line fsynced, before its ``.msg`` is renamed into the pool or
deleted: a crash between the two (or a removal that never reached the disk) then finds the
message at start-up and removes it instead of delivering it a second time. The ids of one
thread job share one ``fdatasync`` (group commit). Lines are checked by their CRC, so a torn
or zero-filled tail after a power cut never names a message that is not finished (a torn id can
be another valid id). Blocking: every method runs in a worker thread (``Spool``'s jobs); no
locking, as the spool calls it from one job at a time.
"""

from __future__ import annotations

import os
import zlib
from typing import Iterable

from cgtwist.durable import fsync_dir
from cgtwist.spool import format as fmt

NAME = "done"


def line(msg_id: str) -> bytes:
    raw = msg_id.encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(raw), raw)


def parse(data: bytes) -> set[str]:
    """The ids of every complete line whose CRC matches (anything else is a torn tail)."""
    ids = set()
    for raw in data.split(b"\n")[:-1]:  # the last element: empty, or a line without its \n
        crc, _, rest = raw.partition(b" ")
        try:
            ok = int(crc, 16) == zlib.crc32(rest)
            msg_id = rest.decode("ascii")
        except ValueError:  # not hex, or not ASCII (UnicodeDecodeError is a ValueError)
            continue
        if ok and fmt.valid_id(msg_id):
            ids.add(msg_id)
    return ids


class DoneLog:
    """``DoneLog(directory)``: ``read()``, ``append(ids)``, ``clear()`` on ``<directory>/done``.

    ``lines`` counts the lines written since the last ``clear`` (the owner clears the log once
    the removals it names are durable, so it stays small)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, NAME)
        self.lines = 0
        self.syncs = 0  # fdatasyncs made (ids / syncs: what the group commit saved)

    def read(self) -> set[str]:
        """Thread: the finished ids the log names (an absent log names none)."""
        try:
            with open(self.path, "rb") as f:
                return parse(f.read())
        except FileNotFoundError:
            return set()

    def append(self, ids: Iterable[str]) -> None:
        """Thread: name ``ids`` durably, with one write and one fdatasync (raises OSError).
        Opened for each call (two system calls beside the fdatasync), so no descriptor
        outlives the job."""
        payload = b"".join(line(i) for i in ids)
        if not payload:
            return
        fd = self._open()
        try:
            n = os.write(fd, payload)
            if n != len(payload):  # a short write (a full disk): the rest, or its error
                view = memoryview(payload)[n:]
                while view:
                    view = view[os.write(fd, view) :]
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self.syncs += 1
        self.lines += payload.count(b"\n")

    def clear(self) -> None:
        """Thread: empty the log (creating it if need be); the caller has made every removal
        it names durable first. Not fsynced: if the old lines come back after a crash, they
        name messages that are gone."""
        os.close(self._open(truncate=True))
        self.lines = 0

    def _open(self, truncate: bool = False) -> int:
        """The log's descriptor (O_APPEND); a log created now has its name made durable before
        anything is written to it, or its lines could vanish with it."""
        flags = os.O_WRONLY | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        try:
            return os.open(self.path, flags)
        except FileNotFoundError:
            fd = os.open(self.path, flags | os.O_CREAT, 0o600)
            try:
                fsync_dir(self.directory)
            except BaseException:
                os.close(fd)
                raise
            return fd
