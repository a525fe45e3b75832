"""The process-wide folder registry: one shared Folder per open mailbox, and the push on delivery.

Owns which folders are open in this process and how blocking disk work is run (a thread pool
passed in). LOCAL delivery calls ``mailbox_changed("name@domain", "INBOX")`` after it renamed a
message into ``new/``; every session with that folder open is updated at once (IDLE pushes).
"""

from __future__ import annotations

import os
import time
import weakref
from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional, TypeVar, cast

from twisted.internet import defer, threads
from zope.interface import implementer

from cgtwist.interfaces import IMailboxNotifier
from cgtwist.logs import Logger
from cgtwist.mailstore import index, names, tree, watch
from cgtwist.mailstore.folder import Folder
from cgtwist.mailstore.quota import UsageBook

_T = TypeVar("_T")


@implementer(IMailboxNotifier)
class MailboxNotifier:
    """``MailboxNotifier(reactor, threadpool=None, hostname=None, clock=time.time, timer=None)``.

    ``reactor`` None runs disk work inline (tests, command-line tools); otherwise it runs in
    ``threadpool`` (default: the reactor's). ``hostname`` goes into new Maildir file names.
    ``timer`` (an IReactorTime; default the reactor) schedules folders' delayed disk work.
    ``tombstones_kept`` gives imap.tombstones_kept, read at each expunge (default: the
    index's constant). ``usage`` is the process's one quota count (``UsageBook``): its
    folders report what APPEND, COPY and EXPUNGE add and remove, LOCAL what it delivers.
    """

    log = Logger()
    KEEP = 128  # recently used folders kept loaded after their last session left...
    KEEP_MESSAGES = 100_000  # ...as long as they hold no more messages than this (~1.5 KB each)

    def __init__(
        self,
        reactor: Any = None,
        threadpool: Any = None,
        hostname: Optional[str] = None,
        clock: Callable[[], float] = time.time,
        timer: Any = None,
        tombstones_kept: Callable[[], int] = lambda: index.TOMBSTONES_KEPT,
    ) -> None:
        self._reactor = reactor
        self._tombstones_kept = tombstones_kept
        self._timer = timer if timer is not None else reactor
        self._pool = threadpool
        self._hostname = hostname
        self._clock = clock
        self._last_uidvalidity = 0
        self._folders: weakref.WeakValueDictionary[tuple[str, str], Folder] = (
            weakref.WeakValueDictionary()
        )
        self._keep: OrderedDict[tuple[str, str], Folder] = OrderedDict()
        self._shared: dict[Hashable, object] = {}
        self._write_locks: dict[Hashable, defer.DeferredLock] = {}
        self._watch: Optional[watch.FolderWatch] = None
        self.usage = UsageBook(self.run, reactor.seconds if reactor is not None else time.monotonic)

    def run(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Run blocking ``fn(*args)`` off the reactor thread; fires with its result."""
        if self._reactor is None:
            return defer.maybeDeferred(fn, *args)
        pool = self._pool if self._pool is not None else self._reactor.getThreadPool()
        return threads.deferToThreadPool(self._reactor, pool, fn, *args)

    def shared_set(self, key: Hashable, load: Callable[[], set[str]]) -> set[str]:
        """A set shared by every session of this process (e.g. an account's subscriptions),
        loaded once with ``load`` (blocking but small: one file)."""
        return self.shared(key, load)

    def shared(self, key: Hashable, load: Callable[[], _T]) -> _T:
        """State shared by every session of this process (e.g. an account's special-use
        map), loaded once with ``load``; the key's owner picks one type for it."""
        if key not in self._shared:
            self._shared[key] = load()
        return cast(_T, self._shared[key])

    def write_serialised(
        self, key: Hashable, job: Callable[[], tuple[Any, ...]]
    ) -> defer.Deferred[Any]:
        """Run ``fn(*args)`` from ``job()`` off the reactor, one at a time per ``key``; ``job`` is
        called when the turn comes, so each write takes the then-current state. Fires when the
        write is done; a failure is logged and passed on (a caller that does not wait must
        consume it)."""
        lock = self._write_locks.setdefault(key, defer.DeferredLock())

        def go() -> defer.Deferred[Any]:
            fn, *args = job()
            return self.run(fn, *args)

        def failed(f: Any) -> Any:
            self.log.failure("background write failed", f)
            return f

        return lock.run(go).addErrback(failed)

    def next_uidvalidity(self, root: Optional[str] = None) -> int:
        """(thread when ``root`` is given) A fresh UIDVALIDITY for a new folder of the account
        whose Maildir is ``root``: above every one any process gave a folder of that account
        (``tree.next_uidvalidity``), so a folder re-created in the same second, here or in
        another process, never repeats one (RFC 3501 §2.3.1.1); and strictly increasing
        within this process."""
        floor = self._last_uidvalidity + 1

        def clock() -> float:
            return max(self._clock(), floor)

        v = tree.next_uidvalidity(root, clock) if root is not None else int(clock()) & 0xFFFFFFFF
        self._last_uidvalidity = max(self._last_uidvalidity, v)
        return v

    def folder(self, account: str, name: str, path: str) -> Folder:
        """The shared Folder of ``account``'s folder ``name`` at ``path`` (created on demand)."""
        key = (account.lower(), name)
        f = self._folders.get(key)
        if f is None or f.path != path or f.gone:
            # Another process may have deleted the folder and created one under its name:
            # that one is a new folder (its own UIDs and UIDVALIDITY), not this one's files.
            root = path if name == names.INBOX else os.path.dirname(path)
            f = Folder(
                path,
                account.lower(),
                name,
                self.run,
                hostname=self._hostname,
                clock=self._clock,
                uidvalidity=lambda: self.next_uidvalidity(root),
                timer=self._timer,
                tombstones_kept=self._tombstones_kept,
                usage=lambda account, octets, messages: self.usage.change(
                    account, octets, messages, root
                ),
                watched=self._watched,
            )
            self._folders[key] = f
        self._keep[key] = f
        self._keep.move_to_end(key)
        while len(self._keep) > self.KEEP:
            self._keep.popitem(last=False)
        while (
            len(self._keep) > 1
            and sum(len(x.entries) for x in self._keep.values()) > self.KEEP_MESSAGES
        ):
            self._keep.popitem(last=False)
        return f

    def watch_other_processes(
        self,
        max_folders: Callable[[], int] = lambda: watch.WATCH_FOLDERS,
        poll_interval: Callable[[], float] = lambda: watch.POLL_INTERVAL,
    ) -> None:
        """Push other processes' changes to this process's sessions at once (IMAP workers, the
        server's LOCAL delivery, ``cgtwist-admin``): an inotify watch on every folder a
        session has open here (``cgtwist.mailstore.watch``), at most ``max_folders()``
        (imap.watch_folders) of them, the rest checked every ``poll_interval()`` seconds
        (imap.watch_poll_interval). Called once, at start, by every process that serves
        sessions; without it they hear of others' changes at their next command."""
        if self._watch is not None or self._reactor is None:
            return
        self._watch = watch.FolderWatch(self._reactor, max_folders, poll_interval)
        for f in list(self._folders.values()):
            if f.views():
                self._watch.add(f)

    def stop_watching(self) -> None:
        """Close the watch (at shutdown)."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def _watched(self, folder: Folder, on: bool) -> None:
        if self._watch is not None:
            if on:
                self._watch.add(folder)
            else:
                self._watch.remove(folder)

    def flush(self) -> defer.Deferred[None]:
        """Finish every open folder's pending removals of names replaced by flag changes and
        close its index cleanly (at shutdown, before the disk threads stop); fires when all
        are done. The watch (``watch_other_processes``) is closed first: no catch-up starts
        once the folders are closing."""
        self.stop_watching()
        ds = [f.flush(final=True) for f in list(self._folders.values())]
        return defer.gatherResults(ds, consumeErrors=True).addCallbacks(
            lambda _: None, lambda f: self.log.failure("flushing folders failed", f)
        )

    def forget(self, account: str, name: str) -> None:
        """The folder was deleted: sessions keep their stale views, new ones start afresh."""
        self._folders.pop((account.lower(), name), None)
        self._keep.pop((account.lower(), name), None)

    def renamed(self, account: str, old: str, new: str, path: str) -> None:
        f = self._folders.pop((account.lower(), old), None)
        self._keep.pop((account.lower(), old), None)
        if f is not None:
            f.renamed(new, path)
            self._folders[(account.lower(), new)] = f
            if self._watch is not None:
                self._watch.moved(f)

    def open_folders(self, account: str) -> list[Folder]:
        return [f for (a, _n), f in list(self._folders.items()) if a == account.lower()]

    def mailbox_changed(self, account: str, folder: str) -> defer.Deferred[None]:
        """IMailboxNotifier: mail was delivered to ``account``'s ``folder``; rescan it now if a
        session has it open and push EXISTS/RECENT to that session's listeners."""
        try:
            canon = names.normalize(folder)
        except names.MailboxNameError:
            self.log.warn(
                "mailbox_changed for bad folder {folder!r} of {account}",
                folder=folder,
                account=account,
            )
            return defer.succeed(None)
        f = self._folders.get((account.lower(), canon))
        if f is None or not f.loaded or not os.path.isdir(f.path):
            return defer.succeed(None)
        d = f.refresh(force=True)

        def failed(fail: Any) -> None:
            self.log.failure(
                "rescan of {account} {folder} failed", fail, account=account, folder=canon
            )

        return d.addCallbacks(lambda _: None, failed)
