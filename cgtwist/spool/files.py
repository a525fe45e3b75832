"""File-system primitives of the spool: durable directories, the pool of spool files, reads.

Blocking helpers run in worker threads (``Recycler``, ``read_upto``, ``unlink_quiet``); the
durability primitives they build on (``fsync_dir``, ``DirSync``, ``make_dirs``) are
``cgtwist.durable``'s, shared with the mailstore. ``storage_error`` maps OS errors to the SMTP
replies the spool gives (RFC 5321 §4.2.5: 452 4.3.1 / 451 4.3.0).
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from typing import Callable, Optional

from cgtwist.durable import DirSync, fsync_dir, make_dirs
from cgtwist.errors import MailError
from cgtwist.spool import format as fmt

_NOSPACE = (errno.ENOSPC, errno.EDQUOT)


def storage_error(e: OSError, detail: str) -> MailError:
    """ENOSPC/EDQUOT -> 452 4.3.1; anything else (EIO, EROFS, EACCES) -> 451 4.3.0."""
    if e.errno in _NOSPACE:
        return MailError(452, "4.3.1", "Insufficient system storage", detail)
    return MailError(451, "4.3.0", "Temporary local problem, try again later", detail)


_reserve_counter = itertools.count()


def _reserve_id() -> str:
    """A reserve file's name without ``.rsv`` when its owner gives none (``<time>-<pid>-<n>``)."""
    return f"{time.time_ns() // 1000:016d}-{os.getpid()}-{next(_reserve_counter)}"


class Recycler:
    """Finished spool files kept in a pool directory and reused for new messages.

    Creating a file allocates an inode and deleting one frees it; at a few hundred messages a
    second that churn is the largest kernel cost of the spool. On ext4 without a journal every
    allocation also walks past each inode freed in the last seconds in its block group
    (``recently_deleted``), so it grows with the delivery rate. A message's file is therefore
    renamed into the pool when its message is done (``give``) and renamed back to a new
    ``.tmp`` name for the next message (``take``), overwritten in place and truncated: the
    same durability steps (write, fsync, rename, directory fsync) on an inode that exists, and
    one more before the rename to ``.msg``: the pool directory's fsync (``taken``, shared among
    the threads that wait for one), so that no power cut leaves the inode a pool name too.
    A file bigger than ``keep_bytes`` is emptied as it enters the pool, so the pool never
    holds more than ``limit`` x ``keep_bytes`` of disk (64 MiB by default).

    That pool fsync would sit between a message's data and its 250, so each process keeps a
    small *reserve* instead (``refill``, run after a store, off the reply's path): pool files
    moved into the writer's own directory as ``<id>.rsv`` (a message id, ``<time>-<pid>-<n>``)
    and, in one fsync of each directory, durably out of the pool and durably named there
    before any is handed out. A writer ``claim``s a reserved file first and writes it in place
    under its ``.rsv`` name. The server's own spool then renames it to a ``.msg`` (the
    ``.tmp``'s part), whose directory fsync (the commit's) makes the reserve name's removal
    durable with the ``.msg`` name; an SMTP worker commits the message under the reserve name
    itself, which is durable already, so one fsync of the file is its whole commit (``Spool``).
    No rename to a ``.tmp`` name before the write: on ext4 without a journal a file renamed
    into a new name has its directory written back by its next fsync as well (the inode's
    NEWENTRY state), a synchronous directory write between the message and its 250 that the
    commit's fsync of the directory does again (measured: 1.4 to 1.8 fewer disk writes per
    message). A power cut may orphan a reserve file (lost+found: a lost pool file, never a
    message) or leave one beside nothing: recovery deletes ``.rsv`` files, except a worker's
    that holds a whole message naming that very id (``format.holds_message``: committed).

    Safe between processes (an SMTP worker takes what the server gives): a file is claimed by
    the rename that moves it out of the pool, which only one caller wins. The pool keeps at
    most ``limit`` files; beyond that finished files are deleted as before. Pool files hold
    old message data under the spool's 0700 directory, like the files they were.
    """

    RESCAN = 1.0  # seconds between directory listings when the pool looked empty or full
    # Pool files a process keeps ready in its own directory, refilled when under half: one
    # refill (a thread job and an fsync of the pool directory) per RESERVE // 2 messages, the
    # same rate as the server's batches into the pool (moves.DONE_BATCH). At 16, a refill
    # every 8 messages was a sixteenth of an SMTP worker's flushes (bench/smtp-syscalls.sh).
    RESERVE = 64

    def __init__(
        self,
        path: str,
        limit: int = 1024,
        keep_bytes: int = 64 << 10,
        reserve_dir: Optional[str] = None,
        reserve_name: Optional[Callable[[], str]] = None,
        reserve_sync: Optional[Callable[[], None]] = None,
    ) -> None:
        self.path = path
        self.limit = limit
        self.keep_bytes = keep_bytes
        self.reserve_dir = reserve_dir
        # a new reserve file's name without ``.rsv`` (the spool's next message id)
        self._reserve_name = reserve_name or _reserve_id
        # makes the new reserve names durable in reserve_dir before any is offered
        self._reserve_sync = reserve_sync or (lambda: fsync_dir(reserve_dir or path))
        self._reserve: list[str] = []  # names in reserve_dir, durably moved there
        self._lock = threading.Lock()
        self._names: list[str] = []
        self._empty_until = 0.0
        self._size = 0
        self._size_at = float("-inf")
        make_dirs(path)
        self._taken = DirSync(path)

    def claim(self) -> Optional[str]:
        """Thread: the path of a reserved file, now the caller's alone (it writes the file
        in place and renames it into the reserve directory; its pool name is durably gone
        already), or None when the reserve is empty. The file may vanish meanwhile (a
        recovery or a sweep deletes ``.rsv`` files): the caller then takes another."""
        with self._lock:
            if self.reserve_dir is None or not self._reserve:
                return None
            name = self._reserve.pop(0)  # oldest first: ids in the order they were named
        return os.path.join(self.reserve_dir, name)

    def take(self, dest: str) -> bool:
        """Thread: move a pooled file to ``dest`` (which must not exist) and return True (the
        caller calls ``taken`` before the file becomes a ``.msg``), or False if the pool is
        empty, and the caller creates a new file."""
        return self._take_pooled(dest)

    def wants_refill(self) -> bool:
        """Whether ``refill`` has work: the reserve below half and the pool not known empty."""
        with self._lock:
            return (
                self.reserve_dir is not None
                and len(self._reserve) < self.RESERVE // 2
                and time.monotonic() >= self._empty_until
            )

    def refill(self) -> int:
        """Thread: move pool files into ``reserve_dir`` until the reserve is full, make their
        pool names durably gone (one fsync of the pool directory) and their reserve names
        durable (one fsync of ``reserve_dir``), then offer them to ``claim``; returns how many
        were added. A reserve name is a message id (``reserve_name``): a writer may commit a
        message in place under it, its name already durable (``Spool``)."""
        if self.reserve_dir is None:
            return 0
        with self._lock:
            want = self.RESERVE - len(self._reserve)
            # Listed afresh: other processes (the other SMTP workers) took files since the last
            # listing, and a rename of each of those finds nothing (half the renames when two
            # workers walk one listing in the same order).
            self._names = []
        moved = []
        for _ in range(max(0, want)):
            name = self._reserve_name() + ".rsv"
            if not self._take_pooled(os.path.join(self.reserve_dir, name)):
                break
            moved.append(name)
        if moved:
            # Either raises: the files stay unoffered; recovery or the sweep deletes them.
            self._taken.sync()
            self._reserve_sync()
            with self._lock:
                self._reserve.extend(moved)
        return len(moved)

    def _take_pooled(self, dest: str) -> bool:
        while True:
            with self._lock:
                if not self._names:
                    now = time.monotonic()
                    if now < self._empty_until:
                        return False
                    try:
                        self._names = os.listdir(self.path)
                    except FileNotFoundError:
                        self._names = []
                    if not self._names:
                        self._empty_until = now + self.RESCAN
                        return False
                name = self._names.pop()
            try:
                os.rename(os.path.join(self.path, name), dest)
                return True
            except FileNotFoundError:
                continue  # another thread or process took it

    def taken(self) -> None:
        """Thread: return once the pool names of the files taken so far are durably gone (a
        shared fsync of the pool directory, ``DirSync``). Called by a writer before a taken file
        becomes a ``.msg``: otherwise a power cut can keep both names of its inode, and the
        pool name would be handed out again and overwrite the message (raises OSError)."""
        self._taken.sync()

    def drop_shared(self) -> list[str]:
        """Thread, at start: delete the pool names whose inode has another name too (a power
        cut kept a taken file's pool name; e2fsck counts both links), so that no new message
        overwrites a spooled one; returns the names dropped."""
        dropped = []
        for name in listdir_quiet(self.path):
            full = os.path.join(self.path, name)
            try:
                if os.lstat(full).st_nlink > 1 and unlink_quiet(full):
                    dropped.append(name)
            except FileNotFoundError:
                continue
        if dropped:
            fsync_dir(self.path)
        with self._lock:
            self._names = []  # listed afresh at the next take
        return dropped

    def give(self, src: str, name: str) -> Optional[bool]:
        """Thread: move the finished file ``src`` into the pool as ``name`` (``Spool.remove``;
        a file over ``keep_bytes`` is emptied first, while nobody else can take it; the caller
        gives it from ``Queue/finished/``, whose names recovery deletes unread, so a crash that
        leaves it empty there is not quarantined): True; False if ``src`` does not exist; None if
        the pool is full (the caller deletes it)."""
        with self._lock:
            now = time.monotonic()
            if now - self._size_at > self.RESCAN:
                try:
                    self._size = len(os.listdir(self.path))
                except FileNotFoundError:
                    self._size = 0
                self._size_at = now
            if self._size >= self.limit:
                return None
            self._size += 1
        try:
            if os.stat(src).st_size > self.keep_bytes:
                os.truncate(src, 0)  # a big message's blocks are not kept for later
            os.rename(src, os.path.join(self.path, name))
        except FileNotFoundError:
            return False
        with self._lock:
            self._names.append(name)  # this process's next take needs no listing
            self._empty_until = 0.0
        return True


def read_whole(path: str) -> bytes:
    """The file's bytes (raises FileNotFoundError); see ``read_upto``."""
    data = read_upto(path, None)
    assert data is not None
    return data


def read_upto(path: str, limit: Optional[int]) -> Optional[bytes]:
    """The file's bytes with open, fstat, read, close (raises FileNotFoundError); None,
    unread, when it is bigger than ``limit`` octets. ``open(path, "rb").read()`` makes eight
    system calls (an isatty ioctl, two lseeks, two fstats, a second read to find the end);
    the server reads one spool file per message."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if limit is not None and size > limit:
            return None
        want = size + 1  # one more than its size: a short read is its end
        parts = []
        while True:
            chunk = os.read(fd, want)
            if not chunk:
                break
            parts.append(chunk)
            if len(chunk) < want:  # a regular file reads short only at its end
                break
            want = 1 << 16  # it grew since the fstat: read on to its end
        return b"".join(parts)
    finally:
        os.close(fd)


def committed_reserve(path: str) -> Optional[str]:
    """Thread: the message id of the reserve file ``path`` (``<id>.rsv``) if an SMTP worker
    committed a message into it (``format.holds_message``), else None (unused, or half
    written: the caller deletes it). Raises OSError but FileNotFoundError (None)."""
    name = os.path.basename(path)
    msg_id = name[:-4]
    if not (name.endswith(".rsv") and fmt.valid_id(msg_id)):
        return None
    try:
        raw = read_whole(path)
    except FileNotFoundError:
        return None
    return msg_id if fmt.holds_message(msg_id, raw) else None


def listdir_quiet(path: str) -> list[str]:
    """``os.listdir``; a missing directory has no names."""
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def unlink_quiet(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
