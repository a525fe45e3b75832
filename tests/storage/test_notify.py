"""Tests for cgtwist.storage.notify: changes announced with LISTEN/NOTIFY, and coalesced reloads.

The announcement tests need PostgreSQL (CGTWIST_TEST_PG_URL); they run a real listening
connection on the real reactor and wait for each change with a deadline, never a fixed sleep.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cgtwist.errors import AlreadyExists
from cgtwist.storage import notify
from cgtwist.storage.notify import Change, ChangeListener, Coalesced, listener_for
from cgtwist.storage.store import AccountStore
from tests.storage.dbcase import DatabaseCase, fast_hasher

DEADLINE = 10.0  # seconds: generous for a busy machine; the delay itself is measured, not this


class Collector:
    """Records changes and lets a test wait for one that matches."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._waiting: list[tuple[Callable[[Change], bool], defer.Deferred[Change]]] = []

    def __call__(self, change: Change) -> None:
        self.changes.append(change)
        for entry in list(self._waiting):
            if entry[0](change):
                self._waiting.remove(entry)
                entry[1].callback(change)

    def wait(self, match: Callable[[Change], bool]) -> defer.Deferred[Change]:
        """The next change (from now on) that matches, or a timeout after DEADLINE."""
        d: defer.Deferred[Change] = defer.Deferred()
        self._waiting.append((match, d))
        return d.addTimeout(DEADLINE, reactor)


class WireTests(unittest.TestCase):
    """The payload: small, and never fatal when unreadable."""

    def test_round_trip(self) -> None:
        """A cluster change and a node change keep what a node needs to decide."""
        c = notify.decode(notify.encode("add_account", "n1"))
        self.assertEqual(
            (c.scope, c.what, c.origin, c.node), ("cluster", "add_account", "n1", None)
        )
        self.assertTrue(c.concerns("n2"))
        n = notify.decode(notify.encode("set_node_setting", "n1", "n2"))
        self.assertEqual((n.scope, n.node), ("node", "n2"))
        self.assertTrue(n.concerns("n2"))
        self.assertFalse(n.concerns("n1"))

    def test_unreadable_payload_is_a_cluster_change(self) -> None:
        """An announcement this version cannot read (a newer node, a stray NOTIFY) makes every
        node reload rather than miss a change."""
        for payload in ("", "{", "[]", '{"what": 1}', "null"):
            self.assertTrue(notify.decode(payload).concerns("any"), payload)


class CoalescedTests(unittest.TestCase):
    """Reloads never run twice at once, and the last one starts after the last kick."""

    def test_kicks_during_a_run_cause_one_more_run(self) -> None:
        gates: list[defer.Deferred[None]] = []

        def job() -> defer.Deferred[None]:
            gates.append(defer.Deferred())
            return gates[-1]

        c = Coalesced(job)
        c.kick()
        self.assertEqual(len(gates), 1)
        for _ in range(5):
            c.kick()
        self.assertEqual(len(gates), 1)  # not twice at once
        gates[0].callback(None)
        self.assertEqual(len(gates), 2)  # one more, for all five kicks
        gates[1].callback(None)
        self.assertFalse(c.running)
        self.assertEqual(c.runs, 2)
        c.kick()
        self.assertEqual(len(gates), 3)

    def test_a_failing_run_is_logged_and_the_next_kick_runs(self) -> None:
        calls: list[int] = []

        def job() -> defer.Deferred[None]:
            calls.append(1)
            return defer.fail(RuntimeError("database down"))

        c = Coalesced(job)
        c.kick()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        c.kick()
        self.assertEqual(len(calls), 2)
        self.flushLoggedErrors(RuntimeError)


class SQLiteAnnouncementTests(DatabaseCase):
    engine = "sqlite"

    async def test_sqlite_has_no_listener(self) -> None:
        """One server per SQLite file: cgtwist-admin tells it over the control socket."""
        store = await self.open_store()
        self.assertIsNone(listener_for(store.db, reactor, lambda c: None))


class PostgresAnnouncementTests(DatabaseCase):
    engine = "postgresql"

    async def listening(self, **kw: Any) -> tuple[AccountStore, Collector, ChangeListener]:
        store = await self.open_store(node="n1")
        seen = Collector()
        listener = listener_for(store.db, reactor, seen)
        assert listener is not None
        for name, value in kw.items():
            setattr(listener, name, value)
        self.addCleanup(listener.stop)
        first = seen.wait(lambda c: c.resync)
        listener.start()
        await first
        return store, seen, listener

    async def test_a_committed_change_is_announced(self) -> None:
        """An account added through one node is announced to listeners with its origin."""
        store, seen, _listener = await self.listening()
        other = AccountStore(store.db, "example.com", fast_hasher(), node="n2")
        await other.add_domain("example.com")
        waiting = seen.wait(lambda c: c.what == "add_account")
        await other.add_account("carol", "example.com", "secret-pw")
        change = await waiting
        self.assertEqual((change.scope, change.origin), ("cluster", "n2"))

    async def test_a_node_setting_names_its_node(self) -> None:
        """A node's listeners changed: only that node is concerned."""
        store, seen, _listener = await self.listening()
        waiting = seen.wait(lambda c: not c.resync)
        await store.set_setting("listeners", [], node="n3")
        change = await waiting
        self.assertEqual((change.scope, change.node, change.origin), ("node", "n3", "n1"))
        self.assertFalse(change.concerns("n1"))

    async def test_a_rolled_back_change_is_not_announced(self) -> None:
        """NOTIFY is transactional: a refused write announces nothing."""
        store, seen, _listener = await self.listening()
        await store.add_domain("example.net")
        with self.assertRaises(AlreadyExists):
            await store.add_domain("example.net")  # rolled back
        waiting = seen.wait(lambda c: not c.resync)
        await store.set_setting("smtp.max_recipients", 5)
        change = await waiting
        self.assertEqual(change.what, "set_setting")
        self.assertEqual(
            [c.what for c in seen.changes if not c.resync], ["add_domain", "set_setting"]
        )

    async def test_a_lost_connection_comes_back_and_resyncs(self) -> None:
        """PostgreSQL restarted or the connection cut: the listener reconnects, reports a
        resync (changes made meanwhile were never delivered) and hears later changes."""
        store, seen, listener = await self.listening(delays=(0.05,))
        assert listener._reader is not None
        pid = listener._reader.conn.get_backend_pid()
        resynced = seen.wait(lambda c: c.resync)

        def terminate(cur: Any) -> None:
            cur.execute("SELECT pg_terminate_backend(?)", (pid,))

        await store.db.run_interaction("terminate", terminate)
        await resynced
        self.assertTrue(listener.listening)
        waiting = seen.wait(lambda c: c.what == "add_domain")
        await store.add_domain("example.org")
        await waiting
        self.flushLoggedErrors()

    async def test_listening_connection_has_tcp_keepalive(self) -> None:
        """The listening connection only reads: TCP keepalive (unless the URL sets its own)
        is what notices a database host that vanished without a reset."""
        _store, _seen, listener = await self.listening()
        assert listener._reader is not None
        params = listener._reader.conn.get_dsn_parameters()
        # The store's connection arguments set keepalives from [database] timeout (pg-deploy);
        # without them the listener sets its own (notify.KEEPALIVE): either way, within 30 s.
        self.assertEqual(params.get("keepalives"), "1")
        self.assertLessEqual(int(params.get("keepalives_idle") or 0), 30)
        self.assertGreater(int(params.get("keepalives_idle") or 0), 0)

    async def test_unreachable_database_is_retried(self) -> None:
        """Listening starts when the database answers, however long after start that is."""
        attempts: list[int] = []
        store = await self.open_store()
        real = listener_for(store.db, reactor, lambda c: None)
        assert real is not None

        def connect() -> Any:
            attempts.append(1)
            if len(attempts) < 3:
                raise OSError("connection refused")
            return real._connect_fn()

        seen = Collector()
        listener = ChangeListener(connect, reactor, seen, delays=(0.01,))
        self.addCleanup(listener.stop)
        first = seen.wait(lambda c: c.resync)
        listener.start()
        await first
        self.assertEqual(len(attempts), 3)
        await task.deferLater(reactor, 0, lambda: None)
