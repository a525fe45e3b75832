"""The thread side of the spool's two per-message queue moves and of their shared commit.

Owns ``adopt``'s links (``Queue/incoming/<id>.rsv`` or ``<id>.msg`` linked into ``Queue/`` as
``<id>.msg``, its incoming name kept until the message is finished), ``remove``'s renames
(``Queue/<id>.msg`` into ``Queue/finished/``, and the incoming name unlinked), the commit that ends each move job and
the finished files' way into the pool (``DONE_BATCH`` at a time, after one fsync of ``Queue/``
and one of ``Queue/incoming/`` for all of them). Every method runs in the thread of a move job,
one job at a time (``JobBatch``), so the lists and the set here need no lock. What the moves
mean to the spool (counts, the journal cache, log lines, the recycle timer) stays with
``cgtwist.spool.spool.Spool`` on the reactor; the crash-safety argument is that module's
docstring.

Neither move of a message that took one delivery (no journal) waits for an fsync: an adopted
message keeps its incoming name, which its worker made durable before the 250, until it is
finished, so its link into ``Queue/`` need not be durable (after a power cut recovery links it
again); and a finished message's removal only has to be durable before its inode holds another
message, which ``recycle`` ensures for a whole batch. Each job used to fsync ``Queue/``: one of
the five flushes a message cost between the SMTP client and the Maildir (Postfix's path: two).
A power cut may then bring back a message finished in the last ``RECYCLE_AFTER`` seconds (at
most ``DONE_BATCH`` of them), delivered a second time: at least once, never lost, as Postfix's
unlink of a delivered queue file without an fsync. ``kill -9`` brings none back.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

from cgtwist.durable import DirSync, fsync_dir
from cgtwist.spool.files import Recycler, read_upto, storage_error, unlink_quiet
from cgtwist.spool.format import SpoolEntry

# Spool files up to this size are read by ``adopt`` within its shared job (a page-cache copy
# of tens of microseconds); a bigger one is read in a job of its own.
INLINE_READ_MAX = 256 << 10
# Finished messages (in Queue/finished/) given to the pool together, after one fsync of
# Queue/ (their removal from it) and one of Queue/incoming/ (an adopted message's incoming
# name, unlinked when it finished): no name of a message may survive a power cut beside the
# inode once that holds another message. Two directory fsyncs per this many messages.
DONE_BATCH = 32
FINISHED_DIR = "finished"  # in Queue/: finished messages on their way into the pool
BIG = object()  # adopt's shared job found a file over INLINE_READ_MAX: read it in its own job


class Ticket:
    """A move's result, which its job's commit confirms (``error`` stays None) or fails."""

    __slots__ = ("value", "error", "warning")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.warning = ""  # something the reactor logs (a removal could not be made durable)

    def settle(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class QueueMoves:
    """The moves of the spool in ``spool_dir`` (``Queue/``, or ``Queue/incoming/`` in an SMTP
    worker), made durable by ``dirsync`` (that directory's shared fsync); ``path(msg_id,
    ext)`` names a file in it; finished files go into ``recycler``'s pool."""

    def __init__(
        self,
        spool_dir: str,
        queue_dir: str,
        incoming_dir: str,
        path: Callable[[str, str], str],
        dirsync: DirSync,
        recycler: Recycler,
    ) -> None:
        self.dir = spool_dir
        self.queue_dir = queue_dir
        self.incoming_dir = incoming_dir
        self._path = path
        self._dirsync = dirsync
        self._recycler = recycler
        # Finished messages wait here for the pool; nothing in it is ever read or delivered.
        self.finished_dir = os.path.join(queue_dir, FINISHED_DIR)
        # ids in finished_dir, their .msg gone (durably once ``unsynced`` is False)
        self.finished: list[str] = []
        # adopted ids -> their incoming name, which stays until they are finished (the durable
        # name of a message whose link into Queue/ no fsync made durable)
        self.kept: dict[str, str] = {}
        self.unsynced = False  # removals from spool_dir since its last fsync
        # the current job's moves, made durable by its commit
        self._linked: list[tuple[str, str, Ticket]] = []  # (msg_id, incoming name, ticket)
        self._finishing: list[tuple[str, bool, Ticket]] = []  # (msg_id, has a .jrn, ticket)

    def link(
        self, msg_id: str, srcs: Sequence[str], dst: str, decode: Callable[[bytes], SpoolEntry]
    ) -> Optional[Ticket]:
        """Thread (a shared job): adopt's link of the first of ``srcs`` (the incoming names a
        worker may have committed the message under) that exists and, for a small file, the
        read; None if none is there or it was adopted already (a sweep names it again: its
        incoming name stays until it is finished). The link is made durable by no fsync of
        its own (see the module doc); only a corrupt file's incoming name goes, after the
        job's commit."""
        if msg_id in self.kept:
            return None
        for src in srcs:
            try:
                os.link(src, dst)
            except FileNotFoundError:
                continue
            except FileExistsError:
                # linked before a crash or by an adoption that failed since: the same file
                # if ``src`` is still there
                if not os.path.exists(src):
                    continue
            break
        else:
            return None
        raw = read_upto(dst, INLINE_READ_MAX)  # an error: both names stay for the sweep
        ticket = Ticket()
        try:
            ticket.value = BIG if raw is None else decode(raw)
        except BaseException:
            self._linked.append((msg_id, src, ticket))  # quarantined: its incoming name goes
            raise
        self.kept[msg_id] = src
        return ticket

    def drop_kept(self, msg_id: str) -> None:
        """Thread (a quarantine's job, not a move job: one ``pop`` of the dict, atomic): an
        adopted message found corrupt went into ``Queue/corrupt/``, so its kept incoming name
        goes too, else it would wait there until the next start."""
        src = self.kept.pop(msg_id, None)
        if src is not None:
            unlink_quiet(src)

    def finish(self, msg_id: str, journal: bool) -> Ticket:
        """Thread (a shared job): remove's rename, made by the job's commit."""
        ticket = Ticket()
        self._finishing.append((msg_id, journal, ticket))
        return ticket

    def commit(self) -> None:
        """Thread, the end of each move job (``JobBatch``'s commit): the finished messages are
        renamed into ``Queue/finished/`` and their kept incoming names unlinked. Only a job
        with a finished message that has a journal, or with a corrupt adopted file, fsyncs
        ``Queue/`` now (then those journals and incoming names go: a crash never leaves a
        message without its journal while it can come back); the others' removals are made
        durable by ``recycle``, every ``DONE_BATCH`` finished messages or ``RECYCLE_AFTER``."""
        finishing, self._finishing = self._finishing, []
        linked, self._linked = self._linked, []
        marked = []
        for msg_id, journal, ticket in finishing:
            try:
                os.rename(self._path(msg_id, ".msg"), os.path.join(self.finished_dir, msg_id))
            except FileNotFoundError:
                ticket.value = False
                if journal:
                    unlink_quiet(self._path(msg_id, ".jrn"))
            except OSError as e:
                ticket.error = storage_error(e, f"removing {msg_id}: {e.strerror}")
                continue
            else:
                ticket.value = True
                marked.append((msg_id, journal, ticket))
                self.unsynced = True
            src = self.kept.pop(msg_id, None)
            if src is not None:
                try:
                    unlink_quiet(src)
                except OSError:
                    pass  # recover takes it as finished (Queue/finished/) or adopts it again
        if not (linked or any(journal for _, journal, _ in marked)):
            self.finished.extend(msg_id for msg_id, _, _ in marked)
            if len(self.finished) >= DONE_BATCH:
                self.recycle()
            return
        try:
            self._dirsync.sync()
        except OSError as e:
            for msg_id, _, ticket in linked:
                ticket.error = storage_error(e, f"fsync of {self.dir} for {msg_id}: {e.strerror}")
            for _, _, ticket in marked:  # its .msg may come back: never recycled (recover)
                ticket.warning = f"fsync of {self.dir} failed ({e.strerror})"
            return
        self.unsynced = False
        for _, src, _ in linked:
            try:
                unlink_quiet(src)
            except OSError:
                pass  # both names stay; recover and the sweep take it as adopted
        for msg_id, journal, _ in marked:
            if journal:
                try:
                    unlink_quiet(self._path(msg_id, ".jrn"))
                except OSError:
                    pass  # an orphan journal: recover removes it
            self.finished.append(msg_id)
        if len(self.finished) >= DONE_BATCH:
            self.recycle()

    def recycle(self) -> None:
        """Thread: the finished messages' files into the pool (or deleted when it is full),
        after an fsync of ``Queue/`` (unless no removal since the last one) and one of
        ``Queue/incoming/``: their ``.msg`` names and adopted incoming names are then durably
        gone, and no power cut can bring one back naming an inode that holds another message
        by then. If an fsync fails they wait for the next batch (recover deletes them).
        A file whose ``Queue/finished/`` name is not durable yet is only ever lost (its inode
        in lost+found after a cut), never read."""
        if not self.finished:
            return
        try:
            if self.unsynced:
                self._dirsync.sync()
                self.unsynced = False
            if self.dir == self.queue_dir:
                fsync_dir(self.incoming_dir)
        except OSError:
            return
        finished, self.finished = self.finished, []
        for msg_id in finished:
            done = os.path.join(self.finished_dir, msg_id)
            try:
                if self._recycler.give(done, msg_id) is None:
                    unlink_quiet(done)
            except OSError:
                pass  # left in finished/: recover deletes it
