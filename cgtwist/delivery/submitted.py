"""PIPE submission: pick up ``<base>/Submitted/*.sub`` files and enqueue them as trusted mail.

Owns watching the folder (inotify where available, one scan at start; a slow scan only where
inotify is missing), parsing a submitted file (RFC 5322 text in native line endings; envelope
from ``Envelope-To:``/``Envelope-Ignore:`` or To/Cc/Bcc, CommuniGate PIPE rules) and the file's
fate: deleted once submitted, renamed ``.bad`` with a log line when it cannot be, left in place
when the queue refuses temporarily. Spooling and routing belong to the submission seam.
"""

from __future__ import annotations

import email.utils
import errno
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union, cast

from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.python.filepath import FilePath

from cgtwist import paths
from cgtwist.delivery.bounce import one_line
from cgtwist.errors import MailError
from cgtwist.interfaces import ISubmission
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder
from cgtwist.typedtwisted import Service
from cgtwist.types import Envelope, Recipient

if TYPE_CHECKING:
    from twisted.internet import inotify
    from twisted.internet.interfaces import IReactorFDSet

    # INotify leaves the methods used here unannotated and mypy --strict refuses an untyped
    # call; for the type checker only, the class with the signatures this module relies on,
    # as Twisted documents them (at run time it is Twisted's class; Service's are in
    # cgtwist.typedtwisted).
    class _INotify(inotify.INotify):
        def __init__(self, reactor: Optional[IReactorFDSet] = None) -> None: ...
        def startReading(self) -> None: ...
        def watch(
            self,
            path: FilePath[str],
            mask: int = ...,
            autoAdd: bool = False,
            callbacks: Optional[list[Callable[[object, _Path, int], None]]] = None,
            recursive: bool = False,
        ) -> int: ...


# What INotify hands a callback: the FilePath of the watched directory's entry.
_Path = Union[FilePath[str], FilePath[bytes]]

log = Logger(namespace="cgtwist.delivery.submitted")

T = TypeVar("T")

MAX_FILE = 50 * 1024 * 1024
_ADDR_OK = re.compile(
    r"^[^\s<>()\[\],;:\\\"\x00-\x1f\x7f]+(@[A-Za-z0-9.\-\[\]:]+)?$|^\"[^\"\r\n]*\"@[A-Za-z0-9.\-]+$"
)
_REMOVED = ("bcc", "envelope-to", "envelope-ignore", "return-path")


class BadSubmission(Exception):
    """The file cannot become a message; it is renamed ``.bad``."""


@dataclass
class Parsed:
    envelope: Envelope
    data: bytes


def _fields(head: bytes) -> list[tuple[str, bytes]]:
    """Header block (CRLF lines) -> [(lower-case name, raw field bytes incl. folds and CRLF)]."""
    out: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if not out:
                raise BadSubmission("header block starts with a continuation line")
            name, raw = out[-1]
            out[-1] = (name, raw + line + b"\r\n")
            continue
        m = re.match(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", line)  # RFC 5322 §3.6.8 field-name
        if not m:
            raise BadSubmission(f"malformed header line {one_line(line[:60].decode('latin-1'))!r}")
        out.append((m.group(1).decode("ascii").lower(), line + b"\r\n"))
    return out


def _value(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    value = text.split(":", 1)[1] if ":" in text else ""
    return re.sub(r"\r\n[ \t]", " ", value).strip()


def _addresses(values: list[str]) -> list[str]:
    out = []
    for _name, addr in email.utils.getaddresses(values):
        addr = addr.strip()
        if not addr:
            continue
        if not _ADDR_OK.match(addr):
            raise BadSubmission(f"bad address {one_line(addr, 100)!r}")
        out.append(addr)
    return out


def parse_submitted(raw: bytes, hostname: str = "localhost", now: Optional[float] = None) -> Parsed:
    """A submitted file -> envelope and CRLF message bytes, or BadSubmission.

    Recipients: ``Envelope-To:`` fields if any, else To/Cc/Bcc; minus ``Envelope-Ignore:``.
    Sender: ``Return-Path:`` if given, else the From address. Bcc, Envelope-To,
    Envelope-Ignore and Return-Path are removed (RFC 5321 §4.4: the delivering MTA adds
    Return-Path). Date and Message-ID are added when missing (RFC 5322 §3.6).
    """
    if len(raw) > MAX_FILE:
        raise BadSubmission(f"file larger than {MAX_FILE} octets")
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)  # native line endings -> CRLF
    m = re.search(rb"\r\n\r\n", data)
    if data.startswith(b"\r\n"):
        raise BadSubmission("no header section")
    if m:
        head, body = data[: m.start() + 2], data[m.end() :]
    else:
        head, body = data if data.endswith(b"\r\n") else data + b"\r\n", b""
    fields = _fields(head)
    by_name: dict[str, list[str]] = {}
    for name, fraw in fields:
        by_name.setdefault(name, []).append(_value(fraw))
    if "envelope-to" in by_name:
        rcpts = _addresses(by_name["envelope-to"])
    else:
        rcpts = _addresses(by_name.get("to", []) + by_name.get("cc", []) + by_name.get("bcc", []))
    ignore = {a.lower() for a in _addresses(by_name.get("envelope-ignore", []))}
    seen: set[str] = set()
    recipients: list[Recipient] = []
    for a in rcpts:
        if a.lower() in ignore or a.lower() in seen:
            continue
        seen.add(a.lower())
        recipients.append(Recipient(address=a))
    if not recipients:
        raise BadSubmission("no recipients")
    if "return-path" in by_name:
        rp = by_name["return-path"][0].strip()
        sender = "" if rp in ("<>", "") else (_addresses([rp]) or [""])[0]
    else:
        froms = _addresses(by_name.get("from", []))
        sender = froms[0] if froms else ""
    kept = [fraw for name, fraw in fields if name not in _REMOVED]
    t = time.time() if now is None else now
    if "date" not in by_name:
        kept.append(f"Date: {email.utils.formatdate(t, localtime=False, usegmt=True)}\r\n".encode())
    if "message-id" not in by_name:
        kept.append(
            f"Message-ID: <{int(t)}.{os.urandom(6).hex()}@{one_line(hostname, 200)}>\r\n".encode()
        )
    message = b"".join(kept) + b"\r\n" + body
    env = Envelope(
        sender=sender,
        recipients=recipients,
        submit={"protocol": "PIPE", "trusted": "1", "source": "Submitted"},
    )
    return Parsed(env, message)


class SubmittedPickup(Service):
    """Watches ``<base>/Submitted`` and feeds ``.sub`` files to the submission seam one by one.

    ``threadpool`` runs the file reads, renames and unlinks (None: inline, for tests).
    """

    name = "submitted"

    def __init__(
        self,
        base_dir: str,
        submission: ISubmission,
        reactor: Any,
        settings: Optional[SettingsHolder] = None,
        threadpool: Any = None,
        hostname: str = "localhost",
        use_inotify: bool = True,
    ) -> None:
        self.dir = os.path.join(base_dir, paths.SUBMITTED_DIR)
        self.submission: Any = submission
        self.reactor = reactor
        self.settings = settings or SettingsHolder()
        self.threadpool = threadpool
        self.hostname = hostname
        self.use_inotify = use_inotify
        self._queue: list[str] = []
        self._queued: set[str] = set()
        self._worker: Optional[defer.Deferred[None]] = None
        self._working = False
        self._notifier: Any = None
        self._scanner: Optional[task.LoopingCall] = None
        self._retry: Any = None
        self.idle: list[defer.Deferred[None]] = []

    # --- service ----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        os.makedirs(self.dir, mode=0o770, exist_ok=True)
        if self.use_inotify and self._start_inotify():
            log.info("watching {dir} with inotify", dir=self.dir)
        else:
            interval = float(self.settings.current.pipe.submitted_scan_interval)
            self._scanner = task.LoopingCall(self.scan)
            self._scanner.clock = self.reactor
            self._scanner.start(interval, now=False)
            log.info(
                "scanning {dir} every {interval}s (no inotify)", dir=self.dir, interval=interval
            )
        self.scan()

    def stopService(self) -> Optional[defer.Deferred[None]]:
        super().stopService()
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        if self._scanner is not None and self._scanner.running:
            self._scanner.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._queue.clear()
        self._queued.clear()
        if self._working:
            return self.when_idle()
        return None

    def _start_inotify(self) -> bool:
        try:
            from twisted.internet import inotify
        except ImportError:
            return False
        try:
            # the same class, seen with its signatures (_INotify)
            notifier = cast("type[_INotify]", inotify.INotify)(reactor=self.reactor)
            notifier.startReading()
            notifier.watch(
                FilePath(self.dir),
                mask=inotify.IN_MOVED_TO | inotify.IN_CLOSE_WRITE,
                callbacks=[self._notified],
            )
        except Exception as e:
            log.warn("inotify unavailable for {dir}: {err}", dir=self.dir, err=str(e))
            return False
        self._notifier = notifier
        return True

    def _notified(self, _watch: object, path: _Path, _mask: int) -> None:
        name = path.basename()
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        self._enqueue(name)

    # --- work ---------------------------------------------------------------------------------

    def scan(self) -> None:
        """Queue every ``.sub`` file present (start, fallback timer, retry after a refusal)."""
        try:
            names = sorted(os.listdir(self.dir))
        except OSError as e:
            log.error("cannot list {dir}: {err}", dir=self.dir, err=e.strerror)
            return
        for name in names:
            self._enqueue(name)

    def _enqueue(self, name: str) -> None:
        if not name.endswith(".sub") or name.startswith(".") or "/" in name:
            return
        if name in self._queued:
            return
        self._queued.add(name)
        self._queue.append(name)
        if not self._working:
            self._working = True
            self._worker = defer.Deferred.fromCoroutine(self._work())
            if self._worker.called:  # everything ran synchronously (inline I/O)
                self._worker = None

    def when_idle(self) -> defer.Deferred[None]:
        """Fires when no file is being processed (tests and shutdown)."""
        if not self._working:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.idle.append(d)
        return d

    async def _work(self) -> None:
        try:
            while self._queue:
                name = self._queue.pop(0)
                try:
                    await self._process(name)
                except Exception:
                    log.failure("Submitted/{name}: unexpected error", name=name)
                finally:
                    self._queued.discard(name)
        finally:
            self._worker = None
            self._working = False
            waiters, self.idle = self.idle, []
            for d in waiters:
                d.callback(None)

    def _io(self, fn: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        if self.threadpool is None:
            return defer.maybeDeferred(fn, *args)
        return deferToThreadPool(self.reactor, self.threadpool, fn, *args)

    async def _process(self, name: str) -> None:
        path = os.path.join(self.dir, name)
        try:
            raw = await self._io(_read, path)
        except FileNotFoundError:
            return  # already handled (a duplicate notification)
        except BadSubmission as e:
            await self._bad(path, name, str(e))
            return
        except OSError as e:
            log.error("Submitted/{name}: cannot read: {err}", name=name, err=e.strerror)
            return
        try:
            parsed = parse_submitted(raw, self.hostname)
        except BadSubmission as e:
            await self._bad(path, name, str(e))
            return
        try:
            msg_id = await defer.maybeDeferred(self.submission.submit, parsed.envelope, parsed.data)
        except MailError as e:
            if e.temporary:
                log.warn(
                    "Submitted/{name}: queue refused temporarily ({reply}); will retry",
                    name=name,
                    reply=e.reply(),
                )
                self._schedule_retry()
                return
            await self._bad(path, name, e.reply())
            return
        except Exception as e:
            log.failure("Submitted/{name}: submission failed; will retry", name=name)
            del e
            self._schedule_retry()
            return
        try:
            await self._io(os.unlink, path)
        except OSError as e:
            log.error(
                "Submitted/{name}: submitted as {msg_id} but cannot delete: {err}",
                name=name,
                msg_id=msg_id,
                err=e.strerror,
            )
            return
        log.info(
            "Submitted/{name}: queued as {msg_id} from <{sender}> to {count} recipient(s)",
            name=name,
            msg_id=msg_id,
            sender=parsed.envelope.sender,
            count=len(parsed.envelope.recipients),
        )

    async def _bad(self, path: str, name: str, why: str) -> None:
        bad = path[: -len(".sub")] + ".bad"
        try:
            await self._io(os.replace, path, bad)
        except OSError as e:
            log.error(
                "Submitted/{name}: rejected ({why}) and cannot rename: {err}",
                name=name,
                why=why,
                err=e.strerror,
            )
            return
        log.error(
            "Submitted/{name}: rejected, renamed .bad: {why}", name=name, why=one_line(why, 300)
        )

    def _schedule_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            return
        if not self.running:
            return
        self._retry = self.reactor.callLater(
            float(self.settings.current.pipe.submitted_scan_interval), self.scan
        )


def _read(path: str) -> bytes:
    """Read a regular file, never through a symlink (a link to /etc/shadow must not be mailed)."""
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadSubmission("symbolic links are not accepted") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BadSubmission("not a regular file")
        return f.read(MAX_FILE + 1)
