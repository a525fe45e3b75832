"""The on-disk side of one Maildir folder's index: listing new/ and cur/ and reconciling.

Owns what a look at the disk finds: which messages appeared, moved or vanished since the last
look (``Changes``), the UIDs and facts of new ones (``Entry``), whether the directories changed
at all (two stat calls), and extra names a flag change cut short left behind. What other
processes logged (``index.Others``) tells a scan their UIDs, MODSEQs and which of two names of
a message is the newer, so their changes keep the MODSEQ they were given there. Runs in the
folder's runner thread under its lock (``Folder`` is the only user, as a mixin); never touches
views or the reactor, never speaks IMAP.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from cgtwist.logs import Logger
from cgtwist.mailstore import filemeta, index, maildir, uidlist
from cgtwist.mailstore.filemeta import Meta
from cgtwist.mailstore.index import FolderIndex, ModseqAllocator, Record

if TYPE_CHECKING:
    from cgtwist.mailstore.mailbox import MaildirMailbox

_CACHE_SAVE_EVERY = 100  # messages whose derived values grew before they go to the index log
# Messages whose name another process's flag change replaced, remembered until a listing
# (Folder._theirs_stale): that process removes those names within its STALE_LINGER.
THEIRS_STALE_KEPT = 10_000
_MTIME_TRUST = 0.05  # seconds: a directory changed this close to our look is looked at once more (covers coarse kernel timestamp ticks)


@dataclass(slots=True)
class Entry:
    """One message: UID, Maildir key, where its file is, its flags and cached facts."""

    uid: int
    key: str
    sub: str  # "new" or "cur"
    fname: str
    letters: str  # Maildir info letters as on disk
    meta: Meta
    modseq: int = 0  # RFC 7162 MODSEQ: raised by every change of its flags; kept in the index

    def path(self, folder: str) -> str:
        return _child(folder, self.sub, self.fname)


def _child(folder: str, *names: str) -> str:
    """``os.path.join(folder, *names)`` for names that are single path components (``cur``,
    a Maildir file name), in one step: the IMAP floor looks up two or three such paths per
    command, and the join's work in Python was a noticeable part of it."""
    if not folder or folder.endswith("/"):
        return os.path.join(folder, *names)
    return "/".join((folder, *names))


@dataclass
class Changes:
    """What one disk operation or rescan changed, applied to the index in the reactor thread."""

    added: list[Entry] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    moved: dict[int, tuple[str, str, str]] = field(
        default_factory=dict
    )  # uid -> (sub, fname, letters)
    recent: set[int] = field(default_factory=set)
    # The folder's shared first recent UID as read under the flock before this operation
    # (uidlist ``R``): what this process holds unclaimed below it another process claimed.
    first_recent: Optional[int] = None
    claimed: bool = False  # this operation moved it to UIDNEXT for a read-write session here
    mtimes: Optional[tuple[int, int]] = None
    suspect: tuple[bool, bool] = (
        False,
        False,
    )  # (new/, cur/) looked at within _MTIME_TRUST of its change
    keywords: Optional[dict[int, str]] = None
    origin: Any = None  # the view whose command caused this, if any
    rescan: bool = False  # found on disk: others' doing, even when ``origin`` asked for the look
    removed_entries: dict[int, Entry] = field(default_factory=dict)  # filled in by _apply
    stale: dict[str, str] = field(
        default_factory=dict
    )  # cur/ name -> key: replaced, unlink after an fsync
    unstale: set[str] = field(
        default_factory=set
    )  # cur/ names no longer waiting (reused or removed)
    modseqs: dict[int, int] = field(default_factory=dict)  # uid -> its new MODSEQ
    highest: Optional[int] = None  # the folder's HIGHESTMODSEQ after this change
    # The first look: the tombstones the index kept (expunged UID -> MODSEQ) and the MODSEQ
    # above which they are complete (QRESYNC, RFC 7162 §3.2.5.1).
    vanished: Optional[dict[int, int]] = None
    vanished_floor: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.moved)


class Names:
    """One directory's names for a scan: a listing (``base``), or the index's own names
    (``base`` is the very set, not a copy) moved on by the changes other processes logged
    (``DiskScan._logged_listing``); either with what the scan itself added or removed since
    (``plus``, ``minus``). So a look after another process's change of one message costs in
    proportion to that change: what appeared or vanished comes from the differences, not
    from comparing two sets the size of the folder."""

    __slots__ = ("base", "plus", "minus")

    def __init__(self, base: set[str]) -> None:
        self.base = base
        self.plus: set[str] = set()
        self.minus: set[str] = set()

    def __contains__(self, name: object) -> bool:
        return name in self.plus or (name in self.base and name not in self.minus)

    def __iter__(self) -> Iterator[str]:
        yield from self.plus
        for name in self.base:
            if name not in self.minus and name not in self.plus:
                yield name

    def __bool__(self) -> bool:
        return bool(self.plus) or not self.base <= self.minus

    def add(self, name: str) -> None:
        self.plus.add(name)
        self.minus.discard(name)

    def discard(self, name: str) -> None:
        self.plus.discard(name)
        self.minus.add(name)

    def update(self, names: Iterable[str]) -> None:
        for name in names:
            self.add(name)

    def appeared(self, known: set[str]) -> set[str]:
        """The names here that ``known`` (the index's) lacks."""
        out = self.plus - known
        if self.base is not known:
            out |= self.base - known - self.minus
        return out

    def vanished(self, known: set[str]) -> set[str]:
        """The names of ``known`` (the index's) not here."""
        out = (known & self.minus) - self.plus
        if self.base is not known:
            out |= known - self.base - self.plus
        return out


class DiskScan:
    """The scan half of ``Folder``: the attributes below are set by ``Folder.__init__``."""

    log = Logger()
    path: str
    account: str
    name: str
    entries: dict[int, Entry]
    keywords: dict[int, str]
    keys: dict[str, int]
    _names: dict[str, set[str]]
    _ul: Optional[uidlist.UidList]
    _others: Optional[index.Others]
    _mtimes: Optional[tuple[int, int]]
    _suspect: tuple[bool, bool]
    _meta_dirty: set[int]
    _index: FolderIndex
    _modseq: Optional[ModseqAllocator]
    _claiming: bool
    _stale: dict[str, str]
    _theirs_stale: dict[str, list[str]]
    _conflicts: set[str]
    _clock: Callable[[], float]
    _tombstones_kept: Callable[[], int]
    _uidvalidity_source: Optional[Callable[[], int]]
    _views: list[weakref.ReferenceType[MaildirMailbox]]
    vanished: dict[int, int]
    vanished_floor: int

    def _raw_mtimes(self) -> Optional[tuple[int, int]]:
        try:
            return (
                os.stat(_child(self.path, "new")).st_mtime_ns,
                os.stat(_child(self.path, "cur")).st_mtime_ns,
            )
        except OSError:
            return None

    def _dirs_changed(self) -> bool:
        """Whether a rescan is due: a directory time moved, another process appended to the
        index log (a flag set and cleared again keeps the name), or a look made within the same
        timestamp tick as a change (which a later change in that tick would not move) has not
        been confirmed yet by one look after the trust window. Within the window the index is
        trusted, so sessions busy changing the folder do not each relist it per command."""
        m = self._raw_mtimes()
        if m is None or m != self._mtimes:
            return True
        if self._index.others_changed():
            return True  # another process changed it without moving a directory time
        if self._suspect[0] or self._suspect[1]:
            now = self._clock()
            return any(
                s and now - t / 1e9 >= _MTIME_TRUST for s, t in zip(self._suspect, m, strict=True)
            )
        return False

    def _stat_mtimes(self) -> tuple[Optional[tuple[int, int]], tuple[bool, bool]]:
        """(thread) Directory times before a listing, and which of them are too fresh to
        vouch for the listing (same-tick changes could be missed: confirm later)."""
        m = self._raw_mtimes()
        if m is None:
            return None, (False, False)
        now = self._clock()
        return m, (now - m[0] / 1e9 < _MTIME_TRUST, now - m[1] / 1e9 < _MTIME_TRUST)

    def _list(self, sub: str) -> set[str]:
        """(thread) The names in ``sub`` (new/ or cur/) of the folder."""
        try:
            return {n for n in os.listdir(_child(self.path, sub)) if not n.startswith(".")}
        except FileNotFoundError:
            return set()  # deleted under us: its messages are gone; never re-create it

    def _logged_listing(
        self, others: index.Others
    ) -> Optional[tuple[dict[str, Names], tuple[int, int], tuple[bool, bool]]]:
        """(thread, locked) What a listing of new/ and cur/ would find, from the index and
        the changes other processes logged since (``others``), as Dovecot applies another
        process's transaction log instead of rereading the Maildir: so a look after another
        process's STORE, APPEND or EXPUNGE costs in proportion to the change, not the folder.

        Only when the directory times say nothing else changed them: each of their changes
        logged the times it found and left (``index.dirs_line``), and those must chain from
        the times of this process's last look to the times now, per directory. new/ moved
        otherwise (a delivery by LOCAL, which takes no lock) is listed, alone; cur/ moved
        otherwise (a scan elsewhere, a user's ``mv``, a writer killed before its ``d`` line),
        a lost or torn line, another process's compaction, or a last look too close to a
        change of the directory to vouch for itself (``_suspect``) make it None: the caller
        lists both. Every name the lines give a message is checked to exist (a stat each).
        Returns the listing, the directory times now and which of them are too fresh."""
        last = self._mtimes
        if last is None or others.lost or others.whole or self._suspect[1]:
            return None
        now = self._raw_mtimes()
        if now is None:
            return None
        at = list(last)
        kept = [not self._suspect[0], True]
        for d in others.dirs:
            for i in (0, 1):
                if d[i] != at[i]:
                    kept[i] = False  # moved between two logged changes: not by them
                at[i] = d[2 + i]
        kept = [k and at[i] == now[i] for i, k in enumerate(kept)]
        if not kept[1]:
            return None
        listed = {
            "cur": Names(self._names["cur"]),
            "new": Names(self._names["new"] if kept[0] else self._list("new")),
        }
        new_keys: Optional[set[str]] = None
        for key in others.gone:
            uid = self.keys.get(key)
            if uid is not None:
                e = self.entries[uid]
                listed[e.sub].discard(e.fname)
        for key in others.keys():
            theirs = others.latest(key)
            assert theirs is not None
            uid = self.keys.get(key)
            held = self.entries.get(uid) if uid is not None else None
            fname = maildir.join_name(key, theirs[1])
            if held is not None and held.letters == theirs[1]:
                if held.sub == "cur" or not os.path.lexists(_child(self.path, "cur", fname)):
                    continue  # its MODSEQ or cached facts only: the file is where it was
                # Moved out of new/ by a look there (``_moves_logged``).
            if not os.path.lexists(_child(self.path, "cur", fname)):
                # Not under the name the line gives: in new/ (listed: a scan elsewhere
                # indexed a delivery there), else the log does not account for it.
                if new_keys is None:
                    new_keys = {maildir.split_name(n)[0] for n in listed["new"]}
                if kept[0] or key not in new_keys:
                    return None
                continue
            if held is not None:
                listed[held.sub].discard(held.fname)
                if held.sub == "cur":
                    self._theirs_stale.setdefault(key, []).append(held.fname)
                    if len(self._theirs_stale) > THEIRS_STALE_KEPT:
                        del self._theirs_stale[next(iter(self._theirs_stale))]
            listed["cur"].add(fname)
        fresh = now[0] / 1e9 > self._clock() - _MTIME_TRUST
        return listed, (now[0], now[1]), (not kept[0] and fresh, False)

    def _cur_candidates(self, listed: dict[str, Names]) -> set[str]:
        """(thread, locked) The names in cur/ that may hold a message of new/ under its key (a
        move cut short), for ``maildir.move_to_cur``: those that appeared since the last look
        and the cur/ names of known messages whose key is in new/. Not the whole listing,
        each name of which move_to_cur would parse (58 ms a delivery at 10,000 messages)."""
        out = listed["cur"].appeared(self._names["cur"])
        for fname in listed["new"]:
            uid = self.keys.get(maildir.split_name(fname)[0])
            e = self.entries.get(uid) if uid is not None else None
            if e is not None and e.sub == "cur" and e.fname in listed["cur"]:
                out.add(e.fname)
        return out

    def _scan_blocking(self, move_new: bool, origin: Any = None) -> Changes:
        """(thread) List new/ and cur/, reconcile with the index, assign UIDs, save the uidlist."""
        ch = Changes(origin=origin, rescan=True)
        first = self._ul is None
        cache: dict[str, Meta] = {}
        records: dict[str, Record] = {}  # the index's, on the first look
        vanished: dict[int, int] = {}  # the index's tombstones, on the first look
        floor: Optional[int] = None  # below this MODSEQ expunges are not all known
        rebuild = False  # the first look writes a whole new index
        mark: Optional[index.Line] = None  # the first look's MODSEQ, above the log's
        dirty = False
        if first:
            maildir.ensure(self.path)
            ul = uidlist.load(self.path)
            loaded = self._index.load()
            if loaded.found:
                cache = {k: r.meta for k, r in loaded.records.items()}
                cached_uv = loaded.uidvalidity
            else:
                # No index yet: the metadata cache of before the index spares re-reading.
                cache, cached_uv = uidlist.load_cache(self.path)
            ch.keywords = maildir.read_keywords(self.path)
            if (
                ul is None
                and not cache
                and not loaded.found
                and not os.path.exists(os.path.join(self.path, uidlist.CACHE_FILE))
            ):
                ul = uidlist.load_dovecot(self.path)
                if ul is not None:
                    self.log.info(
                        "adopted dovecot-uidlist of {account} {folder}: UIDVALIDITY {uv}",
                        account=self.account,
                        folder=self.name,
                        uv=ul.uidvalidity,
                    )
                    dirty = True
            if ul is None:
                uv = self._new_uidvalidity()
                if uv <= cached_uv:
                    uv = cached_uv + 1
                ul = uidlist.UidList(uidvalidity=uv & 0xFFFFFFFF or 1)
                self.log.info(
                    "rebuilding UID list of {account} {folder}: UIDVALIDITY {uv}",
                    account=self.account,
                    folder=self.name,
                    uv=ul.uidvalidity,
                )
                dirty = True
            self._ul = ul
            usable = loaded.found and loaded.trusted and loaded.uidvalidity == ul.uidvalidity
            if usable:
                records = loaded.records
                vanished = loaded.vanished
                floor = loaded.vanished_floor
                self._modseq = ModseqAllocator(self.path, ul, loaded.highest)
            else:
                # MODSEQ belongs to a UIDVALIDITY (RFC 7162 §3.1.1): under another, with no
                # index, or with one that a power cut may have robbed of changes (a flag set
                # and cleared again would look unchanged), every message starts afresh above
                # the reservation: clients resync, none misses a change.
                self._modseq = ModseqAllocator(self.path, ul, 0)
            rebuild = not usable or loaded.damaged
            if self._modseq.last > loaded.highest:
                # Starting above the reservation: say so in the log, or another process
                # holding the folder would hand out values below the HIGHESTMODSEQ this
                # one reports (a line naming no message, read by every version).
                mark = index.flags_line(self._modseq.last, [])
        else:
            ul = self._ul
        assert ul is not None
        # RFC 3501 §2.3.2 across processes: a message from the shared first recent UID up
        # that the index (another process's log line, or the log of before a restart) knows
        # is \Recent for a session here to claim, as an arrival in new/ is; a list rebuilt by
        # this look knows of none.
        first_recent = ul.first_recent
        recent_known = not dirty or not first
        # Other processes' lines read under the lock (Folder._sync_blocking): the UIDs are in
        # the uidlist, and what they logged keeps its MODSEQ here, as in their process.
        others, self._others = self._others or index.Others(), None
        if not first:
            records = others.records
            cache = {k: r.meta for k, r in records.items()}
        assert ul is not None
        modseqs = self._modseq
        assert modseqs is not None
        lines: list[index.Line] = []  # for the index log
        this_modseq = 0  # one MODSEQ for everything this look found changed

        def bump() -> int:
            nonlocal this_modseq
            if not this_modseq:
                this_modseq = modseqs.next()
            return this_modseq

        logged = None if first else self._logged_listing(others)
        mtimes: Optional[tuple[int, int]]
        if logged is not None:
            listed, mtimes, suspect = logged
        else:
            mtimes, suspect = self._stat_mtimes()
            listed = {sub: Names(self._list(sub)) for sub in ("new", "cur")}
            # Every name in cur/ seen: a name another process replaced is removed below
            # as a second name of its file, or is gone already.
            self._theirs_stale.clear()
        arrived = {
            k for k in (maildir.split_name(n)[0] for n in listed["new"]) if k not in self.keys
        }
        # Messages this look moves out of new/ (key -> cur/ name), and the directory times
        # before and after, when nothing else moved them since the listing.
        moved_out: dict[str, str] = {}
        move_times: Optional[tuple[tuple[int, int], tuple[int, int]]] = None
        if move_new and listed["new"]:
            # Move new/ -> cur/ once a read-write session sees them (maildir(5)), durably and
            # in one batch: one fsync of cur/ and one of new/ for all of them.
            before = self._raw_mtimes()
            moved, failed = maildir.move_to_cur(
                self.path, sorted(listed["new"]), self._cur_candidates(listed)
            )
            after = self._raw_mtimes()
            for fname, err in failed.items():
                self.log.warn("cannot move {file} to cur/: {err}", file=fname, err=err)
            listed["new"] = Names({n for n in listed["new"] if n in failed})
            listed["cur"].update(moved.values())
            if not failed and before is not None and after is not None and before == mtimes:
                moved_out = {maildir.split_name(n)[0]: c for n, c in moved.items()}
                move_times = (before, after)
        # Only names that appeared or vanished since the last look need any work.
        files: dict[str, tuple[str, str]] = {}  # key -> where it is now, for unknown names
        known = self.keys
        twins: list[str] = []  # second cur/ names of a message's file, to remove
        # After a restart, which of two names of a file a flag change made last.
        newest = maildir.newest_names(self.path) if first else {}
        for sub in ("new", "cur"):
            for fname in sorted(listed[sub].appeared(self._names[sub])):
                key = maildir.split_name(fname)[0]
                if sub == "cur":
                    kept = self._cur_name(key, listed["cur"], files, newest, others)
                    if fname in self._stale:
                        if kept is not None and kept != fname:
                            continue  # replaced by a flag change here: flush removes it
                        # Its message's name again: another process set the flags back
                        # before this one removed it (its link found the name there), and
                        # may have removed the name this process gave it. Kept, or the
                        # message would count as expunged here and flush unlink its file.
                        ch.unstale.add(fname)
                    if kept is not None and kept != fname:
                        self._twin_or_conflict(fname, kept, twins)
                        continue
                files[key] = (sub, fname)
        if not first and ch.keywords is None:
            known_letters = {chr(97 + i) for i in self.keywords}
            if any(
                set(maildir.split_name(fname)[1]) - known_letters - set(maildir.LETTER_TO_FLAG)
                for _sub, fname in files.values()
            ):
                # A keyword letter this folder has not read (LOCAL delivery's rule Mark).
                ch.keywords = maildir.read_keywords(self.path)
        for key, (sub, fname) in files.items():
            uid = known.get(key)
            if uid is None:
                continue
            e = self.entries[uid]
            if sub == "cur" and e.sub == "cur" and e.fname != fname and e.fname in listed["cur"]:
                # Another process changed its flags (its log names the new name) and has not
                # yet removed the name it replaced: the message moves, the old name goes.
                ch.moved[uid] = (sub, fname, maildir.split_name(fname)[1])
                self._twin_or_conflict(e.fname, fname, twins)
        if twins:
            self._remove_twins(twins)
        for sub in ("new", "cur"):
            for fname in listed[sub].vanished(self._names[sub]):
                uid = known.get(maildir.split_name(fname)[0])
                if uid is None:
                    continue
                e = self.entries[uid]
                if (e.sub, e.fname) != (sub, fname):
                    continue
                if e.key in files:
                    nsub, nfname = files[e.key]
                    ch.moved[uid] = (
                        nsub,
                        nfname,
                        maildir.split_name(nfname)[1] if nsub == "cur" else "",
                    )
                else:
                    ch.removed.append(uid)
                    if ul.uids.pop(e.key, None) is not None:
                        dirty = True
        new_keys = [k for k in files if k not in known]
        metas: dict[str, Meta] = {}
        for key in new_keys:
            sub, fname = files[key]
            meta = cache.get(key)
            if meta is None:
                try:
                    meta = filemeta.measure(os.path.join(self.path, sub, fname))
                except FileNotFoundError:
                    continue
                except OSError as err:
                    self.log.warn("cannot read {file}: {err}", file=fname, err=err)
                    continue
            metas[key] = meta
        # Keys already in the uidlist keep their UID; the rest get new ones in arrival order.
        fresh = sorted((k for k in metas if k not in ul.uids), key=lambda k: (metas[k].date, k))
        for key in fresh:
            ul.assign(key)
            dirty = True
        if first:
            for key in [k for k in ul.uids if k not in metas]:
                del ul.uids[key]
                dirty = True
        for key, meta in metas.items():
            sub, fname = files[key]
            letters = maildir.split_name(fname)[1] if sub == "cur" else ""
            e = Entry(ul.uids[key], key, sub, fname, letters, meta)
            r = records.get(key)
            if index.fresh_modseq(r, letters):
                e.modseq = bump()
                lines.append(index.record_line(key, e.uid, e.modseq, letters, meta))
            elif r is not None:
                e.modseq = r.modseq
            ch.added.append(e)
            if key in arrived or (recent_known and r is not None and e.uid >= first_recent):
                ch.recent.add(e.uid)
        ch.added.sort(key=lambda e: e.uid)
        # Flags changed on disk by someone else (another program, or our own change that the
        # index never heard of before a crash), and messages gone: a new MODSEQ for each.
        flagged = []
        for uid, (_sub, _fname, letters) in ch.moved.items():
            e = self.entries[uid]
            if set(letters) == set(e.letters):
                continue
            theirs = others.latest(e.key)
            if theirs is not None and set(theirs[1]) == set(letters):
                ch.modseqs[uid] = theirs[0]  # another process's change: its MODSEQ
            else:
                flagged.append((uid, e.key, letters))
        for key in others.keys():
            # Their MODSEQ also where the name came back (flags set and cleared again).
            uid = known.get(key)
            theirs = others.latest(key)
            if uid is None or theirs is None or uid in ch.modseqs or uid in ch.moved:
                continue
            if self.entries[uid].modseq < theirs[0]:
                ch.modseqs[uid] = theirs[0]
        if flagged:
            m = bump()
            ch.modseqs.update((uid, m) for uid, _k, _l in flagged)
            lines.append(index.flags_line(m, [(k, letters) for _u, k, letters in flagged]))
        if ch.removed:
            # Expunged by another process: logged there already.
            gone = [self.entries[uid].key for uid in ch.removed]
            gone = [k for k in gone if k not in others.gone]
            if gone:
                lines.append(index.expunge_line(bump(), gone))
        if first and records.keys() - metas.keys():
            rebuild = True  # messages the index knew are gone: start from what is there
        if first:
            floor = self._first_tombstones(records, metas, vanished, floor, ul, bump)
            ch.vanished, ch.vanished_floor = vanished, floor
        ch.first_recent = first_recent
        if self._claiming and ul.first_recent < ul.uidnext:
            # A read-write session here takes every recent message (Folder._apply): no
            # session in any process gets them after it.
            ul.first_recent = ul.uidnext
            ch.claimed = dirty = True
            if not lines and mark is None:
                lines.append(index.flags_line(modseqs.last, []))  # others look again
        if move_times is not None and not twins and not first:
            mtimes = self._moves_logged(ch, moved_out, move_times, lines, mtimes)
        if dirty and os.path.isdir(self.path):
            uidlist.save(self.path, ul)
        ch.mtimes = mtimes
        ch.suspect = suspect
        ch.highest = modseqs.last
        if first and (rebuild or lines):
            self._index.compact(
                ((e.key, _record(e)) for e in ch.added),
                modseqs.last,
                ul.uidvalidity,
                vanished,
                ch.vanished_floor,
            )
            _drop_old_cache(self.path)
        else:
            # The mark first: the log's lines stay in MODSEQ order (this look's are above it).
            self._index.append(([mark] if mark is not None else []) + lines)
        return ch

    def _moves_logged(
        self,
        ch: Changes,
        moved_out: dict[str, str],
        times: tuple[tuple[int, int], tuple[int, int]],
        lines: list[index.Line],
        mtimes: Optional[tuple[int, int]],
    ) -> Optional[tuple[int, int]]:
        """(thread, locked) This look moved ``moved_out`` from new/ to cur/ and nothing else
        changed cur/ since its listing (``times``: before and after the move): a record line
        for each of them that has none yet, and a ``d`` line, so other processes apply the
        move from the log, as a STORE's (``_logged_listing``); and the directory times this
        process keeps: cur/'s after the move, new/'s before (LOCAL may have delivered into
        new/ meanwhile: the next look lists new/). Unchanged when a moved message did not
        become an entry (it could not be read): the next look lists everything."""
        entries = {e.key: e for e in ch.added}
        for uid, (_sub, fname, letters) in ch.moved.items():
            e = self.entries[uid]
            modseq = ch.modseqs.get(uid, e.modseq)
            entries[e.key] = Entry(uid, e.key, "cur", fname, letters, e.meta, modseq)
        if mtimes is None or not moved_out.keys() <= entries.keys():
            return mtimes
        logged = {line[1] for line in lines if line[0] == "a"}
        for key in moved_out.keys() - logged:
            e = entries[key]
            lines.append(index.record_line(key, e.uid, e.modseq, e.letters, e.meta))
        before, after = times
        lines.append(index.dirs_line(before, (-1, after[1])))
        return mtimes[0], after[1]

    def _first_tombstones(
        self,
        records: dict[str, Record],
        present: dict[str, Meta],
        vanished: dict[int, int],
        floor: Optional[int],
        ul: uidlist.UidList,
        bump: Callable[[], int],
    ) -> int:
        """(thread) The first look's tombstones: those the index kept, plus messages it knew
        that are gone and UIDs handed out that it never recorded (its log lost a tail);
        both at this look's MODSEQ, so a client that saw them hears of them. Returns the
        MODSEQ above which ``vanished`` is complete: without an index, everything until now
        is unknown."""
        if floor is None:
            return self._modseq.last if self._modseq is not None else 0
        for key in records.keys() - present.keys():
            vanished[records[key].uid] = bump()
        top = max((r.uid for r in records.values()), default=0)
        top = max(top, max(vanished, default=0))
        if ul.uidnext - top > self._tombstones_kept():
            return bump()
        held = set(ul.uids.values())
        lost = [u for u in range(top + 1, ul.uidnext) if u not in held]
        for uid in lost:
            vanished[uid] = bump()
        return floor

    def _cur_name(
        self,
        key: str,
        cur: Names,
        files: dict[str, tuple[str, str]],
        newest: dict[str, str],
        others: index.Others,
    ) -> Optional[str]:
        """(thread, locked) The cur/ name kept for ``key`` in a scan: the one another
        process's last flag change made (its log line) if it is there, else the index's, if
        it is still there, else the one the last flag change made (maildir.FLAG_LOG), else
        the first one the scan met."""
        theirs = others.latest(key)
        if theirs is not None and maildir.join_name(key, theirs[1]) in cur:
            return maildir.join_name(key, theirs[1])
        uid = self.keys.get(key)
        if uid is not None:
            e = self.entries[uid]
            if e.sub == "cur" and e.fname in cur:
                return e.fname
        if newest.get(key) in cur:
            return newest[key]
        where = files.get(key)
        return where[1] if where is not None and where[0] == "cur" else None

    def _twin_or_conflict(self, fname: str, kept: str, twins: list[str]) -> None:
        """(thread, locked) A second cur/ name for the key of ``kept``: the same file (a flag
        change or a removal cut short) is one message, whose extra name goes; a different
        file is another program's mistake, logged and left alone (as maildir.move_to_cur)."""
        cur = os.path.join(self.path, "cur")
        try:
            same = os.path.samestat(
                os.lstat(os.path.join(cur, fname)), os.lstat(os.path.join(cur, kept))
            )
        except FileNotFoundError:
            return  # gone meanwhile: the next scan sees what is left
        if same:
            twins.append(fname)
        else:
            self._conflict(fname)

    def _remove_twins(self, twins: list[str]) -> None:
        """(thread, locked) Unlink extra names of messages' files, once the names kept are
        durable (one fsync of cur/ first): an EXPUNGE of the message must not leave one
        behind to come back under a new UID."""
        cur = os.path.join(self.path, "cur")
        maildir.fsync_dir(cur)
        for fname in twins:
            try:
                os.unlink(os.path.join(cur, fname))
            except FileNotFoundError:
                continue
            except OSError as err:
                self.log.warn("cannot remove cur/{file}: {err}", file=fname, err=err)
                continue
            self.log.info(
                "{account} {folder}: removed cur/{file}, a second name of a message's file",
                account=self.account,
                folder=self.name,
                file=fname,
            )

    def _save_metas_blocking(self, uids: set[int]) -> None:
        """(thread, locked) The records of messages whose derived values grew, to the index
        log; or, when the log has grown enough, the whole index anew."""
        if self._ul is None:
            return
        if self._index.due(len(self.entries)) or 2 * len(uids) > len(self.entries):
            self._compact_blocking()
            return
        lines = []
        for uid in uids:
            e = self.entries.get(uid)
            if e is not None:
                lines.append(index.record_line(e.key, e.uid, e.modseq, e.letters, e.meta))
        self._index.append(lines)

    def _compact_blocking(self) -> None:
        """(thread, locked) Write the whole index as a new snapshot and empty its log."""
        if self._ul is None or self._modseq is None:
            return
        # Copies (each one C call, atomic under the GIL): the reactor goes on applying other
        # changes (new tombstones among them) while this thread writes.
        entries = list(self.entries.values())
        vanished = dict(self.vanished)
        self._index.compact(
            ((e.key, _record(e)) for e in entries),
            self._modseq.last,
            self._ul.uidvalidity,
            vanished,
            self.vanished_floor,
        )

    def _new_uidvalidity(self) -> int:
        if self._uidvalidity_source is not None:
            return self._uidvalidity_source()
        return max(1, int(self._clock()) & 0xFFFFFFFF)

    def _conflict(self, fname: str) -> None:
        """(thread, locked) Log, once per name, a cur/ file that is another file's key."""
        if fname not in self._conflicts and len(self._conflicts) < 10_000:
            self._conflicts.add(fname)
            self.log.warn(
                "{account} {folder}: cur/{file} is a different file with the key of "
                "another message; left alone",
                account=self.account,
                folder=self.name,
                file=fname,
            )


def _record(e: Entry) -> Record:
    return Record(e.uid, e.modseq, e.letters, e.meta)


def _drop_old_cache(path: str) -> None:
    """(thread) The index holds what ``cgtwist-cache`` held; one copy is enough."""
    try:
        os.unlink(os.path.join(path, uidlist.CACHE_FILE))
    except OSError:
        pass


def _same_file(a: str, b: str) -> bool:
    """Whether the paths ``a`` and ``b`` name one inode (False when either is gone)."""
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except FileNotFoundError:
        return False
