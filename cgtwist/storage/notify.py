"""Change announcements between nodes: PostgreSQL ``LISTEN/NOTIFY`` on one channel.

Owns the announcement's wire form (a small JSON payload), the listening connection (one
dedicated, autocommit connection per server, read on the reactor as a file descriptor, never
polled on a timer) and its reconnection. The store announces each write in the write's own
transaction (``Engine.announce``), so PostgreSQL delivers it exactly when the change commits and
never for a rollback. What a node does about a change (reload settings, drop caches) is the
caller's ``on_change``; this module decides nothing. SQLite has no announcements: there is only
one server per SQLite file, and cgtwist-admin tells it over the control socket.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Sequence, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from cgtwist.logs import Logger

# The one channel every node listens on. PostgreSQL folds unquoted identifiers to lower case.
CHANNEL = "cgtwist_changes"
# Seconds between attempts to get the listening connection back; the last value repeats.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
# TCP keepalive of the listening connection, unless the database URL sets its own: it only
# ever reads, so a database host that vanished without a reset (power cut, network partition)
# would otherwise go unnoticed for the kernel's default two hours, with every change missed.
# About a minute here. libpq ignores these on Unix sockets.
KEEPALIVE = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}

SCOPE_CLUSTER = "cluster"
SCOPE_NODE = "node"


@dataclass(frozen=True)
class Change:
    """One announced change.

    ``scope`` is ``cluster`` (domains, accounts, aliases, cluster-wide settings) or ``node``
    (the settings of node ``node`` only). ``origin`` is the node whose store made the change
    and ``what`` the store operation, for log lines. ``resync`` marks no change in particular:
    the listening connection was (re)established, so changes may have been missed meanwhile.
    """

    scope: str
    what: str
    origin: str
    node: Optional[str] = None
    resync: bool = False

    def concerns(self, node: str) -> bool:
        """Does this change alter anything node ``node`` uses?"""
        return self.scope != SCOPE_NODE or self.node == node


RESYNC = Change(SCOPE_CLUSTER, "resync", "", resync=True)


def encode(what: str, origin: str, node: Optional[str] = None) -> str:
    """The NOTIFY payload of a store write ``what`` by node ``origin``; ``node`` set: only that
    node's settings changed. Far below PostgreSQL's 8000-byte payload limit."""
    out = {"what": what, "from": origin}
    if node is not None:
        out["node"] = node
    return json.dumps(out, separators=(",", ":"))


def decode(payload: str) -> Change:
    """A payload back into a Change; one this version cannot read counts as a cluster-wide
    change (reloading too often is harmless, missing a change is not)."""
    try:
        raw = json.loads(payload)
        what, origin, node = str(raw["what"]), str(raw["from"]), raw.get("node")
    except (ValueError, KeyError, TypeError):
        return Change(SCOPE_CLUSTER, "unreadable announcement", "?")
    if isinstance(node, str):
        return Change(SCOPE_NODE, what, origin, node)
    return Change(SCOPE_CLUSTER, what, origin)


@implementer(IReadDescriptor)
class _Reader:
    """The listening connection's socket in the reactor: readable means notifications."""

    def __init__(self, owner: ChangeListener, conn: Any) -> None:
        self.owner = owner
        self.conn = conn
        # The reactor watches a duplicate: libpq closes its own descriptor when it finds the
        # server gone, and the epoll reactor cannot unregister a closed descriptor (it would
        # keep a stale entry). The duplicate stays open until close().
        self._fd = os.dup(conn.fileno())

    def close(self) -> None:
        _close(self.conn)
        try:
            os.close(self._fd)
        except OSError:
            pass

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self.owner._readable(self)

    def connectionLost(self, reason: Any) -> None:
        self.owner._lost(self, str(getattr(reason, "value", reason)))

    def logPrefix(self) -> str:
        return "cgtwist-changes"


class ChangeListener:
    """Listens on ``channel`` and calls ``on_change(Change)`` on the reactor thread.

    ``connect`` opens a new DB-API (psycopg2) connection; it runs in the reactor's thread
    pool, and so does ``LISTEN``. Notifications are read when the socket becomes readable
    (``conn.poll()`` only consumes what already arrived: it never blocks the reactor). A lost
    connection is retried after ``delays``; every successful (re)connection first reports
    ``RESYNC``, since whatever was announced while no one listened is lost.
    """

    log = Logger()

    def __init__(
        self,
        connect: Callable[[], Any],
        reactor: Any,
        on_change: Callable[[Change], None],
        channel: str = CHANNEL,
        delays: Sequence[float] = RECONNECT_DELAYS,
    ) -> None:
        self._connect_fn = connect
        self.reactor = reactor
        self.on_change = on_change
        self.channel = channel
        self.delays = tuple(delays)
        self._reader: Optional[_Reader] = None
        self._timer: Any = None
        self._failures = 0
        self._stopped = False

    @property
    def listening(self) -> bool:
        return self._reader is not None

    def start(self) -> None:
        self._stopped = False
        self._attempt()

    def stop(self) -> None:
        """Close the connection and stop retrying."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        reader, self._reader = self._reader, None
        if reader is not None:
            self.reactor.removeReader(reader)
            reader.close()

    def _open(self) -> Any:
        """Thread: a new connection in autocommit mode, listening."""
        conn = self._connect_fn()
        try:
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute(f"LISTEN {self.channel}")
            cur.close()
        except BaseException:
            _close(conn)
            raise
        return conn

    def _attempt(self) -> None:
        self._timer = None
        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._open)
        d.addCallbacks(self._opened, self._failed)

    def _opened(self, conn: Any) -> None:
        if self._stopped:
            _close(conn)
            return
        if self._failures:
            self.log.info("listening for changes again on {channel}", channel=self.channel)
        self._failures = 0
        self._reader = reader = _Reader(self, conn)
        self.reactor.addReader(reader)
        self._deliver(RESYNC)  # may stop() us
        self._readable(reader)  # anything that arrived with the LISTEN reply

    def _failed(self, failure: Any) -> None:
        if self._stopped:
            return
        self._retry(str(failure.value).strip() or failure.type.__name__)

    def _retry(self, why: str) -> None:
        delay = self.delays[min(self._failures, len(self.delays) - 1)]
        if self._failures == 0:
            self.log.warn(
                "not listening for changes on {channel} ({why}); changes made on other "
                "nodes apply when it is back (retrying every {delay}s and more)",
                channel=self.channel,
                why=why.splitlines()[0] if why else "?",
                delay=delay,
            )
        self._failures += 1
        self._timer = self.reactor.callLater(delay, self._attempt)

    def _readable(self, reader: _Reader) -> None:
        if reader is not self._reader:
            return
        conn = reader.conn
        try:
            conn.poll()
        except Exception as e:
            self._lost(reader, str(e))
            return
        while conn.notifies:
            note = conn.notifies.pop(0)
            self._deliver(decode(note.payload))
        if conn.closed:
            self._lost(reader, "connection closed")

    def _lost(self, reader: _Reader, why: str) -> None:
        if reader is not self._reader:
            return
        self._reader = None
        self.reactor.removeReader(reader)
        reader.close()
        if not self._stopped:
            self._retry(why)

    def _deliver(self, change: Change) -> None:
        try:
            self.on_change(change)
        except Exception:
            self.log.failure("handling the change {what} failed", what=change.what)


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        pass


def listener_for(
    db: Any, reactor: Any, on_change: Callable[[Change], None]
) -> Optional[ChangeListener]:
    """A ChangeListener on ``db``'s database (a storage.database.Database), or None when its
    engine has no announcements (SQLite)."""
    engine = db.engine
    if not engine.announces:
        return None
    args, kwargs = engine.connect_args()
    given = set(kwargs)
    if args and isinstance(args[0], str):
        from psycopg2.extensions import parse_dsn

        given |= set(parse_dsn(args[0]))
    options = {k: v for k, v in KEEPALIVE.items() if k not in given}

    def connect() -> Any:
        return db.dbapi.connect(*args, **kwargs, **options)

    return ChangeListener(connect, reactor, on_change)


Job = Callable[[], Union["defer.Deferred[Any]", Awaitable[Any]]]


class Coalesced:
    """Runs ``job`` for every ``kick``, but never twice at once: kicks that arrive while it
    runs cause exactly one more run after it. A burst of announcements (a script adding a
    hundred accounts) costs two reloads, not a hundred, and the last run always starts after
    the last kick, so no change is missed."""

    log = Logger()

    def __init__(self, job: Job, what: str = "job") -> None:
        self.job = job
        self.what = what
        self.running = False
        self._again = False
        self.runs = 0

    def kick(self) -> None:
        if self.running:
            self._again = True
            return
        self.running = True
        defer.ensureDeferred(self._loop())

    async def _loop(self) -> None:
        try:
            while True:
                self._again = False
                self.runs += 1
                try:
                    await self.job()
                except Exception:
                    self.log.failure("{what} failed", what=self.what)
                if not self._again:
                    return
        finally:
            self.running = False
