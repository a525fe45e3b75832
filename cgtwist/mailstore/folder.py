"""One Maildir folder's shared state: UIDs, flags and metadata, kept in step with the disk.

Owns the in-memory index of one folder for every session of the process (sessions hold
``MaildirMailbox`` views onto it). All disk work runs through the injected runner (a thread)
under a per-folder DeferredLock, and the index is only changed in the reactor thread once that
work is done, so concurrent sessions and LOCAL delivery never race. Never speaks IMAP.

Several processes may hold the same folder (IMAP workers, ``cgtwist-admin``), as Dovecot's
do: every change takes the folder's cross-process lock (``index.folder_lock``, an flock) in
its thread and, before anything else, catches up with what other processes did since this
one last held it (``_sync_blocking``: one stat of the index log and one of the uidlist when
nobody did). Their UIDs come from the uidlist read afresh, their MODSEQs from their log
lines; UIDs and MODSEQs are then allocated from that shared state and the change is
appended to the log before the lock goes, so a UID is handed out once and every MODSEQ is
above every one any process handed out before. Their changes reach this process's sessions
as its own (EXISTS, EXPUNGE, FETCH FLAGS with their MODSEQ): an operation that finds some
returns them first (``_Resync``), the reactor applies them, and the operation runs again on
the state it expects.
"""

from __future__ import annotations

import os
import time
import weakref
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Optional, Union

from twisted.internet import defer
from twisted.mail import imap4
from twisted.python.failure import Failure

from cgtwist.logs import Logger
from cgtwist.mailstore import filemeta, index, maildir, quota, uidlist
from cgtwist.mailstore.scan import (
    _CACHE_SAVE_EVERY,
    _MTIME_TRUST,
    Changes,
    DiskScan,
    Entry,
    _same_file,
)

if TYPE_CHECKING:
    from cgtwist.mailstore.mailbox import MaildirMailbox

Runner = Callable[..., "defer.Deferred[Any]"]

STALE_LINGER = 0.2  # seconds a cur/ name replaced by a flag change waits for its batch's fsync...
STALE_BATCH = 256  # ...unless this many are waiting already


class Folder(DiskScan):
    """The shared index of one Maildir folder; get it from ``MailboxNotifier.folder``.

    ``timer`` (an IReactorTime: the reactor, or a task.Clock in tests) delays the batched
    removal of names replaced by flag changes (``STALE_LINGER``); without one (disk work run
    inline) they are removed right after each change. ``usage`` is told the octets and
    messages each ``add`` stores and each ``expunge`` removes (the quota count,
    ``cgtwist.mailstore.quota``).
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        account: str,
        name: str,
        runner: Runner,
        hostname: Optional[str] = None,
        clock: Callable[[], float] = time.time,
        uidvalidity: Optional[Callable[[], int]] = None,
        timer: Any = None,
        stale_linger: float = STALE_LINGER,
        stale_batch: int = STALE_BATCH,
        tombstones_kept: Callable[[], int] = lambda: index.TOMBSTONES_KEPT,
        usage: Callable[[str, int, int], None] = lambda account, octets, messages: None,
        watched: Callable[[Folder, bool], None] = lambda folder, on: None,
    ) -> None:
        self.path = path
        self._watched = watched  # told when the first session comes and the last one leaves
        self._usage = usage  # (account, octets, messages) added (negative: removed)
        self._uidvalidity_source = uidvalidity
        self.account = account
        self.name = name
        self._run = runner
        self._hostname = hostname
        self._clock = clock
        self.lock = defer.DeferredLock()
        self.entries: dict[int, Entry] = {}
        self.keys: dict[str, int] = {}
        self.uids: list[int] = []  # ascending; replaced, never changed in place (views share it)
        self.keywords: dict[int, str] = {}
        self._flag_memo: tuple[dict[int, str], dict[str, frozenset[str]]] = (self.keywords, {})
        self._lower_memo: tuple[dict[int, str], dict[str, frozenset[str]]] = (self.keywords, {})
        # \Recent UIDs no session here claimed yet, as of the last look under the flock
        # (from the shared first recent UID up: another process may claim them first).
        self.unclaimed_recent: set[int] = set()
        # (thread) A read-write session here claims what the running locked operation finds
        # recent: set on the reactor as the operation starts (``_shared``).
        self._claiming = False
        self._recent_floor = 0  # the shared first recent UID as last applied (``_apply``)
        self._in_new = 0  # indexed messages whose file lies in new/
        self._names: dict[str, set[str]] = {"new": set(), "cur": set()}  # file names indexed
        self._ul: Optional[uidlist.UidList] = None
        self._others: Optional[index.Others] = None  # other processes' lines, for the next scan
        self._mtimes: Optional[tuple[int, int]] = None
        self._suspect: tuple[bool, bool] = (False, False)
        self._meta_dirty: set[int] = set()  # messages whose derived values grew, not yet logged
        self._saving = False
        self._compacting = False
        self._index = index.FolderIndex(path)
        self._modseq: Optional[index.ModseqAllocator] = None  # from the first look on
        self.highest_modseq = 0  # HIGHESTMODSEQ (RFC 7162) as applied; set by the first look
        # Tombstones (QRESYNC, RFC 7162 §3.2.5.1): expunged UID -> MODSEQ of the expunge, at
        # most tombstones_kept(), oldest dropped first; complete above vanished_floor.
        self.vanished: dict[int, int] = {}
        self.vanished_floor = 0
        self._views: list[weakref.ReferenceType[MaildirMailbox]] = []
        self._timer = timer
        self._stale_linger = stale_linger
        self._stale_batch = stale_batch
        self._tombstones_kept = tombstones_kept  # imap.tombstones_kept, read at each use
        # Old cur/ names of flag changes (name -> key), still linked to their message until one
        # fsync of cur/ has made every new name durable (see set_flags and flush).
        self._stale: dict[str, str] = {}
        self._flush_call: Any = None  # the pending IDelayedCall of flush, if any
        self._conflicts: set[str] = set()  # cur/ names already logged as another file's key
        # (thread) The running change moved a name its log lines do not name (``_described``).
        self._undescribed = False
        # (thread) cur/ names other processes' logged flag changes replaced, until their
        # flush removes them (key -> names): an EXPUNGE here removes them with their
        # message, so a crash of that process before its flush cannot bring the message
        # back. Cleared by every listing of cur/, which removes such names as second names
        # of a file; the oldest forgotten beyond THEIRS_STALE_KEPT (long flushed by then).
        self._theirs_stale: dict[str, list[str]] = {}
        # Deleted or renamed away by another process, or deleted and made anew under the name
        # (another UIDVALIDITY): not this folder any more, nothing left to do with it.
        self.gone = False

    # -- state ---------------------------------------------------------------------------------

    @property
    def has_new(self) -> bool:
        """Some indexed message still lies in new/ (seen read-only so far)."""
        return self._in_new > 0

    @property
    def loaded(self) -> bool:
        return self._ul is not None

    @property
    def uidvalidity(self) -> int:
        assert self._ul is not None, "folder not loaded"
        return self._ul.uidvalidity

    @property
    def uidnext(self) -> int:
        assert self._ul is not None, "folder not loaded"
        return self._ul.uidnext

    def flags_of(self, entry: Entry) -> frozenset[str]:
        """IMAP flags (without \\Recent) from the entry's Maildir letters."""
        # Few distinct letter strings exist in a folder: remember each one's flags until the
        # keyword table changes (SEARCH and FETCH ask for every message's flags).
        memo = self._flag_memo
        if memo[0] is not self.keywords:
            memo = self._flag_memo = (self.keywords, {})
        hit = memo[1].get(entry.letters)
        if hit is None:
            hit = self._flags_from(entry.letters)
            if len(memo[1]) < 4096:
                memo[1][entry.letters] = hit
        return hit

    def lower_flags_of(self, entry: Entry) -> frozenset[str]:
        """``flags_of`` lower-cased (SEARCH compares flags without case), remembered alike."""
        memo = self._lower_memo
        if memo[0] is not self.keywords:
            memo = self._lower_memo = (self.keywords, {})
        hit = memo[1].get(entry.letters)
        if hit is None:
            hit = frozenset(f.lower() for f in self.flags_of(entry))
            if len(memo[1]) < 4096:
                memo[1][entry.letters] = hit
        return hit

    def _flags_from(self, letters: str) -> frozenset[str]:
        out = set()
        for ch in letters:
            if ch in maildir.LETTER_TO_FLAG:
                out.add(maildir.LETTER_TO_FLAG[ch])
            elif "a" <= ch <= "z":
                kw = self.keywords.get(ord(ch) - 97)
                if kw:
                    out.add(kw)
        return frozenset(out)

    def cache_changed(self, uid: int, soon: bool = True) -> None:
        """Message ``uid``'s cached facts grew (MaildirMessage.cached, or .memo with ``soon``
        False): its record goes to the index log in a batch of ``_CACHE_SAVE_EVERY``, or with
        the next such batch, when the last session leaves, or at shutdown."""
        self._meta_dirty.add(uid)
        if soon and len(self._meta_dirty) >= _CACHE_SAVE_EVERY:
            self._save_metas()

    def _save_metas(self) -> defer.Deferred[None]:
        """(reactor) Log the records of ``_meta_dirty`` in the folder's disk work."""
        if not self._meta_dirty or self._saving or not self.loaded or self.gone:
            return defer.succeed(None)
        self._saving = True
        uids, self._meta_dirty = self._meta_dirty, set()

        def done(result: object) -> None:
            self._saving = False
            if isinstance(result, Failure):
                self.log.failure(
                    "saving the index of {account} {folder} failed",
                    result,
                    account=self.account,
                    folder=self.name,
                )

        return self._locked(self._save_metas_blocking, uids).addBoth(done)

    def _compact_if_due(self) -> None:
        """(reactor) Start a compaction of the index when its log has grown enough."""
        if self._compacting or self.gone or not self._index.due(len(self.entries)):
            return
        self._compacting = True

        def done(result: object) -> None:
            self._compacting = False
            if isinstance(result, Failure):
                self.log.failure(
                    "compacting the index of {account} {folder} failed",
                    result,
                    account=self.account,
                    folder=self.name,
                )

        self._locked(self._compact_blocking).addBoth(done)

    def renamed(self, name: str, path: str) -> None:
        """The folder was renamed (RENAME): its files, index included, are now at ``path``."""
        self.name, self.path = name, path
        self._index.path = path
        if self._modseq is not None:
            self._modseq.folder = path

    def views(self) -> list[MaildirMailbox]:
        alive = []
        for ref in self._views:
            v = ref()
            if v is not None:
                alive.append(v)
        self._views = [weakref.ref(v) for v in alive]
        return alive

    def attach(self, view: MaildirMailbox) -> None:
        views = self.views()
        if view not in views:
            self._views.append(weakref.ref(view))
            if not views:
                self._watched(self, True)

    def detach(self, view: MaildirMailbox) -> None:
        self._views = [r for r in self._views if r() is not None and r() is not view]
        if not self._views:
            self._watched(self, False)
            if self._stale:
                self._flush_logged()
            if self._meta_dirty:
                self._save_metas()

    def _wants_new_moved(self) -> bool:
        return any(v.isWriteable() for v in self.views())

    def _has_claimer(self) -> bool:
        """A selected read-write session (SELECT, not EXAMINE, STATUS or an APPEND target):
        what a locked operation finds recent is its (RFC 3501 §2.3.2)."""
        for ref in self._views:  # not views(): this runs before every locked operation
            v = ref()
            if v is not None and v.rw and v.listeners:
                return True
        return False

    def confirm_claim(self, view: MaildirMailbox, uids: set[int]) -> None:
        """(reactor) ``view`` took ``uids`` as its \\Recent from what this process held
        unclaimed: record the claim in the shared first recent UID under the flock. Those
        another process claimed first (below that UID by then) ``view`` gives back."""
        if not uids or self.gone:
            return

        def done(lost: set[int]) -> None:
            if lost:
                view.lost_recent(lost)

        def failed(f: Failure) -> None:
            if not isinstance(f.value, FolderGone):
                self.log.failure(
                    "{account} {folder}: \\Recent claim", f, account=self.account, folder=self.name
                )

        self._locked(self._claim_blocking, uids).addCallbacks(done, failed)

    def _claim_blocking(self, uids: set[int]) -> set[int]:
        """(thread, flock held, others' changes applied) Move the shared first recent UID
        above ``uids``; the ones already below it are another process's."""
        ul = self._ul
        if ul is None or self._modseq is None:
            return set()
        first = ul.first_recent
        top = min(max(uids) + 1, ul.uidnext)
        if top > first:
            ul.first_recent = top
            uidlist.save(self.path, ul)
            self._index.append([index.flags_line(self._modseq.last, [])])  # others look again
        return {u for u in uids if u < first}

    # -- serialised disk work ------------------------------------------------------------------

    def _locked(self, fn: Callable[..., object], *args: object) -> defer.Deferred[Any]:
        """Run blocking ``fn`` in the runner while holding the folder lock; then apply its
        Changes (if it returns some, alone or as the first item of a tuple) in this thread."""
        return self.lock.run(lambda: self._shared(fn, *args))

    def _shared(
        self, fn: Callable[..., object], *args: object, scan: bool = False
    ) -> defer.Deferred[Any]:
        """(reactor, holding ``lock``) Run ``fn`` in the runner under the folder's
        cross-process lock, after this process caught up with what others changed; a scan
        (``scan``) takes their changes itself, any other operation first has them applied
        here (sessions told), then runs on the state it expects."""
        if self.gone:
            return defer.fail(FolderGone())
        self._claiming = self._has_claimer()
        d = self._run(self._shared_blocking, scan, fn, args)

        def done(result: object) -> object:
            if isinstance(result, _Gone):
                self._vanish()
                if scan:
                    return Changes()
                raise FolderGone()
            if isinstance(result, _Resync):
                self._apply(result.changes)
                return self._shared(fn, *args, scan=scan)
            return self._apply_result(result)

        return d.addCallback(done)

    def _shared_blocking(
        self, scan: bool, fn: Callable[..., object], args: tuple[object, ...]
    ) -> object:
        """(thread) ``fn(*args)`` under ``index.folder_lock``; a ``_Resync`` instead when other
        processes changed the folder since this one last held it and ``fn`` is no scan."""
        fd = index.folder_lock(self._index.lock_path)
        try:
            if fd is None:
                # Unlocked: the folder is gone (or cannot be written), nobody changes it
                # any more; gone for good once its uidlist went too.
                if self._ul is not None and uidlist.stamp(self.path) is None:
                    return _Gone()
                others = None
            else:
                others = self._sync_blocking(scan)
            if isinstance(others, _Gone):
                return others
            if others is not None:
                return _Resync(others)
            if scan or fd is None:
                return fn(*args)
            return self._described(fn, args)
        finally:
            index.folder_unlock(fd)

    def _described(self, fn: Callable[..., object], args: tuple[object, ...]) -> object:
        """(thread, cross-process locked) ``fn(*args)``, a change whose every effect on new/
        and cur/ its own log lines describe (STORE, EXPUNGE, APPEND, the removal of names
        replaced), followed by a ``d`` line with the directory times it found and left: a
        process that sees the times moved by such lines alone applies the lines instead of
        listing the folder (``DiskScan._logged_listing``). new/ counts as left as it was
        found unless the change moved it: LOCAL delivers into new/ without this lock, so a
        time of new/ moved during the change cannot be vouched for (another look lists new/).
        A change that cannot describe what it did (``_undescribed``) writes no ``d`` line,
        and without one nobody trusts the times after it: the next look lists the folder."""
        self._undescribed = False
        before = self._raw_mtimes()
        lines: list[index.Line] = []
        self._index.hold()
        try:
            result = fn(*args)
            after = self._raw_mtimes()
            if before is not None and after is not None and before != after:
                if not self._undescribed:
                    left = (before[0] if after[0] == before[0] else -1, after[1])
                    lines.append(index.dirs_line(before, left))
        finally:
            self._index.release(lines)
        return result

    def _sync_blocking(self, scan: bool) -> Union[Changes, _Gone, None]:
        """(thread, cross-process locked) Read what other processes changed since this one
        last held the lock, as Dovecot syncs its index: one stat of the index log when
        nobody did (every change of the uidlist that matters is followed by a log line in
        the same hold of the lock). Otherwise the uidlist is read afresh if it changed too
        (their UIDs and MODSEQ reservation), their log lines give MODSEQs (the next one is
        above all), and a scan of the disk, told their UIDs, MODSEQs and flags, makes the
        Changes to apply first (None: nothing to apply, or ``scan`` and the caller's scan
        uses them). That scan leaves new/ as it is: the next refresh moves what is there."""
        if self._ul is None or self._modseq is None:
            return None  # the first look reads everything anyway
        if not self._index.others_changed():
            return None
        others = self._index.read_others()
        stamp = uidlist.stamp(self.path)
        if stamp != self._ul.stamp:
            fresh = None
            if stamp is not None and not (others.lost or others.whole):
                # Their UIDs are in their lines: the list's first line, not all of it.
                added = {k: r.uid for k, r in others.records.items()}
                fresh = uidlist.moved_on(self.path, self._ul, added, others.gone)
            if fresh is None and stamp is not None:
                fresh = uidlist.load(self.path)
            if fresh is None or fresh.uidvalidity != self._ul.uidvalidity:
                # Deleted, or deleted and made anew (another UIDVALIDITY), by another
                # process: the sessions here must not see another folder's UIDs as this one's.
                return _Gone()
            self._ul = fresh
        self._modseq.share(self._ul, others)
        if self._others is not None:  # not consumed yet (a failed scan): keep the older
            others = _merged(self._others, others)
        self._others = others
        if scan:
            return None
        return self._scan_blocking(False, None)

    def _own_change(
        self, fn: Callable[[], tuple[Changes, Any]]
    ) -> Callable[[], tuple[Changes, Any]]:
        """(thread) Wrap an operation so that, when nobody else touched the folder since the
        last look and new/ stayed as it was, the directory times after it are trusted: the next
        command needs no rescan for a change we made ourselves (STORE, EXPUNGE, APPEND)."""

        def tracked() -> tuple[Changes, Any]:
            pre = self._raw_mtimes()
            last = self._mtimes
            result = fn()
            post = self._raw_mtimes()
            if pre is None or post is None or last is None or pre[1] != last[1]:
                mtimes = None  # cur/ changed outside: the next look lists everything
            elif pre[0] == last[0] and post[0] == pre[0]:
                mtimes = post
            else:
                # new/ moved (LOCAL delivers without the lock, any time): cur/ is vouched
                # for, new/ keeps the time of the last look, so the next look lists new/.
                mtimes = (last[0], post[1])
            result[0].mtimes = mtimes
            # new/ is as it was at the last look, so is whether that look needs confirming.
            result[0].suspect = self._suspect
            return result

        return tracked

    def _apply_result(self, result: Any) -> Any:
        ch = (
            result[0]
            if isinstance(result, tuple) and result and isinstance(result[0], Changes)
            else result
        )
        if isinstance(ch, Changes):
            self._apply(ch)
        return result

    def refresh(
        self, force: bool = False, origin: Optional[MaildirMailbox] = None
    ) -> defer.Deferred[Changes]:
        """Bring the index in step with the disk; cheap (two stat calls) when nothing changed.

        Loads the uidlist on first use (rebuilding it, with a new UIDVALIDITY, if lost). New mail
        in ``new/`` is moved to ``cur/`` when a read-write session has the folder open.
        """
        if self.gone:
            return defer.succeed(Changes())
        if self.loaded and not force:
            if not self.lock.locked:
                if not self._dirs_changed():
                    return defer.succeed(Changes())
            else:
                # An operation (another session's STORE, say) is moving the directory times
                # right now; judge them once it has been applied, or every command arriving
                # meanwhile would relist the folder for a change we made ourselves.
                return self.lock.run(self._rescan_if_changed, origin)
        move = self._wants_new_moved()
        return self.lock.run(lambda: self._shared(self._scan_blocking, move, origin, scan=True))

    @property
    def unconfirmed(self) -> bool:
        """The last look was made so soon after a directory changed that a change within the
        same timestamp tick would not show: ``refresh`` looks again after ``confirm_after``."""
        return self._suspect[0] or self._suspect[1]

    confirm_after = _MTIME_TRUST

    def log_is_own(self) -> bool:
        """(reactor, one stat) Whether the index log is as this process last wrote or read
        it, with no disk work of its own running: a grown log was this process's doing."""
        return (
            self.loaded
            and not self.gone
            and not self.lock.locked
            and not self._index.others_changed()
        )

    def in_step(self) -> bool:
        """(reactor) Whether ``refresh()`` would find nothing to do: loaded, no disk work
        running and no directory time or other process's log moved (three stat calls).
        For the IMAP per-command check, which then needs no Deferred."""
        if self.gone:
            return True
        return self.loaded and not self.lock.locked and not self._dirs_changed()

    def _rescan_if_changed(self, origin: Optional[MaildirMailbox]) -> defer.Deferred[Changes]:
        """(reactor, locked) Rescan unless the directories are as the index last saw them."""
        if not self._dirs_changed():
            return defer.succeed(Changes())
        return self._shared(self._scan_blocking, self._wants_new_moved(), origin, scan=True)

    def _vanish(self) -> None:
        """(reactor) Another process deleted the folder (or renamed it away, or deleted it and
        made a new one under its name): every message of it is gone for the sessions that
        have it selected (EXPUNGE each), and their commands on it fail with ``FolderGone``
        (NO), as after a DELETE in this process; a new SELECT gets the folder now there."""
        if self.gone:
            return
        self.gone = True
        self.log.info(
            "{account} {folder} was deleted or replaced by another process",
            account=self.account,
            folder=self.name,
        )
        self._stale.clear()
        self._meta_dirty.clear()
        self._apply(Changes(removed=list(self.uids), mtimes=self._mtimes, rescan=True))
        self._watched(self, False)

    def _apply(self, ch: Changes) -> None:
        """(reactor) Apply Changes to the index and tell every open view."""
        if ch.keywords is not None:
            self.keywords = ch.keywords
        self._mtimes = ch.mtimes
        self._suspect = ch.suspect
        flag_changes: dict[int, frozenset[str]] = {}
        if ch.vanished is not None:
            self.vanished, self.vanished_floor = ch.vanished, ch.vanished_floor
        if ch.removed and ch.highest is not None:
            self._tombstones(ch.removed, ch.highest)
        for uid in ch.removed:
            e = self.entries.pop(uid, None)
            if e is not None:
                self.keys.pop(e.key, None)
                self._names[e.sub].discard(e.fname)
                self._in_new -= e.sub == "new"
                ch.removed_entries[uid] = e
            self.unclaimed_recent.discard(uid)
        if ch.removed:
            gone = set(ch.removed)
            self.uids = [u for u in self.uids if u not in gone]
        for uid, (sub, fname, letters) in ch.moved.items():
            e = self.entries.get(uid)
            if e is None:
                continue
            before = self.flags_of(e)
            self._names[e.sub].discard(e.fname)
            self._names[sub].add(fname)
            self._in_new += (sub == "new") - (e.sub == "new")
            e.sub, e.fname, e.letters = sub, fname, letters
            after = self.flags_of(e)
            if after != before:
                flag_changes[uid] = after
        for uid, modseq in ch.modseqs.items():
            e = self.entries.get(uid)
            if e is not None:
                e.modseq = modseq
        if ch.highest is not None:
            self.highest_modseq = ch.highest
        for e in ch.added:
            self.entries[e.uid] = e
            self.keys[e.key] = e.uid
            self._names[e.sub].add(e.fname)
            self._in_new += e.sub == "new"
        if ch.added:
            # A new list, never a change in place: sessions' views share this one
            # (MaildirMailbox._seq) instead of each holding a copy.
            uids = self.uids + [e.uid for e in ch.added]
            if len(uids) > 1 and uids[-len(ch.added) - 1 :] != sorted(uids[-len(ch.added) - 1 :]):
                uids.sort()
            self.uids = uids
        self.unclaimed_recent |= ch.recent
        if ch.first_recent is not None and ch.first_recent > self._recent_floor:
            # The shared first recent UID moved (it only grows): below it another process
            # claimed. Only then a pass over the set, which may hold a whole folder.
            self._recent_floor = ch.first_recent
            self.unclaimed_recent = {u for u in self.unclaimed_recent if u >= ch.first_recent}
        for fname in ch.unstale:
            self._stale.pop(fname, None)
        if ch.stale:
            self._stale.update(ch.stale)
            self._stale_added()
        views = self.views()
        writable = [v for v in views if v.isWriteable() and v.listeners]
        claimed: set[int] = set()
        claimer = None
        if writable:
            claimer = ch.origin if ch.origin in writable else writable[0]
            claimed, self.unclaimed_recent = self.unclaimed_recent, set()
            if not ch.claimed:
                self.confirm_claim(claimer, claimed)
        elif ch.claimed:
            # Claimed under the flock for a session that has left since: recent for nobody.
            self.unclaimed_recent = set()
        for v in views:
            v._folder_changed(ch, flag_changes, claimed if v is claimer else set())
        self._compact_if_due()

    def _tombstones(self, uids: Iterable[int], modseq: int) -> None:
        """(reactor) Remember ``uids`` as expunged at ``modseq``; forget the oldest beyond
        ``tombstones_kept()`` (imap.tombstones_kept), raising the floor to what they knew."""
        for uid in uids:
            self.vanished.pop(uid, None)
            self.vanished[uid] = modseq
        kept = max(1, self._tombstones_kept())
        while len(self.vanished) > kept:
            oldest = next(iter(self.vanished))
            self.vanished_floor = max(self.vanished_floor, self.vanished.pop(oldest))

    def vanished_since(self, modseq: int) -> Optional[list[int]]:
        """UIDs expunged after ``modseq``, ascending; None when that is before what the
        tombstones remember (the caller then reports every UID not in the folder)."""
        if modseq < self.vanished_floor:
            return None
        return sorted(u for u, m in self.vanished.items() if m > modseq)

    # -- replaced names: one fsync of cur/ for a burst of flag changes -------------------------

    def _stale_added(self) -> None:
        """(reactor) Names were replaced: remove them in a batch, soon but not now."""
        if len(self._stale) >= self._stale_batch or self._timer is None:
            self._flush_logged()
        elif self._flush_call is None:
            self._flush_call = self._timer.callLater(self._stale_linger, self._flush_logged)

    def _flush_logged(self) -> None:
        """flush, for callers that do not wait: a failure is logged (the names stay)."""
        self.flush().addErrback(
            lambda f: self.log.failure(
                "removing replaced names in {account} {folder} failed",
                f,
                account=self.account,
                folder=self.name,
            )
        )

    def flush(self, final: bool = False) -> defer.Deferred[None]:
        """Make the names of every flag change so far durable (one fsync of cur/) and then
        remove the names they replaced; queued behind the folder's disk work, never on the
        reactor. Called after ``STALE_LINGER`` or ``STALE_BATCH`` names, when the last session
        leaves and at shutdown (``MailboxNotifier.flush``); a cut before it keeps the old
        names, which the next scan removes (same inode) or reverts the flags to."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()

        def go() -> defer.Deferred[Any]:
            # Taken under the lock: no flag change links a name between this and the fsync.
            names, self._stale = self._stale, {}
            if not names:
                return defer.succeed(None)
            d = self._shared(self._own_change(lambda: self._flush_blocking(names)))

            def done(result: tuple[Changes, dict[str, str]]) -> None:
                # Left on disk (an error other than "gone"): an EXPUNGE of the message must
                # still remove them, so they stay known; the next batch tries again.
                for fname, key in result[1].items():
                    self._stale.setdefault(fname, key)

            return d.addCallback(done)

        # Derived values not yet logged go too; at shutdown (``final``) the index log is then
        # closed cleanly, so its MODSEQs are trusted after a restart of the machine.
        d = self.lock.run(go).addCallback(lambda _: self._save_metas())
        if final:
            d.addCallback(
                lambda _: self._locked(self._index.close) if self.loaded and not self.gone else None
            )

        # Deleted by another process before this one noticed: its replaced names went with
        # it, and there is no index left to close.
        def gone(result: object) -> object:
            if isinstance(result, Failure) and isinstance(result.value, FolderGone):
                return None
            return result

        flushed: defer.Deferred[None] = d.addBoth(gone)
        return flushed

    def _flush_blocking(self, names: dict[str, str]) -> tuple[Changes, dict[str, str]]:
        """(thread, locked) fsync cur/, then unlink ``names``: every name a flag change made is
        durable before the one it replaced goes, so a power cut at any moment leaves each
        message at least one durable name (a removal not yet on disk leaves a second name of
        the same inode, which the next scan removes). Returns the names it could not remove."""
        cur = os.path.join(self.path, "cur")
        try:
            maildir.fsync_dir(cur)
        except FileNotFoundError:
            return Changes(), {}  # the folder was deleted meanwhile
        except OSError as err:
            self.log.warn("cannot fsync {dir}: {err}; replaced names kept", dir=cur, err=err)
            return Changes(), names
        left: dict[str, str] = {}
        for fname, key in names.items():
            uid = self.keys.get(key)
            if uid is not None and self.entries[uid].fname == fname:
                # Its message's name again: another process set the flags back meanwhile
                # (a new link under the old name), and this name is all it has now.
                continue
            try:
                os.unlink(os.path.join(cur, fname))
            except FileNotFoundError:
                pass
            except OSError as err:
                self.log.warn("cannot remove replaced name {file}: {err}", file=fname, err=err)
                left[fname] = key
        if not left:
            maildir.clear_renames(self.path)
        return Changes(), left

    # -- operations (each serialised; each returns after the index is updated) -----------------

    def set_flags(
        self,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: int,
        origin: Any = None,
        unchanged_since: Optional[int] = None,
        refused: Optional[set[int]] = None,
    ) -> defer.Deferred[dict[int, frozenset[str]]]:
        """STORE: mode 1 adds, -1 removes, 0 replaces ``flags`` on ``uids``; fires with
        {uid: new flags} for the messages that still exist. \\Recent is ignored (RFC 3501 §2.3.2).
        With ``unchanged_since`` (CONDSTORE, RFC 7162 §3.1.3) a message whose MODSEQ is above
        it is left alone and added to ``refused``; the test and the change are one step under
        the folder lock, so no other change slips in between."""
        wanted = [maildir.canonical_flag(f) for f in flags if f.lower() != "\\recent"]
        uids = list(uids)

        def work() -> tuple[Changes, list[int]]:
            ch = Changes(origin=origin)
            mine, keywords = self._letters_blocking(wanted, ch, allocate=mode != -1)
            known = set(maildir.LETTER_TO_FLAG) | {chr(97 + i) for i in keywords}
            done = []
            from_new: list[str] = []
            renames: list[tuple[str, str]] = []
            for uid in uids:
                e = self.entries.get(uid)
                if e is None:
                    continue
                if unchanged_since is not None and e.modseq > unchanged_since:
                    if refused is not None:
                        refused.add(uid)
                    continue
                cur = set(e.letters)
                if mode == 1:
                    new = cur | mine
                elif mode == -1:
                    new = cur - mine
                else:
                    new = (cur - known) | mine
                fname = maildir.join_name(e.key, new)
                if e.sub == "cur" and fname == e.fname:
                    done.append(uid)
                    continue
                src, dest = e.path(self.path), os.path.join(self.path, "cur", fname)
                try:
                    # A link, not a rename: a rename's removal of the old name can reach the
                    # disk before the new name (no journal: the message ends in lost+found),
                    # and an fsync per STORE is too slow. The old name stays until flush has
                    # fsynced cur/ once for a whole burst of changes. Until then a power cut
                    # keeps the old name, and so may revert these flags: acceptable, flags are
                    # not acknowledged mail (docs/DEVELOPING.md, Maildir durability).
                    os.link(src, dest)
                except FileNotFoundError:
                    continue  # expunged or renamed elsewhere: the next rescan sees it
                except FileExistsError:
                    # The name this change wants is still there: a name replaced by an
                    # earlier change not yet flushed (flags toggled back), or a leftover of a
                    # cut; if it is this message's file, it simply becomes its name again.
                    if not _same_file(src, dest):
                        self._conflict(fname)
                        continue
                    ch.unstale.add(fname)
                if e.sub == "new":
                    # Out of new/ the safe way (see maildir.move_to_cur): the new/ name goes
                    # once the cur/ name is durable, before the answer.
                    from_new.append(src)
                else:
                    ch.stale[e.fname] = e.key
                    renames.append((e.fname, fname))
                ch.moved[uid] = ("cur", fname, "".join(sorted(new)))
                done.append(uid)
            # Which of the two names is the newer, for a scan after a crash of this process
            # (both are on disk then): the answered flags survive a kill -9.
            maildir.note_renames(self.path, renames)
            if from_new:
                maildir.fsync_dir(os.path.join(self.path, "cur"))
                for p in from_new:
                    try:
                        os.unlink(p)
                    except FileNotFoundError:
                        pass
                maildir.fsync_dir(os.path.join(self.path, "new"))
            # One MODSEQ for the messages whose flags this STORE changed (RFC 7162 §3.1.3:
            # one that changed nothing keeps its MODSEQ).
            changed = [
                (uid, self.entries[uid].key, letters)
                for uid, (_sub, _fname, letters) in ch.moved.items()
                if set(letters) != set(self.entries[uid].letters)
            ]
            if len(changed) != len(ch.moved):
                # Renamed with its flags as they were (out of new/, or a name not in
                # maildir(5)'s order): no line names it, other processes must look.
                self._undescribed = True
            if changed:
                assert self._modseq is not None
                m = self._modseq.next()
                ch.modseqs.update((uid, m) for uid, _k, _l in changed)
                self._index.append([index.flags_line(m, [(k, ls) for _u, k, ls in changed])])
                ch.highest = m
            return ch, done

        d = self._locked(self._own_change(work))
        return d.addCallback(
            lambda r: {u: self.flags_of(self.entries[u]) for u in r[1] if u in self.entries}
        )

    def _letters_blocking(
        self, flags: Iterable[str], ch: Changes, allocate: bool
    ) -> tuple[set[str], dict[int, str]]:
        """(thread, locked) Maildir letters for ``flags``: system flags map to capitals,
        keywords to Dovecot's a..z, allocating letters (and rewriting dovecot-keywords) when
        ``allocate``. Keywords beyond 26 are dropped (PERMANENTFLAGS then lacks ``\\*``)."""
        flags = [maildir.canonical_flag(f) for f in flags]
        keywords = dict(ch.keywords if ch.keywords is not None else self.keywords)
        known = {n.lower() for n in keywords.values()}
        new = [
            f
            for f in flags
            if f not in maildir.FLAG_TO_LETTER and _valid_keyword(f) and f.lower() not in known
        ]
        if allocate and new:
            # The process's one allocator, shared with LOCAL delivery's rule Mark: it reads
            # the map on disk afresh under its lock, so a letter another writer allocated
            # since this folder read the map is never handed out again.
            keywords = maildir.allocate_keywords(self.path, new, known=keywords)
            ch.keywords = keywords
        index_of: dict[str, int] = {}
        for i, n in sorted(keywords.items()):
            index_of.setdefault(n.lower(), i)
        out: set[str] = set()
        for f in flags:
            if f in maildir.FLAG_TO_LETTER:
                out.add(maildir.FLAG_TO_LETTER[f])
            elif _valid_keyword(f) and f.lower() in index_of:
                out.add(chr(97 + index_of[f.lower()]))
        return out, keywords

    def expunge(self, uids: Iterable[int], origin: Any = None) -> defer.Deferred[list[int]]:
        """Delete the files of ``uids``; fires with the UIDs removed. UIDs are never reused."""
        uids = list(uids)
        freed = [0, 0]  # octets, messages: the quota count's change

        def work() -> tuple[Changes, list[int]]:
            assert self._ul is not None
            ch = Changes(origin=origin)
            touched: set[str] = set()
            # Names replaced by flag changes not yet flushed go with their message (no fsync
            # needed first: the message is meant to go), or a later scan would find one and
            # bring the message back under a new UID.
            stale_of: dict[str, list[str]] = {}
            for fname, key in self._stale.items():
                stale_of.setdefault(key, []).append(fname)
            for uid in uids:
                e = self.entries.get(uid)
                if e is None:
                    continue
                theirs = self._theirs_stale.pop(e.key, [])
                paths = [(e.sub, e.fname)] + [
                    ("cur", n) for n in (*stale_of.get(e.key, ()), *theirs)
                ]
                octets = quota.file_octets(e.path(self.path))
                for i, (sub, fname) in enumerate(paths):
                    try:
                        os.unlink(os.path.join(self.path, sub, fname))
                        touched.add(sub)
                        if i == 0:
                            freed[0] += octets
                            freed[1] += 1
                    except FileNotFoundError:
                        pass
                ch.unstale.update(stale_of.get(e.key, ()))
                self._ul.uids.pop(e.key, None)
                ch.removed.append(uid)
            if ch.removed and os.path.isdir(os.path.join(self.path, "cur")):
                # The removals durable before the uidlist forgets their keys: a file whose
                # unlink a cut undid would otherwise come back under a new UID.
                for sub in sorted(touched):
                    maildir.fsync_dir(os.path.join(self.path, sub))
                assert self._modseq is not None
                m = self._modseq.next()
                uidlist.save(self.path, self._ul)
                self._index.append(
                    [index.expunge_line(m, [self.entries[uid].key for uid in ch.removed])]
                )
                ch.highest = m
            return ch, ch.removed

        def counted(result: tuple[Changes, list[int]]) -> list[int]:
            if freed[1]:
                self._usage(self.account, -freed[0], -freed[1])
            return result[1]

        return self._locked(self._own_change(work)).addCallback(counted)

    def add(
        self,
        sources: list[tuple[Union[bytes, BinaryIO, str], Iterable[str], Optional[float]]],
        origin: Any = None,
    ) -> defer.Deferred[list[int]]:
        """APPEND/COPY into this folder: each source is (bytes | binary file | path to link,
        flags, internal date as epoch or None). Durable before it fires with the new UIDs.
        The new messages are \\Recent for the first read-write session (RFC 3501 §6.3.11)."""
        added = [0, 0]  # octets, messages: the quota count's change

        def work() -> tuple[Changes, list[int]]:
            assert self._ul is not None
            ch = Changes(origin=origin)
            stored: list[tuple[str, str]] = []  # (key, name in cur/)
            try:
                for source, flags, date in sources:
                    letters = "".join(
                        sorted(
                            self._letters_blocking(
                                [f for f in flags if f.lower() != "\\recent"], ch, allocate=True
                            )[0]
                        )
                    )
                    stored.append(self._deliver_blocking(source, letters, date))
                # One fsync of cur/ for the batch: the new names are durable before any UID
                # is saved or reported (the tagged OK of APPEND, COPY, MOVE).
                maildir.fsync_dir(os.path.join(self.path, "cur"))
            except BaseException:
                # RFC 3501 §6.4.7: a failed COPY leaves the destination as it was.
                for _key, fname in stored:
                    try:
                        os.unlink(os.path.join(self.path, "cur", fname))
                    except OSError:
                        pass
                raise
            assert self._modseq is not None
            m = self._modseq.next()
            lines = []
            for key, fname in stored:
                meta = filemeta.measure(os.path.join(self.path, "cur", fname))
                added[0] += quota.file_octets(os.path.join(self.path, "cur", fname))
                added[1] += 1
                uid = self._ul.assign(key)
                letters = maildir.split_name(fname)[1]
                ch.added.append(Entry(uid, key, "cur", fname, letters, meta, m))
                ch.recent.add(uid)
                lines.append(index.record_line(key, uid, m, letters, meta))
            ch.first_recent = self._ul.first_recent
            if self._claiming:
                # Recent for a selected session here: in the same save, nobody else's.
                self._ul.first_recent = self._ul.uidnext
                ch.claimed = True
            uidlist.save(self.path, self._ul)
            self._index.append(lines)
            ch.highest = m
            return ch, [e.uid for e in ch.added]

        def first_load(_: object) -> defer.Deferred[Any]:
            return self._locked(self._own_change(work))

        def counted(result: tuple[Changes, list[int]]) -> list[int]:
            self._usage(self.account, added[0], added[1])
            return result[1]

        return self.refresh().addCallback(first_load).addCallback(counted)

    def _deliver_blocking(
        self, source: Union[bytes, BinaryIO, str], letters: str, date: Optional[float]
    ) -> tuple[str, str]:
        """(thread, locked) One message into cur/, its directory not yet fsynced."""
        try:
            return maildir.deliver(
                self.path, source, letters, date, hostname=self._hostname, sync=False
            )
        except FileNotFoundError:
            # COPY source renamed by a flag change meanwhile: find it by its key.
            moved = maildir.find_key(source) if isinstance(source, str) else None
            if moved is None:
                raise
            return maildir.deliver(
                self.path, moved, letters, date, hostname=self._hostname, sync=False
            )

    def message_path(self, uid: int) -> Optional[str]:
        e = self.entries.get(uid)
        return e.path(self.path) if e is not None else None


class FolderGone(imap4.MailboxException):
    """The folder was deleted or replaced by another process (IMAP: NO [NONEXISTENT])."""

    def __init__(self) -> None:
        super().__init__("[NONEXISTENT] Mailbox was deleted by another session")


class _Gone:
    """The folder is not the one this Folder is any more (``_shared_blocking``)."""


class _Resync:
    """Other processes changed the folder: these Changes go first (``Folder._shared``)."""

    __slots__ = ("changes",)

    def __init__(self, changes: Changes) -> None:
        self.changes = changes


def _merged(old: index.Others, new: index.Others) -> index.Others:
    """Two readings of others' lines, the older not yet used by a scan, as one."""
    for key in new.gone:
        old.records.pop(key, None)
        old.letters.pop(key, None)
    for key in new.records:
        old.letters.pop(key, None)
    for key, (m, letters) in new.letters.items():
        r = old.records.get(key)
        if r is not None:
            r.modseq, r.letters = m, letters
        else:
            old.letters[key] = (m, letters)
    old.records.update(new.records)
    old.gone.update(new.gone)
    old.highest = max(old.highest, new.highest)
    old.lost = old.lost or new.lost
    old.dirs.extend(new.dirs)
    old.whole = old.whole or new.whole
    return old


def _valid_keyword(flag: str) -> bool:
    """RFC 3501 §9 flag-keyword: an atom; we also refuse backslash flags we do not know."""
    if not flag or flag.startswith("\\") or len(flag) > 64:
        return False
    return all(0x21 <= ord(c) < 0x7F and c not in '(){%*"\\]' for c in flag)
