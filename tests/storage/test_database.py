"""Tests for cgtwist.storage.database, engines and migrate: pool, dialect shim, migrations."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from cgtwist.errors import ConfigError
from cgtwist.storage.database import Cursor, Database, StoreUnavailable
from cgtwist.storage.engines import PostgresEngine, SqliteEngine, engine_for_url
from cgtwist.storage.migrate import deltas
from tests.storage.dbcase import (
    DatabaseCase,
    frozen_postgres,
    terminate_backends,
    wait_until,
    wait_until_succeeds,
)


class EngineTests(unittest.TestCase):
    def test_sqlite_url(self) -> None:
        """sqlite:///srv/x.db and sqlite:////srv/x.db both open the file /srv/x.db."""
        for url in ("sqlite:///srv/mail/cgtwist.db", "sqlite:////srv/mail/cgtwist.db"):
            engine = engine_for_url(url)
            self.assertIsInstance(engine, SqliteEngine)
            self.assertEqual(engine.path, "/srv/mail/cgtwist.db")

    def test_bad_urls(self) -> None:
        """A URL without a file or with an unknown scheme is a configuration error."""
        self.assertRaises(ConfigError, engine_for_url, "sqlite:///")
        self.assertRaises(ConfigError, engine_for_url, "sqlite:////srv/")
        self.assertRaises(ConfigError, engine_for_url, "mysql://x/y")

    def test_postgres_paramstyle(self) -> None:
        """The same ``?`` SQL runs on psycopg2, whose paramstyle is %s (a literal % doubled)."""
        engine = PostgresEngine("postgresql://u@h/db", "h:5432/db")
        self.assertEqual(
            engine.convert("SELECT '5%' FROM t WHERE a = ? AND b = ?"),
            "SELECT '5%%' FROM t WHERE a = %s AND b = %s",
        )

    def test_postgres_url_described_as_libpq_reads_it(self) -> None:
        """A Unix-socket URL is logged with its socket directory, not as localhost:5432; a TCP
        URL with host and port, and never the password (issue 20, item 7)."""
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("psycopg2 is not installed") from None
        cases = {
            "postgresql://mail@/cgtwist?host=/run/postgresql": "postgresql:unix socket /run/postgresql/.s.PGSQL.5432, database cgtwist",
            "postgresql://%2Fvar%2Frun%2Fpostgresql:5433/mail": "postgresql:unix socket /var/run/postgresql/.s.PGSQL.5433, database mail",
            "postgresql://u:secret@db.example:6543/mail": "postgresql:db.example:6543, database mail",
            "postgresql://u@[::1]/mail": "postgresql:[::1]:5432, database mail",
        }
        for url, where in cases.items():
            self.assertEqual(engine_for_url(url).describe(), where)
            self.assertNotIn("secret", engine_for_url(url).describe())

    def test_postgres_connection_bounded_by_the_timeout(self) -> None:
        """Connecting, and over TCP a peer that vanished, are bounded by the store timeout
        (libpq's connect_timeout is at least 2 s); what the URL sets explicitly wins."""
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("psycopg2 is not installed") from None
        _, kw = engine_for_url("postgresql://u@db.example/mail", 6).connect_args()
        self.assertEqual(
            (kw["connect_timeout"], kw["keepalives"], kw["tcp_user_timeout"]), (6, 1, 6000)
        )
        _, kw = engine_for_url(
            "postgresql://u@db.example/mail?connect_timeout=30", 0.5
        ).connect_args()
        self.assertNotIn("connect_timeout", kw)  # the URL's 30 stays
        self.assertEqual(kw["keepalives_idle"], 2)

    def test_schema_placeholders(self) -> None:
        """Auto-increment keys are spelled per engine in migrations."""
        self.assertIn("AUTOINCREMENT", SqliteEngine("/x").render_schema("id {serial}"))
        self.assertEqual(
            PostgresEngine("", "").render_schema("id {serial}"), "id SERIAL PRIMARY KEY"
        )

    def test_upsert_sql(self) -> None:
        """Upsert is one portable INSERT ... ON CONFLICT statement."""
        sql = SqliteEngine("/x").upsert("meta", ("name",), ("value",))
        self.assertEqual(
            sql,
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )

    def test_deltas_numbered(self) -> None:
        """Schema deltas are found in order, starting at 1, without gaps."""
        versions = [v for v, _ in deltas()]
        self.assertEqual(versions, list(range(1, len(versions) + 1)))


class DatabaseTests(DatabaseCase):
    async def test_migrate_twice(self) -> None:
        """Migrating an up-to-date database changes nothing and reports the same version."""
        db = self.open_db()
        first = await db.migrate()
        self.assertEqual(first, deltas()[-1][0])
        self.assertEqual(await db.migrate(), first)
        rows = await db.run_interaction(
            "versions", lambda cur: cur.query("SELECT version FROM schema_version")
        )
        self.assertEqual(len(rows), first)

    async def test_newer_schema_refused(self) -> None:
        """A database from a newer cgtwist is refused instead of being misread."""
        db = self.open_db()
        await db.migrate()
        await db.run_interaction(
            "bump",
            lambda cur: cur.execute(
                "INSERT INTO schema_version (version, applied) VALUES (999, 0)"
            ),
        )
        try:
            await db.migrate()
        except RuntimeError as e:
            self.assertIn("newer", str(e))
        else:
            self.fail("a newer schema was accepted")

    async def test_failed_interaction_rolls_back(self) -> None:
        """A transaction function that raises leaves no partial write behind."""
        db = self.open_db()
        await db.migrate()

        def half_txn(cur: Cursor) -> None:
            cur.execute("INSERT INTO meta (name, value) VALUES ('a', '1')")
            raise ValueError("boom")

        with self.assertRaises(ValueError):
            await db.run_interaction("half", half_txn)
        rows = await db.run_interaction(
            "read", lambda cur: cur.query("SELECT * FROM meta"), readonly=True
        )
        self.assertEqual(rows, [])

    async def test_concurrent_writers_two_pools(self) -> None:
        """Two processes' pools (server and cgtwist-admin) writing at once never hit "locked".

        Each writer reads a counter and writes it back incremented: with deferred
        transactions SQLite would fail some of them at once with SQLITE_BUSY; every increment
        must land.
        """
        server, cli = self.open_db(), self.open_db()
        await server.migrate()
        await cli.migrate()
        await server.run_interaction(
            "init", lambda cur: cur.execute("INSERT INTO meta (name, value) VALUES ('n', '0')")
        )

        def incr_txn(cur: Cursor) -> None:
            row = cur.query_one("SELECT value FROM meta WHERE name = 'n'")
            assert row is not None
            cur.execute("UPDATE meta SET value = ? WHERE name = 'n'", (str(int(row[0]) + 1),))

        ds = [db.run_interaction("incr", incr_txn) for _ in range(40) for db in (server, cli)]
        await defer.gatherResults(ds, consumeErrors=True)
        row = await cli.run_interaction(
            "read",
            lambda cur: cur.query_one("SELECT value FROM meta WHERE name = 'n'"),
            readonly=True,
        )
        self.assertEqual(row, ("80",))

    async def test_sqlite_wal(self) -> None:
        """The SQLite file runs in WAL mode, so readers never wait for a writer."""
        db = self.open_db()
        await db.migrate()
        path = engine_for_url(self.url).path  # type: ignore[attr-defined]
        self.assertTrue(os.path.exists(path))
        conn = sqlite3.connect(path)
        try:
            self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        finally:
            conn.close()

    async def test_sqlite_commit_survives_power_loss(self) -> None:
        """Every connection of the pool commits with ``synchronous = FULL`` (2): in WAL mode
        NORMAL (1) skips the WAL fsync at commit, so a change cgtwist-admin reported done
        could roll back on power loss."""
        db = self.open_db()
        await db.migrate()
        rows = await defer.gatherResults(
            [
                db.run_interaction(
                    "sync", lambda cur: cur.query_one("PRAGMA synchronous"), readonly=ro
                )
                for ro in (True, False)
                for _ in range(4)
            ]
        )
        self.assertEqual({r[0] for r in rows}, {2})


class PostgresDatabaseTests(DatabaseTests):
    engine = "postgresql"

    async def test_sqlite_commit_survives_power_loss(self) -> None:
        """Not applicable to PostgreSQL (its commits are fsynced by the server)."""
        raise unittest.SkipTest("SQLite only")

    async def test_sqlite_wal(self) -> None:
        """Not applicable to PostgreSQL."""
        raise unittest.SkipTest("SQLite only")

    def _read(self, db: Database) -> defer.Deferred[Any]:
        return db.run_interaction(
            "read", lambda cur: cur.query("SELECT name FROM meta ORDER BY name"), readonly=True
        )

    async def test_stale_connections_reconnect_transparently(self) -> None:
        """After a PostgreSQL restart every pooled connection is dead; each call, read or
        write, reconnects and succeeds instead of failing once per pooled connection
        (issue 20, item 3)."""
        db = self.open_db(pool_max=4)
        await db.migrate()
        # Fill the pool: four concurrent calls open four connections.
        await defer.gatherResults([self._read(db) for _ in range(4)])
        self.assertGreaterEqual(terminate_backends(self.url), 1)
        reads = await defer.gatherResults([self._read(db) for _ in range(4)])
        self.assertEqual(reads, [[]] * 4)
        terminate_backends(self.url)
        await db.run_interaction(
            "write", lambda cur: cur.execute("INSERT INTO meta (name, value) VALUES ('w', '1')")
        )
        self.assertEqual(await self._read(db), [("w",)])

    async def test_frozen_server_times_out_and_frees_the_pool(self) -> None:
        """With the server frozen (SIGSTOP) each call fails with StoreUnavailable at its
        deadline instead of hanging, the pool's threads come back although the server never
        answered, and once the server runs again the same pool works (issue 20, item 2)."""
        db = self.open_db(pool_max=2, timeout=2.0)
        await db.migrate()
        await defer.gatherResults([self._read(db) for _ in range(2)])  # two live connections
        with frozen_postgres(self.url):
            calls = [self._read(db) for _ in range(3)]
            calls.append(
                db.run_interaction(
                    "write",
                    lambda cur: cur.execute("INSERT INTO meta (name, value) VALUES ('x', '1')"),
                )
            )
            for call in calls:
                with self.assertRaises(StoreUnavailable):
                    await call
            # Still frozen: the threads are back (cut sockets, connect_timeout), not blocked.
            await wait_until(lambda: db.busy == 0, 30, "the pool's threads to come back")
        await wait_until_succeeds(lambda: self._read(db), 30)
        self.assertEqual(await self._read(db), [])
