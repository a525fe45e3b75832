"""File-system primitives of the spool: durable writes, directory fsync, group commit, errors.

Blocking helpers run in worker threads (``write_all``, ``fsync_dir``, ``unlink_quiet``);
``GroupSync`` lives on the reactor and batches directory fsyncs. ``storage_error`` maps OS
errors to the SMTP replies the spool gives (RFC 5321 §4.2.5: 452 4.3.1 / 451 4.3.0).
"""

from __future__ import annotations

import errno
import os
from typing import Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.errors import MailError

_NOSPACE = (errno.ENOSPC, errno.EDQUOT)


def storage_error(e: OSError, detail: str) -> MailError:
    """ENOSPC/EDQUOT -> 452 4.3.1; anything else (EIO, EROFS, EACCES) -> 451 4.3.0."""
    if e.errno in _NOSPACE:
        return MailError(452, "4.3.1", "Insufficient system storage", detail)
    return MailError(451, "4.3.0", "Temporary local problem, try again later", detail)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view = view[n:]


class GroupSync:
    """Fsyncs one directory for every caller waiting when the fsync starts (group commit).

    A caller asks after its rename completed; all callers queued while one fsync runs share the
    next one, so N concurrent messages cost about two directory fsyncs, not N.
    """

    def __init__(self, run: Callable[..., defer.Deferred[Any]], path: str) -> None:
        self._run = run
        self._path = path
        self._waiting: list[defer.Deferred[None]] = []
        self._busy = False
        self.syncs = 0

    @property
    def idle(self) -> bool:
        """No fsync running and nobody waiting: the object may be forgotten."""
        return not self._busy and not self._waiting

    def sync(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        if not self._busy:
            self._start()
        return d

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        self._busy = True
        self.syncs += 1

        def done(result: Any) -> None:
            self._busy = False
            for d in batch:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(None)
            if self._waiting:
                self._start()

        self._run(fsync_dir, self._path).addBoth(done)


def unlink_quiet(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
