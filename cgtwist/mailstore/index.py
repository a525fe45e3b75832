"""The per-folder index file: each message's UID, flags, MODSEQ and cached facts, on disk.

Owns the format of ``cgtwist-index`` (a snapshot) and ``cgtwist-index.log`` (the changes made
since, appended one line each) beside a Maildir folder, as Dovecot's ``dovecot.index`` and its
transaction log: a record per message (Maildir key, UID, MODSEQ, info letters, and the
``Meta`` with size, INTERNALDATE, the cached header fields and the derived ENVELOPE and
BODYSTRUCTURE) and the folder's HIGHESTMODSEQ. A change appends a line (``write`` to an
``O_APPEND`` file: it survives a ``kill -9``; no fsync, so a power cut may cost the last
lines); ``compact`` writes a new snapshot (tmp, fsync, rename) and starts an empty log, so no
change rewrites the whole file. A torn or damaged line ends the replay there, a damaged
snapshot is dropped: the index is a cache, rebuilt from the Maildir, whose files stay the
truth for which messages exist and their flags.

MODSEQ is the exception: a value a client saw must never be handed out again within the
UIDVALIDITY (RFC 7162 §3.1.1). ``ModseqAllocator`` reserves values in blocks in the durable
uidlist (``UidList.modseq_reserved``, fsynced before a value of a new block is used) and starts
above the reservation after every load, so neither a lost log tail nor a deleted index can make
MODSEQ go backwards. Blocking; called in the folder's runner thread under its lock.

The log is also how processes sharing a folder learn of each other's changes (Dovecot's
transaction log): every change is appended under ``folder_lock`` (an flock of
``cgtwist-index.lock``), and a process reads what others appended since its last position
(``others_changed``, ``read_others``) before its own change, so the next MODSEQ is above all
of theirs without per-process blocks. A load that starts above the reservation says so in
the log (an ``f`` line naming no message), so nobody hands out a value below it.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from cgtwist.logs import Logger
from cgtwist.mailstore import maildir, uidlist
from cgtwist.mailstore.filemeta import Meta

INDEX_FILE = "cgtwist-index"
LOG_FILE = "cgtwist-index.log"
LOCK_FILE = "cgtwist-index.lock"  # flock(2)ed by every change of the folder, in any process
_VERSION = 1
MODSEQ_BLOCK = 1024  # MODSEQ values reserved (one uidlist write and fsync) at a time
# Expunged UIDs remembered with the MODSEQ of their expunge (QRESYNC's VANISHED (EARLIER),
# RFC 7162 §3.2.5.1), the most recent first kept; below the oldest one kept the folder
# answers for every UID it does not hold (its ``vanished_floor``). The server's number is the
# setting imap.tombstones_kept; this is the default of a folder built without settings.
TOMBSTONES_KEPT = 100_000
COMPACT_MIN = 2000  # log lines before a compaction is due, at least...
COMPACT_FACTOR = 1  # ...or this many per message of the folder, whichever is larger

log = Logger()
Line = list[object]  # one line of the snapshot or the log, as JSON


@dataclass(slots=True)
class Record:
    """One message as the index last knew it."""

    uid: int
    modseq: int
    letters: str
    meta: Meta


@dataclass
class Loaded:
    """What ``FolderIndex.load`` found: records by Maildir key, the highest MODSEQ in them,
    the UIDVALIDITY the index was written under (0 if none) and whether anything was lost."""

    records: dict[str, Record] = field(default_factory=dict)
    highest: int = 0
    uidvalidity: int = 0
    damaged: bool = False
    found: bool = False  # a snapshot or log was there at all
    vanished: dict[int, int] = field(default_factory=dict)  # expunged UID -> MODSEQ
    vanished_floor: Optional[int] = None  # expunges above this MODSEQ are all in ``vanished``
    # Whether the MODSEQs can be used: nothing written since the snapshot can have been lost
    # (same boot as the writer, so the page cache kept every line; or a clean close).
    trusted: bool = False


@dataclass
class Others:
    """What other processes logged since this one last read the log (``read_others``):
    whole records (``a`` lines, or every record after another process compacted), the
    latest letters of messages only their flag changes name (``f``), the keys they
    expunged (``x``) with the MODSEQ of each, and the highest MODSEQ among them. ``lost``:
    lines may be missing (the log was dropped or damaged), so MODSEQs beyond ``highest``
    may have been handed out: the caller starts above the uidlist's reservation."""

    records: dict[str, Record] = field(default_factory=dict)
    letters: dict[str, tuple[int, str]] = field(default_factory=dict)
    gone: dict[str, int] = field(default_factory=dict)
    highest: int = 0
    lost: bool = False
    # The directory times each of their changes found and left (``d`` lines, in order):
    # (new/ before, cur/ before, new/ after, cur/ after), for ``Folder`` to tell whether the
    # directories moved by their logged changes alone. ``whole``: read as a whole index
    # (another process compacted, or the log went), which says nothing of that.
    dirs: list[tuple[int, int, int, int]] = field(default_factory=list)
    whole: bool = False

    def latest(self, key: str) -> Optional[tuple[int, str]]:
        """(MODSEQ, letters) another process last gave ``key``, if it logged any."""
        r = self.records.get(key)
        if r is not None:
            return r.modseq, r.letters
        return self.letters.get(key)

    def keys(self) -> set[str]:
        """Every message whose MODSEQ or letters another process changed."""
        return set(self.records) | set(self.letters)


def folder_lock(lock_path: str) -> Optional[int]:
    """(thread) Hold the folder of ``lock_path`` (its ``LOCK_FILE``) for a change, against every other process and
    thread: an flock(2) of ``LOCK_FILE``, opened anew each time (flock treats each open
    file description as its own owner, and a folder deleted and created again gets a new
    file), dropped by the kernel when a process dies, so a ``kill -9`` leaves no stale lock.
    Returns the descriptor for ``folder_unlock``; None, unlocked, when the folder is gone
    (nothing left to change) or the file cannot be created (a read-only folder, which
    nothing can change either)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return None
    except OSError as err:
        log.warn("cannot open {file}: {err}; changing it unlocked", file=lock_path, err=err)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def folder_unlock(fd: Optional[int]) -> None:
    """(thread) Let go of what ``folder_lock`` returned."""
    if fd is not None:
        os.close(fd)  # releases the lock


def record_line(key: str, uid: int, modseq: int, letters: str, meta: Meta) -> Line:
    """The ``a`` line: a message's whole record (new, or its cached facts grew)."""
    return ["a", key, uid, modseq, letters, meta.to_json()]


def flags_line(modseq: int, changed: Iterable[tuple[str, str]]) -> Line:
    """The ``f`` line: (key, letters) whose flags one operation changed, at ``modseq``."""
    return ["f", modseq, [[k, letters] for k, letters in changed]]


def expunge_line(modseq: int, keys: Iterable[str]) -> Line:
    """The ``x`` line: messages gone (expunged, or found gone by a scan) at ``modseq``."""
    return ["x", modseq, list(keys)]


def dirs_line(before: tuple[int, int], after: tuple[int, int]) -> Line:
    """The ``d`` line: the times (ns) of new/ and cur/ one locked change found and left, so
    other processes can tell the directories moved by logged changes alone (no listing
    needed) from something outside the log moving them (``Folder``'s log look)."""
    return ["d", before[0], before[1], after[0], after[1]]


def tombstone_line(uid: int, modseq: int) -> Line:
    """The ``t`` line of a snapshot: message ``uid`` was expunged at ``modseq``."""
    return ["t", uid, modseq]


class FolderIndex:
    """The index files of one folder: load, append changes, compact."""

    def __init__(self, path: str, boot: Optional[str] = None) -> None:
        self.path = path
        self.boot = current_boot() if boot is None else boot
        self.failed = False  # an append failed: the files were dropped, a compaction is due
        self._snap_boot = ""  # the boot that wrote the snapshot
        self._log_boot: Optional[str] = None  # ...and its log (None: no log of its generation)
        self._clean = False  # the log's last line says it was closed cleanly
        self._gen = 0  # generation of the snapshot; the log names it in its first line
        self._log_ready = False  # the log on disk belongs to this generation and ends cleanly
        self.pending = 0  # lines in the log since the snapshot
        # The log file as this process last read or wrote it: (device, inode) and its size.
        # Another process's change shows as a longer log, a compaction as another inode.
        self._log_id: Optional[tuple[int, int]] = None
        self._log_pos = 0
        self._held: Optional[list[Line]] = None  # lines of a change not yet written (``hold``)

    @property
    def index_path(self) -> str:
        return os.path.join(self.path, INDEX_FILE)

    @property
    def path(self) -> str:
        return self._path

    @path.setter
    def path(self, path: str) -> None:
        # Joined once: the log is stat()ed and the lock file opened at every change.
        self._path = path
        self.log_path = os.path.join(path, LOG_FILE)
        self.lock_path = os.path.join(path, LOCK_FILE)

    def due(self, messages: int) -> bool:
        """Whether the log has grown enough that a compaction pays (or an append failed)."""
        return self.failed or self.pending >= max(COMPACT_MIN, COMPACT_FACTOR * messages)

    # -- reading -------------------------------------------------------------------------------

    def load(self) -> Loaded:
        """Read the snapshot and replay the log over it; never raises for bad content."""
        out = Loaded()
        self._snap_boot = ""
        self.failed = False
        self._gen = 0
        self._log_ready = False
        self.pending = 0
        data = _read(self.index_path, out)
        if data:
            if not self._read_snapshot(data, out):
                log.warn("{file} is damaged; rebuilding it from the Maildir", file=self.index_path)
                out.records.clear()
                out.vanished.clear()
                out.vanished_floor = None
                out.highest = 0
                out.damaged = True
                self._gen = 0
        tail = _read(self.log_path, out)
        self._log_boot = None
        self._clean = False
        if tail:
            self._replay(tail, out)
        self._note_log()
        same_boot = (
            bool(self.boot)
            and (self._log_boot if self._log_boot is not None else self._snap_boot) == self.boot
        )
        if self._log_boot is not None:
            out.trusted = same_boot or self._clean
        else:
            # No log of this generation: lines appended to one that a power cut took with it
            # cannot be ruled out unless this is still the boot that wrote the snapshot.
            out.trusted = bool(data) and same_boot
        if out.found and not out.trusted:
            log.info(
                "{file}: written before a restart of the machine without a clean close; "
                "every message gets a new MODSEQ",
                file=self.index_path,
            )
        return out

    def _read_snapshot(self, data: bytes, out: Loaded) -> bool:
        lines = data.split(b"\n")
        try:
            head = json.loads(lines[0])
            if not isinstance(head, dict) or head.get("v") != _VERSION:
                return False
            self._gen = int(head["gen"])
            self._snap_boot = str(head.get("boot", ""))
            out.uidvalidity = int(head.get("uv", 0))
            out.highest = int(head.get("hm", 0))
            # A snapshot without tombstones knows no expunge before its HIGHESTMODSEQ.
            out.vanished_floor = int(head.get("tf", out.highest))
        except (ValueError, KeyError, TypeError):
            return False
        if not lines[-1] == b"":
            return False  # written whole or not at all (rename): a missing end is damage
        for line in lines[1:-1]:
            try:
                _apply_line(json.loads(line), out)
            except (ValueError, KeyError, TypeError, IndexError):
                return False
        return True

    def _replay(self, tail: bytes, out: Loaded) -> None:
        """Apply the log's lines in order up to the first bad one (a write cut short, or
        damage); a log of another generation is left over from before a compaction."""
        lines = tail.split(b"\n")
        try:
            head = json.loads(lines[0])
            gen = int(head["gen"]) if isinstance(head, dict) else -1
        except (ValueError, KeyError, TypeError):
            gen = -1
        if gen != self._gen:
            return  # stale (its changes are in the snapshot) or unreadable: started anew
        self._log_boot = str(head.get("boot", ""))
        good = len(lines[0]) + 1
        ended = True
        for line in lines[1:-1]:
            try:
                v = json.loads(line)
                _apply_line(v, out)
            except (ValueError, KeyError, TypeError, IndexError):
                ended = False
                break
            self._clean = v == ["c"]
            good += len(line) + 1
            self.pending += 1
        if lines[-1] != b"":
            ended = False  # the last line has no end: cut short
        if not ended:
            log.warn(
                "{file}: a damaged or unfinished line after {n} changes; the rest is dropped",
                file=self.log_path,
                n=self.pending,
            )
            out.damaged = True
            try:
                os.truncate(self.log_path, good)  # appends continue after the last good line
            except OSError:
                return
        self._log_ready = True

    def _note_log(self, st: Optional[os.stat_result] = None) -> None:
        """Remember the log file as it is now: everything in it has been read or written."""
        if st is None:
            try:
                st = os.stat(self.log_path)
            except OSError:
                self._log_id, self._log_pos = None, 0
                return
        self._log_id, self._log_pos = (st.st_dev, st.st_ino), st.st_size

    def others_changed(self) -> bool:
        """(locked) Whether another process wrote the log since this one last read or wrote
        it (one stat): it appended (longer), compacted (another file) or dropped it (gone)."""
        try:
            st = os.stat(self.log_path)
        except OSError:
            return self._log_id is not None
        return (st.st_dev, st.st_ino) != self._log_id or st.st_size != self._log_pos

    def read_others(self) -> Others:
        """(locked) What other processes logged since this one last read or wrote the log:
        the lines after the last position, or, when the log was replaced (another process
        compacted), the whole index afresh. Never raises for bad content: a damaged line
        ends the reading there and is cut off (``lost``), as a load does."""
        out = Others()
        try:
            st = os.stat(self.log_path)
        except OSError:
            out.lost = self._log_id is not None  # dropped after a failed append elsewhere
            out.whole = True
            self._log_id, self._log_pos = None, 0
            self._log_ready = False
            return out
        if (st.st_dev, st.st_ino) != self._log_id or st.st_size < self._log_pos:
            loaded = self.load()
            out.records, out.highest = loaded.records, loaded.highest
            out.lost = loaded.damaged or not loaded.found
            out.whole = True
            return out
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_pos)
                tail = f.read()
        except OSError as err:
            log.warn("cannot read {file}: {err}", file=self.log_path, err=err)
            out.lost = True
            return out
        good = 0
        for line in tail.split(b"\n")[:-1]:
            try:
                _apply_other(json.loads(line), out)
            except (ValueError, KeyError, TypeError, IndexError):
                out.lost = True
                break
            good += len(line) + 1
            self.pending += 1
        if good != len(tail):
            # A torn or damaged line (a writer killed in its write): cut off, so that the
            # lines appended after it are not lost to the next load's replay.
            out.lost = True
            log.warn(
                "{file}: a damaged or unfinished line another process wrote; cut off",
                file=self.log_path,
            )
            try:
                os.truncate(self.log_path, self._log_pos + good)
            except OSError:
                pass
        self._log_pos += good
        return out

    # -- writing -------------------------------------------------------------------------------

    def hold(self) -> None:
        """Keep the lines appended from now on until ``release``: one change's lines and its
        ``d`` line go to the log in one ``write``."""
        self._held = []

    def release(self, lines: list[Line]) -> None:
        """Append the lines held since ``hold`` and then ``lines``, in one ``write``."""
        held, self._held = self._held or [], None
        self.append(held + lines)

    def append(self, lines: list[Line]) -> None:
        """Add change lines to the log (one ``write``); a failure is logged, never raised:
        the next compaction writes the state anyway."""
        if self._held is not None:
            self._held.extend(lines)
            return
        if not lines or self.failed:
            return  # after a failure nothing is appended until a compaction wrote it all
        data = b"".join(
            json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n" for line in lines
        )
        try:
            if not self._log_ready:
                self._new_log()
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, data)
                self._note_log(os.fstat(fd))
            finally:
                os.close(fd)
        except FileNotFoundError:
            self._log_ready = False  # the folder went (deleted or renamed meanwhile)
            return
        except OSError as err:
            # The log now lacks a change: dropped with the snapshot, so no load can take the
            # older state for the current one; the next compaction writes both anew.
            log.warn(
                "cannot append to {file}: {err}; the index is dropped until it can be "
                "written whole",
                file=self.log_path,
                err=err,
            )
            self._drop()
            return
        self.pending += len(lines)

    def _drop(self) -> None:
        self.failed = True
        self._log_ready = False
        self._log_id, self._log_pos = None, 0
        for p in (self.index_path, self.log_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as err:
                log.warn("cannot remove {file}: {err}", file=p, err=err)

    def close(self) -> None:
        """Mark the log closed cleanly and make it durable (at shutdown): its MODSEQs are
        then trusted after a restart of the machine too."""
        if self.failed or not self._log_ready:
            return
        # Written now, not held for the end of the change (``hold``): the fsync below must
        # find it in the file, and it must be the log's last line.
        held, self._held = self._held, None
        self.append((held or []) + [["c"]])
        if held is not None:
            self._held = []
        try:
            fd = os.open(self.log_path, os.O_WRONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            log.warn("cannot fsync {file}: {err}", file=self.log_path, err=err)

    def _new_log(self) -> None:
        header = (
            json.dumps({"v": _VERSION, "gen": self._gen, "boot": self.boot}).encode("ascii") + b"\n"
        )
        maildir.write_atomic(self.log_path, header, sync=False)
        self._log_ready = True
        self.pending = 0
        self._note_log()

    def compact(
        self,
        rows: Iterable[tuple[str, Record]],
        highest: int,
        uidvalidity: int,
        vanished: Optional[dict[int, int]] = None,
        vanished_floor: Optional[int] = None,
    ) -> None:
        """Write the whole index as a new snapshot (tmp, fsync, rename) and start an empty
        log of the new generation; a crash between the two leaves a log the next load
        recognises as older and ignores. ``vanished`` (UID -> MODSEQ of its expunge) are
        the tombstones kept, complete above ``vanished_floor`` (default: ``highest``)."""
        gen = self._gen + 1
        head: dict[str, object] = {
            "v": _VERSION,
            "gen": gen,
            "uv": uidvalidity,
            "hm": highest,
            "boot": self.boot,
            "tf": highest if vanished_floor is None else vanished_floor,
        }
        parts = [json.dumps(head).encode("ascii")]
        for uid, modseq in (vanished or {}).items():
            parts.append(json.dumps(tombstone_line(uid, modseq)).encode("ascii"))
        for key, r in rows:
            parts.append(
                json.dumps(
                    record_line(key, r.uid, r.modseq, r.letters, r.meta), separators=(",", ":")
                ).encode("utf-8")
            )
        parts.append(b"")
        if self._held:
            self.release([])  # a change's lines before its snapshot: into the old log
            self.hold()
        try:
            if not os.path.isdir(self.path):
                return
            maildir.write_atomic(self.index_path, b"\n".join(parts))
            self._gen = gen
            self._new_log()
            self.failed = False
        except OSError as err:
            log.warn("cannot write {file}: {err}", file=self.index_path, err=err)
            self._log_ready = False


def _read(path: str, out: Loaded) -> bytes:
    """One of the index files' contents; b"" when it is missing (``out.found`` says whether
    any was there) or unreadable (then ``out.damaged``: the index is rebuilt)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return b""
    except OSError as err:
        log.warn("cannot read {file}: {err}; rebuilding", file=path, err=err)
        out.damaged = True
        return b""
    out.found = True
    return data


def _added(v: list[Any]) -> tuple[str, Record]:
    """An ``a`` (message added) line, checked: its key and record. One reader for this
    process's replay (``_apply_line``) and another process's lines (``_apply_other``)."""
    _, key, uid, modseq, letters, meta = v
    if not (isinstance(key, str) and isinstance(letters, str)):
        raise ValueError("bad record")
    return key, Record(int(uid), int(modseq), letters, Meta.from_json(meta))


def _apply_line(v: object, out: Loaded) -> None:
    if not isinstance(v, list) or not v:
        raise ValueError("not a line")
    kind = v[0]
    if kind == "a":
        key, rec = _added(v)
        out.records[key] = rec
        out.highest = max(out.highest, rec.modseq)
    elif kind == "f":
        modseq = int(v[1])
        for key, letters in v[2]:
            r = out.records.get(key)
            if r is not None and isinstance(letters, str):
                r.letters = letters
                r.modseq = modseq
        out.highest = max(out.highest, modseq)
    elif kind in ("c", "d"):
        # Closed cleanly (FolderIndex.close; more lines may follow after a restart), or
        # the directory times of a change, for other processes that held the folder then.
        pass
    elif kind == "x":
        modseq = int(v[1])
        for key in v[2]:
            r = out.records.pop(key, None)
            if r is not None:
                out.vanished[r.uid] = modseq
        out.highest = max(out.highest, modseq)
    elif kind == "t":
        out.vanished[int(v[1])] = int(v[2])
    else:
        raise ValueError("unknown line")


def _apply_other(v: object, out: Others) -> None:
    """One log line of another process into ``out`` (``read_others``)."""
    if not isinstance(v, list) or not v:
        raise ValueError("not a line")
    kind = v[0]
    if kind == "a":
        key, rec = _added(v)
        out.records[key] = rec
        out.letters.pop(key, None)
        out.highest = max(out.highest, rec.modseq)
    elif kind == "f":
        modseq = int(v[1])
        for key, letters in v[2]:
            if not (isinstance(key, str) and isinstance(letters, str)):
                raise ValueError("bad flags")
            r = out.records.get(key)
            if r is not None:
                r.letters, r.modseq = letters, modseq
            else:
                out.letters[key] = (modseq, letters)
        out.highest = max(out.highest, modseq)
    elif kind == "x":
        modseq = int(v[1])
        for key in v[2]:
            out.records.pop(key, None)
            out.letters.pop(key, None)
            out.gone[key] = modseq
        out.highest = max(out.highest, modseq)
    elif kind == "d":
        out.dirs.append((int(v[1]), int(v[2]), int(v[3]), int(v[4])))
    elif kind not in ("c", "t"):
        raise ValueError("unknown line")


class ModseqAllocator:
    """Hands out MODSEQ values that only grow, within the folder's UIDVALIDITY, across
    restarts, crashes and lost index files (see the module docstring)."""

    def __init__(self, folder: str, ul: uidlist.UidList, floor: int) -> None:
        self.folder = folder
        self._ul = ul
        # Above everything that may have been handed out: the whole reservation, which
        # covers values a lost log tail held; and anything the index holds.
        self.last = max(ul.modseq_reserved, floor)

    def next(self) -> int:
        """A new MODSEQ, durable as reserved before it is returned."""
        n = self.last + 1
        if n > self._ul.modseq_reserved:
            self._ul.modseq_reserved = n + MODSEQ_BLOCK - 1
            uidlist.save(self.folder, self._ul)
        self.last = n
        return n

    def rebase(self, ul: uidlist.UidList) -> None:
        """The uidlist object was replaced (a rebuild): reserve above what it says."""
        self._ul = ul
        self.last = max(self.last, ul.modseq_reserved)

    def share(self, ul: uidlist.UidList, others: Others) -> None:
        """(locked) Another process changed the folder: its uidlist (read afresh) holds the
        reservation, its log lines the MODSEQs it handed out; the next value is above them.
        Only when lines may be lost does it jump above the whole reservation."""
        self._ul = ul
        self.last = max(self.last, others.highest)
        if others.lost:
            self.last = max(self.last, ul.modseq_reserved)


def current_boot() -> str:
    """This boot of the machine (Linux's boot_id): a log written in the same boot lost
    nothing to a process crash, the page cache kept it. "" when unknown (never trusted)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def fresh_modseq(r: Optional[Record], letters: str) -> bool:
    """Whether a message found on disk needs a new MODSEQ: unknown to the index, or its
    flags on disk are not what the index recorded (changed by another program, or a change
    the index never heard of)."""
    return r is None or r.modseq <= 0 or r.letters != letters
