"""Tests for node settings in the store: per-node rows, cluster-wide rows, the schema 2 upgrade.

Every test runs on SQLite; the same tests run on PostgreSQL when CGTWIST_TEST_PG_URL is set.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cgtwist.config import DEFAULT_NODE
from cgtwist.errors import NotFound, StoreError
from cgtwist.storage.migrate import deltas
from cgtwist.storage.store import AccountStore, InvalidValue
from tests.storage.dbcase import DatabaseCase, fast_hasher

N1 = [{"protocol": "smtp", "address": "127.0.0.2", "port": 2525, "tls": "starttls"}]
N2 = [{"protocol": "imap", "address": "127.0.0.3", "port": 2143, "tls": "starttls"}]


class NodeTestsMixin:
    """Node settings, independent of the database engine."""

    async def two_nodes(self: Any) -> tuple[AccountStore, AccountStore]:
        first = await self.open_store(node="n1")
        return first, AccountStore(first.db, "example.com", fast_hasher(), node="n2")

    async def test_listeners_belong_to_their_node(self: Any) -> None:
        """Each node keeps its own listeners: one node's change never reaches another's."""
        n1, n2 = await self.two_nodes()
        await n1.set_setting("listeners", N1)
        await n2.set_setting("listeners", N2)
        self.assertEqual((await n1.get_settings())["listeners"], N1)
        self.assertEqual((await n2.get_settings())["listeners"], N2)
        await n2.unset_setting("listeners")
        self.assertEqual((await n1.get_settings())["listeners"], N1)
        self.assertNotIn("listeners", await n2.get_settings())

    async def test_cluster_settings_are_shared(self: Any) -> None:
        """A cluster-wide setting changed through one node is the value of every node."""
        n1, n2 = await self.two_nodes()
        await n1.set_setting("smtp.max_recipients", 7)
        self.assertEqual((await n2.get_settings())["smtp.max_recipients"], 7)
        await n2.unset_setting("smtp.max_recipients")
        self.assertNotIn("smtp.max_recipients", await n1.get_settings())

    async def test_another_nodes_settings_by_name(self: Any) -> None:
        """An administrator on one node can set, read and clear another node's settings."""
        n1, n2 = await self.two_nodes()
        await n1.set_setting("smtp.workers", 3, node="n2")
        self.assertEqual((await n2.get_settings())["smtp.workers"], 3)
        self.assertEqual((await n1.get_settings("n2"))["smtp.workers"], 3)
        self.assertNotIn("smtp.workers", await n1.get_settings())
        await n1.unset_setting("smtp.workers", node="n2")
        self.assertNotIn("smtp.workers", await n2.get_settings())

    async def test_cluster_setting_is_refused_per_node(self: Any) -> None:
        """A cluster-wide setting cannot be given one node: it would silently apply to all."""
        n1, _n2 = await self.two_nodes()
        with self.assertRaises(InvalidValue) as cm:
            await n1.set_setting("smtp.max_recipients", 7, node="n2")
        self.assertIn("cluster-wide", str(cm.exception))
        with self.assertRaises(InvalidValue):
            await n1.unset_setting("router.table", node="n2")

    async def test_bad_node_name_is_refused(self: Any) -> None:
        """A node name is checked before it reaches a row."""
        n1, _n2 = await self.two_nodes()
        with self.assertRaises(InvalidValue):
            await n1.set_setting("listeners", N1, node="No Such'Node")

    async def test_node_list(self: Any) -> None:
        """Nodes that started and nodes that only have settings are listed with them."""
        n1, _n2 = await self.two_nodes()
        await n1.register_node("mx1.example.com")
        await n1.set_setting("listeners", N2, node="n3")
        nodes = {n["name"]: n for n in await n1.list_nodes()}
        self.assertEqual(sorted(nodes), ["n1", "n3"])
        self.assertEqual(nodes["n1"]["hostname"], "mx1.example.com")
        self.assertGreater(nodes["n1"]["started"], time.time() - 3600)
        self.assertEqual(nodes["n3"]["settings"], {"listeners": N2})
        self.assertIsNone(nodes["n3"]["started"])

    async def test_remove_node(self: Any) -> None:
        """A node that left is forgotten with its settings; never the store's own node, and
        an unknown name is NotFound."""
        n1, n2 = await self.two_nodes()
        await n2.register_node("mx2.example.com")
        await n2.set_setting("listeners", N2)
        await n1.remove_node("n2")
        self.assertEqual(await n1.list_nodes(), [])
        self.assertNotIn("listeners", await n2.get_settings())
        with self.assertRaises(NotFound):
            await n1.remove_node("n2")
        with self.assertRaises(StoreError):
            await n1.remove_node("n1")

    async def test_upgrade_moves_node_settings_to_the_default_node(self: Any) -> None:
        """A single server upgraded to schema 2 keeps its listeners: they move to the node
        ``default`` (what it is without ``[server] node``); cluster settings stay shared."""
        db = self.open_db()
        schema1 = dict(deltas())[1]

        def at_version_1(cur: Any) -> None:
            cur.execute(
                "CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, "
                f"applied {cur.engine.bigint} NOT NULL)"
            )
            for sql in schema1:
                cur.execute(cur.engine.render_schema(sql))
            cur.execute("INSERT INTO schema_version (version, applied) VALUES (1, 0)")
            for key, value in (("listeners", N1), ("smtp.workers", 2), ("smtp.max_recipients", 9)):
                cur.execute(
                    "INSERT INTO server_settings (name, value) VALUES (?, ?)",
                    (key, json.dumps(value)),
                )

        await db.run_interaction("schema1", at_version_1)
        self.assertGreaterEqual(await db.migrate(), 2)
        single = AccountStore(db, "example.com", fast_hasher())
        self.assertEqual(single.node, DEFAULT_NODE)
        values = await single.get_settings()
        self.assertEqual(
            (values["listeners"], values["smtp.workers"], values["smtp.max_recipients"]), (N1, 2, 9)
        )
        other = AccountStore(db, "example.com", fast_hasher(), node="n2")
        self.assertEqual(await other.get_settings(), {"smtp.max_recipients": 9})


class SQLiteNodeTests(NodeTestsMixin, DatabaseCase):
    engine = "sqlite"


class PostgresNodeTests(NodeTestsMixin, DatabaseCase):
    engine = "postgresql"
