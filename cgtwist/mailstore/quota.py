"""Mailbox storage usage per account: counted incrementally, recounted by a scan when unknown.

Owns how much mail each account keeps (octets and messages in INBOX and every Maildir++
folder), for the quota (``cgtwist.account_settings.QuotaLimits``): LOCAL delivery, IMAP
APPEND/COPY/EXPUNGE and folder deletion change the figure as they go, so no delivery pays
for a scan. Decides nothing about what is allowed: ``QuotaLimits.exceeded`` does, with the
figure this module gives.

Several processes change an account's folders (LOCAL delivery in the server, APPEND, COPY,
EXPUNGE and POP3 in IMAP/POP3 workers, ``cgtwist-admin``), so each process's figure is kept
in step through one file per account, ``USAGE_FILE`` at the Maildir's root, modelled on
Maildir++'s ``maildirsize`` (Dovecot's quota-maildir.c): a first line with the figure a scan
found and the file's generation (new at each rewrite), then one line "octets messages
writer" per change, appended (O_APPEND, one write, under a shared flock, no fsync) by
whichever process made it. A process applies its own changes at once and the other
processes' lines when it next uses the figure (one stat on the reactor tells whether the
file changed; the new lines are read in a thread); a scan writes a new file (tmp, rename,
under the old file's exclusive flock, so no append is lost in the old one), which every
process then reads whole, and so does a reader that finds more than ``COMPACT_AT`` bytes of
lines (the figure they add up to, without a scan). No fsync: after a crash the first use of
every process scans anyway. Two processes that check
the room at the same instant may both pass (as with Dovecot): a limit may be passed by what
they store at that instant, never more, and the figure itself stays right. The figure
cannot drift without bound:
* it starts unknown in every process (after a crash or restart too): the first use scans;
* a figure older than ``RECOUNT_AFTER`` is counted again at its next use, so changes made
  behind our back (a Dovecot or mutt on the same Maildir, files removed by hand) are seen;
* a refusal (over quota) rests on a scan no older than ``VERIFY_AFTER``;
* a figure that would go negative is forgotten and scanned again;
* changes made while a scan runs may or may not be in what it saw: it is taken, and counted
  once more ``SETTLE`` seconds later.
Scans run in the mailstore's threads, never on the reactor; one at a time per account.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.account_settings import QuotaLimits
from cgtwist.logs import Logger
from cgtwist.mailstore import names

Where = Union[str, Callable[[], str]]  # a Maildir path, or how to find it (in the scan's thread)
# Runs blocking work off the reactor: MailboxNotifier.run (a thread), or inline in tests.
Runner = Callable[..., "defer.Deferred[Any]"]

USAGE_FILE = "cgtwist-usage"  # the account's figure, shared by every process (see above)
COMPACT_AT = 65536  # bytes of change lines after which a reader writes the file anew
_MAGIC = b"cgtwist-usage 1"


@dataclass(frozen=True)
class Usage:
    """What an account keeps: ``octets`` of message files, in ``messages`` files."""

    octets: int = 0
    messages: int = 0

    @property
    def kib(self) -> int:
        """RFC 9208 §5.1: STORAGE counts in units of 1024 octets (rounded up)."""
        return -(-self.octets // 1024)


def size_in_name(fname: str) -> Optional[int]:
    """The file size a Maildir name carries (``<key>,S=<octets>[:2,FLAGS]``: cgtwist's LOCAL
    names and Dovecot's), or None when it has none."""
    base = fname.partition(":")[0]
    for part in base.split(",")[1:]:
        if part.startswith("S=") and part[2:].isdigit():
            return int(part[2:])
    return None


def file_octets(path: str) -> int:
    """(blocking) The size of the message file at ``path``: from its name when it says, else
    from the file system; 0 when it is gone."""
    known = size_in_name(os.path.basename(path))
    if known is not None:
        return known
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def folder_dirs(path: str) -> list[str]:
    """(blocking) The Maildir ``path`` (INBOX) and each of its Maildir++ folders (``.Name``;
    not symbolic links, nor a DELETE's ``cgtwist-deleted-*`` on its way out)."""
    out = [path]
    try:
        entries = os.listdir(path)
    except OSError:
        return out
    for entry in entries:
        if names.name_from_dir(entry) is None:
            continue
        full = os.path.join(path, entry)
        if not os.path.islink(full) and os.path.isdir(full):
            out.append(full)
    return out


def scan_usage(path: str) -> Usage:
    """(blocking) Count the messages of the account whose Maildir is ``path``: every file of
    ``cur/`` and ``new/`` in INBOX and its folders (``tmp/`` holds nothing delivered yet;
    names starting with a dot are not messages, maildir(5)). A name with ``,S=`` costs no
    stat. A missing Maildir keeps nothing."""
    octets = messages = 0
    for folder in folder_dirs(path):
        for sub in ("cur", "new"):
            try:
                it = os.scandir(os.path.join(folder, sub))
            except OSError:
                continue
            with it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    size = size_in_name(entry.name)
                    if size is None:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # expunged meanwhile
                        if not stat.S_ISREG(st.st_mode):
                            continue
                        size = st.st_size
                    octets += size
                    messages += 1
    return Usage(octets, messages)


def _resolve(path: Where) -> str:
    return path() if callable(path) else path


@dataclass(frozen=True)
class _Seen:
    """What a look at the usage file found (in a thread): ``usage`` is the whole figure
    (``whole``) or the other processes' changes since ``start`` (not ``whole``); the file
    of generation ``gen`` (its first line's, new at each rewrite: an inode number is reused)
    is now read up to ``pos``, and looked as ``stamp`` (inode, size, mtime) then."""

    usage: Usage
    whole: bool
    file: str
    gen: str
    pos: int
    stamp: Optional[tuple[int, int, int]]
    start: int = 0
    scanned: bool = False


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _parse(data: bytes, token: str, skip_own: bool) -> tuple[int, int, int]:
    """(octets, messages, bytes used) of the complete delta lines in ``data``; a torn or
    garbled line ends the reading there (as it would a Maildir++ maildirsize)."""
    octets = messages = used = 0
    own = token.encode()
    while True:
        end = data.find(b"\n", used)
        if end < 0:
            return octets, messages, used
        fields = data[used:end].split()
        if len(fields) < 2:
            return octets, messages, used
        try:
            o, m = int(fields[0]), int(fields[1])
        except ValueError:
            return octets, messages, used
        if not (skip_own and len(fields) > 2 and fields[2] == own):
            octets += o
            messages += m
        used = end + 1


def _read(file: str, gen: str, pos: int, token: str) -> Optional[_Seen]:
    """(blocking) The other processes' lines after ``pos`` when the file is still of
    generation ``gen``, else the whole file; None when there is none or its first line is
    not ours."""
    try:
        with open(file, "rb") as f:
            head = f.readline(200)
            fields = head.split()
            if not head.endswith(b"\n") or len(fields) != 5 or b" ".join(fields[:2]) != _MAGIC:
                return None
            now = fields[4].decode("ascii", "replace")
            if now == gen and pos >= len(head):
                f.seek(pos)
                o, m, used = _parse(f.read(), token, skip_own=True)
                st = _stamp(os.fstat(f.fileno()))
                return _Seen(Usage(o, m), False, file, gen, pos + used, st, start=pos)
            rest = f.read()
            st = _stamp(os.fstat(f.fileno()))
    except OSError:
        return None
    try:
        base = Usage(int(fields[2]), int(fields[3]))
    except ValueError:
        return None
    o, m, used = _parse(rest, token, skip_own=False)
    usage = Usage(base.octets + o, base.messages + m)
    return _Seen(usage, True, file, now, len(head) + used, st)


def _look(path: Where, gen: str, pos: int, token: str, scan: bool) -> _Seen:
    """(blocking) Catch up with the usage file of the Maildir at ``path`` (``_read``), or,
    with ``scan`` or when it is missing or damaged, count the Maildir and write a new one.
    A file grown past ``COMPACT_AT`` bytes is written anew with its figure as the first
    line (no scan: the lines are exact), as Maildir++ recalculates a long maildirsize."""
    root = _resolve(path)
    file = os.path.join(root, USAGE_FILE)
    if not scan:
        seen = _read(file, gen, pos, token)
        if seen is None:
            pass
        elif seen.pos <= COMPACT_AT:
            return seen
        else:
            whole = _rewrite(file, None)
            if whole is not None:
                return whole
            return seen
    usage = scan_usage(root)
    seen = _rewrite(file, usage)
    return seen if seen is not None else _Seen(usage, True, "", "", 0, None, scanned=True)


def _rewrite(file: str, usage: Optional[Usage]) -> Optional[_Seen]:
    """(blocking) Replace the usage file by one holding ``usage`` (a scan's), or, without
    one, the figure the file adds up to; None when the file cannot be written (a Maildir
    gone or read-only: the figure is then this process's alone, as before). Holds the old
    file's flock exclusively meanwhile, so no append lands in it after it was read."""
    scanned = usage is not None
    old: Optional[int] = None
    try:
        old = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(old, fcntl.LOCK_EX)
    except OSError:
        if old is not None:
            os.close(old)
            old = None
    tmp = f"{file}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        if usage is None:
            if old is None:
                return None
            whole = _read(file, "", 0, "")
            if whole is None:
                return None
            usage = whole.usage
            if usage.octets < 0 or usage.messages < 0:
                return None
        gen = uuid.uuid4().hex[:12]
        head = b"%s %d %d %s\n" % (_MAGIC, usage.octets, usage.messages, gen.encode())
        try:
            with open(tmp, "wb") as f:
                f.write(head)
                st = _stamp(os.fstat(f.fileno()))
            os.replace(tmp, file)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return None
        return _Seen(usage, True, file, gen, len(head), st, scanned=scanned)
    finally:
        if old is not None:
            os.close(old)  # releases the lock


Appended = tuple[str, tuple[int, int, int], tuple[int, int, int]]  # file, stamp before, after


def _append(lines: list[tuple[Where, int, int]], token: str) -> list[Appended]:
    """(blocking) Append one change line per account to its usage file (when it has one:
    otherwise the next scan counts it), under the file's shared flock, into the file that is
    the account's when the lock is held (``_rewrite`` replaces it under the exclusive one);
    returns the file and its stamps before and after each line written."""
    out = []
    for where, octets, messages in lines:
        try:
            file = os.path.join(_resolve(where), USAGE_FILE)
        except OSError:
            continue
        line = b"%d %d %s\n" % (octets, messages, token.encode())
        for _attempt in range(3):
            try:
                fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except OSError:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                st = os.fstat(fd)
                if os.stat(file).st_ino != st.st_ino:
                    continue  # replaced while we waited: append to the new one
                os.write(fd, line)
                out.append((file, _stamp(st), _stamp(os.fstat(fd))))
                break
            except OSError:
                break
            finally:
                os.close(fd)
    return out


def _drop(path: Where) -> None:
    """(blocking) Remove the usage file: every process counts the account again."""
    try:
        os.unlink(os.path.join(_resolve(path), USAGE_FILE))
    except OSError:
        pass


@dataclass
class _Figure:
    """One account's count: ``usage`` once ``counted_at`` is set (the clock of its scan)."""

    usage: Usage = Usage()
    counted_at: Optional[float] = None
    scanning: bool = False
    changed: bool = False  # a change arrived while the scan ran
    waiters: list[defer.Deferred[Usage]] = field(default_factory=list)
    file: str = ""  # the account's usage file, once a look found it
    gen: str = ""  # ...its generation (first line)...
    pos: int = 0  # ...how far this process has read it (its own lines included)...
    stamp: Optional[tuple[int, int, int]] = None  # ...and how it looked then


@dataclass
class _Unsent:
    """This process's changes of one account not appended to its usage file yet."""

    where: Where
    octets: int = 0
    messages: int = 0


class UsageBook:
    """``UsageBook(run, clock=time.monotonic)``: the usage figures of this process's accounts.

    ``run(fn, *args)`` runs blocking work off the reactor (the MailboxNotifier's ``run``);
    ``clock`` is monotonic (a wall-clock step must not keep a figure for hours). Accounts are
    keyed by their lower-case address; at most ``MAX_ACCOUNTS`` figures are kept (then all
    are dropped and counted again when used: a bound, not a cache policy).
    """

    RECOUNT_AFTER = 3600.0
    VERIFY_AFTER = 300.0
    SETTLE = 60.0
    MAX_ACCOUNTS = 100_000
    log = Logger()

    def __init__(self, run: Runner, clock: Callable[[], float] = time.monotonic) -> None:
        self._run = run
        self._clock = clock
        self._figures: dict[str, _Figure] = {}
        self._token = uuid.uuid4().hex[:12]  # names this process's lines in the usage files
        self._outbox: dict[str, _Unsent] = {}  # account -> its changes not appended yet
        self._appending = False
        self._paths: dict[str, Where] = {}  # account -> its Maildir, as last given
        # The usage files' work, one job at a time: a look never runs while this process's
        # own lines are being appended, so what it reads plus ``_outbox`` is the figure.
        self._file_jobs = defer.DeferredLock()

    def known(self, account: str) -> Optional[Usage]:
        """The figure as it stands, or None while it is unknown (no scan yet)."""
        f = self._figures.get(account.lower())
        return f.usage if f is not None and f.counted_at is not None else None

    def usage(
        self, account: str, path: Where, max_age: Optional[float] = None
    ) -> defer.Deferred[Usage]:
        """Fire with ``account``'s usage (its Maildir at ``path``, or a callable giving it
        in the scan's thread), scanning first when the figure is unknown or older than
        ``max_age`` (default ``RECOUNT_AFTER``) seconds, and reading first what other
        processes changed since this one last looked (one stat when they changed nothing)."""
        key = account.lower()
        self._remember(key, path)
        f = self._figures.get(key)
        limit = self.RECOUNT_AFTER if max_age is None else max_age
        if f is not None and f.counted_at is not None and self._clock() - f.counted_at < limit:
            if not f.file or f.scanning:
                return defer.succeed(f.usage) if not f.scanning else self._scan(key, path)
            try:
                st = os.stat(f.file)
            except OSError:
                return self._scan(key, path)  # dropped (a DELETE elsewhere): count again
            if _stamp(st) == f.stamp:
                return defer.succeed(f.usage)
            return self._scan(key, path, catch_up=True)
        return self._scan(key, path)

    def _scan(self, key: str, path: Where, catch_up: bool = False) -> defer.Deferred[Usage]:
        f = self._figures.get(key)
        if f is None:
            if len(self._figures) >= self.MAX_ACCOUNTS:
                self._figures.clear()
            f = self._figures[key] = _Figure()
        mine: defer.Deferred[Usage] = defer.Deferred()
        f.waiters.append(mine)
        if not f.scanning:
            f.scanning, f.changed = True, False
            started = self._clock()
            self._file_jobs.run(
                self._run, _look, path, f.gen, f.pos, self._token, not catch_up
            ).addBoth(self._counted, key, f, started)
        return mine

    def _counted(self, result: Union[_Seen, Failure], key: str, f: _Figure, started: float) -> None:
        """A look ended: keep its figure (unless forgotten meanwhile) and answer its waiters."""
        f.scanning = False
        waiters, f.waiters = f.waiters, []
        if isinstance(result, Failure):
            self.log.failure("quota: counting {account} failed", result, account=key)
            for w in waiters:
                w.errback(result)
            return
        if self._figures.get(key) is f:
            before = f.usage if f.counted_at is not None else None
            f.file, f.gen, f.stamp = result.file, result.gen, result.stamp
            if not result.whole:
                # Other processes' changes since this one last read the file.
                f.usage = Usage(
                    f.usage.octets + result.usage.octets, f.usage.messages + result.usage.messages
                )
                if f.pos == result.start:
                    f.pos = result.pos
                else:  # this process appended meanwhile: its lines are after result.pos
                    f.pos = max(f.pos, result.pos)
            else:
                # This process's changes not yet appended are in no file yet.
                unsent = self._outbox.get(key)
                f.usage, f.pos = result.usage, result.pos
                if unsent is not None:
                    f.usage = Usage(
                        f.usage.octets + unsent.octets, f.usage.messages + unsent.messages
                    )
                # A change during the look may be in what it saw or not: count again soon.
                if result.scanned or f.counted_at is None:
                    f.counted_at = started
                if f.changed:
                    f.counted_at = started - self.RECOUNT_AFTER + self.SETTLE
            if f.usage.octets < 0 or f.usage.messages < 0:
                f.counted_at = None  # garbled by hand or a crash: the next use scans
            if result.scanned and before is not None and before != result.usage:
                self.log.info(
                    "quota: {account} recounted: {octets} octets in {messages} messages "
                    "(was {was_octets} in {was_messages})",
                    account=key,
                    octets=result.usage.octets,
                    messages=result.usage.messages,
                    was_octets=before.octets,
                    was_messages=before.messages,
                )
        for w in waiters:
            # The figure as it stands: a waiter before may have reserved room (``room``).
            w.callback(f.usage if self._figures.get(key) is f else result.usage)

    def change(
        self, account: str, octets: int, messages: int, path: Optional[Where] = None
    ) -> None:
        """``octets`` in ``messages`` were added to the account (negative: removed); the
        other processes hear of it through the account's usage file (its Maildir at
        ``path``, or as this process last found it)."""
        key = account.lower()
        if path is not None:
            self._remember(key, path)
        f = self._figures.get(key)
        where = self._paths.get(key)
        if where:
            entry = self._outbox.setdefault(key, _Unsent(where))
            entry.octets += octets
            entry.messages += messages
            self._send()
        if f is None:
            return  # unknown: the first use scans
        if f.scanning:
            f.changed = True
        if f.counted_at is None:
            return
        new = Usage(f.usage.octets + octets, f.usage.messages + messages)
        if new.octets < 0 or new.messages < 0:
            self.log.warn(
                "quota: {account} would keep {octets} octets in {messages} messages; "
                "counting again",
                account=key,
                octets=new.octets,
                messages=new.messages,
            )
            self.forget(account)
            return
        f.usage = new

    def _remember(self, key: str, path: Where) -> None:
        if key not in self._paths and len(self._paths) >= self.MAX_ACCOUNTS:
            self._paths.clear()
        self._paths[key] = path

    def _send(self) -> None:
        """Append the changes waiting in ``_outbox`` to the usage files: one thread job at a
        time, whatever the changes made meanwhile add up to goes in the next one."""
        if self._appending or not self._outbox:
            return
        batch, self._outbox = self._outbox, {}
        self._appending = True
        lines = [(u.where, u.octets, u.messages) for u in batch.values() if u.octets or u.messages]
        keys = [k for k, u in batch.items() if u.octets or u.messages]

        def done(result: Union[list[Appended], Failure]) -> None:
            self._appending = False
            if isinstance(result, Failure):
                self.log.failure("quota: writing the usage files failed", result)
            else:
                written = {file: (before, after) for file, before, after in result}
                for key in keys:
                    f = self._figures.get(key)
                    if f is None or f.file not in written:
                        continue
                    before, after = written[f.file]
                    if f.stamp == before and f.pos == before[1]:
                        # Nobody wrote in between: nothing to read back.
                        f.pos, f.stamp = after[1], after
            self._send()

        self._file_jobs.run(self._run, _append, lines, self._token).addBoth(done)

    def forget(self, account: str, path: Optional[Where] = None) -> None:
        """The figure is unknown from now on (a folder was deleted): the next use scans, in
        this process and (the usage file of the Maildir at ``path`` is removed) in every
        other one."""
        # A scan running now may have seen the folder or not: its answer goes to those
        # waiting for it, but is not kept.
        self._figures.pop(account.lower(), None)
        self._outbox.pop(account.lower(), None)
        if path is not None:
            self._remember(account.lower(), path)
        where = self._paths.get(account.lower())
        if where:
            self._run(_drop, where).addErrback(
                lambda fail: self.log.failure("quota: dropping the usage file failed", fail)
            )

    async def room(
        self,
        account: str,
        path: Where,
        limits: QuotaLimits,
        octets: int,
        messages: int,
        reserve: bool = False,
    ) -> str:
        """Whether ``octets`` in ``messages`` more fit ``account``'s ``limits``: "" when they
        do, else the RFC 9208 resource they exceed ("STORAGE", "MESSAGE"). A refusal rests
        on a count no older than ``VERIFY_AFTER``. With ``reserve`` an addition that fits is
        counted at once (the caller takes it back with ``change`` when it is not stored),
        so concurrent deliveries cannot all pass the same check."""
        if not limits.storage and not limits.messages:
            return ""
        usage = await self.usage(account, path)
        over = limits.exceeded(usage.octets, usage.messages, octets, messages)
        if over:
            usage = await self.usage(account, path, max_age=self.VERIFY_AFTER)
            over = limits.exceeded(usage.octets, usage.messages, octets, messages)
        if not over and reserve:
            self.change(account, octets, messages)
        return over
