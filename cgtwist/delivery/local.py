"""LOCAL delivery: put a spooled message into an account's Maildir INBOX, durably.

Owns the LOCAL module's one job (queue ``LOCAL(name@domain)``): look the account up, prepend
``Return-Path:`` and ``Delivered-To:``, write an unnamed file (O_TMPFILE) -> fsync -> link into
``new/`` -> fsync the file again (its link count), or ``tmp/`` -> fsync -> rename into ``new/``,
then fsync ``new/`` (maildir(5); RELIABILITY.md a3/a7) and tell the mailbox notifier. The message
bytes are written exactly as spooled. A missing account, a full disk, a permission problem or a
failed fsync leaves the recipients pending (the queue retries), never dropped; a name linked
before a failed fsync is removed again, so the retry does not deliver it twice.
Paths come only from ``cgtwist.paths.maildir`` over the store's canonical names. All disk work
runs in a thread.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist import crashpoint as cp
from cgtwist import paths
from cgtwist.durable import DirSync
from cgtwist.errors import InvalidName
from cgtwist.interfaces import IDeliveryAgent
from cgtwist.logs import Logger
from cgtwist.mailstore import maildir as md
from cgtwist.types import Account, Envelope, LocalDecision, Recipient

_QUEUE_RE = re.compile(r"^LOCAL\((.+)\)$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def _eol(data: bytes) -> bytes:
    """The message's own line ending, so the prepended header lines match it."""
    nl = data.find(b"\n")
    return b"\n" if nl > 0 and data[nl - 1 : nl] != b"\r" else b"\r\n"


def trace_headers(sender: str, account: str, eol: bytes) -> bytes:
    """``Return-Path:`` (RFC 5321 §4.4) and ``Delivered-To:``, control characters removed."""
    s = _UNSAFE.sub("", sender)
    a = _UNSAFE.sub("", account)
    return (
        b"Return-Path: <"
        + s.encode("utf-8", "replace")
        + b">"
        + eol
        + b"Delivered-To: "
        + a.encode("utf-8", "replace")
        + eol
    )


def write_account(
    base_dir: str,
    domain: str,
    account: str,
    chunks: list[bytes],
    hostname: Optional[str] = None,
    sync_new: Any = True,
) -> tuple[str, str]:
    """Blocking: the account's INBOX path via cgtwist.paths (its containment check resolves
    real paths: disk access, so it runs here in the thread too), then ``write_maildir``.
    Returns (Maildir path, file name in ``new/``). ``sync_new`` may be a callable taking the
    ``new/`` path that fsyncs it (a shared ``DirSync``)."""
    path = paths.maildir(base_dir, domain, account)
    return path, write_maildir(path, chunks, hostname, sync_new)


def write_maildir(
    path: str,
    chunks: list[bytes],
    hostname: Optional[str] = None,
    sync_new: Any = True,
    ensure: bool = True,
) -> str:
    """Blocking: deliver ``chunks`` into Maildir ``path`` (created if missing); return the name
    in ``new/``: ``<secs>.M<usec>P<pid>Q<n>.<host>,S=<size>``. With ``sync_new`` False the
    caller fsyncs ``new/`` itself before it may count the message delivered; a callable is
    called with the ``new/`` path to do it here (group commit among threads). ``ensure``
    False skips checking that the Maildir exists (the caller knows it does; a missing
    ``tmp/`` or ``new/`` then raises FileNotFoundError).

    When the fsync of ``new/`` fails (EIO) the name is removed again before CommitFailed is
    raised: the recipient stays pending and is retried, and a name that stayed would be a
    second copy after the retry (every delivery sharing that fsync withdraws its own)."""
    if ensure:
        md.ensure(path)  # fsyncs each directory it makes in its parent (domain, account, ...)
    size = sum(len(c) for c in chunks)
    name = _write_unnamed(path, chunks, size, hostname) if _unnamed_ok else None
    if name is None:
        name = _write_via_tmp(path, chunks, size, hostname)
    if not sync_new:
        return name
    new_dir = os.path.join(path, "new")
    try:
        if callable(sync_new):
            sync_new(new_dir)
        else:
            md.fsync_dir(new_dir)
    except BaseException as e:
        raise _withdraw(path, name, e) from e
    cp.crashpoint(cp.LOCAL_AFTER_RENAME)
    return name


class CommitFailed(OSError):
    """A message was linked into ``new/`` but could not be made durable (an fsync failed).

    ``withdrawn`` says its name was removed again, so a retry delivers it once; when False the
    name ``filename`` stayed (removing it failed too) and a retry may deliver it twice."""

    def __init__(self, error: BaseException, filename: str, withdrawn: bool) -> None:
        code = getattr(error, "errno", None) or errno.EIO
        super().__init__(code, getattr(error, "strerror", None) or str(error) or os.strerror(code))
        self.filename = filename
        self.withdrawn = withdrawn


def _withdraw(path: str, name: str, error: BaseException) -> CommitFailed:
    """Blocking: remove the name ``name`` given in new/ (or cur/, where an IMAP session may
    have moved it meanwhile) after its commit failed; the CommitFailed to raise."""
    where = os.path.join(path, "new", name)
    try:
        try:
            os.unlink(where)
        except FileNotFoundError:
            moved = md.find_key(where)
            if moved is None:
                return CommitFailed(error, name, True)  # nothing left to remove
            where = moved
            os.unlink(where)
    except OSError:
        return CommitFailed(error, name, False)
    try:
        md.fsync_dir(os.path.dirname(where))  # best effort: the withdrawal durable too
    except OSError:
        pass
    return CommitFailed(error, name, True)


# O_TMPFILE (Linux 3.11+, on ext4, XFS, btrfs, tmpfs): the message's inode is created with no
# name, written and fsynced, then linked into new/ in one step. Against maildir(5)'s tmp/ file
# and rename that saves a directory entry made and removed in tmp/ per message, and creating
# the inode does not hold tmp/'s directory lock, on which concurrent deliveries into one
# Maildir queued (perf: 1-2% of all CPU spinning on it while ext4 without a journal walked
# past recently freed inodes; 0.4% after). A crash before the link leaves nothing behind, not
# a file in tmp/ for clean_tmp. The price is a second fsync of the file after the link (its
# link count); where the file system or /proc does not offer O_TMPFILE, the classic tmp/ +
# rename (whose rename leaves the fsynced link count alone) is used from then on.
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_unnamed_ok = bool(_O_TMPFILE) and os.path.isdir("/proc/self/fd")
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP}
_proc_fd: tuple[int, int] = (0, -1)  # (pid, descriptor of /proc/self/fd) of this process
_proc_fd_lock = threading.Lock()


def _proc_fd_dir() -> int:
    """This process's /proc/self/fd directory, opened once. os.link only asks linkat to follow
    the magic link (AT_SYMLINK_FOLLOW) when given a directory descriptor; plain link(2) would
    try to link the /proc entry itself (EXDEV)."""
    global _proc_fd
    pid = os.getpid()
    with _proc_fd_lock:
        if _proc_fd[0] != pid:
            _proc_fd = (pid, os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY))
        return _proc_fd[1]


def _write_unnamed(
    path: str, chunks: list[bytes], size: int, hostname: Optional[str]
) -> Optional[str]:
    """Blocking: the O_TMPFILE delivery; the name in new/, or None when the file system cannot
    do it (nothing was written: the caller uses tmp/ + rename)."""
    global _unnamed_ok
    try:
        fd = os.open(os.path.join(path, "tmp"), os.O_WRONLY | _O_TMPFILE, 0o600)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            _unnamed_ok = False
            return None
        raise
    try:
        _write_all(fd, chunks)
        os.fsync(fd)  # the data, before any name can lead to it
        cp.crashpoint(cp.LOCAL_BEFORE_RENAME)
        while True:
            name = f"{md.unique_key(hostname)},S={size}"
            try:
                # linkat(AT_SYMLINK_FOLLOW) of the /proc link: open(2)'s O_TMPFILE recipe
                # for an unprivileged process.
                os.link(str(fd), os.path.join(path, "new", name), src_dir_fd=_proc_fd_dir())
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EXDEV, errno.EPERM) and os.path.isdir(
                    os.path.join(path, "new")
                ):
                    _unnamed_ok = False  # no usable /proc link: the classic way from now on
                    return None
                raise
            break
        # The link raised the inode's link count from 0 to 1, and fsync(new/) does not write
        # the inode on every file system (ext4 without a journal does not): without this the
        # name can survive a power cut pointing at an inode with no links, which e2fsck frees.
        # Each thread fsyncs its own file, at the same time as the others: the kernel already
        # groups concurrent fsyncs (one journal commit; the block layer merges their cache
        # flushes), where one thread fsyncing every file of a batch in turn would serialise
        # them. Only the fsync of new/, one file for all, is shared (DirSync).
        try:
            os.fsync(fd)
        except BaseException as e:
            raise _withdraw(path, name, e) from e
        return name
    finally:
        os.close(fd)


def _write_via_tmp(path: str, chunks: list[bytes], size: int, hostname: Optional[str]) -> str:
    """Blocking: maildir(5)'s way: a file in tmp/, fsynced, renamed into new/."""
    while True:
        key = md.unique_key(hostname)
        tmp = os.path.join(path, "tmp", key)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        break
    try:
        try:
            _write_all(fd, chunks)
            os.fsync(fd)
        finally:
            os.close(fd)
        cp.crashpoint(cp.LOCAL_BEFORE_RENAME)
        name = f"{key},S={size}"
        os.rename(tmp, os.path.join(path, "new", name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return name


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write every chunk: one writev in the usual case (each system call in a worker thread
    is a GIL hand-off with the reactor)."""
    left = sum(len(c) for c in chunks)
    n = os.writev(fd, chunks)
    if n == left:
        return
    rest = memoryview(b"".join(chunks))[n:]
    while rest:
        rest = rest[os.write(fd, rest) :]


@implementer(IDeliveryAgent)
class LocalDelivery:
    """``LocalDelivery(base_dir, store, notifier=None, *, reactor, threadpool=None,
    hostname=None)``: IDeliveryAgent for module "LOCAL".

    ``store`` is an IAccountStore (``get_account``), ``notifier`` an IMailboxNotifier.
    ``rules`` is the hook for domain and account Rules (CommuniGate applies them here, on
    LOCAL only): a callable ``(account, envelope, data) -> LocalDecision | None`` (or a
    Deferred of one); None or no hook means "store in INBOX". A failing hook never loses mail:
    the message goes to INBOX and the failure is logged.
    Accounts found are remembered for ``ACCOUNT_TTL`` seconds (``reactor.seconds()``) so a
    burst of mail to one account asks the store once; call ``forget()`` when accounts change
    (the service does on every settings reload, which cgtwist-admin triggers after a change).
    An account not found is never remembered.
    """

    module = "LOCAL"
    log = Logger()
    ACCOUNT_TTL = 5.0
    ACCOUNT_CACHE_MAX = 10000

    def __init__(
        self,
        base_dir: str,
        store: Any,
        notifier: Any = None,
        *,
        reactor: Any,
        threadpool: Any = None,
        hostname: Optional[str] = None,
    ) -> None:
        self.base_dir = base_dir
        self.store = store
        self.notifier = notifier
        self.reactor = reactor
        self.threadpool = threadpool
        self.hostname = hostname or socket.gethostname() or "localhost"
        self.rules: Any = None
        self._syncs: dict[str, DirSync] = {}
        self._syncs_lock = threading.Lock()
        self._accounts: dict[tuple[str, str], tuple[float, Account]] = {}
        # Maildir paths already checked (cgtwist.paths resolves real paths: ~20 stat calls)
        # and known to exist, for as long as the account itself is remembered.
        self._paths: dict[tuple[str, str], tuple[float, str]] = {}
        self._generation = 0  # bumped by forget(): a lookup begun before is not remembered

    def forget(self) -> None:
        """Drop the remembered accounts and Maildir paths (accounts were changed)."""
        self._accounts.clear()
        self._paths.clear()
        self._generation += 1

    def _write(
        self, domain: str, name: str, chunks: list[bytes], known: Optional[str]
    ) -> tuple[str, str]:
        """Thread: deliver into the account's Maildir; ``known`` is its path from an earlier
        delivery (checked then), used as is unless it has disappeared since."""
        if known is not None:
            try:
                return known, write_maildir(known, chunks, self.hostname, self._sync_new, False)
            except FileNotFoundError:
                pass  # removed behind our back: check the path and create it again
        return write_account(self.base_dir, domain, name, chunks, self.hostname, self._sync_new)

    def _account(self, name: str, domain: str) -> defer.Deferred[Optional[Account]]:
        key = (name.lower(), domain.lower())
        now = self.reactor.seconds()
        hit = self._accounts.get(key)
        if hit is not None and hit[0] > now:
            return defer.succeed(hit[1])
        generation = self._generation

        def found(account: Optional[Account]) -> Optional[Account]:
            # A lookup that overlapped forget() may have read the store before the change.
            if account is not None and generation == self._generation:
                if len(self._accounts) >= self.ACCOUNT_CACHE_MAX:
                    self._accounts.clear()
                self._accounts[key] = (now + self.ACCOUNT_TTL, account)
            return account

        return defer.maybeDeferred(self.store.get_account, name, domain).addCallback(found)

    def deliver(
        self, msg_id: str, envelope: Envelope, data: bytes, recipients: list[Recipient]
    ) -> defer.Deferred[list[Recipient]]:
        """One copy into the queue's account for all ``recipients``; fires with them updated."""
        return defer.Deferred.fromCoroutine(self._deliver(msg_id, envelope, data, recipients))

    async def _deliver(
        self, msg_id: str, envelope: Envelope, data: bytes, recipients: list[Recipient]
    ) -> list[Recipient]:
        if not recipients:
            return recipients
        m = _QUEUE_RE.match(recipients[0].route or "")
        target = m.group(1) if m else recipients[0].address
        name, _, domain = target.rpartition("@")
        try:
            account: Optional[Account] = await self._account(name, domain)
        except Exception as e:
            self.log.error(
                "local: {msg_id} account lookup for {account} failed: {error}",
                msg_id=msg_id,
                account=target,
                error=str(e) or type(e).__name__,
            )
            return _all(recipients, "pending", "451 4.3.0 account store unavailable")
        if account is None:
            # Deleted after acceptance (or not yet created): keep the mail, retry (issue 2 §9).
            self.log.warn(
                "local: {msg_id} no account {account}; will retry", msg_id=msg_id, account=target
            )
            return _all(recipients, "pending", "451 4.2.1 mailbox unavailable: no such account")
        address = account.address
        decision = await self._decide(msg_id, account, envelope, data)
        if decision.discard:
            self.log.info(
                "local: {msg_id} to {account} discarded by rules", msg_id=msg_id, account=address
            )
            return _all(recipients, "delivered", "250 2.0.0 discarded by rules")
        if decision.reject:
            text = " ".join(decision.reject.split())[:200] or "rejected by rules"
            return _all(recipients, "failed", f"550 5.7.1 {text}")
        eol = _eol(data)
        extra = b"".join(
            h.encode("utf-8", "replace") + eol
            for h in decision.add_headers
            if h and "\r" not in h and "\n" not in h and ":" in h
        )
        chunks = [trace_headers(envelope.sender, address, eol) + extra, data]
        if decision.folder.upper() != "INBOX":
            return await self._deliver_folder(msg_id, account, decision.folder, chunks, recipients)
        pool = self.threadpool or self.reactor.getThreadPool()
        key = (account.domain, account.name)
        now = self.reactor.seconds()
        hit = self._paths.get(key)
        known = hit[1] if hit is not None and hit[0] > now else None
        try:
            # One thread job: write, fsync, rename, and the fsync of new/ that concurrent
            # deliveries into the same Maildir share (group commit among the threads).
            path, fname = await deferToThreadPool(
                self.reactor, pool, self._write, account.domain, account.name, chunks, known
            )
            if known is None:  # checked just now: good for one TTL
                if len(self._paths) >= self.ACCOUNT_CACHE_MAX:
                    self._paths.clear()
                self._paths[key] = (now + self.ACCOUNT_TTL, path)
        except InvalidName:
            self.log.error(
                "local: {msg_id} unsafe account name {account}", msg_id=msg_id, account=address
            )
            return _all(recipients, "failed", "550 5.1.3 bad mailbox name")
        except OSError as e:
            nospace = e.errno in (errno.ENOSPC, errno.EDQUOT)
            detail = (
                "452 4.3.1 insufficient system storage"
                if nospace
                else f"451 4.3.0 local delivery failed ({errno.errorcode.get(e.errno or 0, 'error')})"
            )
            self._log_failure(msg_id, address, "INBOX", e)
            return _all(recipients, "pending", detail)
        self.log.debug(
            "local: {msg_id} delivered to {account} as {file}",
            msg_id=msg_id,
            account=address,
            file=fname,
        )
        self._notify(address)
        return _all(recipients, "delivered", "250 2.0.0 delivered to INBOX")

    async def _decide(
        self, msg_id: str, account: Account, envelope: Envelope, data: bytes
    ) -> LocalDecision:
        if self.rules is None:
            return LocalDecision()
        try:
            decision = await defer.maybeDeferred(self.rules, account, envelope, data)
        except Exception:
            self.log.failure(
                "local: {msg_id} rules for {account} failed; stored in INBOX",
                msg_id=msg_id,
                account=account.address,
            )
            return LocalDecision()
        return decision if isinstance(decision, LocalDecision) else LocalDecision()

    async def _deliver_folder(
        self,
        msg_id: str,
        account: Account,
        folder: str,
        chunks: list[bytes],
        recipients: list[Recipient],
    ) -> list[Recipient]:
        """ "Store in" a folder other than INBOX; an unusable name falls back to INBOX."""
        from cgtwist.mailstore.names import MailboxNameError, folder_path

        pool = self.threadpool or self.reactor.getThreadPool()

        def write() -> str:
            inbox = paths.maildir(self.base_dir, account.domain, account.name)
            try:
                target = folder_path(inbox, folder)
            except (MailboxNameError, ValueError):
                target = inbox
            return write_maildir(target, chunks, self.hostname, self._sync_new)

        try:
            fname = await deferToThreadPool(self.reactor, pool, write)
        except OSError as e:
            self._log_failure(msg_id, account.address, folder, e)
            return _all(recipients, "pending", "451 4.3.0 local delivery failed")
        self.log.debug(
            "local: {msg_id} stored in {folder} of {account} as {file}",
            msg_id=msg_id,
            folder=folder,
            account=account.address,
            file=fname,
        )
        if self.notifier is not None:
            defer.maybeDeferred(self.notifier.mailbox_changed, account.address, folder).addErrback(
                lambda f: self.log.failure("local: notifier failed", f)
            )
        return _all(recipients, "delivered", f"250 2.0.0 delivered to {folder}")

    def _log_failure(self, msg_id: str, address: str, folder: str, e: OSError) -> None:
        """One line per failed delivery; a failed commit says what became of the copy."""
        error = e.strerror or str(e)
        if not isinstance(e, CommitFailed):
            self.log.error(
                "local: {msg_id} to {account} deferred: {error}",
                msg_id=msg_id,
                account=address,
                error=error,
            )
        elif e.withdrawn:
            self.log.error(
                "local: {msg_id} to {account} {folder} deferred: commit failed "
                "({error}); {file} withdrawn, will retry",
                msg_id=msg_id,
                account=address,
                folder=folder,
                error=error,
                file=e.filename,
            )
        else:
            self.log.error(
                "local: {msg_id} to {account} {folder} deferred: commit failed "
                "({error}) and {file} could not be withdrawn: the retry may deliver "
                "it twice",
                msg_id=msg_id,
                account=address,
                folder=folder,
                error=error,
                file=e.filename,
            )

    def _sync_new(self, new_dir: str) -> None:
        """Thread: fsync ``new_dir`` shared with the other threads delivering into it."""
        with self._syncs_lock:
            ds = self._syncs.get(new_dir)
            if ds is None:
                if len(self._syncs) >= self.ACCOUNT_CACHE_MAX:
                    self._syncs.clear()  # a thread holding an old one still syncs correctly
                ds = self._syncs[new_dir] = DirSync(new_dir)
        ds.sync()

    def _notify(self, address: str) -> None:
        if self.notifier is None:
            return
        try:
            d = defer.maybeDeferred(self.notifier.mailbox_changed, address, "INBOX")
        except Exception:
            self.log.failure("local: notifier failed for {account}", account=address)
            return

        def failed(f: Failure) -> None:
            self.log.failure("local: notifier failed for {account}", f, account=address)

        d.addErrback(failed)


def _all(recipients: list[Recipient], state: str, detail: str) -> list[Recipient]:
    for r in recipients:
        r.state, r.detail = state, detail
    return recipients
