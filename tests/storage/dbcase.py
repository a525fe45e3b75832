"""Test support: a fresh Database per test, on SQLite always and on PostgreSQL when asked.

Set ``CGTWIST_TEST_PG_URL=postgresql://user@host/db`` to also run the store tests against that
(throw-away) database: every test drops and recreates its ``public`` schema.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from typing import Any, Iterator

from twisted.internet import reactor
from twisted.trial import unittest

from cgtwist.storage.database import Database
from cgtwist.storage.passwords import PasswordHasher
from cgtwist.storage.store import AccountStore

PG_URL = os.environ.get("CGTWIST_TEST_PG_URL", "")


def temp_dir(case: unittest.TestCase) -> str:
    """A fresh directory under the system temp dir, removed after the test (trial's mktemp
    would litter the working tree when pytest runs the tests)."""
    path = tempfile.mkdtemp(prefix="cgtwist-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def fast_hasher() -> PasswordHasher:
    """argon2id with minimal cost: the store tests check behaviour, not the work factor."""
    return PasswordHasher(reactor, memory_kib=64, time_cost=1)


class SpyArgon2:
    """Wraps a PasswordHasher's argon2 object and records every verification."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self.real = hasher._hasher
        self.verified: list[str] = []
        hasher._hasher = self  # type: ignore[assignment]

    def verify(self, stored: str, password: Any) -> Any:
        self.verified.append(stored)
        return self.real.verify(stored, password)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class DatabaseCase(unittest.TestCase):
    """Base class: ``self.url`` is a fresh database; ``open_db`` opens (and later closes) it."""

    engine = "sqlite"

    def setUp(self) -> None:
        if self.engine == "sqlite":
            self.url = "sqlite:///" + os.path.join(temp_dir(self), "cgtwist.db")
        else:
            if not PG_URL:
                raise unittest.SkipTest("set CGTWIST_TEST_PG_URL to run against PostgreSQL")
            try:
                import psycopg2
            except ImportError:
                raise unittest.SkipTest("psycopg2 is not installed") from None
            conn = psycopg2.connect(PG_URL)
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute("DROP SCHEMA public CASCADE")
            cur.execute("CREATE SCHEMA public")
            conn.close()
            self.url = PG_URL

    def open_db(self, pool_max: int = 4, timeout: float = 10.0) -> Database:
        db = Database(self.url, reactor, 1, pool_max, timeout=timeout)
        self.addCleanup(db.close)
        return db

    async def open_store(self, main_domain: str = "example.com", **kw: Any) -> AccountStore:
        db = self.open_db()
        await db.migrate()
        return AccountStore(db, main_domain, kw.pop("hasher", None) or fast_hasher(), **kw)


def postgres_processes(url: str) -> list[int]:
    """The postmaster serving ``url``'s Unix socket and its children (backends, workers).

    The postmaster's pid is the first line of the socket's lock file; its children are the
    processes whose parent it is."""
    import psycopg2.extensions

    dsn = psycopg2.extensions.parse_dsn(url)
    lock = os.path.join(dsn.get("host", ""), f".s.PGSQL.{dsn.get('port', '5432')}.lock")
    with open(lock) as f:
        postmaster = int(f.readline())
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == postmaster:
                pids.append(int(entry))
    return pids


@contextlib.contextmanager
def frozen_postgres(url: str) -> Iterator[None]:
    """SIGSTOP the whole cluster behind ``url`` (a stalled host: nothing answers, no error
    either), and always SIGCONT it after, also when the test fails."""
    stopped: list[int] = []
    try:
        for pid in postgres_processes(url):
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
            except PermissionError:
                raise unittest.SkipTest("cannot signal the PostgreSQL processes") from None
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def terminate_backends(url: str) -> int:
    """Kill every other session's backend, as a PostgreSQL restart does: the pooled
    connections' sockets close under them. Returns how many there were."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
        return len(cur.fetchall())
    finally:
        conn.close()


async def wait_until(cond: Any, timeout: float, what: str) -> None:
    """Let the reactor run until ``cond()`` is true; fail after ``timeout`` seconds."""
    from twisted.internet import task

    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while not cond():
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.05)  # type: ignore[arg-type]


async def wait_until_succeeds(call: Any, timeout: float) -> Any:
    """Await ``call()`` until it does not fail; fail with its last error after ``timeout``."""
    from twisted.internet import task

    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while True:
        try:
            return await call()
        except Exception:
            if reactor.seconds() > deadline:  # type: ignore[attr-defined]
                raise
        await task.deferLater(reactor, 0.1)  # type: ignore[arg-type]
