"""Mailbox storage usage per account: counted incrementally, recounted by a scan when unknown.

Owns how much mail each account keeps (octets and messages in INBOX and every Maildir++
folder), for the quota (``cgtwist.account_settings.QuotaLimits``): LOCAL delivery, IMAP
APPEND/COPY/EXPUNGE and folder deletion change the figure as they go, so no delivery pays
for a scan. Decides nothing about what is allowed: ``QuotaLimits.exceeded`` does, with the
figure this module gives.

Why a figure in memory, and not Maildir++'s ``maildirsize`` file (Dovecot's quota-maildir.c,
which appends a "octets count" line per change and recounts when the file grows past 5120
bytes): every process that changes an account's folders is this one (LOCAL and IMAP/POP3 run
in the server, never in SMTP workers), so a shared file would only buy durability, and a
durable count would cost an fsync per message. A count in memory costs nothing on the
delivery path and cannot drift without bound:
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

import os
import stat
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.account_settings import QuotaLimits
from cgtwist.logs import Logger
from cgtwist.mailstore import names

Where = Union[str, Callable[[], str]]  # a Maildir path, or how to find it (in the scan's thread)
# Runs blocking work off the reactor: MailboxNotifier.run (a thread), or inline in tests.
Runner = Callable[[Callable[[Where], "Usage"], Where], "defer.Deferred[Usage]"]


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


def _scan_at(path: Where) -> Usage:
    return scan_usage(path() if callable(path) else path)


@dataclass
class _Figure:
    """One account's count: ``usage`` once ``counted_at`` is set (the clock of its scan)."""

    usage: Usage = Usage()
    counted_at: Optional[float] = None
    scanning: bool = False
    changed: bool = False  # a change arrived while the scan ran
    waiters: list[defer.Deferred[Usage]] = field(default_factory=list)


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

    def known(self, account: str) -> Optional[Usage]:
        """The figure as it stands, or None while it is unknown (no scan yet)."""
        f = self._figures.get(account.lower())
        return f.usage if f is not None and f.counted_at is not None else None

    def usage(
        self, account: str, path: Where, max_age: Optional[float] = None
    ) -> defer.Deferred[Usage]:
        """Fire with ``account``'s usage (its Maildir at ``path``, or a callable giving it
        in the scan's thread), scanning first when the figure is unknown or older than
        ``max_age`` (default ``RECOUNT_AFTER``) seconds."""
        key = account.lower()
        f = self._figures.get(key)
        limit = self.RECOUNT_AFTER if max_age is None else max_age
        if f is not None and f.counted_at is not None and self._clock() - f.counted_at < limit:
            return defer.succeed(f.usage)
        return self._scan(key, path)

    def _scan(self, key: str, path: Where) -> defer.Deferred[Usage]:
        f = self._figures.get(key)
        if f is None:
            if len(self._figures) >= self.MAX_ACCOUNTS:
                self._figures.clear()
            f = self._figures[key] = _Figure()
        mine: defer.Deferred[Usage] = defer.Deferred()
        f.waiters.append(mine)
        if not f.scanning:
            f.scanning, f.changed = True, False
            self._run(_scan_at, path).addBoth(self._counted, key, f, self._clock())
        return mine

    def _counted(self, result: Union[Usage, Failure], key: str, f: _Figure, started: float) -> None:
        """A scan ended: keep its figure (unless forgotten meanwhile) and answer its waiters."""
        f.scanning = False
        waiters, f.waiters = f.waiters, []
        if isinstance(result, Failure):
            self.log.failure("quota: counting {account} failed", result, account=key)
            for w in waiters:
                w.errback(result)
            return
        if self._figures.get(key) is f:
            before = f.usage if f.counted_at is not None else None
            f.usage = result
            # A change during the scan may be in what it saw or not: count again soon.
            f.counted_at = started - self.RECOUNT_AFTER + self.SETTLE if f.changed else started
            if before is not None and before != result:
                self.log.info(
                    "quota: {account} recounted: {octets} octets in {messages} messages "
                    "(was {was_octets} in {was_messages})",
                    account=key,
                    octets=result.octets,
                    messages=result.messages,
                    was_octets=before.octets,
                    was_messages=before.messages,
                )
        for w in waiters:
            # The figure as it stands: a waiter before may have reserved room (``room``).
            w.callback(f.usage if self._figures.get(key) is f else result)

    def change(self, account: str, octets: int, messages: int) -> None:
        """``octets`` in ``messages`` were added to the account (negative: removed)."""
        f = self._figures.get(account.lower())
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
                account=account.lower(),
                octets=new.octets,
                messages=new.messages,
            )
            self.forget(account)
            return
        f.usage = new

    def forget(self, account: str) -> None:
        """The figure is unknown from now on (a folder was deleted): the next use scans."""
        # A scan running now may have seen the folder or not: its answer goes to those
        # waiting for it, but is not kept.
        self._figures.pop(account.lower(), None)

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
