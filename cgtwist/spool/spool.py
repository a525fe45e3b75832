"""The durable message spool (CommuniGate's ``Queue/`` folder): file I/O and commit.

Owns every file under ``<base>/Queue``. ``store`` writes ``<id>.tmp`` (O_EXCL; or a reserved pool
file, under its ``.rsv`` name), fsyncs it, renames it ``<id>.msg`` and fsyncs the directory
before its Deferred fires, so the caller may answer 250 then and never before (RFC 5321 §6.1). Directory fsyncs of concurrent messages are grouped into
one (group commit, among the worker threads). In an SMTP worker (``Queue/incoming/``) a
reserved file is named ``<id>.rsv`` durably before it is handed out, and the message is
committed in place under that name by the fsync of the file alone (``_try_write``).
Per-recipient state and delivery history go to the ``<id>.jrn`` journal.
All file work runs in a thread pool, never on the reactor: a rename can wait on the disk as
an fsync does (a journal commit, a stalled device), and the server's reactor also serves IMAP,
POP3 and the web panel. The server's two per-message queue moves, ``adopt`` (link in, read a
small file just written) and ``remove`` (a rename into ``Queue/finished/``), are each cheaper
than the thread hop that carries them, so they share jobs (``JobBatch``): under load, the moves
asked for while one job runs go together in the next, and the job's commit needs no fsync
for them (only for a removal of a message with a journal: one for the whole job); a removal
asked for less than ``REMOVE_LINGER`` after a job started waits for company.

No name of a message is removed before the fsync that makes its new name durable, or before it
is delivered: an adopted file is linked into ``Queue/`` and keeps its incoming name, durable
since its worker's commit, until it is finished (no fsync of ``Queue/`` for an adoption); a
pool file's old name is fsynced away before it becomes a ``.msg``; a finished message is
renamed into ``Queue/finished/`` and its incoming name unlinked, and both removals are made
durable (one fsync of ``Queue/`` and one of ``incoming/`` for a batch, ``moves.recycle``)
before its file goes into the pool, so no name of it that can come back leads to a reused
file. A power cut before that batch's fsyncs may deliver a finished message again (at least
once); a ``kill -9`` does not (``Queue/finished/`` names it). A message with a journal (more
than one delivery attempt) has its removal made durable at once, before the journal goes.
Formats live in ``spool.format``; the scan at start that puts right what a crash left, in
``spool.recovery``; the thread side of the moves and their commit, in ``spool.moves``.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from cgtwist import crashpoint as cp
from cgtwist import paths
from cgtwist.durable import DirSync, fsync_dir, make_dirs, write_all
from cgtwist.errors import MailError
from cgtwist.interfaces import ISpool
from cgtwist.logs import Logger
from cgtwist.spool import format as fmt
from cgtwist.spool import recovery
from cgtwist.spool.donelog import DoneLog
from cgtwist.spool.files import (
    Recycler,
    committed_reserve,
    read_whole,
    storage_error,
    unlink_quiet,
)
from cgtwist.spool.format import SpoolCorrupt, SpoolEntry
from cgtwist.spool.moves import BIG, FINISHED_DIR, QueueMoves, Ticket
from cgtwist.spool.recovery import Recovered
from cgtwist.spool.workers import JobBatch
from cgtwist.typedtwisted import current_failure, failure_of
from cgtwist.types import Envelope

T = TypeVar("T")
# One message's result of ``Spool.load_entries``: its entry, or why it could not be read.
Loaded = Union[SpoolEntry, Failure]
# Told of each message ``store`` made durable: ``on_stored(msg_id, envelope, data)``.
OnStored = Callable[[str, Envelope, bytes], Any]
_counter = itertools.count(1)  # process-wide; next() is atomic under the GIL
# Seconds within which a finished message's removal waits for company when a move job has just
# started (JobBatch ``linger``): under load, removals cost at most one thread job per this
# interval (shared with the adoptions of that job); at a lower rate each goes at once. A
# crash before that job, or a power cut before the batch's fsyncs (moves.recycle), delivers
# the message again (at least once, never lost).
REMOVE_LINGER = 0.01
# Seconds after which finished messages go into the pool even when fewer than DONE_BATCH wait
# (on a spool with a clock: ``remove_linger``), so an idle server keeps none for long.
RECYCLE_AFTER = 1.0
# Seconds after its last write from which a live SMTP worker's reserve file that holds a message
# is taken by a sweep (``incoming``): its notice was lost or its adoption failed. A commit takes
# milliseconds; a younger file may be one whose fsync has not returned (its 250 not sent).
ORPHAN_AGE = 10.0


def make_layout(base_dir: str) -> None:
    """(blocking) ``Queue/`` with its corrupt/, incoming/, free/ and finished/ directories,
    made durably where missing (``durable.make_dirs``: a syncfs before the first one).

    The composition root runs it in a thread before it builds the ``Spool``, whose
    constructor calls it again and then only finds them (a stat each): neither the syncfs
    nor the directory fsyncs of a first start run on the reactor."""
    for d in (paths.CORRUPT_DIR, paths.INCOMING_DIR, paths.FREE_DIR):
        make_dirs(os.path.join(base_dir, d))
    make_dirs(os.path.join(base_dir, paths.QUEUE_DIR, FINISHED_DIR))


def _no_sync() -> None:
    """The server's reserve names need not be durable: each is renamed to a ``.msg`` and
    that name made durable by the commit's directory fsync."""


def _new_id() -> str:
    """Sortable by time (16-digit microseconds), unique across restarts (pid, counter, O_EXCL)."""
    return f"{time.time_ns() // 1000:016d}-{os.getpid()}-{next(_counter)}"


class _Unsynced(Exception):
    """The directory fsync after ``msg_id``'s rename failed; the file was withdrawn."""

    def __init__(self, msg_id: str, error: Exception) -> None:
        super().__init__(msg_id, error)
        self.msg_id, self.error = msg_id, error


@implementer(ISpool)
class Spool:
    """``Spool(base_dir, reactor, threadpool=None)``: the ISpool over ``<base_dir>/Queue``.

    ``reactor`` provides callFromThread and seconds() (and callLater, with ``remove_linger``);
    ``threadpool`` defaults to the reactor's. ``recover`` runs before the first ``remove`` (it
    empties ``Queue/finished/``). ``subscribe`` names who hears of each stored message (the
    queue manager in the server, the link to the server in an SMTP worker process).
    """

    log = Logger()

    def __init__(
        self,
        base_dir: str,
        reactor: Any,
        threadpool: Optional[ThreadPool] = None,
        incoming: bool = False,
        remove_linger: float = 0.0,
    ) -> None:
        self.base_dir = base_dir
        self.queue_dir = os.path.join(base_dir, paths.QUEUE_DIR)
        self.incoming_dir = os.path.join(base_dir, paths.INCOMING_DIR)
        # An SMTP worker process (``incoming``) stores into Queue/incoming/; the server adopts
        # each file into Queue/ (``adopt``), the only directory it delivers from.
        self.dir = self.incoming_dir if incoming else self.queue_dir
        self.corrupt_dir = os.path.join(base_dir, paths.CORRUPT_DIR)
        self._reactor: Any = reactor
        self._from_threads: Any = reactor
        self._pool = threadpool
        self._count = 0
        self._recorded: dict[str, list[tuple[str, str, str]]] = {}
        self._no_journal: set[str] = set()  # stored here, never journaled: no .jrn to remove
        self._locks: dict[str, defer.DeferredLock] = {}
        self._dirsync = DirSync(self.dir)
        self._created = time.time() - 1.0  # file system timestamps may be coarse
        make_layout(base_dir)
        # An SMTP worker commits a message under its reserve file's durable name (_try_write).
        self._in_place = incoming
        self._recycler = Recycler(
            os.path.join(base_dir, paths.FREE_DIR),
            reserve_dir=self.dir,
            reserve_name=_new_id,
            # only a worker commits under a reserve name; the server renames it to its .msg
            reserve_sync=self._dirsync.sync if incoming else _no_sync,
        )
        self._refilling = False
        self._legacy_done = DoneLog(self.dir)  # read once by recover, then removed
        # adopt's and remove's small file moves, made durable by each job's commit, in the
        # threads of one job at a time (cgtwist.spool.moves)
        self._queue_moves = QueueMoves(
            self.dir, self.queue_dir, self.incoming_dir, self._path, self._dirsync, self._recycler
        )
        self.finished_dir = self._queue_moves.finished_dir
        # (with ``remove_linger``, the server gives REMOVE_LINGER, removals pace their jobs)
        self._moves = JobBatch(self._in_thread, self._queue_moves.commit, reactor, remove_linger)
        self._timed = remove_linger > 0  # the reactor's callLater may be used
        self._recycle_call: Any = None  # IDelayedCall of the RECYCLE_AFTER timer
        self._subscribers: list[OnStored] = []

    def subscribe(self, on_stored: OnStored) -> None:
        """Call ``on_stored(msg_id, envelope, data)`` for each message ``store`` makes durable,
        before its Deferred fires (so before the 250), as Postfix's cleanup triggers qmgr.

        Mail flows one way: receivers store, the spool announces, whoever schedules delivery
        listens; the spool never knows who that is. A subscriber that raises or whose Deferred
        fails is logged and the message stays in the spool: the next start's ``recover`` finds
        it (the store still succeeds: the message is durable)."""
        self._subscribers.append(on_stored)

    def _announce(self, msg_id: str, envelope: Envelope, data: bytes) -> None:
        for on_stored in self._subscribers:
            d = defer.maybeDeferred(on_stored, msg_id, envelope, data)
            d.addErrback(self._announce_failed, msg_id)

    def _announce_failed(self, f: Failure, msg_id: str) -> None:
        self.log.failure(
            "spool: announcing {msg_id} failed; it stays in the spool", f, msg_id=msg_id
        )

    # -- plumbing ---------------------------------------------------------------------------
    def _in_thread(self, fn: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        pool = self._pool or self._reactor.getThreadPool()
        return deferToThreadPool(self._from_threads, pool, fn, *args)

    def _path(self, msg_id: str, ext: str) -> str:
        if not fmt.valid_id(msg_id):
            raise KeyError(f"invalid message id {msg_id!r}")
        return os.path.join(self.dir, msg_id + ext)

    def _lock(self, msg_id: str) -> defer.DeferredLock:
        lock = self._locks.get(msg_id)
        if lock is None:
            lock = self._locks[msg_id] = defer.DeferredLock()
        return lock

    def message_count(self) -> int:
        """Messages in the spool (from recover, store and remove; no disk access)."""
        return self._count

    def set_count(self, count: int) -> None:
        """An SMTP worker's view of the queue size, as the server last reported it."""
        self._count = max(0, int(count))

    def free_space(self) -> defer.Deferred[int]:
        """Octets available to us on the spool's file system (statvfs, in a thread)."""

        def stat() -> int:
            st = os.statvfs(self.dir)
            return st.f_bavail * st.f_frsize

        return self._in_thread(stat)

    # -- store ------------------------------------------------------------------------------
    def store(self, envelope: Envelope, data: bytes) -> defer.Deferred[str]:
        """Write durably; fire with the new id after fsync(file), rename, fsync(dir).

        The whole commit is one job in a worker thread; the directory fsync is shared with the
        other threads committing at the same time (``DirSync``)."""
        queued = self._reactor.seconds()
        env_json = fmt.envelope_json(envelope, queued)
        states = [(r.state, r.route, r.detail) for r in envelope.recipients]

        def durable(msg_id: str) -> str:
            self._count += 1
            self._recorded[msg_id] = states
            self._no_journal.add(msg_id)
            self._refill()
            self._announce(msg_id, envelope, data)
            return msg_id

        def failed(f: Failure) -> Failure:
            if isinstance(f.value, _Unsynced):
                e = f.value.error
                self.log.error(
                    "spool: directory fsync failed for {msg_id}: {error}",
                    msg_id=f.value.msg_id,
                    error=str(e),
                )
                return failure_of(
                    storage_error(e, "directory fsync")
                    if isinstance(e, OSError)
                    else MailError(451, "4.3.0", "Temporary local problem, try again later")
                )
            if not isinstance(f.value, MailError):
                self.log.failure("spool: unexpected error while storing", f)
                return failure_of(
                    MailError(451, "4.3.0", "Temporary local problem, try again later")
                )
            return f

        return self._in_thread(self._commit, env_json, data).addCallbacks(durable, failed)

    def reserve(self) -> None:
        """Fill the reserve of pool files now, in a thread job (an SMTP worker calls it once
        it is open), so its first message is written into a reserved file too (committed in
        place, one fsync) rather than a new or pool file (three: pool, file, directory)."""
        self._refill()

    def _refill(self) -> None:
        """Top up the recycler's reserve in a thread job of its own, after the reply: its pool
        fsync never waits between a message and its 250 (``Recycler``)."""
        if self._refilling or not self._recycler.wants_refill():
            return
        self._refilling = True

        def done(result: Any) -> None:
            self._refilling = False
            if isinstance(result, Failure):
                self.log.warn(
                    "spool: refilling the file reserve failed: {err}", err=result.getErrorMessage()
                )

        self._in_thread(self._recycler.refill).addBoth(done)

    def _commit(self, env_json: bytes, data: bytes) -> str:
        """Thread: ``_write``, then the (shared) directory fsync; a message whose directory
        entry could not be made durable is withdrawn: the 4xx tells the client to keep it
        (RFC 5321 §4.2.5). A message committed in place under its reserve name (an SMTP
        worker's, ``_try_write``) needs no directory fsync: that name was durable before."""
        msg_id, path = self._write(env_json, data)
        if path is None:
            return msg_id
        try:
            self._dirsync.sync()
        except Exception as e:
            unlink_quiet(path)
            raise _Unsynced(msg_id, e) from None
        return msg_id

    def _write(self, env_json: bytes, data: bytes) -> tuple[str, Optional[str]]:
        """Thread: write the message into a reserved file (``Recycler.claim``, written in place
        under its ``.rsv`` name), a pool file or a new file (both as ``<id>.tmp``), fsync it,
        rename it to ``<id>.msg``; the file written is gone on any error. Returns the id and
        the path whose directory entry the commit must make durable (None: durable already)."""
        while True:
            result = self._try_write(env_json, data)
            if result is not None:
                return result

    def _try_write(self, env_json: bytes, data: bytes) -> Optional[tuple[str, Optional[str]]]:
        """Thread: one ``_write`` attempt; None when the file it took vanished (a reserved
        file deleted by a recovery or a sweep, a name taken meanwhile): take another.

        In an SMTP worker (``incoming``) a reserved file's name is the message's id and the
        file is the message's for good: written, truncated and fsynced under ``<id>.rsv``,
        whose directory entry the refill made durable, the message is committed by that one
        fsync (Postfix's one flush before the 250; a rename to ``.msg`` took a second, of the
        directory). Its name says "maybe a message" and its content decides: the header names
        that id and the checksum holds (``format.holds_message``, read by the sweep and by
        recovery), which the pool file's old message never does."""
        path = self._recycler.claim()
        if path is not None and self._in_place:
            return self._write_in_place(path, env_json, data)
        msg_id = _new_id()
        final = self._path(msg_id, ".msg")
        if os.path.exists(final):
            return None  # a clock step back onto a recycled pid: never overwrite a message
        reused: Optional[str] = None
        try:
            if path is not None:
                reused = "reserve"
                fd = os.open(path, os.O_WRONLY)
            else:
                path = self._path(msg_id, ".tmp")
                if self._recycler.take(path):
                    reused = "pool"
                    fd = os.open(path, os.O_WRONLY)
                else:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return None
        except OSError as e:
            if reused == "reserve" and isinstance(e, FileNotFoundError):
                return None  # deleted meanwhile (a recovery, a sweep): take another
            raise storage_error(e, f"open {path}: {e.strerror}") from None
        try:
            self._fill(fd, msg_id, env_json, data, truncate=reused is not None)
            if reused == "pool":  # its pool name durably gone before the inode is a .msg
                self._recycler.taken()
            cp.crashpoint(cp.SPOOL_BEFORE_RENAME)
            os.rename(path, final)
        except OSError as e:
            unlink_quiet(path)
            if reused == "reserve" and isinstance(e, FileNotFoundError):
                return None  # deleted under us (a recovery, a sweep): write it anew
            raise storage_error(e, f"writing {path}: {e.strerror}") from None
        except BaseException:
            unlink_quiet(path)
            raise
        cp.crashpoint(cp.SPOOL_AFTER_RENAME)
        return msg_id, final

    def _write_in_place(
        self, path: str, env_json: bytes, data: bytes
    ) -> Optional[tuple[str, Optional[str]]]:
        """Thread: commit the message into the reserved file ``path`` under its own name (see
        ``_try_write``); None if the file vanished (a sweep of a worker taken for gone)."""
        msg_id = os.path.basename(path)[: -len(".rsv")]
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise storage_error(e, f"open {path}: {e.strerror}") from None
        try:
            try:
                inode = os.fstat(fd).st_ino
            except BaseException:
                os.close(fd)
                raise
            self._fill(fd, msg_id, env_json, data, truncate=True)
            # Still named so? A server restarted while this worker finished its last message
            # deletes what looks unused in incoming/ (the rename of the old commit failed then).
            if os.stat(path).st_ino != inode:
                return None
        except FileNotFoundError:
            return None  # deleted under us: write it anew
        except OSError as e:
            unlink_quiet(path)
            raise storage_error(e, f"writing {path}: {e.strerror}") from None
        except BaseException:
            unlink_quiet(path)
            raise
        cp.crashpoint(cp.SPOOL_AFTER_RENAME)
        return msg_id, None

    @staticmethod
    def _fill(fd: int, msg_id: str, env_json: bytes, data: bytes, truncate: bool) -> None:
        """Thread: the message file's bytes into ``fd`` (a reused file cut to their length),
        fsynced, and ``fd`` closed."""
        try:
            chunks, size = fmt.encode(msg_id, env_json, data)
            write_all(fd, chunks)
            if truncate:  # overwritten in place; cut what is left of the old message
                os.ftruncate(fd, size)
            cp.crashpoint(cp.SPOOL_BEFORE_FSYNC)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- load -------------------------------------------------------------------------------
    def load(self, msg_id: str) -> defer.Deferred[tuple[Envelope, bytes]]:
        """Fire with (Envelope with journal applied, message bytes)."""
        d: defer.Deferred[Any] = self.load_entry(msg_id)
        return d.addCallback(lambda e: (e.envelope, e.data))

    def load_entry(self, msg_id: str, with_data: bool = True) -> defer.Deferred[SpoolEntry]:
        """Fire with the SpoolEntry; a corrupt file is quarantined and SpoolCorrupt raised."""
        try:
            self._path(msg_id, ".msg")
        except KeyError as e:
            return defer.fail(e)

        def first(results: list[Loaded]) -> SpoolEntry:
            result = results[0]
            if isinstance(result, Failure):
                result.raiseException()
            assert isinstance(result, SpoolEntry)
            return result

        return self.load_entries([msg_id], with_data).addCallback(first)

    def load_entries(
        self, msg_ids: Sequence[str], with_data: bool = True
    ) -> defer.Deferred[list[Loaded]]:
        """Fire with one result per id, in order: its SpoolEntry, or a Failure (KeyError for
        a message that is not there or an invalid id, SpoolCorrupt for a damaged file, which
        is quarantined before this fires). All of them read in one thread job: a queue that
        fills its active window after a restart (thousands of messages) read each in a job
        of its own, eight at a time, and those eight threads' contention for the GIL with
        the reactor (futex calls, ~50 per message) cost the server more than the reads."""
        # A message known to have no journal (stored or adopted here, or found without one
        # by recover, and not journaled since: ``record`` says so before its append) is
        # not looked for one: an open that fails, per message of a drain after a restart.
        wanted: list[tuple[str, bool]] = [(m, m not in self._no_journal) for m in msg_ids]

        def read_one(msg_id: str, journal: bool) -> tuple[SpoolEntry, int]:
            msg, jrn = self._path(msg_id, ".msg"), self._path(msg_id, ".jrn")
            try:
                raw = read_whole(msg)
            except FileNotFoundError:
                raise KeyError(msg_id) from None
            env, queued, data = fmt.decode(msg_id, raw)
            entry = SpoolEntry(msg_id, env, queued, data if with_data else None)
            records: list[dict[str, Any]] = []
            bad = 0
            if journal:
                try:
                    records, bad = fmt.parse_journal(read_whole(jrn))
                except FileNotFoundError:
                    pass
            fmt.apply_journal(entry, records)
            return entry, bad

        def read() -> list[Union[tuple[SpoolEntry, int], Failure]]:
            out: list[Union[tuple[SpoolEntry, int], Failure]] = []
            for msg_id, journal in wanted:
                try:
                    out.append(read_one(msg_id, journal))
                except Exception:
                    out.append(current_failure())
            return out

        def loaded(
            results: list[Union[tuple[SpoolEntry, int], Failure]],
        ) -> Union[list[Loaded], defer.Deferred[list[Loaded]]]:
            out: list[Loaded] = []
            quarantines = []
            for (msg_id, _), result in zip(wanted, results, strict=True):
                if isinstance(result, Failure):
                    out.append(result)
                    if isinstance(result.value, SpoolCorrupt):
                        reason = getattr(result.value, "reason", "corrupt")
                        quarantines.append(self.quarantine(msg_id, reason))
                    continue
                entry, bad = result
                if bad:
                    self.log.warn(
                        "spool: {msg_id} journal had {bad} damaged line(s), ignored",
                        msg_id=msg_id,
                        bad=bad,
                    )
                self._recorded[msg_id] = [
                    (r.state, r.route, r.detail) for r in entry.envelope.recipients
                ]
                out.append(entry)
            if not quarantines:
                return out
            done = defer.DeferredList(quarantines, consumeErrors=True)
            return done.addCallback(lambda _: out)

        return self._in_thread(read).addCallback(loaded)

    # -- adoption of worker-written messages ----------------------------------------------
    def adopt(self, msg_id: str) -> defer.Deferred[Optional[SpoolEntry]]:
        """Move ``Queue/incoming/<id>.rsv`` (committed in place by an SMTP worker process) or
        ``<id>.msg`` (its other commit), answered 250 already, into ``Queue/`` as ``<id>.msg``
        and fire with its SpoolEntry; None if it is not there (adopted already: a notice and a
        sweep may name the same file). A corrupt file is quarantined.

        The file is linked into ``Queue/`` and its incoming name stays until it is finished
        (``remove``): that name is durable already, so the link needs no fsync (after a power
        cut, recovery links it again). A rename would leave the message in neither directory
        after a power cut if the worker's next fsync of ``incoming/`` made the old name's
        removal durable before ``Queue/`` was written."""
        if not fmt.valid_id(msg_id):
            return defer.fail(KeyError(f"invalid message id {msg_id!r}"))
        srcs = (
            os.path.join(self.incoming_dir, msg_id + ".rsv"),
            os.path.join(self.incoming_dir, msg_id + ".msg"),
        )
        dst = self._path(msg_id, ".msg")

        def decode(raw: bytes) -> SpoolEntry:
            env, queued, data = fmt.decode(msg_id, raw)
            return SpoolEntry(msg_id, env, queued, data)

        def read_big() -> SpoolEntry:
            return decode(read_whole(dst))

        def link_and_read() -> Optional[Ticket]:
            """Thread (a shared job): the link and, for a small file, the read."""
            return self._queue_moves.link(msg_id, srcs, dst, decode)

        def settled(ticket: Optional[Ticket]) -> Any:
            result = None if ticket is None else ticket.settle()
            return self._in_thread(read_big) if result is BIG else result

        def moved(entry: Optional[SpoolEntry]) -> Optional[SpoolEntry]:
            if entry is not None:
                self._count += 1
                self._recorded[msg_id] = [
                    (r.state, r.route, r.detail) for r in entry.envelope.recipients
                ]
                self._no_journal.add(msg_id)
            return entry

        def corrupt(f: Failure) -> Any:
            if not isinstance(f.value, SpoolCorrupt):
                return f
            self._count += 1  # quarantine counts it out again
            return self.quarantine(msg_id, getattr(f.value, "reason", "corrupt")).addCallback(
                lambda _: None
            )

        return self._moves.run(link_and_read).addCallback(settled).addCallbacks(moved, corrupt)

    def incoming(self, live_pids: frozenset[int] = frozenset()) -> defer.Deferred[list[str]]:
        """Ids waiting in ``Queue/incoming/`` (oldest first) and not adopted yet, for a sweep
        after a worker ended; ``.tmp`` and ``.rsv`` files of processes not in ``live_pids``
        are removed (a worker killed mid-DATA, which never answered 250 for them, and its
        unused reserve), except a ``.rsv`` it committed a message into (``holds_message``:
        named here too). A live worker's ``.rsv`` files are never removed (one may be in use)
        and named only when one holds a message and was last written ``ORPHAN_AGE`` seconds
        ago or more (its notice was lost, or its adoption failed: a sweep tries again, as for
        a ``.msg``); a younger one may be a commit whose fsync has not returned yet."""

        kept = self._queue_moves.kept  # adopted, in delivery: only checked for membership

        def scan() -> list[str]:
            ids = []
            for name in os.listdir(self.incoming_dir):
                if name.endswith(".msg") and fmt.valid_id(name[:-4]):
                    if name[:-4] not in kept:
                        ids.append(name[:-4])
                elif name.endswith((".tmp", ".rsv")):
                    pid = fmt.writer_pid(name)
                    full = os.path.join(self.incoming_dir, name)
                    if pid is None or (name.endswith(".rsv") and name[:-4] in kept):
                        continue  # not ours; or adopted: its name stays until it is finished
                    if pid in live_pids:
                        if name.endswith(".rsv") and self._orphan(full):
                            ids.append(name[:-4])
                    elif name.endswith(".rsv") and committed_reserve(full) is not None:
                        ids.append(name[:-4])
                    else:
                        unlink_quiet(full)
            ids.sort()
            return ids

        return self._in_thread(scan)

    @staticmethod
    def _orphan(path: str) -> bool:
        """Thread: a live worker's reserve file holds a message committed ``ORPHAN_AGE``
        seconds ago or more, and nobody adopted it."""
        try:
            if time.time() - os.stat(path).st_mtime < ORPHAN_AGE:
                return False
            return committed_reserve(path) is not None
        except FileNotFoundError:
            return False

    # -- journal ----------------------------------------------------------------------------
    def update(
        self,
        msg_id: str,
        envelope: Envelope,
        extra: Optional[list[dict[str, Any]]] = None,
        changed: Optional[Sequence[int]] = None,
    ) -> defer.Deferred[None]:
        """Durably journal every recipient whose state or detail changed (a route alone is not
        worth an fsync: it is computed again after a restart), plus ``extra`` records, with one
        append and one fsync. ``changed``: the only recipients that may have changed since
        the previous update (one delivery's), so a message of 10,000 recipients is not
        compared whole after each of its 100 deliveries."""
        now = self._reactor.seconds()
        rcpts = envelope.recipients
        known = self._recorded.get(msg_id)
        records = []
        if known is not None and len(known) == len(rcpts) and changed is not None:
            states = known
            for i in changed:
                r = rcpts[i]
                if (known[i][0], known[i][2]) != (r.state, r.detail):
                    records.append(fmt.recipient_record(i, r, now))
                states[i] = (r.state, r.route, r.detail)
            records.sort(key=lambda rec: int(rec["i"]))
        else:
            states = [(r.state, r.route, r.detail) for r in rcpts]
            for i, r in enumerate(rcpts):
                if (
                    known is None
                    or i >= len(known)
                    or (known[i][0], known[i][2]) != (r.state, r.detail)
                ):
                    records.append(fmt.recipient_record(i, r, now))
        # Appends to one message are written in call order (``record``), so the next update
        # need only journal what changed since this one, even before this one is on disk:
        # diffing against the last write that finished made every update of a message with
        # many deliveries in flight (a list's 10,000 recipients over 100 domains) journal
        # all recipients changed since, quadratic in records and in JSON work on the reactor.
        self._recorded[msg_id] = states
        d = self.record(msg_id, records + list(extra or []))

        def failed(f: Failure) -> Failure:
            # Not known what reached the disk: the next update journals every recipient.
            self._recorded.pop(msg_id, None)
            return f

        return d.addErrback(failed)

    def record(self, msg_id: str, records: list[dict[str, Any]]) -> defer.Deferred[None]:
        """Append journal records (history ``a``, hold ``h``, bounced ``b``, recipient ``r``)
        with one fsync; appends to one message are serialised in call order."""
        if not records:
            return defer.succeed(None)
        try:
            path = self._path(msg_id, ".jrn")
        except KeyError as e:
            return defer.fail(e)
        payload = b"".join(fmt.journal_line(r) for r in records)
        self._no_journal.discard(msg_id)

        def append() -> None:
            if not os.path.exists(self._path(msg_id, ".msg")):
                raise KeyError(msg_id)
            created = not os.path.exists(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                write_all(fd, [payload])
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.dir)

        return self._lock(msg_id).run(self._in_thread, append)

    # -- remove / quarantine ----------------------------------------------------------------
    def remove(self, msg_id: str) -> defer.Deferred[None]:
        """Delete a finished message: rename it into ``Queue/finished/`` (its removal from
        ``Queue/`` durable by the fsync shared with the other moves of the job), then its
        journal goes, and later its file goes into the pool (``DONE_BATCH``); a crash never
        leaves it without its journal (an orphan .jrn is cleaned up by recover) and never
        delivers it again once the job's commit is done."""
        if not fmt.valid_id(msg_id):
            return defer.fail(KeyError(f"invalid message id {msg_id!r}"))
        journal = msg_id not in self._no_journal

        def finish() -> Ticket:
            return self._queue_moves.finish(msg_id, journal)

        def done(ticket: Ticket) -> None:
            if self._queue_moves.finished and self._timed and self._recycle_call is None:
                self._recycle_call = self._reactor.callLater(RECYCLE_AFTER, self._recycle_later)
            if ticket.warning:
                self.log.warn(
                    "spool: {msg_id}: {warning}; a crash now could deliver it again",
                    msg_id=msg_id,
                    warning=ticket.warning,
                )
            if ticket.settle():
                self._count = max(0, self._count - 1)
            self._forget(msg_id)
            self.log.debug("spool: removed {msg_id}", msg_id=msg_id)

        # Asked for on the reactor, done by the next move job's commit (see the module doc),
        # which need not start at once (REMOVE_LINGER).
        return self._lock(msg_id).run(self._moves.run, finish, False).addCallback(done)

    def _recycle_later(self) -> None:
        """The RECYCLE_AFTER timer: the waiting finished messages into the pool, in a move
        job (the only place the finished list is touched)."""
        self._recycle_call = None

        def failed(f: Failure) -> None:
            self.log.warn("spool: recycling finished files failed: {err}", err=f.getErrorMessage())

        self._moves.run(self._queue_moves.recycle).addErrback(failed)

    def _forget(self, msg_id: str) -> None:
        self._recorded.pop(msg_id, None)
        self._no_journal.discard(msg_id)
        lock = self._locks.get(msg_id)
        if lock is not None and not lock.locked and not lock.waiting:
            del self._locks[msg_id]

    def quarantine(self, msg_id: str, reason: str) -> defer.Deferred[None]:
        """Move a damaged message (and its journal) to Queue/corrupt/ with a log line."""

        def move() -> bool:
            moved = self._move_corrupt(msg_id + ".msg") and (
                self._move_corrupt(msg_id + ".jrn") or True
            )
            self._queue_moves.drop_kept(msg_id)  # same inode: its incoming name goes too
            return moved

        def done(moved: bool) -> None:
            if moved:
                self._count = max(0, self._count - 1)
            self._forget(msg_id)
            self.log.error(
                "spool: {msg_id} is corrupt ({reason}); moved to {dir}",
                msg_id=msg_id,
                reason=reason,
                dir=self.corrupt_dir,
            )

        return self._in_thread(move).addCallback(done)

    def _move_corrupt(self, name: str) -> bool:
        make_dirs(self.corrupt_dir)
        try:
            os.rename(os.path.join(self.dir, name), os.path.join(self.corrupt_dir, name))
            return True
        except FileNotFoundError:
            return False

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, deep: bool = True) -> defer.Deferred[list[str]]:
        """On start: drop pool names that share an inode, adopt what waits in incoming/,
        remove finished messages (``Queue/finished/``, and those a done log of an earlier
        version names), stale .tmp and orphan .jrn files, quarantine corrupt .msg; fire with
        the valid ids in time order. ``deep`` verifies each checksum (else only the structure;
        load still verifies before delivery)."""

        def scan() -> Recovered:
            self._queue_moves.finished = []
            return recovery.scan(
                spool_dir=self.dir,
                queue_dir=self.queue_dir,
                incoming_dir=self.incoming_dir,
                finished_dir=self.finished_dir,
                recycler=self._recycler,
                legacy_done=self._legacy_done,
                dirsync=self._dirsync,
                created=self._created,
                move_corrupt=self._move_corrupt,
                deep=deep,
            )

        def scanned(result: Recovered) -> list[str]:
            ids, bad, removed, finished = result.ids, result.bad, result.removed, result.finished
            for name in removed:
                self.log.info("spool: removed stale {name}", name=name)
            for name, reason in bad:
                self.log.error(
                    "spool: {name} is corrupt ({reason}); moved to {dir}",
                    name=name,
                    reason=reason,
                    dir=self.corrupt_dir,
                )
            self._count = len(ids)
            # Those without a journal are removed without one (no fsync of Queue/ before a
            # journal goes, no unlink of a .jrn that is not there: ``remove``), as a message
            # stored since the start is.
            self._no_journal.update(i for i in ids if i not in result.journaled)
            self.log.info(
                "spool: recovered {n} message(s), {bad} quarantined, {finished} "
                "finished before the restart removed",
                n=len(ids),
                bad=len(bad),
                finished=finished,
            )
            return ids

        return self._in_thread(scan).addCallback(scanned)
