"""One session's view of a Maildir folder, as Twisted's IMAP mailbox (IMailbox and friends).

Owns what is per session: message sequence numbers, the session's \\Recent messages, expunges
by others not yet reported, and the listeners (the IMAP session) to push EXISTS/FETCH to. The
messages themselves live in the shared ``Folder``. Never parses IMAP and never decides policy.
While a view agrees with its folder (every idling session, as a rule) its sequence numbers are
the folder's own UID list, shared and never changed in place: a session on a 10,000-message
folder holds no copy of it.

The view (RFC 3501 §5.2, §7.4.1; RFC 9051 §7.5): the session's client knows the first
``announced`` messages of the view by sequence number; everything else it learns only from the
updates ``sync`` hands out, so its picture never disagrees with what it was told. Changes by
others (new mail, flags, expunges) are recorded when the shared ``Folder`` reports them and
listeners hear only ``viewChanged()`` ("there is something to tell"); the IMAP layer calls
``sync(expunges_allowed)`` where responses may go out (before a tagged reply, at once during
IDLE) and renders the ``Updates`` it returns:
* expunges (only when allowed: never during FETCH, STORE or SEARCH), as sequence numbers valid
  one after another; messages expunged before they were announced vanish silently;
* new keywords (a ``* FLAGS`` and PERMANENTFLAGS) before any FETCH that could name them;
* ``EXISTS``/``RECENT`` when the count grew (EXISTS never decreases without EXPUNGE);
* ``FETCH (FLAGS)`` for messages whose flags others changed, with the flags as they are now.
Commands address only announced messages (``resolve``, ``fetch``, ``getMessageCount``).
* ``refresh()`` at the start of each command rescans the folder when its directories changed.
* ``expunge()`` / ``expunge_uids(uids)`` (UID EXPUNGE, RFC 4315) fire with the sequence
  numbers to report, in the same form;
  ``copy_uids``/``move_uids`` give COPYUID data (RFC 4315 §3, RFC 6851).
* ``append(data, flags, date)`` fires with the new UID (APPENDUID); ``resolve(set, uid)`` maps
  a MessageSet to (seq, uid) pairs; ``permanent_flags()``, ``first_unseen()``, ``special_use``.
* Messages (``MaildirMessage``) add ``meta`` (cached size, date, body size/lines, envelope and
  Content-* headers), ``read_bytes()``, ``header_bytes()``, ``open_or_none()`` and
  ``cached(name, compute)`` to keep e.g. BODYSTRUCTURE across FETCHes and restarts.
"""

from __future__ import annotations

import bisect
import calendar
import email.utils
import os
import re
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Callable,
    Iterable,
    Optional,
    Sequence,
    Union,
    cast,
    overload,
)

from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from cgtwist.logs import Logger
from cgtwist.mailstore import maildir, names
from cgtwist.mailstore.folder import Folder
from cgtwist.mailstore.message import MaildirMessage
from cgtwist.mailstore.quota import size_in_name
from cgtwist.mailstore.scan import Changes, Entry
from cgtwist.mailstore.searchfacts import SearchFacts

if TYPE_CHECKING:
    from cgtwist.mailstore.account import MaildirAccount

    # Twisted leaves IMessageFile.open unannotated; for the type checker only, the interface
    # with the signature Twisted documents (at run time it is Twisted's). It lives here, not
    # in cgtwist.typedtwisted, which modules that must not import twisted.mail use too.
    class IMessageFile(imap4.IMessageFile):
        def open() -> BinaryIO: ...

else:
    IMessageFile = imap4.IMessageFile

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DATE_RE = re.compile(
    r"^\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$"
)


def _entry_octets(entry: Entry) -> int:
    """The octets message ``entry`` counts for in the quota: its file size where its name
    says (``,S=``: LOCAL's), else its size as served (what the index knows without a stat)."""
    known = size_in_name(entry.fname)
    return known if known is not None else entry.meta.size


def _within_quota(
    account: Optional[MaildirAccount],
    octets: int,
    messages: int,
    store: Callable[[], defer.Deferred[list[int]]],
) -> defer.Deferred[list[int]]:
    """``store()`` once ``octets`` in ``messages`` fit ``account``'s quota (None: no check);
    otherwise the MailboxError ``[OVERQUOTA]`` and nothing stored (RFC 9208 §4.3)."""

    async def go() -> list[int]:
        if account is not None:
            await account.check_room(octets, messages)
        return await store()

    return defer.ensureDeferred(go())


def _length(data: Union[bytes, BinaryIO, str]) -> int:
    """Octets of an APPEND message (bytes, or a literal spooled to a file)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return len(data)
    if isinstance(data, str):  # a file to link (COPY): not an APPEND's
        return 0
    try:
        return os.fstat(data.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        here = data.tell()
        end = data.seek(0, os.SEEK_END)
        data.seek(here)
        return end


def parse_imap_date(value: Union[bytes, str, None]) -> Optional[float]:
    """RFC 3501 §9 date-time (``17-Jul-1996 02:44:25 -0700``) -> epoch; None if absent.

    An RFC 5322 date is accepted too. Raises ValueError for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    value = value.strip().strip('"')
    if not value:
        return None
    m = _DATE_RE.match(value)
    if m:
        d, mon, y, hh, mm, ss, sign, zh, zm = m.groups()
        if mon.lower() not in _MONTHS:
            raise ValueError(f"bad month in {value!r}")
        t = calendar.timegm((int(y), _MONTHS[mon.lower()], int(d), int(hh), int(mm), int(ss)))
        off = (int(zh) * 3600 + int(zm) * 60) * (1 if sign == "+" else -1)
        return float(t - off)
    tt = email.utils.parsedate_tz(value)
    if tt is None:
        raise ValueError(f"bad date {value!r}")
    return float(email.utils.mktime_tz(tt))


@dataclass
class Updates:
    """What a session must be told now, in this order (from ``MaildirMailbox.sync``)."""

    expunged: list[int] = field(default_factory=list)  # seq numbers, each valid in turn
    flags: Optional[list[str]] = None  # a new FLAGS list (keywords were added)...
    permanent: Optional[list[str]] = None  # ...and PERMANENTFLAGS (writable views only)
    exists: Optional[int] = None
    recent: Optional[int] = None
    fetch_flags: list[tuple[int, list[str]]] = field(default_factory=list)  # (seq, flags now)

    def __bool__(self) -> bool:
        return bool(
            self.expunged or self.flags is not None or self.exists is not None or self.fetch_flags
        )


class MessageRows(Sequence[tuple[int, MaildirMessage]]):
    """A view's messages in sequence order, as (seq, message) made on access; the messages
    are those of the moment it was made (``MaildirMailbox.message_rows``)."""

    def __init__(self, view: MaildirMailbox, entries: list[Entry]) -> None:
        self._view = view
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, i: int) -> tuple[int, MaildirMessage]: ...

    @overload
    def __getitem__(self, i: slice) -> list[tuple[int, MaildirMessage]]: ...

    def __getitem__(
        self, i: Union[int, slice]
    ) -> Union[tuple[int, MaildirMessage], list[tuple[int, MaildirMessage]]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self._entries)))]
        if i < 0:
            i += len(self._entries)
        e = self._entries[i]  # IndexError ends iteration
        folder = self._view.folder
        return i + 1, MaildirMessage(folder, e, folder.flags_of(e), self._view._is_recent(e.uid))


def _is_everything(messages: imap4.MessageSet) -> bool:
    """Whether the set is ``1:*`` (every message), so nothing needs resolving."""
    ranges = messages.ranges
    return len(ranges) == 1 and ranges[0][0] == 1 and ranges[0][1] in (None, float("inf"))


@implementer(imap4.IMailbox, imap4.IMailboxInfo, imap4.IMessageCopier, imap4.ICloseableMailbox)
class MaildirMailbox:
    """A selected (or examined) Maildir folder for one session; built by MaildirAccount.select."""

    log = Logger()

    def __init__(self, account: MaildirAccount, folder: Folder, rw: bool) -> None:
        self.account = account
        self.folder = folder
        self.name = folder.name
        self.rw = bool(rw)
        self.special_use: Optional[str] = account.special_use_of(folder.name)
        self.closed = False
        self.listeners: list[Any] = []
        # Sequence number n -> UID self._seq[n-1]. Never changed in place: while the view is
        # in step with the folder (every session idling on it, as a rule) it is the folder's
        # own list, shared, not a copy per session (a 10,000-message folder's list is 80 kB).
        self._seq: list[int] = folder.uids
        self._in_step = True  # _seq is the folder's list as of the last change heard of
        self._announced = len(self._seq)  # the client knows _seq[:_announced] (SELECT's EXISTS)
        self._recent: set[int] = set()
        self._pending: set[int] = set()  # expunged by anyone, not yet reported
        self._ghosts: dict[int, Entry] = {}  # their entries, for FETCH until then
        self._dirty: set[int] = set()  # flags changed by others, not yet reported
        self._keywords_sent = frozenset(folder.keywords.values())  # in the last FLAGS
        folder.attach(self)

    # -- extras for the IMAP layer -------------------------------------------------------------

    @property
    def uid_validity(self) -> int:
        return self.folder.uidvalidity

    @property
    def uid_next(self) -> int:
        return self.folder.uidnext

    @property
    def highest_modseq(self) -> int:
        """HIGHESTMODSEQ (RFC 7162 §3.1.1): at least every message's MODSEQ and every value
        handed out before in this UIDVALIDITY; raised by flag changes, expunges and new mail."""
        return self.folder.highest_modseq

    def modseq_of(self, uid: int) -> Optional[int]:
        """MODSEQ of message ``uid`` (an expunge not yet reported included); None if unknown."""
        e = self.folder.entries.get(uid) or self._ghosts.get(uid)
        return e.modseq if e is not None else None

    def vanished_since(self, modseq: int) -> Optional[list[int]]:
        """UIDs expunged after ``modseq`` (QRESYNC, RFC 7162 §3.2.5.1), or None when the
        folder no longer remembers that far back (``Folder.vanished_since``)."""
        return self.folder.vanished_since(modseq)

    @property
    def pending_expunges(self) -> bool:
        return bool(self._pending)

    @property
    def announced(self) -> int:
        return self._announced

    @property
    def uids(self) -> list[int]:
        """UIDs in sequence order (a copy)."""
        return list(self._seq)

    def refresh(self) -> defer.Deferred[None]:
        """Rescan the folder if its directories changed; listeners hear of the changes."""
        force = self.rw and self.folder.has_new
        return self.folder.refresh(force=force, origin=self).addCallback(self._claim_recent)

    def refresh_now(self) -> Optional[defer.Deferred[None]]:
        """``refresh`` for the start of each IMAP command: None when it is done already, as
        it is for most commands (the folder as last seen: three stat calls on the reactor),
        so that the command runs at once, without Deferreds; else ``refresh()``."""
        if not (self.rw and self.folder.has_new) and self.folder.in_step():
            self._claim_recent(None)
            return None
        return self.refresh()

    def _claim_recent(self, _: object) -> None:
        # \Recent left unclaimed (seen first by STATUS or EXAMINE) goes to this session.
        if self.rw and self.folder.unclaimed_recent and self.listeners and not self.closed:
            self._take_unclaimed()

    def _take_unclaimed(self) -> None:
        """Take what this process holds unclaimed as this session's \\Recent, at once (no
        other session here sees it any more), and have the folder record the claim for all
        processes (``Folder.confirm_claim``), which hands back what another one took first."""
        claimed, self.folder.unclaimed_recent = self.folder.unclaimed_recent, set()
        self._recent |= self._present(claimed)
        self.folder.confirm_claim(self, claimed)

    def lost_recent(self, uids: set[int]) -> None:
        """(reactor) Another process's session claimed ``uids`` first: not recent here."""
        self._recent -= uids

    def opened(self) -> MaildirMailbox:
        """The view as first loaded is what SELECT's EXISTS will announce; returns self.
        Messages that went while it loaded were never shown: they simply are not there."""
        if self._pending:
            self._seq = [u for u in self._seq if u not in self._pending]
            self._recent -= self._pending
            self._rejoin()
        self._announced = len(self._seq)
        self._pending = set()
        self._ghosts.clear()
        self._dirty.clear()
        self._keywords_sent = frozenset(self.folder.keywords.values())
        return self

    def sync(self, expunges_allowed: bool = True) -> Updates:
        """Everything the client is owed now, and the view advanced past it (see the module
        docstring). ``expunges_allowed`` False holds expunges back (RFC 3501 §7.4.1: not during
        FETCH, STORE or SEARCH); EXISTS and flag updates still go, with sequence numbers that
        count the held messages, as the client's do."""
        up = Updates()
        if expunges_allowed and self._pending:
            up.expunged = self._take_expunges()
        kw = self.announce_keywords()
        if kw is not None:
            up.flags, up.permanent = kw
        if len(self._seq) > self._announced:
            self._announced = len(self._seq)
            up.exists, up.recent = self._announced, self.getRecentCount()
        if self._dirty:
            for uid in sorted(self._dirty):
                seq = self.seq_of(uid)
                if seq is not None and seq <= self._announced:
                    up.fetch_flags.append((seq, self.flags_of(uid)))
            self._dirty.clear()
        return up

    def announce_keywords(self) -> Optional[tuple[list[str], Optional[list[str]]]]:
        """(FLAGS, PERMANENTFLAGS or None when read-only) if keywords were added since the last
        FLAGS the client saw, else None. Called before anything that shows flags: a client
        must not meet a keyword it was not told of (RFC 3501 §7.2.6)."""
        now = frozenset(self.folder.keywords.values())
        if now <= self._keywords_sent:
            return None
        self._keywords_sent = now
        return self.getFlags(), (self.permanent_flags() if self.rw else None)

    def _take_expunges(self) -> list[int]:
        """Forget the messages expunged by anyone since the last report; return the sequence
        numbers the client knows them by, highest first, so each ``* n EXPUNGE`` is valid in
        turn (RFC 3501 §7.4.1). Messages never announced go without a word."""
        if not self._pending:
            return []
        gone = self._pending
        seqs = (self.seq_of(u) for u in gone)
        out = sorted((s for s in seqs if s is not None and s <= self._announced), reverse=True)
        self._seq = [u for u in self._seq if u not in gone]
        self._rejoin()
        self._announced -= len(out)
        for uid in gone:
            self._ghosts.pop(uid, None)
            self._recent.discard(uid)
            self._dirty.discard(uid)
        self._pending = set()
        return out

    def _rejoin(self) -> None:
        """After the view made a list of its own: share the folder's again if they agree (the
        usual end of reporting an expunge), so that no session keeps a copy for long."""
        uids = self.folder.uids
        self._in_step = self._seq is uids or (len(self._seq) == len(uids) and self._seq == uids)
        if self._in_step:
            self._seq = uids

    def seq_of(self, uid: int) -> Optional[int]:
        i = bisect.bisect_left(self._seq, uid)
        return i + 1 if i < len(self._seq) and self._seq[i] == uid else None

    def _present(self, uids: Iterable[int]) -> set[int]:
        """Those of ``uids`` that have a sequence number in this session."""
        return {u for u in uids if self.seq_of(u) is not None}

    def flags_of(self, uid: int) -> list[str]:
        """Flags as this session sees them, \\Recent included."""
        e = self.folder.entries.get(uid) or self._ghosts.get(uid)
        flags = sorted(self.folder.flags_of(e)) if e is not None else []
        if self._is_recent(uid):
            flags.append("\\Recent")
        return flags

    def permanent_flags(self) -> list[str]:
        """PERMANENTFLAGS (RFC 3501 §7.1): system flags, known keywords, ``\\*`` while letters
        remain for new keywords (Dovecot's a..z scheme)."""
        out = list(maildir.SYSTEM_FLAGS) + sorted(self.folder.keywords.values())
        if len(self.folder.keywords) < maildir.MAX_KEYWORDS:
            out.append("\\*")
        return out

    def resolve(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, int]]:
        """A MessageSet -> [(seq, uid)] ascending, ``*`` meaning the last message or UID."""
        n = self._announced  # only what the client was told exists
        if any(lo is None or hi is None for lo, hi in messages.ranges):
            # ``*`` in the set: it now stands for the last message or UID. A set without
            # one is left as it is: setting ``last`` would sort and merge its ranges once
            # more, for nothing, at every UID FETCH or STORE of one message.
            try:
                messages.last = (self._seq[n - 1] if uid else n) if n else 0
            except ValueError:
                pass  # already set by the caller
        out: dict[int, int] = {}
        for lo, hi in messages.ranges:
            if lo is None or hi is None:
                continue
            lo, hi = int(min(lo, hi)), max(lo, hi)
            if uid:
                i = bisect.bisect_left(self._seq, lo, 0, n)
                while i < n and self._seq[i] <= hi:
                    out[i + 1] = self._seq[i]
                    i += 1
            else:
                top = n if hi == float("inf") else min(int(hi), n)
                for s in range(max(lo, 1), top + 1):
                    out[s] = self._seq[s - 1]
        return sorted(out.items())

    def message(self, seq: int) -> MaildirMessage:
        uid = self._seq[seq - 1]
        e = self.folder.entries.get(uid) or self._ghosts[uid]
        return MaildirMessage(self.folder, e, self.folder.flags_of(e), self._is_recent(uid))

    def _is_recent(self, uid: int) -> bool:
        """\\Recent for this session: claimed by it, or, read-only (EXAMINE, which never
        claims), not yet claimed by anyone (RFC 3501 §2.3.2, as Dovecot shows it)."""
        return uid in self._recent or (not self.rw and uid in self.folder.unclaimed_recent)

    def expunge_uids(self, uids: Iterable[int]) -> defer.Deferred[list[int]]:
        """UID EXPUNGE (RFC 4315 §2.1): expunge those of ``uids`` that have \\Deleted."""
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        wanted = set(uids)
        entries = self.folder.entries
        doomed = [
            u
            for u in self._seq[: self._announced]
            if u in wanted and u not in self._pending and u in entries and "T" in entries[u].letters
        ]
        return self._expunge(doomed)

    def _expunge(self, doomed: list[int]) -> defer.Deferred[list[int]]:
        """Expunge ``doomed``; fires with every expunge to report now (others' too: the command
        is one where EXPUNGE responses are allowed)."""
        d = self.folder.expunge(doomed, origin=self)
        return d.addCallback(lambda _: self._take_expunges())

    def copy_uids(
        self, uids: Iterable[int], dest: MaildirMailbox, check: bool = True
    ) -> defer.Deferred[tuple[list[int], list[int]]]:
        """COPY/UID COPY: fires with (source UIDs, new UIDs) in matching order for COPYUID
        (RFC 4315 §3). Files are hard-linked where possible; flags are kept, \\Recent is new.
        A copy that does not fit the destination account's quota fails with
        ``[OVERQUOTA]`` and stores nothing (RFC 9208 §4.3); ``check`` False skips that (MOVE
        within the account, which adds nothing to what it keeps)."""
        src: list[int] = []
        sources: list[tuple[Union[bytes, BinaryIO, str], Iterable[str], Optional[float]]] = []
        for u in uids:
            e = self.folder.entries.get(u)
            if e is None:
                continue
            src.append(u)
            sources.append((e.path(self.folder.path), self.folder.flags_of(e), e.meta.date))
        if not sources:
            return defer.succeed(([], []))
        octets = sum(_entry_octets(self.folder.entries[u]) for u in src) if check else 0
        d = _within_quota(
            dest.account if check else None,
            octets,
            len(sources),
            lambda: dest.folder.add(sources, origin=dest),
        )
        return d.addCallback(lambda new: (src, new))

    def move_uids(
        self, uids: Iterable[int], dest: MaildirMailbox
    ) -> defer.Deferred[tuple[list[int], list[int], list[int]]]:
        """MOVE/UID MOVE (RFC 6851): copy, then expunge the originals; fires with
        (source UIDs, new UIDs, expunged sequence numbers to report)."""
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        # Within one account a MOVE changes nothing the quota counts: allowed when over
        # quota, so that a user can still move mail to Trash (RFC 9208 §4.3 is about
        # resources that grow).
        d = self.copy_uids(uids, dest, check=dest.account.account != self.account.account)

        def expunge(
            r: tuple[list[int], list[int]],
        ) -> defer.Deferred[tuple[list[int], list[int], list[int]]]:
            return self._expunge(r[0]).addCallback(lambda seqs: (r[0], r[1], seqs))

        return d.addCallback(expunge)

    def append(
        self,
        data: Union[bytes, BinaryIO],
        flags: Iterable[str] = (),
        date: Union[bytes, str, float, None] = None,
    ) -> defer.Deferred[int]:
        """APPEND: store ``data`` durably with ``flags`` and internal ``date`` (IMAP date-time
        string or epoch); fires with the new UID (RFC 4315 APPENDUID)."""
        when = date if isinstance(date, (int, float)) or date is None else parse_imap_date(date)
        return self._add_within_quota([(data, list(flags), when)]).addCallback(lambda uids: uids[0])

    def append_all(
        self, items: list[tuple[Union[bytes, BinaryIO], Iterable[str], Optional[float]]]
    ) -> defer.Deferred[list[int]]:
        """MULTIAPPEND (RFC 3502): store every (data, flags, epoch or None) in one durable
        operation, all or none; fires with the new UIDs in order."""
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        return self._add_within_quota([(data, list(flags), when) for data, flags, when in items])

    def _add_within_quota(
        self, items: list[tuple[Union[bytes, BinaryIO, str], Iterable[str], Optional[float]]]
    ) -> defer.Deferred[list[int]]:
        """Store ``items`` when they fit the account's quota; RFC 9208 §4.3: an APPEND over
        quota is refused (``[OVERQUOTA]``) and stores nothing."""
        octets = sum(_length(data) for data, _f, _w in items)
        return _within_quota(
            self.account, octets, len(items), lambda: self.folder.add(items, origin=self)
        )

    # -- called by the Folder ------------------------------------------------------------------

    def _folder_changed(
        self, ch: Changes, flag_changes: dict[int, frozenset[str]], claimed: set[int]
    ) -> None:
        # Record only; the client hears of it at the next sync. Work in proportion to the
        # change, not to the folder (every session, every change).
        own = ch.origin is self and not ch.rescan  # this view's command: it syncs at its end
        news = False
        for uid in ch.removed:
            if uid not in self._pending and self.seq_of(uid) is not None:
                self._pending.add(uid)
                news = True
                e = ch.removed_entries.get(uid)
                if e is not None:
                    self._ghosts[uid] = e
        added = [e.uid for e in ch.added if self.seq_of(e.uid) is None]
        if self._pending:
            self._in_step = False  # the view keeps what others expunged until it reports it
        if added:
            news = True
            uids = self.folder.uids
            if (
                self._in_step
                and not ch.removed
                and len(uids) == len(self._seq) + len(added)
                and (not self._seq or min(added) > self._seq[-1])
            ):
                # The folder's list is now this one plus the new UIDs, all above it: share
                # it, with no work per session (every session of a delivery's push).
                self._seq = uids
            else:
                seq = self._seq + added
                tail = seq[-len(added) - 1 :]
                if tail != sorted(tail):
                    # UIDs only grow, so new ones belong after every announced one; sort the
                    # unannounced tail only, never moving a sequence number the client knows.
                    seq[self._announced :] = sorted(seq[self._announced :])
                self._seq = seq
                self._in_step = False
        if claimed:
            self._recent |= self._present(claimed)
            news = True
        if flag_changes and not own:
            for uid in flag_changes:
                if self.seq_of(uid) is not None:
                    self._dirty.add(uid)
                    news = True
        if not news or own:
            return
        for listener in list(self.listeners):
            fn = getattr(listener, "viewChanged", None)
            if fn is None:
                continue
            try:
                fn()
            except Exception:
                self.log.failure("mailbox listener failed")

    # -- IMailboxInfo --------------------------------------------------------------------------

    def getFlags(self) -> list[str]:
        """The FLAGS response: system flags and this folder's keywords."""
        return list(maildir.SYSTEM_FLAGS) + sorted(self.folder.keywords.values())

    def getHierarchicalDelimiter(self) -> str:
        return names.DELIMITER

    # -- IMailbox ------------------------------------------------------------------------------

    def getUIDValidity(self) -> int:
        return self.folder.uidvalidity

    def getUIDNext(self) -> int:
        return self.folder.uidnext

    def getUID(self, message: int) -> int:
        return self._seq[message - 1]

    def getMessageCount(self) -> int:
        """The count the client was last told (EXISTS), expunges it has not heard of included."""
        return self._announced

    def getRecentCount(self) -> int:
        if (not self.rw or not self.listeners) and self.folder.unclaimed_recent:
            # SELECT asks before addListener, which is where the claim happens; EXAMINE
            # shows what is unclaimed and leaves it for the next read-write session.
            return len(self._recent | self._present(self.folder.unclaimed_recent))
        return len(self._recent)

    def getUnseenCount(self) -> int:
        return sum(
            1
            for u in self._seq[: self._announced]
            if u in self.folder.entries and "S" not in self.folder.entries[u].letters
        )

    def first_unseen(self) -> Optional[int]:
        """Sequence number of the first message without \\Seen (the SELECT ``UNSEEN`` code)."""
        for i, u in enumerate(self._seq[: self._announced]):
            e = self.folder.entries.get(u)
            if e is not None and "S" not in e.letters:
                return i + 1
        return None

    def isWriteable(self) -> bool:
        return self.rw

    def destroy(self) -> None:
        self.closed = True

    def requestStatus(self, names_: Iterable[str]) -> dict[str, int]:
        """STATUS counts from the shared folder (RFC 3501 §6.3.10)."""
        names_ = list(names_)
        f = self.folder
        # RFC 3501 §6.3.10 RECENT: what a session selecting the mailbox now would be shown
        # as \\Recent, which is what no session has claimed yet (EXAMINE agrees, imaptest
        # append/select). Messages claimed by an open session are that session's alone.
        recent = len(f.unclaimed_recent)
        values = {
            "MESSAGES": len(f.uids),
            "RECENT": recent,
            "UIDNEXT": f.uidnext,
            "UIDVALIDITY": f.uidvalidity,
            "UNSEEN": sum(1 for e in f.entries.values() if "S" not in e.letters),
            "SIZE": sum(e.meta.size for e in f.entries.values()),  # RFC 8438
            "HIGHESTMODSEQ": f.highest_modseq,  # RFC 7162 §3.1.9
        }
        wanted = {n.upper() for n in names_}
        if wanted & {"DELETED", "DELETED-STORAGE"}:
            # RFC 9051 §6.3.11 and RFC 9208 §4.3 (QUOTA=RES-STORAGE): messages with \\Deleted,
            # and the storage an EXPUNGE would give back, in the STORAGE resource's units of
            # 1024 octets.
            doomed = [e for e in f.entries.values() if "T" in e.letters]
            values["DELETED"] = len(doomed)
            values["DELETED-STORAGE"] = -(-sum(_entry_octets(e) for e in doomed) // 1024)
        return {n.upper(): values[n.upper()] for n in names_ if n.upper() in values}

    def addListener(self, listener: Any) -> None:
        self.listeners.append(listener)
        if self.rw and self.folder.unclaimed_recent:
            self._take_unclaimed()

    def removeListener(self, listener: Any) -> None:
        self.listeners.remove(listener)  # ValueError when absent, as IMailbox says
        if not self.listeners:
            self.close()

    def addMessage(
        self, message: Union[bytes, BinaryIO], flags: Iterable[str], date: Any = None
    ) -> defer.Deferred[int]:
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        return self.append(message, flags, date)

    def expunge(self) -> defer.Deferred[list[int]]:
        """Remove every message with \\Deleted; fires with the sequence numbers to report."""
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        doomed = [
            u
            for u in self._seq[: self._announced]
            if u in self.folder.entries
            and u not in self._pending
            and "T" in self.folder.entries[u].letters
        ]
        return self._expunge(doomed)

    def fetch(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, MaildirMessage]]:
        if not uid and _is_everything(messages):
            try:
                messages.last = self._announced  # as resolve() does: ``*`` is the last message
            except ValueError:
                pass
            return self.every_message()
        return [(seq, self.message(seq)) for seq, _u in self.resolve(messages, uid)]

    def message_rows(self) -> MessageRows:
        """(seq, message) of every message the client knows, each message made when asked
        for: SEARCH, SORT and THREAD walk a large folder without holding an object per
        message for the whole walk (which the garbage collector would traverse again and
        again)."""
        entries, ghosts = self.folder.entries, self._ghosts
        return MessageRows(
            self, [entries.get(u) or ghosts[u] for u in self._seq[: self._announced]]
        )

    def search_facts(self) -> SearchFacts:
        """Every message the client knows as the index's columns (SEARCH over the whole
        mailbox without a message object per message: cgtwist.mailstore.searchfacts)."""
        entries, ghosts = self.folder.entries, self._ghosts
        seq = self._seq[: self._announced]
        recent = self._recent
        if not self.rw and self.folder.unclaimed_recent:
            recent = recent | self.folder.unclaimed_recent  # as _is_recent says
        found = list(map(entries.get, seq))  # in C; the expunged not yet reported are rare
        # all(), not ``None in``: that compares each Entry with None by its dataclass __eq__.
        if not all(found):
            return SearchFacts(self.folder, [entries.get(u) or ghosts[u] for u in seq], recent)
        return SearchFacts(self.folder, cast(list[Entry], found), recent)

    def every_message(self) -> list[tuple[int, MaildirMessage]]:
        """(seq, message) of every message the client knows (``FETCH 1:*``; SEARCH, SORT and
        THREAD go through it for every message of a large folder: one pass, no set)."""
        entries, ghosts, flags_of = self.folder.entries, self._ghosts, self.folder.flags_of
        recent = self._recent
        if not self.rw and self.folder.unclaimed_recent:
            recent = recent | self.folder.unclaimed_recent
        out = []
        for i, uid in enumerate(self._seq[: self._announced]):
            e = entries.get(uid) or ghosts[uid]
            out.append((i + 1, MaildirMessage(self.folder, e, flags_of(e), uid in recent)))
        return out

    def store(
        self,
        messages: imap4.MessageSet,
        flags: Iterable[str],
        mode: int,
        uid: bool,
        unchanged_since: Optional[int] = None,
        refused: Optional[set[int]] = None,
    ) -> defer.Deferred[dict[int, list[str]]]:
        """Change flags; fires with {seq: flags now} (\\Recent included for this session).
        ``unchanged_since``/``refused``: CONDSTORE's conditional STORE (``Folder.set_flags``);
        ``refused`` gets the UIDs left alone because they changed since."""
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        pairs = [(s, u) for s, u in self.resolve(messages, uid) if u not in self._pending]
        d = self.folder.set_flags(
            [u for _s, u in pairs],
            flags,
            mode,
            origin=self,
            unchanged_since=unchanged_since,
            refused=refused,
        )

        def done(result: dict[int, frozenset[str]]) -> dict[int, list[str]]:
            return {s: self.flags_of(u) for s, u in pairs if u in result}

        return d.addCallback(done)

    # -- IMessageCopier ------------------------------------------------------------------------

    def copy(self, messageObject: Any) -> defer.Deferred[int]:
        """Twisted's COPY path: link the message file into this folder; fires with its UID."""
        if isinstance(messageObject, MaildirMessage):
            path = messageObject.folder.message_path(messageObject.uid)
            if path is not None:
                src: Union[bytes, BinaryIO, str] = path
            else:
                src = messageObject.read_bytes()
            flags = messageObject.flags
            date: Optional[float] = messageObject.meta.date
        else:
            src = IMessageFile(messageObject).open().read()
            flags = frozenset(messageObject.getFlags()) - {"\\Recent"}
            date = parse_imap_date(messageObject.getInternalDate())
        size = messageObject.getSize() if hasattr(messageObject, "getSize") else 0
        d = _within_quota(
            self.account,
            int(size or 0),
            1,
            lambda: self.folder.add([(src, flags, date)], origin=self),
        )
        return d.addCallback(lambda uids: uids[0])

    # -- ICloseableMailbox ---------------------------------------------------------------------

    def close(self) -> None:
        """The session leaves the folder (CLOSE, UNSELECT, LOGOUT, another SELECT)."""
        if not self.closed:
            self.closed = True
            self.listeners = []
            self.folder.detach(self)

    def __repr__(self) -> str:
        return f"<MaildirMailbox {self.folder.account} {self.name!r} rw={self.rw}>"
