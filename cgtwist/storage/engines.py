"""The one SQL dialect shim: how SQLite and PostgreSQL differ, and nothing else.

Owns connection arguments, per-connection setup (WAL, synchronous, busy timeout), parameter style, the
autoincrement column type, how a transaction begins, and which errors are "busy/unavailable".
Store code writes portable SQL with ``?`` placeholders and never tests which engine it runs on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from cgtwist.errors import ConfigError

# How long a SQLite connection waits for another writer (the CLI, another server thread) before
# giving up with "database is locked". Transactions here are milliseconds long.
SQLITE_BUSY_TIMEOUT_MS = 5000
# The PostgreSQL advisory lock key serialising cgtwist's writers ("cgtw" in ASCII).
_PG_WRITE_LOCK = 0x63677477


class Engine:
    """Base: the portable behaviour. Subclasses override only what differs."""

    name = "base"
    dbapi_name = ""
    serial = "INTEGER PRIMARY KEY"  # an auto-incrementing integer primary key column
    bigint = "BIGINT"

    def connect_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for ``dbapi.connect``."""
        raise NotImplementedError

    def on_connect(self, conn: Any) -> None:
        """Set up a fresh connection (called on the pool thread that owns it)."""

    def convert(self, sql: str) -> str:
        """Turn our ``?`` placeholders into the driver's paramstyle."""
        return sql

    def begin(self, cursor: Any, readonly: bool) -> None:
        """Start a transaction; writers take the write lock up front."""

    def lock_schema(self, cursor: Any) -> None:
        """Serialise concurrent migrations (two processes opening a fresh database)."""

    # Whether a committed change can be announced to other processes through the database
    # (cgtwist.storage.notify); without it, cgtwist-admin uses the control socket.
    announces = False

    def announce(self, cursor: Any, channel: str, payload: str) -> None:
        """On a ``database.Cursor``: queue ``payload`` for every listener on ``channel``,
        delivered when this transaction commits and never if it rolls back."""

    def render_schema(self, sql: str) -> str:
        """Substitute ``{serial}`` and ``{bigint}`` in a migration statement."""
        return sql.replace("{serial}", self.serial).replace("{bigint}", self.bigint)

    def upsert(self, table: str, keys: tuple[str, ...], values: tuple[str, ...]) -> str:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE``: SQLite >= 3.24 and PostgreSQL >= 9.5."""
        cols = keys + values
        return (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in values)
        )

    def describe(self) -> str:
        """Where the data lives, for log lines (never includes a password)."""
        return self.name


@dataclass
class SqliteEngine(Engine):
    """SQLite: one file, WAL so readers never wait for writers, BEGIN IMMEDIATE for writers.

    Connections run in autocommit mode (``isolation_level=None``) and we issue BEGIN ourselves:
    a deferred transaction that reads and then writes can fail with SQLITE_BUSY at once, without
    waiting, when another process (``cgtwist-admin``) committed meanwhile. BEGIN IMMEDIATE waits
    up to the busy timeout instead.
    """

    path: str
    busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS

    name = "sqlite"
    dbapi_name = "sqlite3"
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    bigint = "INTEGER"

    def connect_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.path,), {
            "check_same_thread": False,
            "isolation_level": None,
            "timeout": self.busy_timeout_ms / 1000.0,
        }

    def on_connect(self, conn: Any) -> None:
        cur = conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        cur.execute("PRAGMA journal_mode = WAL")
        # FULL: in WAL mode NORMAL skips the fsync of the WAL at each commit, so a change that
        # cgtwist-admin reported done can roll back on power loss (only a process crash is
        # survived). The store is off the per-message path (mail reads accounts in read-only
        # transactions, which sync nothing), so the fsync per write transaction costs nothing
        # that mail notices.
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    def begin(self, cursor: Any, readonly: bool) -> None:
        cursor.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")

    def lock_schema(self, cursor: Any) -> None:
        pass  # BEGIN IMMEDIATE already excludes other writers

    def describe(self) -> str:
        return f"sqlite:{self.path}"


@dataclass
class PostgresEngine(Engine):
    """PostgreSQL through psycopg2 (``pip install psycopg2-binary``)."""

    dsn: str
    where: str

    name = "postgresql"
    dbapi_name = "psycopg2"
    serial = "SERIAL PRIMARY KEY"

    def connect_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.dsn,), {}

    def convert(self, sql: str) -> str:
        # psycopg2 uses pyformat: a literal % must be doubled. Our SQL has no '?' in literals.
        return sql.replace("%", "%%").replace("?", "%s")

    def begin(self, cursor: Any, readonly: bool) -> None:
        # psycopg2 opens the transaction implicitly. Writers are serialised by one
        # transaction-scoped advisory lock, like SQLite's BEGIN IMMEDIATE: store writes are
        # rare, short read-modify-write transactions that must not lose updates under READ
        # COMMITTED.
        if not readonly:
            cursor.execute(f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK})")

    def lock_schema(self, cursor: Any) -> None:
        cursor.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")

    announces = True

    def announce(self, cursor: Any, channel: str, payload: str) -> None:
        cursor.execute("SELECT pg_notify(?, ?)", (channel, payload))  # a database.Cursor

    def describe(self) -> str:
        return f"postgresql:{self.where}"


def engine_for_url(url: str) -> Engine:
    """Pick the engine for a database URL: ``sqlite:///abs/path`` or ``postgresql://...``."""
    if url.startswith("sqlite:///"):
        # Both spellings of an absolute path: sqlite:///srv/x.db and (SQLAlchemy's, as
        # cgtwist.config builds it) sqlite:////srv/x.db.
        rest = unquote(url[len("sqlite:///"):])
        path = os.path.normpath(rest if rest.startswith("/") else "/" + rest)
        if not rest or rest.endswith("/"):
            raise ConfigError(f"database url {url!r} names no SQLite file")
        return SqliteEngine(path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise ConfigError(
                "database url is PostgreSQL but psycopg2 is not installed "
                "(pip install psycopg2-binary)"
            ) from None
        parts = urlsplit(url)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
        return PostgresEngine(url, where)
    raise ConfigError(f"database url {url!r} must start with sqlite:/// or postgresql://")
