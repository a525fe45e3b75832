"""The done log of earlier versions (``Queue/done``): which ids recovery must not deliver.

Earlier versions named each finished message in this append-only file of
``<crc32 hex> <id>\\n`` lines, fdatasynced, before its ``.msg`` left ``Queue/``. The spool now
renames a finished message ``<id>.done`` instead (made durable by the ``Queue/`` fsync that the
adoptions of the same job need anyway); a log left by an earlier version is still read by
recovery once, so an upgrade after a power cut does not deliver its messages again, and then
removed. Lines are checked by their CRC, so a torn or zero-filled tail never names a message
that is not finished (a torn id can be another valid id). Blocking: runs in a worker thread.
"""

from __future__ import annotations

import os
import zlib

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
    """``DoneLog(directory)``: ``read()`` and ``remove()`` of ``<directory>/done``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, NAME)

    def read(self) -> set[str]:
        """Thread: the finished ids the log names (an absent log names none)."""
        try:
            with open(self.path, "rb") as f:
                return parse(f.read())
        except FileNotFoundError:
            return set()

    def remove(self) -> None:
        """Thread: delete the log; the caller made every removal it names durable first."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
