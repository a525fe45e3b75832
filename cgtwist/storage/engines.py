"""The one SQL dialect shim: how SQLite and PostgreSQL differ, and nothing else.

Owns connection arguments, per-connection setup (WAL, synchronous, busy timeout), parameter style, the
autoincrement column type, how a transaction begins, and which errors are "busy/unavailable".
Store code writes portable SQL with ``?`` placeholders and never tests which engine it runs on.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

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

    def lift_statement_timeout(self, cursor: Any) -> None:
        """Let this transaction's statements run as long as they need (migrations)."""

    def is_disconnect(self, exc: BaseException, conn: Any) -> bool:
        """Whether ``exc`` says ``conn`` is dead (server restarted, socket cut): the connection
        must be dropped, and a transaction that failed this way did not commit."""
        return False

    def abort(self, conn: Any) -> None:
        """Make a call blocked on ``conn`` in another thread fail now (called on the reactor
        thread when the call's deadline passes). Must not block."""

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

    def abort(self, conn: Any) -> None:
        conn.interrupt()  # thread-safe: the blocked statement fails with "interrupted"

    def describe(self) -> str:
        return f"sqlite:{self.path}"


@dataclass
class PostgresEngine(Engine):
    """PostgreSQL through psycopg2 (``pip install psycopg2-binary``).

    ``timeout`` (seconds) bounds what the server can make us wait for: connecting
    (``connect_timeout``), one statement (``statement_timeout``: a lock held by someone else, a
    runaway query), and over TCP a peer that vanished (keepalives, ``tcp_user_timeout``). A
    server that is frozen (SIGSTOP, a stalled VM) answers nothing at all, not even a cancel
    request: ``abort`` then cuts the connection's socket so the blocked thread returns.
    """

    dsn: str
    where: str
    timeout: float = 10.0

    name = "postgresql"
    dbapi_name = "psycopg2"
    serial = "SERIAL PRIMARY KEY"

    def connect_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        import psycopg2.extensions

        given = psycopg2.extensions.parse_dsn(self.dsn)
        seconds = max(2, math.ceil(self.timeout))  # libpq's minimum connect_timeout is 2
        ours: dict[str, Any] = {
            "connect_timeout": seconds,
            "keepalives": 1,
            "keepalives_idle": seconds,
            "keepalives_interval": max(1, seconds // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": seconds * 1000,
        }
        # Whatever the URL says explicitly wins: the administrator may know better.
        return (self.dsn,), {k: v for k, v in ours.items() if k not in given}

    def on_connect(self, conn: Any) -> None:
        cur = conn.cursor()
        cur.execute("SET statement_timeout = %s", (max(1, int(self.timeout * 1000)),))
        cur.close()
        conn.commit()

    def lift_statement_timeout(self, cursor: Any) -> None:
        cursor.execute("SET LOCAL statement_timeout = 0")

    def is_disconnect(self, exc: BaseException, conn: Any) -> bool:
        import psycopg2

        # psycopg2 marks the connection closed (2: broken) when libpq lost it.
        return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)) and bool(
            getattr(conn, "closed", 0)
        )

    def abort(self, conn: Any) -> None:
        try:
            fd = os.dup(conn.fileno())
        except (OSError, ValueError, AttributeError):
            return  # already closed
        sock = socket.socket(fileno=fd)
        try:
            # shutdown, unlike close, acts on the socket the other thread is blocked on: its
            # recv returns at once and libpq reports the connection lost.
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

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


def engine_for_url(url: str, timeout: float = 10.0) -> Engine:
    """Pick the engine for a database URL: ``sqlite:///abs/path`` or ``postgresql://...``.

    ``timeout``: seconds PostgreSQL may keep us waiting (see PostgresEngine)."""
    if url.startswith("sqlite:///"):
        # Both spellings of an absolute path: sqlite:///srv/x.db and (SQLAlchemy's, as
        # cgtwist.config builds it) sqlite:////srv/x.db.
        rest = unquote(url[len("sqlite:///") :])
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
        return PostgresEngine(url, describe_postgres_url(url), timeout)
    raise ConfigError(f"database url {url!r} must start with sqlite:/// or postgresql://")


def describe_postgres_url(url: str) -> str:
    """Where a PostgreSQL URL connects, as libpq reads it, for log lines (never the password).

    libpq takes ``host`` and ``port`` from the query string too, and a host that starts with
    ``/`` is the directory of a Unix socket (``postgresql://mail@/cgtwist?host=/run/postgresql``),
    which must not be logged as ``localhost:5432``. With no host at all libpq uses ``$PGHOST``,
    else its compiled-in socket directory.
    """
    import psycopg2.extensions

    try:
        dsn = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError as e:
        raise ConfigError(f"database url is not a valid PostgreSQL URL: {e}") from None
    host = dsn.get("host") or os.environ.get("PGHOST", "")
    port = dsn.get("port") or os.environ.get("PGPORT", "") or "5432"
    dbname = dsn.get("dbname") or dsn.get("user") or "(default database)"
    if not host:
        return f"unix socket .s.PGSQL.{port} in libpq's default directory, database {dbname}"
    out = []
    ports = port.split(",")
    for i, h in enumerate(host.split(",")):
        p = (ports[i] if i < len(ports) else ports[-1]) or "5432"
        if h.startswith("/") or h.startswith("@"):
            out.append(f"unix socket {h.rstrip('/')}/.s.PGSQL.{p}")
        else:
            out.append(f"[{h}]:{p}" if ":" in h else f"{h}:{p}")
    return f"{', '.join(out)}, database {dbname}"
