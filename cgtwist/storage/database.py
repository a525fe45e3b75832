"""The database handle: an adbapi ConnectionPool from a URL, named transactions, migrations.

Owns the pool and how a function runs inside a transaction on a pool thread. It knows nothing
about accounts or domains (cgtwist.storage.store) and nothing about dialects beyond asking its
Engine (cgtwist.storage.engines). Functions run here end in ``_txn`` and get a ``Cursor``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore

from cgtwist.logs import Logger
from cgtwist.storage.engines import Engine, SqliteEngine, engine_for_url

T = TypeVar("T")


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
    """

    _log = Logger()

    def __init__(self, url: str, reactor: IReactorCore, pool_min: int = 1,
                 pool_max: int = 4, busy_timeout_ms: Optional[int] = None) -> None:
        self.engine = engine_for_url(url)
        if isinstance(self.engine, SqliteEngine):
            if busy_timeout_ms is not None:
                self.engine.busy_timeout_ms = busy_timeout_ms
            os.makedirs(os.path.dirname(self.engine.path), exist_ok=True)
        args, kwargs = self.engine.connect_args()
        self.pool = adbapi.ConnectionPool(
            self.engine.dbapi_name, *args, cp_min=pool_min, cp_max=pool_max,
            cp_reactor=reactor, cp_openfun=self.engine.on_connect, cp_reconnect=True,
            cp_noisy=False, **kwargs,
        )
        self.dbapi = self.pool.dbapi

    def is_integrity_error(self, exc: BaseException) -> bool:
        """A UNIQUE/foreign-key violation (both drivers expose dbapi.IntegrityError)."""
        return isinstance(exc, self.dbapi.IntegrityError)

    def run_interaction(self, desc: str, fn: Callable[..., T], *args: Any,
                        readonly: bool = False) -> Deferred[T]:
        """Run ``fn(cursor, *args)`` in one transaction on a pool thread; fire with its result.

        ``desc`` names the caller in log lines. Writers (the default) take the write lock at
        BEGIN so two processes never deadlock on a lock upgrade.
        """
        engine = self.engine

        def interaction(txn: Any) -> T:
            start = time.monotonic()
            engine.begin(txn, readonly)
            result = fn(Cursor(txn, engine), *args)
            elapsed = (time.monotonic() - start) * 1000
            if elapsed > 500:
                self._log.warn("db {desc} took {ms:.0f} ms", desc=desc, ms=elapsed)
            return result

        return self.pool.runInteraction(interaction)

    def migrate(self) -> Deferred[int]:
        """Apply every numbered schema delta not applied yet; fire with the schema version."""
        from cgtwist.storage.migrate import migrate_txn

        d = self.run_interaction("migrate", migrate_txn)

        def done(version: int) -> int:
            self._log.info("database {where} at schema version {version}",
                           where=self.engine.describe(), version=version)
            return version

        return d.addCallback(done)

    def close(self) -> None:
        """Close every connection and stop the pool's threads."""
        self.pool.close()
