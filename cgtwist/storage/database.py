"""The database handle: an adbapi ConnectionPool from a URL, named transactions, migrations.

Owns the pool and how a function runs inside a transaction on a pool thread: its deadline, and
its one transparent retry on a connection that died in the pool. It knows nothing about
accounts or domains (cgtwist.storage.store) and nothing about dialects beyond asking its Engine
(cgtwist.storage.engines). Functions run here end in ``_txn`` and get a ``Cursor``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from types import ModuleType
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from cgtwist.errors import StoreUnavailable
from cgtwist.logs import Logger
from cgtwist.storage.engines import Engine, SqliteEngine, engine_for_url

T = TypeVar("T")

__all__ = ["Cursor", "Database", "StoreUnavailable"]  # StoreUnavailable: cgtwist.errors

# How long one store call may take, in seconds, unless the bootstrap file says otherwise
# ([database] timeout): a mail client waits minutes for a reply, but a store that has not
# answered within seconds is not going to, and every session waiting on it holds a slot.
DEFAULT_TIMEOUT = 10.0


_Connection = Any
"""A DB-API 2 connection (sqlite3's or psycopg2's): the two modules share no typed base."""


class _Pool(Protocol):
    """The part of ``adbapi.ConnectionPool`` used here, typed (Twisted leaves it unannotated):
    its thread pool runs our calls, and connections are taken and dropped by hand so that a
    lost connection can be retried once (see ``_run``)."""

    dbapi: ModuleType
    threadpool: ThreadPool

    def connect(self) -> _Connection: ...

    def disconnect(self, conn: _Connection) -> None: ...

    def close(self) -> None: ...


# A typed doorway (as in cgtwist.typedtwisted) to the unannotated ConnectionPool constructor.
_connection_pool: Callable[..., _Pool] = adbapi.ConnectionPool


class _Call:
    """One store call as its pool thread and its deadline (on the reactor) share it.

    The lock makes "abandon" and "the thread starts or stops using a connection" exclusive, so
    the deadline cuts only the connection this call is blocked on, never one back in the pool.
    """

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.lock = threading.Lock()
        self.conn: Optional[_Connection] = None
        self.abandoned = False

    @contextlib.contextmanager
    def using(self, conn: _Connection) -> Iterator[None]:
        with self.lock:
            if self.abandoned:
                raise StoreUnavailable(f"database call {self.desc} abandoned")
            self.conn = conn
        try:
            yield
        finally:
            with self.lock:
                self.conn = None

    def abandon(self, engine: Engine) -> None:
        with self.lock:
            self.abandoned = True
            if self.conn is not None:
                engine.abort(self.conn)


class Cursor:
    """What a ``_txn`` function sees: ``?``-placeholder SQL on the current transaction."""

    def __init__(self, txn: Any, engine: Engine) -> None:
        self._txn = txn
        self.engine = engine

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self._txn.execute(self.engine.convert(sql), tuple(args))

    def fetchone(self) -> Optional[tuple[Any, ...]]:
        row = self._txn.fetchone()
        return tuple(row) if row is not None else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._txn.fetchall()]

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Execute and fetch every row."""
        self.execute(sql, args)
        return self.fetchall()

    def query_one(self, sql: str, args: Sequence[Any] = ()) -> Optional[tuple[Any, ...]]:
        """Execute and fetch the first row, or None."""
        self.execute(sql, args)
        return self.fetchone()

    @property
    def rowcount(self) -> int:
        return int(self._txn.rowcount)


class Database:
    """A pool of connections to one database, opened from a URL.

    ``reactor`` is the reactor the pool's threads report to. Nothing runs until the reactor runs
    (adbapi starts its threads then). Call ``migrate()`` once before using the store.
    ``busy_timeout_ms`` (SQLite) is how long to wait for another process's write lock.
    ``timeout`` is each call's deadline in seconds: then its Deferred fails with
    StoreUnavailable and the connection it is blocked on is cut, so the pool's thread comes
    back instead of waiting for a frozen server for ever.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        reactor: Any,
        pool_min: int = 1,
        pool_max: int = 4,
        busy_timeout_ms: Optional[int] = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if timeout <= 0:
            raise ValueError("the database timeout must be positive")
        self.engine = engine_for_url(url, timeout)
        self.timeout = timeout
        if isinstance(self.engine, SqliteEngine):
            if busy_timeout_ms is not None:
                self.engine.busy_timeout_ms = busy_timeout_ms
            os.makedirs(os.path.dirname(self.engine.path), exist_ok=True)
        args, kwargs = self.engine.connect_args()
        self._reactor = reactor
        self.pool = _connection_pool(
            self.engine.dbapi_name,
            *args,
            cp_min=pool_min,
            cp_max=pool_max,
            cp_reactor=reactor,
            cp_openfun=self.engine.on_connect,
            cp_noisy=False,
            **kwargs,
        )
        self.dbapi = self.pool.dbapi
        self._calls: set[_Call] = set()

    def is_integrity_error(self, exc: BaseException) -> bool:
        """A UNIQUE/foreign-key violation (both drivers expose dbapi.IntegrityError)."""
        return isinstance(exc, self.dbapi.IntegrityError)

    def run_interaction(
        self,
        desc: str,
        fn: Callable[..., T],
        *args: Any,
        readonly: bool = False,
        deadline: bool = True,
    ) -> Deferred[T]:
        """Run ``fn(cursor, *args)`` in one transaction on a pool thread; fire with its result.

        ``desc`` names the caller in log lines. Writers (the default) take the write lock at
        BEGIN so two processes never deadlock on a lock upgrade. The call fails with
        StoreUnavailable after ``timeout`` seconds (``deadline=False``: never, for migrations).
        """
        call = _Call(desc)
        self._calls.add(call)
        d: Deferred[T] = deferToThreadPool(
            self._reactor, self.pool.threadpool, self._run, call, fn, args, readonly, deadline
        )
        if not deadline:
            d.addBoth(self._forget, call)
            return d
        result: Deferred[T] = Deferred()

        def expire() -> None:
            call.abandon(self.engine)
            self._log.error(
                "db {desc}: no answer from {where} within {timeout:g} s; call abandoned",
                desc=desc,
                where=self.engine.describe(),
                timeout=self.timeout,
            )
            result.errback(
                StoreUnavailable(f"the database did not answer within {self.timeout:g} s ({desc})")
            )

        timer = self._reactor.callLater(self.timeout, expire)

        def finished(outcome: Any) -> None:
            self._forget(None, call)
            if timer.active():
                timer.cancel()
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)
            # else: the caller was told it timed out; this late outcome has nobody to go to

        d.addBoth(finished)
        return result

    @property
    def busy(self) -> int:
        """Calls queued for or running on the pool's threads, abandoned ones included until
        their thread comes back."""
        return len(self._calls)

    def _forget(self, outcome: Any, call: _Call) -> Any:
        self._calls.discard(call)
        return outcome

    def _run(
        self, call: _Call, fn: Callable[..., T], args: Sequence[Any], readonly: bool, deadline: bool
    ) -> T:
        """On a pool thread: one transaction, tried again once on a fresh connection when the
        pooled one turns out dead (PostgreSQL restarted since it was opened).

        adbapi's ``cp_reconnect`` only reconnects after the failure has been reported, so each
        stale connection in the pool would fail one caller. A read can always be tried again;
        a write only when it surely did not commit, that is when the connection died before
        COMMIT was sent.
        """
        engine = self.engine
        for attempt in (1, 2):
            if call.abandoned:  # its deadline passed while it waited for a thread
                raise StoreUnavailable(f"database call {call.desc} abandoned")
            try:
                conn = self.pool.connect()
            except self.dbapi.OperationalError as e:
                raise StoreUnavailable(
                    f"cannot connect to the database at {engine.describe()}: {str(e).strip()}"
                ) from e
            committing = False
            try:
                with call.using(conn):
                    start = time.monotonic()
                    cursor = conn.cursor()
                    if not deadline:
                        engine.lift_statement_timeout(cursor)
                    engine.begin(cursor, readonly)
                    result = fn(Cursor(cursor, engine), *args)
                    cursor.close()
                    committing = True
                    conn.commit()
                    elapsed = (time.monotonic() - start) * 1000
                    if elapsed > 500:
                        self._log.warn("db {desc} took {ms:.0f} ms", desc=call.desc, ms=elapsed)
                    return result
            except Exception as e:
                dead = engine.is_disconnect(e, conn) or call.abandoned
                if dead:
                    self.pool.disconnect(conn)
                else:
                    try:
                        conn.rollback()
                    except Exception:
                        self.pool.disconnect(conn)
                if attempt == 1 and dead and not call.abandoned and (readonly or not committing):
                    self._log.warn(
                        "db {desc}: connection to {where} lost ({err}); "
                        "reconnecting and trying once more",
                        desc=call.desc,
                        where=engine.describe(),
                        err=str(e).strip(),
                    )
                    continue
                if call.abandoned:
                    raise StoreUnavailable(f"database call {call.desc} abandoned") from e
                if dead:
                    raise StoreUnavailable(
                        f"lost the connection to the database ({str(e).strip()})"
                    ) from e
                raise
        raise AssertionError("not reached")

    def migrate(self) -> Deferred[int]:
        """Apply every numbered schema delta not applied yet; fire with the schema version.

        No deadline: a delta may rewrite a large table."""
        from cgtwist.storage.migrate import migrate_txn

        d = self.run_interaction("migrate", migrate_txn, deadline=False)

        def done(version: int) -> int:
            self._log.info(
                "database {where} at schema version {version}",
                where=self.engine.describe(),
                version=version,
            )
            return version

        return d.addCallback(done)

    def close(self) -> None:
        """Close every connection and stop the pool's threads.

        Calls still blocked on the server are cut first: stopping the pool joins its threads,
        and a thread waiting on a frozen server would hold up the process's shutdown."""
        for call in list(self._calls):
            call.abandon(self.engine)
        self.pool.close()
