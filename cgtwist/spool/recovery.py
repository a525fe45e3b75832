"""Recovery of the spool at start: what a crash or a stop left under ``Queue/`` put right.

Owns the one scan a Spool makes before delivery starts (``Spool.recover`` runs it in a worker
thread and logs its result on the reactor): pool names that share an inode dropped, messages
SMTP workers stored but the server had not adopted linked in from ``incoming/`` (``<id>.msg``,
or a reserve file ``<id>.rsv`` a worker committed a message into in place), finished
messages (``finished/``, or named by an earlier version's done log) removed, stale ``.tmp``,
``.rsv`` and orphan ``.jrn`` files removed, corrupt ``.msg`` files quarantined. Blocking, no
Twisted; it knows the layout only through the directories and helpers the Spool gives it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from cgtwist.durable import DirSync, fsync_dir
from cgtwist.spool import format as fmt
from cgtwist.spool.donelog import DoneLog
from cgtwist.spool.files import Recycler, committed_reserve, listdir_quiet, unlink_quiet
from cgtwist.spool.format import SpoolCorrupt, writer_pid


@dataclass
class Recovered:
    """What ``scan`` found: the valid ids in time order, the quarantined (name, reason), the
    stale names it removed, how many finished messages it removed, and which of the valid
    ids have a journal (``<id>.jrn``): the others' loads and removals need not look for one."""

    ids: list[str]
    bad: list[tuple[str, str]]
    removed: list[str]
    finished: int
    journaled: frozenset[str] = frozenset()


def scan(
    *,
    spool_dir: str,
    queue_dir: str,
    incoming_dir: str,
    finished_dir: str,
    recycler: Recycler,
    legacy_done: DoneLog,
    dirsync: DirSync,
    created: float,
    move_corrupt: Callable[[str], bool],
    deep: bool,
) -> Recovered:
    """(blocking) Put ``spool_dir`` right after a restart (see the module doc); ``deep``
    verifies each checksum (else only the structure; load still verifies before delivery).
    ``created``: when the Spool was made (a newer .tmp of this process is being written);
    ``move_corrupt(name)`` quarantines a file of ``spool_dir``."""
    ids: list[str] = []
    bad: list[tuple[str, str]] = []
    removed = [os.path.join("free", n) for n in recycler.drop_shared()]
    done = legacy_done.read()
    legacy = bool(done)
    marked = set(listdir_quiet(finished_dir))
    finished = len(marked)
    for name in marked:
        # finished before the restart (maybe emptied on its way into the pool, or its
        # inode reused since: never read)
        unlink_quiet(os.path.join(finished_dir, name))
        done.add(name)
    _take_incoming(spool_dir, incoming_dir, dirsync, removed, done)
    names = os.listdir(spool_dir)
    msgs = {n[:-4] for n in names if n.endswith(".msg")}
    for name in names:
        full = os.path.join(spool_dir, name)
        if name.endswith(".tmp"):
            if _ours_in_progress(name, full, created):
                continue  # being written by this process right now (SMTP is up)
            unlink_quiet(full)
            removed.append(name)
        elif name.endswith(".rsv"):
            unlink_quiet(full)  # a reserve left by a process gone (Recycler); a
            # concurrent refill's loses a file or two: take skips a vanished name
        elif name.endswith(".jrn") and name[:-4] not in msgs:
            unlink_quiet(full)
            removed.append(name)
        elif name.endswith(".msg") and name[:-4] in done:
            # finished: its Queue/ name came back beside Queue/finished/'s (or a done
            # log of an earlier version names it)
            unlink_quiet(full)
            unlink_quiet(full[:-4] + ".jrn")
            finished += name[:-4] not in marked
        elif name.endswith(".msg"):
            msg_id = name[:-4]
            try:
                _check_file(msg_id, full, deep)
            except SpoolCorrupt as e:
                move_corrupt(name)
                if fmt.valid_id(msg_id):
                    move_corrupt(msg_id + ".jrn")
                bad.append((name, e.reason))
                continue
            except OSError as e:
                bad.append((name, f"unreadable: {e.strerror}"))
                continue
            ids.append(msg_id)
    # The removals are durable before the names that mark them finished go.
    dirsync.sync()
    if done:
        if spool_dir == queue_dir:
            fsync_dir(incoming_dir)
        fsync_dir(finished_dir)
    if legacy:
        legacy_done.remove()
    ids.sort()
    journals = {n[:-4] for n in names if n.endswith(".jrn")}
    return Recovered(ids, bad, removed, finished, frozenset(i for i in ids if i in journals))


def _take_incoming(
    spool_dir: str, incoming_dir: str, dirsync: DirSync, removed: list[str], done: set[str]
) -> None:
    """Thread, at start (no SMTP worker runs yet): messages that workers stored but the
    server had not adopted are linked into Queue/, Queue/ fsynced, then their incoming
    names go (as ``adopt`` does); so do those of finished messages (``done``: the adoption
    had not removed them durably) and half-written .tmp files."""
    if spool_dir == incoming_dir:
        return
    try:
        names = os.listdir(incoming_dir)
    except FileNotFoundError:
        return
    linked = []
    for name in names:
        full = os.path.join(incoming_dir, name)
        if name.endswith(".rsv") and committed_reserve(full) is None:
            unlink_quiet(full)  # a worker's unused reserve (Recycler), or one half written
        elif name.endswith((".msg", ".rsv")) and fmt.valid_id(name[:-4]):
            # a message a worker committed: as ``<id>.msg``, or in place as ``<id>.rsv``
            if name[:-4] in done:
                unlink_quiet(full)
                continue
            try:
                os.link(full, os.path.join(spool_dir, name[:-4] + ".msg"))
            except FileExistsError:
                pass  # linked by an adoption cut off before it unlinked this name
            linked.append(full)
        elif name.endswith(".tmp"):
            unlink_quiet(full)
            removed.append(os.path.join("incoming", name))
    if linked:
        dirsync.sync()
        for full in linked:
            unlink_quiet(full)


def _ours_in_progress(name: str, full: str, created: float) -> bool:
    """A .tmp named with our pid and written since the Spool was created (at ``created``)."""
    if writer_pid(name) != os.getpid():
        return False
    try:
        return os.stat(full).st_mtime >= created
    except FileNotFoundError:
        return True


def _check_file(msg_id: str, path: str, deep: bool) -> None:
    if not fmt.valid_id(msg_id):
        raise SpoolCorrupt(msg_id, "not a spool file name")
    with open(path, "rb") as f:
        if deep:
            fmt.decode(msg_id, f.read())
            return
        size = os.fstat(f.fileno()).st_size
        head = f.read(fmt.MAX_HEADER)
        f.seek(max(0, size - fmt.TRAILER_LEN))
        fmt.check_structure(msg_id, head, size, f.read())
