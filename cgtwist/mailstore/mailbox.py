"""One session's view of a Maildir folder, as Twisted's IMAP mailbox (IMailbox and friends).

Owns what is per session: message sequence numbers, the session's \\Recent messages, expunges
by others not yet reported, and the listeners (the IMAP session) to push EXISTS/FETCH to. The
messages themselves live in the shared ``Folder``. Never parses IMAP and never decides policy.

Protocol for the IMAP layer (beyond Twisted's interfaces):
* ``refresh()`` at the start of each command and when IDLE is told (the notifier pushes too):
  new messages reach listeners as ``newMessages(exists, recent)``, other sessions' flag
  changes as ``flagsChanged({seq: flags})``.
* Expunges by other sessions are held back (RFC 3501 §7.4.1 forbids EXPUNGE during FETCH,
  STORE and SEARCH): ``pending_expunges`` says some are waiting and listeners with an
  ``expungesPending()`` method are told; ``flush_expunges()`` removes them and returns the
  sequence numbers to send, in an order that may be sent one after another as they are.
* ``expunge()`` / ``expunge_uids(uids)`` (UID EXPUNGE, RFC 4315) fire with such lists too;
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
import re
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Optional, Union

from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from cgtwist.logs import Logger
from cgtwist.mailstore import maildir, names
from cgtwist.mailstore.folder import Changes, Entry, Folder
from cgtwist.mailstore.message import MaildirMessage

if TYPE_CHECKING:
    from cgtwist.mailstore.account import MaildirAccount

_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_DATE_RE = re.compile(r"^\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$")


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
        self._seq: list[int] = list(folder.uids)  # sequence number n -> UID self._seq[n-1]
        self._recent: set[int] = set()
        self._pending: set[int] = set()
        self._ghosts: dict[int, Entry] = {}
        folder.attach(self)

    # -- extras for the IMAP layer -------------------------------------------------------------

    @property
    def uid_validity(self) -> int:
        return self.folder.uidvalidity

    @property
    def uid_next(self) -> int:
        return self.folder.uidnext

    @property
    def pending_expunges(self) -> bool:
        return bool(self._pending)

    @property
    def uids(self) -> list[int]:
        """UIDs in sequence order (a copy)."""
        return list(self._seq)

    def refresh(self) -> defer.Deferred[None]:
        """Rescan the folder if its directories changed; listeners hear of the changes."""
        force = self.rw and self.folder.has_new
        d = self.folder.refresh(force=force, origin=self)

        def claim(_: object) -> None:
            # \Recent left unclaimed (seen first by STATUS or EXAMINE) goes to this session.
            if self.rw and self.folder.unclaimed_recent and self.listeners and not self.closed:
                claimed, self.folder.unclaimed_recent = self.folder.unclaimed_recent, set()
                self._recent |= self._present(claimed)

        return d.addCallback(claim)

    def flush_expunges(self) -> list[int]:
        """Forget messages expunged by anyone since the last flush; return their sequence
        numbers, highest first, so each can be sent as ``* n EXPUNGE`` in turn (RFC 3501 §7.4.1)."""
        if not self._pending:
            return []
        gone = self._pending
        out = [i + 1 for i, u in enumerate(self._seq) if u in gone]
        out.reverse()
        self._seq = [u for u in self._seq if u not in gone]
        for uid in self._pending:
            self._ghosts.pop(uid, None)
            self._recent.discard(uid)
        self._pending.clear()
        return out

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
        try:
            messages.last = (self._seq[-1] if uid else len(self._seq)) if self._seq else 0
        except ValueError:
            pass  # already set by the caller
        out: dict[int, int] = {}
        for lo, hi in messages.ranges:
            if lo is None or hi is None:
                continue
            lo, hi = int(min(lo, hi)), max(lo, hi)
            if uid:
                i = bisect.bisect_left(self._seq, lo)
                while i < len(self._seq) and self._seq[i] <= hi:
                    out[i + 1] = self._seq[i]
                    i += 1
            else:
                top = len(self._seq) if hi == float("inf") else min(int(hi), len(self._seq))
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
        doomed = [u for u in self._seq if u in wanted and u not in self._pending
                  and u in entries and "T" in entries[u].letters]
        return self._expunge(doomed)

    def _expunge(self, doomed: list[int]) -> defer.Deferred[list[int]]:
        d = self.folder.expunge(doomed, origin=self)
        return d.addCallback(lambda _: self.flush_expunges())

    def copy_uids(self, uids: Iterable[int], dest: MaildirMailbox) -> defer.Deferred[tuple[list[int], list[int]]]:
        """COPY/UID COPY: fires with (source UIDs, new UIDs) in matching order for COPYUID
        (RFC 4315 §3). Files are hard-linked where possible; flags are kept, \\Recent is new."""
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
        d = dest.folder.add(sources, origin=dest)
        return d.addCallback(lambda new: (src, new))

    def move_uids(self, uids: Iterable[int], dest: MaildirMailbox) -> defer.Deferred[tuple[list[int], list[int], list[int]]]:
        """MOVE/UID MOVE (RFC 6851): copy, then expunge the originals; fires with
        (source UIDs, new UIDs, expunged sequence numbers to report)."""
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        d = self.copy_uids(uids, dest)

        def expunge(r: tuple[list[int], list[int]]) -> defer.Deferred[tuple[list[int], list[int], list[int]]]:
            return self._expunge(r[0]).addCallback(lambda seqs: (r[0], r[1], seqs))

        return d.addCallback(expunge)

    def append(self, data: Union[bytes, BinaryIO], flags: Iterable[str] = (),
               date: Union[bytes, str, float, None] = None) -> defer.Deferred[int]:
        """APPEND: store ``data`` durably with ``flags`` and internal ``date`` (IMAP date-time
        string or epoch); fires with the new UID (RFC 4315 APPENDUID)."""
        when = date if isinstance(date, (int, float)) or date is None else parse_imap_date(date)
        return self.folder.add([(data, list(flags), when)], origin=self).addCallback(lambda uids: uids[0])

    # -- called by the Folder ------------------------------------------------------------------

    def _folder_changed(self, ch: Changes, flag_changes: dict[int, frozenset[str]], claimed: set[int]) -> None:
        # Work in proportion to the change, not to the folder (every session, every change).
        for uid in ch.removed:
            if uid not in self._pending and self.seq_of(uid) is not None:
                self._pending.add(uid)
                e = ch.removed_entries.get(uid)
                if e is not None:
                    self._ghosts[uid] = e
        added = [e.uid for e in ch.added if self.seq_of(e.uid) is None]
        self._seq.extend(added)
        if added and self._seq[-len(added) - 1:] != sorted(self._seq[-len(added) - 1:]):
            self._seq.sort()
        if claimed:
            self._recent |= self._present(claimed)
        for listener in list(self.listeners):
            try:
                if added or claimed:
                    listener.newMessages(len(self._seq), self.getRecentCount())
                if ch.removed and self._pending and ch.origin is not self:
                    fn = getattr(listener, "expungesPending", None)
                    if fn is not None:
                        fn()
                if flag_changes and ch.origin is not self:
                    changed = {}
                    for uid in flag_changes:
                        seq = self.seq_of(uid)
                        if seq is not None:
                            changed[seq] = self.flags_of(uid)
                    if changed:
                        listener.flagsChanged(changed)
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
        return len(self._seq)

    def getRecentCount(self) -> int:
        if (not self.rw or not self.listeners) and self.folder.unclaimed_recent:
            # SELECT asks before addListener, which is where the claim happens; EXAMINE
            # shows what is unclaimed and leaves it for the next read-write session.
            return len(self._recent | self._present(self.folder.unclaimed_recent))
        return len(self._recent)

    def getUnseenCount(self) -> int:
        return sum(1 for u in self._seq if u in self.folder.entries
                   and "S" not in self.folder.entries[u].letters)

    def first_unseen(self) -> Optional[int]:
        """Sequence number of the first message without \\Seen (the SELECT ``UNSEEN`` code)."""
        for i, u in enumerate(self._seq):
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
        f = self.folder
        # RFC 3501 §6.3.10 RECENT: what a session selecting the mailbox now would be shown
        # as \\Recent, which is what no session has claimed yet (EXAMINE agrees, imaptest
        # append/select). Messages claimed by an open session are that session's alone.
        recent = len(f.unclaimed_recent)
        values = {
            "MESSAGES": len(f.uids), "RECENT": recent, "UIDNEXT": f.uidnext,
            "UIDVALIDITY": f.uidvalidity,
            "UNSEEN": sum(1 for e in f.entries.values() if "S" not in e.letters),
        }
        return {n.upper(): values[n.upper()] for n in names_ if n.upper() in values}

    def addListener(self, listener: Any) -> None:
        self.listeners.append(listener)
        if self.rw and self.folder.unclaimed_recent:
            claimed, self.folder.unclaimed_recent = self.folder.unclaimed_recent, set()
            self._recent |= self._present(claimed)

    def removeListener(self, listener: Any) -> None:
        self.listeners.remove(listener)  # ValueError when absent, as IMailbox says
        if not self.listeners:
            self.close()

    def addMessage(self, message: Union[bytes, BinaryIO], flags: Iterable[str], date: Any = None) -> defer.Deferred[int]:
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        return self.append(message, flags, date)

    def expunge(self) -> defer.Deferred[list[int]]:
        """Remove every message with \\Deleted; fires with the sequence numbers to report."""
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        doomed = [u for u in self._seq if u in self.folder.entries and u not in self._pending
                  and "T" in self.folder.entries[u].letters]
        return self._expunge(doomed)

    def fetch(self, messages: imap4.MessageSet, uid: bool) -> list[tuple[int, MaildirMessage]]:
        return [(seq, self.message(seq)) for seq, _u in self.resolve(messages, uid)]

    def store(self, messages: imap4.MessageSet, flags: Iterable[str], mode: int,
              uid: bool) -> defer.Deferred[dict[int, list[str]]]:
        """Change flags; fires with {seq: flags now} (\\Recent included for this session)."""
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        pairs = [(s, u) for s, u in self.resolve(messages, uid) if u not in self._pending]
        d = self.folder.set_flags([u for _s, u in pairs], flags, mode, origin=self)

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
            src = imap4.IMessageFile(messageObject).open().read()  # type: ignore[misc]
            flags = frozenset(messageObject.getFlags()) - {"\\Recent"}
            date = parse_imap_date(messageObject.getInternalDate())
        return self.folder.add([(src, flags, date)], origin=self).addCallback(lambda uids: uids[0])

    # -- ICloseableMailbox ---------------------------------------------------------------------

    def close(self) -> None:
        """The session leaves the folder (CLOSE, UNSELECT, LOGOUT, another SELECT)."""
        if not self.closed:
            self.closed = True
            self.listeners = []
            self.folder.detach(self)

    def __repr__(self) -> str:
        return f"<MaildirMailbox {self.folder.account} {self.name!r} rw={self.rw}>"
