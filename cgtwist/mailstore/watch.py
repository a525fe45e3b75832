"""The push of another process's change: an inotify watch on the folders this process has open.

Owns the process's one inotify descriptor and which folders it watches (those with a session
open here), and turns a burst of events on a folder into one catch-up (``Folder.refresh``:
three stat calls when the change was this process's own, else the catch-up from the index log
that tells the sessions EXISTS, EXPUNGE and FETCH FLAGS). Never reads a folder itself.

What another cgtwist process changes always reaches the folder's ``cgtwist-index.log``
(appended, or replaced by a compaction) and often its ``cgtwist-uidlist``; LOCAL delivery,
which takes no lock, adds a file to ``new/`` (or ``cur/``); another program (Dovecot, mutt)
changes ``cur/``. So each folder costs three watches: the folder (those two names only, and
the folder itself deleted or renamed), ``new/`` and ``cur/``. As Dovecot's
``mailbox_watch``, a missed event costs only the wait until the session's next command.

Bounded: at most ``max_folders()`` folders are watched (imap.watch_folders); beyond it, or
when the kernel refuses a watch (``fs.inotify.max_user_watches``, or no inotify at all), a
folder is checked every ``poll_interval()`` seconds instead (imap.watch_poll_interval), with
one log line saying which limit was reached.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import weakref
from typing import TYPE_CHECKING, Callable, Optional, Protocol

from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.logs import Logger
from cgtwist.mailstore import index, uidlist

if TYPE_CHECKING:
    from cgtwist.mailstore.folder import Folder

WATCH_FOLDERS = 10_000  # default of imap.watch_folders: three kernel watches each
POLL_INTERVAL = 2.0  # default of imap.watch_poll_interval, seconds

IN_MODIFY = 0x2
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

# What marks a change in the folder itself (only these names count: a STORE also appends to
# cgtwist-flaglog and every change opens cgtwist-index.lock), in new/ and in cur/.
_TOP_MASK = IN_MODIFY | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_LOG_NAME = index.LOG_FILE.encode()
_TOP_NAMES = frozenset({_LOG_NAME, uidlist.UIDLIST_FILE.encode()})
# new/: LOCAL's rename from tmp/ (or an O_TMPFILE's link). cur/: only a rename into it, as
# another program's delivery is made: what cgtwist itself does in cur/ (a STORE's link, an
# EXPUNGE's unlink, new/ -> cur/) is always followed by a log line, and a link or unlink
# event there would wake this process for each of its own STOREs.
_NEW_MASK = IN_MOVED_TO | IN_CREATE | IN_ONLYDIR
_CUR_MASK = IN_MOVED_TO | IN_ONLYDIR
_READ_SIZE = 65536
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class _Reactor(Protocol):
    """What the watch needs of the reactor: its descriptor read, and delayed calls."""

    def addReader(self, reader: IReadDescriptor) -> None: ...

    def removeReader(self, reader: IReadDescriptor) -> None: ...

    def callLater(self, delay: float, fn: Callable[..., object], *args: object) -> IDelayedCall: ...


class WatchUnavailable(OSError):
    """The kernel refused: no inotify, or a limit (``errno`` says which)."""


class Inotify:
    """``Inotify(on_event)``: one inotify descriptor (libc through ctypes, as Twisted's own
    ``twisted.internet.inotify`` does, but keeping errno, so the kernel's watch limit is told
    apart from a folder gone). ``on_event(wd, mask, name)`` is called for each event read.
    Raises WatchUnavailable when the kernel has none to give."""

    def __init__(self, on_event: Callable[[int, int, bytes], None]) -> None:
        self._on_event = on_event
        libc = ctypes.CDLL(None, use_errno=True)
        init = getattr(libc, "inotify_init1", None)
        add = getattr(libc, "inotify_add_watch", None)
        rm = getattr(libc, "inotify_rm_watch", None)
        if init is None or add is None or rm is None:
            raise WatchUnavailable(errno.ENOSYS, "no inotify in this C library")
        add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        rm.argtypes = [ctypes.c_int, ctypes.c_int]
        self._add: Callable[..., int] = add
        self._rm: Callable[..., int] = rm
        fd = init(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise WatchUnavailable(code, os.strerror(code))
        self.fd: int = fd

    def add(self, path: str, mask: int) -> int:
        """A watch descriptor for ``path``; OSError with the kernel's errno otherwise
        (ENOSPC: ``fs.inotify.max_user_watches`` reached; ENOENT: the path is gone)."""
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return int(wd)

    def remove(self, wd: int) -> None:
        """Drop a watch; one the kernel dropped already (its directory went) is no error."""
        self._rm(self.fd, wd)

    def read(self) -> None:
        """Read and dispatch the pending events (non-blocking): one read, as a rule; the
        reactor calls again while more are waiting."""
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            off = 0
            while off + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, off)
                start = off + _EVENT.size
                name = data[start : start + length].rstrip(b"\0")
                off = start + length
                self._on_event(wd, mask, name)
            if len(data) < _READ_SIZE - 4096:
                return

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@implementer(IReadDescriptor)
class _Reader:
    """The inotify descriptor as the reactor sees it."""

    def __init__(self, notify: Inotify) -> None:
        self._notify = notify

    def fileno(self) -> int:
        return self._notify.fd

    def doRead(self) -> None:
        self._notify.read()

    def connectionLost(self, reason: object) -> None:
        pass

    def logPrefix(self) -> str:
        return "inotify"


class _Watched:
    """One folder as watched: its kernel watches (none: polled) and its catch-up state."""

    __slots__ = ("folder", "path", "wds", "busy", "again", "confirm")

    def __init__(self, folder: Folder) -> None:
        self.folder: weakref.ReferenceType[Folder] = weakref.ref(folder)
        self.path = folder.path
        self.wds: list[int] = []
        self.busy = False  # a catch-up is running...
        self.again = False  # ...and another event came meanwhile
        self.confirm: Optional[IDelayedCall] = (
            None  # the look once more after a timestamp tick (IDelayedCall)
        )


class FolderWatch:
    """``FolderWatch(reactor, max_folders, poll_interval)``: the process's watch; folders come
    and go through ``add``/``remove`` (``Folder.attach``/``detach`` of their first and last
    session, via the notifier). ``stop()`` closes the descriptor.

    Events are coalesced: the first one of a folder schedules its catch-up for the next reactor
    turn, later ones until it ran are free, and one arriving while it runs makes it run once
    more afterwards. A folder's own changes (this process's STORE, APPEND, EXPUNGE) wake it too
    (the kernel cannot tell who wrote), and cost three stat calls: the folder finds itself as it
    last saw the disk.
    """

    log = Logger()

    def __init__(
        self,
        reactor: _Reactor,
        max_folders: Callable[[], int] = lambda: WATCH_FOLDERS,
        poll_interval: Callable[[], float] = lambda: POLL_INTERVAL,
        inotify: Callable[[Callable[[int, int, bytes], None]], Inotify] = Inotify,
    ) -> None:
        self._reactor = reactor
        self._max_folders = max_folders
        self._poll_interval = poll_interval
        self._folders: dict[int, _Watched] = {}  # id(Folder) -> its state
        self._by_wd: dict[int, _Watched] = {}
        self._polled: dict[int, _Watched] = {}  # folders beyond a limit, checked periodically
        self._pending: dict[int, bool] = {}  # folder -> only its index log grew
        self._call: Optional[IDelayedCall] = None  # the scheduled catch-up of _pending
        self._poll_call: Optional[IDelayedCall] = None
        self._said: set[str] = set()  # limits already logged (once each, until back under)
        self._notify: Optional[Inotify] = None
        self._reader: Optional[_Reader] = None
        try:
            self._notify = inotify(self._event)
        except OSError as err:
            self._say(
                "inotify",
                "no inotify ({err}): folders open here hear of other processes' changes "
                "every {interval} s (imap.watch_poll_interval) or at the next command",
                err=err,
                interval=poll_interval(),
            )
        else:
            self._reader = _Reader(self._notify)
            reactor.addReader(self._reader)

    @property
    def watched(self) -> int:
        """Folders with kernel watches (the rest of those added are polled)."""
        return len(self._folders) - len(self._polled)

    def stop(self) -> None:
        """Close the descriptor and forget every folder (at shutdown)."""
        if self._reader is not None:
            self._reactor.removeReader(self._reader)
            self._reader = None
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        confirms = [w.confirm for w in self._folders.values()]
        for call in [self._call, self._poll_call, *confirms]:
            if call is not None and call.active():
                call.cancel()
        self._call = self._poll_call = None
        self._folders.clear()
        self._by_wd.clear()
        self._polled.clear()
        self._pending.clear()

    # -- which folders ------------------------------------------------------------------------

    def add(self, folder: Folder) -> None:
        """(reactor) A session opened ``folder`` in this process: watch it (or poll it)."""
        if id(folder) in self._folders:
            return
        w = _Watched(folder)
        self._folders[id(folder)] = w
        self._arm(w)

    def remove(self, folder: Folder) -> None:
        """(reactor) The folder's last session here left it: its watches go."""
        w = self._folders.pop(id(folder), None)
        if w is not None:
            if w.confirm is not None and w.confirm.active():
                w.confirm.cancel()
            self._disarm(w)
            self._promote()

    def moved(self, folder: Folder) -> None:
        """(reactor) The folder now lives at ``folder.path`` (RENAME here): watch it there."""
        w = self._folders.get(id(folder))
        if w is not None and w.path != folder.path:
            self._disarm(w)
            w.path = folder.path
            self._arm(w)

    def _arm(self, w: _Watched) -> None:
        """Give ``w`` its three kernel watches, or put it on the periodic check."""
        limit = self._max_folders()
        if self._notify is None:
            self._poll(w)
            return
        if self.watched >= limit:
            self._say(
                "folders",
                "imap.watch_folders ({limit}) folders watched: {path} and further folders "
                "hear of other processes' changes every {interval} s (imap.watch_poll_interval)",
                limit=limit,
                path=w.path,
                interval=self._poll_interval(),
            )
            self._poll(w)
            return
        try:
            wds = [self._notify.add(w.path, _TOP_MASK)]
            try:
                wds.append(self._notify.add(os.path.join(w.path, "new"), _NEW_MASK))
                wds.append(self._notify.add(os.path.join(w.path, "cur"), _CUR_MASK))
            except OSError:
                for wd in wds:
                    self._notify.remove(wd)
                raise
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.ENOMEM):
                self._say(
                    "kernel",
                    "the kernel's inotify watch limit (sysctl fs.inotify.max_user_watches) is "
                    "reached: {path} and further folders hear of other processes' changes "
                    "every {interval} s (imap.watch_poll_interval)",
                    path=w.path,
                    interval=self._poll_interval(),
                )
            # Otherwise (ENOENT: not made yet, or gone meanwhile) the periodic check finds
            # out what became of it, without a log line.
            self._poll(w)
            return
        w.wds = wds
        self._polled.pop(id(w.folder()), None)
        for wd in wds:
            self._by_wd[wd] = w

    def _disarm(self, w: _Watched) -> None:
        for wd in w.wds:
            if self._by_wd.get(wd) is w:
                del self._by_wd[wd]
                if self._notify is not None:
                    self._notify.remove(wd)
        w.wds = []
        self._polled = {k: v for k, v in self._polled.items() if v is not w}

    def _promote(self) -> None:
        """A watch slot may be free again: move polled folders back onto watches."""
        if not self._polled or self._notify is None:
            return
        for key, w in list(self._polled.items()):
            if self.watched >= self._max_folders():
                return
            del self._polled[key]
            self._arm(w)
            if not w.wds:
                return  # still refused: leave the rest polled
        if not self._polled:
            self._said.clear()

    def _poll(self, w: _Watched) -> None:
        f = w.folder()
        if f is None:
            return
        self._polled[id(f)] = w
        if self._poll_call is None or not self._poll_call.active():
            self._poll_call = self._reactor.callLater(self._poll_interval(), self._poll_tick)

    def _poll_tick(self) -> None:
        self._poll_call = None
        for key in list(self._polled):
            self._wake(key)
        if self._polled:
            self._poll_call = self._reactor.callLater(self._poll_interval(), self._poll_tick)

    def _say(self, which: str, text: str, **kw: object) -> None:
        if which not in self._said:
            self._said.add(which)
            self.log.warn(text, **kw)

    # -- events -------------------------------------------------------------------------------

    def _event(self, wd: int, mask: int, name: bytes) -> None:
        if mask & IN_Q_OVERFLOW:
            for key in self._folders:  # events were lost: every folder catches up
                self._wake(key)
            return
        w = self._by_wd.get(wd)
        if w is None:
            return
        if mask & IN_IGNORED:  # the kernel dropped the watch (its directory went)
            del self._by_wd[wd]
            w.wds = [x for x in w.wds if x != wd]
        elif wd == (w.wds[0] if w.wds else None) and name:
            if name not in _TOP_NAMES:
                return  # another file of the folder (flag log, lock, caches): nothing to tell
            if name == _LOG_NAME and mask & IN_MODIFY:
                f = w.folder()
                if f is not None:
                    self._wake(id(f), log_only=True)
                return
        f = w.folder()
        if f is not None:
            self._wake(id(f))

    def _wake(self, key: int, log_only: bool = False) -> None:
        """Schedule the folder's catch-up; ``log_only``: only its index log grew (one stat
        tells whether another process wrote it, three are needed otherwise)."""
        self._pending[key] = self._pending.get(key, True) and log_only
        if self._call is None:
            self._call = self._reactor.callLater(0, self._catch_up)

    def _catch_up(self) -> None:
        self._call = None
        pending, self._pending = self._pending, {}
        for key, log_only in pending.items():
            w = self._folders.get(key)
            f = w.folder() if w is not None else None
            if w is None or f is None:
                continue
            if w.busy:
                w.again = True
                continue
            if log_only and f.log_is_own():
                continue  # this process's own line: nothing another process did
            if f.in_step():
                # As it last saw the disk (three stat calls): its own change, say.
                self._confirm_later(w, key, f)
                continue
            w.busy = True
            f.refresh().addBoth(self._caught_up, key, w, f)

    def _caught_up(self, result: object, key: int, w: _Watched, f: Folder) -> None:
        w.busy = False
        if isinstance(result, Failure):
            self.log.debug(
                "catching up {account} {folder} failed: {why}",
                account=f.account,
                folder=f.name,
                why=result.getErrorMessage(),
            )
        if self._folders.get(key) is not w:
            return  # left (or the watch stopped) while it ran: nothing more to look at
        if w.again:
            w.again = False
            self._wake(key)
        else:
            self._confirm_later(w, key, f)

    def _confirm_later(self, w: _Watched, key: int, f: Folder) -> None:
        """A look made within the directories' timestamp tick could miss a change made in the
        same tick (it would not move them): look once more when the tick has passed."""
        if f.unconfirmed and (w.confirm is None or not w.confirm.active()):
            w.confirm = self._reactor.callLater(f.confirm_after, self._wake, key)
