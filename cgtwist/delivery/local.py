"""LOCAL delivery: put a spooled message into an account's Maildir INBOX, durably.

Owns the LOCAL module's one job (queue ``LOCAL(name@domain)``): look the account up, apply the
Rules, prepend ``Return-Path:`` and ``Delivered-To:``, store the message through the mailstore's
one save path (``cgtwist.mailstore.maildir.MaildirWriter``: durable in ``new/`` before it
returns, maildir(5); RELIABILITY.md a3/a7) and tell the mailbox notifier. The message bytes are
written exactly as spooled. A missing account, a full disk, a permission problem or a failed
fsync leaves the recipients pending (the queue retries), never dropped; a name made before a
failed fsync is removed again by the save, so the retry does not deliver it twice.
Paths come only from ``cgtwist.paths.maildir`` over the store's canonical names. All disk work
runs in a thread.
"""

from __future__ import annotations

import errno
import re
import socket
from typing import Any, Awaitable, Callable, Optional, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist import crashpoint as cp
from cgtwist import paths
from cgtwist.account_settings import Effective, QuotaLimits
from cgtwist.delivery import localquota
from cgtwist.delivery.agent import DeliveryAgent, settle
from cgtwist.errors import InvalidName
from cgtwist.interfaces import IDeliveryAgent
from cgtwist.logs import Logger
from cgtwist.mailstore import maildir as md
from cgtwist.mailstore.maildir import CommitFailed, MaildirWriter
from cgtwist.mailstore.quota import UsageBook
from cgtwist.types import Account, Envelope, LocalDecision, QueueName, Recipient

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_STATUS_RE = re.compile(r"^5\.\d{1,3}\.\d{1,3} ")  # a rule's reject text with its own status


class ISettingsSource(Protocol):
    """Where LOCAL reads an account's settings in force (cgtwist.core.account_limits)."""

    def effective(self, address: str) -> Awaitable[Optional[Effective]]:
        """The account's effective settings, None for no such account."""


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


@implementer(IDeliveryAgent)
class LocalDelivery(DeliveryAgent):
    """``LocalDelivery(base_dir, store, notifier=None, *, reactor, threadpool=None,
    hostname=None, rules=None, writer=None, limits=None, usage=None, clock=None)``:
    IDeliveryAgent for module "LOCAL".

    ``store`` is an IAccountStore (``get_account``), ``notifier`` an IMailboxNotifier.
    ``rules`` is the hook for domain and account Rules (CommuniGate applies them here, on
    LOCAL only): a callable ``(account, envelope, data) -> LocalDecision | None`` (or a
    Deferred of one); None or no hook means "store in INBOX". A failing hook never loses mail:
    the message goes to INBOX and the failure is logged.
    Accounts found are remembered for ``ACCOUNT_TTL`` seconds (``reactor.seconds()``) so a
    burst of mail to one account asks the store once; call ``forget()`` when accounts change
    (the service does on every settings reload, which cgtwist-admin triggers after a change).
    An account not found is never remembered.

    The storage quota (``quota.storage`` and ``quota.messages`` of the account's settings
    from ``limits``, its count in ``usage``, the process's ``UsageBook``): a message that
    fits is counted at once and stored, however near the limit; one that does not is
    deferred with 4.2.2 and, after ``quota.grace`` seconds, fails with 5.2.2
    (``cgtwist.delivery.localquota``). Without ``limits`` and ``usage`` nothing is limited.
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
        rules: Optional[Callable[..., Any]] = None,
        writer: Optional[MaildirWriter] = None,
        limits: Optional[ISettingsSource] = None,
        usage: Optional[UsageBook] = None,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        self.base_dir = base_dir
        self.store = store
        self.notifier = notifier
        self.reactor = reactor
        self.threadpool = threadpool
        self.hostname = hostname or socket.gethostname() or "localhost"
        self.rules = rules
        # The process's Maildir save path: new/'s fsync group-committed among its threads.
        self.writer = writer or MaildirWriter(
            self.hostname, points=(cp.LOCAL_BEFORE_RENAME, cp.LOCAL_AFTER_RENAME)
        )
        self._accounts: dict[tuple[str, str], tuple[float, Account]] = {}
        # Maildir paths already checked (cgtwist.paths resolves real paths: ~20 stat calls)
        # and known to exist, for as long as the account itself is remembered.
        self._paths: dict[tuple[str, str], tuple[float, str]] = {}
        self._generation = 0  # bumped by forget(): a lookup begun before is not remembered
        self.limits = limits
        self.usage = usage
        # When each message was first deferred for quota: ``clock`` (default the reactor).
        self._seconds = (clock or reactor).seconds
        self.grace = localquota.GraceClock(self._seconds)

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
                return known, self.writer.deliver(known, chunks, ensure_dirs=False)
            except FileNotFoundError:
                pass  # removed behind our back: check the path and create it again
        # cgtwist.paths resolves real paths (its containment check): disk access, so here
        path = paths.maildir(self.base_dir, domain, name)
        return path, self.writer.deliver(path, chunks)

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

    async def attempt(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> list[Recipient]:
        """One copy into the queue's account ``LOCAL(account)`` for all ``recipients``."""
        if queue is not None and queue.module == "LOCAL" and queue.queue:
            target = queue.queue
        else:
            target = recipients[0].address
        since = localquota.since_in(r.detail for r in recipients)  # before this attempt's
        done = await self._attempt(msg_id, envelope, data, recipients, target)
        # A recipient the quota deferred before and that waits again for another reason (a
        # store or disk error) keeps the grace clock's start in its detail: the queue keeps
        # it across a restart, and the next over-quota answer counts from it.
        started = self.grace.started(msg_id, target)
        if started is None:
            started = since
        if started is not None:
            for r in done:
                if r.state == "pending" and localquota.since_in([r.detail]) is None:
                    r.detail = localquota.marked(r.detail, started)
        return done

    async def _attempt(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        target: str,
    ) -> list[Recipient]:
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
            return settle(recipients, "pending", "451 4.3.0 account store unavailable")
        if account is None:
            # Deleted after acceptance (or not yet created): keep the mail, retry (issue 2 §9).
            self.log.warn(
                "local: {msg_id} no account {account}; will retry", msg_id=msg_id, account=target
            )
            return settle(recipients, "pending", "451 4.2.1 mailbox unavailable: no such account")
        address = account.address
        decision = await self._decide(msg_id, account, envelope, data)
        if decision.discard:
            self.log.info(
                "local: {msg_id} to {account} discarded by rules", msg_id=msg_id, account=address
            )
            return settle(recipients, "delivered", "250 2.0.0 discarded by rules")
        if decision.reject:
            text = " ".join(decision.reject.split())[:200] or "rejected by rules"
            status = "" if _STATUS_RE.match(text) else "5.7.1 "
            return settle(recipients, "failed", f"550 {status}{text}")
        if decision.data is not None:
            data = decision.data
        eol = _eol(data)
        extra = b"".join(
            h.encode("utf-8", "replace") + eol
            for h in decision.add_headers
            if h and "\r" not in h and "\n" not in h and ":" in h
        )
        chunks = [trace_headers(envelope.sender, address, eol) + extra, data]
        octets = sum(len(c) for c in chunks)
        held = await self._quota_hold(msg_id, account, octets, recipients)
        if held is not None:
            return held
        if decision.folder.upper() != "INBOX" or decision.flags:
            return await self._deliver_folder(
                msg_id, account, decision.folder, chunks, recipients, decision.flags, True
            )
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
            self._stored(msg_id, address, octets, reserved=True, ok=False)
            self.log.error(
                "local: {msg_id} unsafe account name {account}", msg_id=msg_id, account=address
            )
            return settle(recipients, "failed", "550 5.1.3 bad mailbox name")
        except OSError as e:
            self._stored(msg_id, address, octets, reserved=True, ok=False)
            nospace = e.errno in (errno.ENOSPC, errno.EDQUOT)
            detail = (
                "452 4.3.1 insufficient system storage"
                if nospace
                else f"451 4.3.0 local delivery failed ({errno.errorcode.get(e.errno or 0, 'error')})"
            )
            self._log_failure(msg_id, address, "INBOX", e)
            return settle(recipients, "pending", detail)
        self.log.debug(
            "local: {msg_id} delivered to {account} as {file}",
            msg_id=msg_id,
            account=address,
            file=fname,
        )
        self._stored(msg_id, address, octets, reserved=True, ok=True)
        self._notify(address)
        return settle(recipients, "delivered", "250 2.0.0 delivered to INBOX")

    def store_in(self, msg_id: str, address: str, folder: str, data: bytes) -> defer.Deferred[bool]:
        """Store ``data`` in ``folder`` of account ``address``, no Rules (the LIST module's
        archive copy); fires True once it is durable, False when it could not be stored."""

        async def store() -> bool:
            name, _at, domain = address.rpartition("@")
            account = await self._account(name, domain)
            if account is None:
                return False
            done = await self._deliver_folder(msg_id, account, folder, [data], [Recipient(address)])
            return done[0].state == "delivered"

        return defer.Deferred.fromCoroutine(store())

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
        flags: tuple[str, ...] = (),
        reserved: bool = False,
    ) -> list[Recipient]:
        """ "Store in" a folder other than INBOX, and "Mark": with ``flags`` the message
        goes on into cur/ under a name carrying them; an unusable name falls back to INBOX.
        ``reserved``: the quota count holds the message already (``_quota_hold``)."""
        from cgtwist.mailstore.names import MailboxNameError, folder_path

        pool = self.threadpool or self.reactor.getThreadPool()

        def write() -> str:
            inbox = paths.maildir(self.base_dir, account.domain, account.name)
            try:
                target = folder_path(inbox, folder)
            except (MailboxNameError, ValueError):
                target = inbox
            fname = self.writer.deliver(target, chunks)
            return md.mark_new(target, fname, flags) if flags else fname

        octets = sum(len(c) for c in chunks)
        try:
            fname = await deferToThreadPool(self.reactor, pool, write)
        except OSError as e:
            self._stored(msg_id, account.address, octets, reserved, ok=False)
            self._log_failure(msg_id, account.address, folder, e)
            return settle(recipients, "pending", "451 4.3.0 local delivery failed")
        self._stored(msg_id, account.address, octets, reserved, ok=True)
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
        return settle(recipients, "delivered", f"250 2.0.0 delivered to {folder}")

    async def _quota_hold(
        self, msg_id: str, account: Account, octets: int, recipients: list[Recipient]
    ) -> Optional[list[Recipient]]:
        """None when the message may be stored (counted in the quota now, so concurrent
        deliveries see it; ``_stored`` takes it back when it is not); else the recipients
        deferred (4.2.2) or, after the account's ``quota.grace``, failed (5.2.2). A quota
        that cannot be read or counted lets the message through (logged): a broken count
        must not hold mail back."""
        if self.usage is None:
            return None
        address = account.address
        try:
            limits = QuotaLimits()
            if self.limits is not None:
                eff = await self.limits.effective(address)
                limits = eff.values.quota if eff is not None else limits
            if not limits.storage and not limits.messages:
                # Counted as every delivery is (in the account's usage file too).
                self.usage.change(address, octets, 1, self._maildir_of(account))
                return None
            over = await self.usage.room(
                address, self._maildir_of(account), limits, octets, 1, reserve=True
            )
        except Exception:
            self.log.failure(
                "local: {msg_id} quota of {account} unknown; delivering",
                msg_id=msg_id,
                account=address,
            )
            self.usage.change(address, octets, 1, self._maildir_of(account))
            return None
        if not over:
            return None
        # The clock's start: in memory, else as the queue kept it in the recipients' last
        # answer (a restart), else now.
        first = self.grace.start(msg_id, address, localquota.since_in(r.detail for r in recipients))
        waited = max(0.0, self._seconds() - first)
        if waited >= limits.grace:
            self.grace.done(msg_id, address)
            self.log.warn(
                "local: {msg_id} to {account} failed: {resource} quota still reached after "
                "{waited} s ({octets} octets)",
                msg_id=msg_id,
                account=address,
                resource=over,
                waited=int(waited),
                octets=octets,
            )
            return settle(recipients, "failed", localquota.failure(over, limits.grace))
        self.log.info(
            "local: {msg_id} to {account} deferred: {resource} quota reached "
            "({octets} octets; failing after {left} s more)",
            msg_id=msg_id,
            account=address,
            resource=over,
            octets=octets,
            left=int(limits.grace - waited),
        )
        return settle(recipients, "pending", localquota.deferral(over, first))

    def _maildir_of(self, account: Account) -> Callable[[], str]:
        """The account's Maildir path, resolved where it is used (a quota scan's thread:
        ``paths.maildir`` stats the tree)."""
        return lambda: paths.maildir(self.base_dir, account.domain, account.name)

    def _stored(self, msg_id: str, address: str, octets: int, reserved: bool, ok: bool) -> None:
        """The quota count after a delivery attempt: a reservation is taken back when the
        message was not stored, a message stored without one is added."""
        if ok:
            self.grace.done(msg_id, address)
        if self.usage is None or ok == reserved:
            return
        sign = 1 if ok else -1
        self.usage.change(address, sign * octets, sign)

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
