"""Test support: a fresh Database per test, on SQLite always and on PostgreSQL when asked.

Set ``CGTWIST_TEST_PG_URL=postgresql://user@host/db`` to also run the store tests against that
(throw-away) database: every test drops and recreates its ``public`` schema.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

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

    def open_db(self) -> Database:
        db = Database(self.url, reactor, 1, 4)
        self.addCleanup(db.close)
        return db

    async def open_store(self, main_domain: str = "example.com", **kw: Any) -> AccountStore:
        db = self.open_db()
        await db.migrate()
        return AccountStore(db, main_domain, kw.pop("hasher", None) or fast_hasher(), **kw)
