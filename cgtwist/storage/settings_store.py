"""Server and node settings in the store, and the nodes that share it (docs/CLUSTER.md).

Settings are kept as name -> JSON, only those an administrator changed, each checked by
``cgtwist.settings.validate`` before it is stored: node settings (``cgtwist.settings.
NODE_SETTINGS``) per node, every other one for the whole cluster. Every public method
returns a Deferred; SQL runs in the named ``_txn`` functions of cgtwist.storage.tables.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from cgtwist import settings as dynamic
from cgtwist.config import check_node
from cgtwist.errors import StoreError
from cgtwist.storage import tables
from cgtwist.storage.storebase import InvalidValue, StoreBase, _deferred


class SettingsStore(StoreBase):
    """The settings and node half of the account store (cgtwist.storage.store.AccountStore).

    ``node`` is whose node settings ``get_settings`` merges in and where ``set_setting`` puts
    one."""

    # ---- settings ------------------------------------------------------------------------

    @_deferred
    async def get_settings(self, node: Optional[str] = None) -> dict[str, Any]:
        """Fire with the settings an administrator changed (merge over DEFAULTS): the
        cluster-wide ones and this node's (or ``node``'s) own."""
        rows = await self._db.run_interaction(
            "get_settings", tables.settings_txn, self._node(node), readonly=True
        )
        return {k: json.loads(v) for k, v in rows}

    @_deferred
    async def set_setting(self, key: str, value: Any, node: Optional[str] = None) -> None:
        """Store one setting after ``cgtwist.settings.validate``: a node setting for this node
        (or ``node``), any other for the whole cluster."""
        try:
            dynamic.validate(key, value)
        except ValueError as e:
            raise InvalidValue(str(e)) from None
        target = self._scope(key, node)
        if target is None:
            await self._write("set_setting", tables.upsert_setting_txn, key, json.dumps(value))
            self._log.info("setting {key} changed", key=key)
        else:
            await self._write(
                "set_node_setting",
                tables.upsert_node_setting_txn,
                target,
                key,
                json.dumps(value),
                node=target,
            )
            self._log.info("setting {key} of node {node} changed", key=key, node=target)

    @_deferred
    async def unset_setting(self, key: str, node: Optional[str] = None) -> None:
        """Return a setting (this node's or ``node``'s, for a node setting) to its default."""
        if key not in dynamic.SPECS:
            raise InvalidValue(f"unknown setting {key!r}")
        target = self._scope(key, node)
        if target is None:
            await self._write(
                "unset_setting",
                lambda cur: cur.execute("DELETE FROM server_settings WHERE name = ?", (key,)),
            )
        else:
            await self._write(
                "unset_node_setting",
                lambda cur: cur.execute(
                    "DELETE FROM node_settings WHERE node = ? AND name = ?", (target, key)
                ),
                node=target,
            )

    def _node(self, node: Optional[str]) -> str:
        try:
            return check_node(node) if node is not None else self.node
        except ValueError as e:
            raise InvalidValue(str(e)) from None

    def _scope(self, key: str, node: Optional[str]) -> Optional[str]:
        """The node whose row holds ``key``, or None for a cluster-wide setting."""
        if dynamic.is_node_setting(key):
            return self._node(node)
        if node is not None:
            raise InvalidValue(
                f"{key} is a cluster-wide setting: every node uses the same "
                f"value (node settings: {', '.join(sorted(dynamic.NODE_SETTINGS))})"
            )
        return None

    # ---- nodes ---------------------------------------------------------------------------

    @_deferred
    async def register_node(self, hostname: str) -> None:
        """Record that this node started now on ``hostname`` (for ``node list``)."""
        await self._write(
            "register_node",
            tables.register_node_txn,
            self.node,
            hostname,
            int(self._now()),
            announce=False,
        )

    @_deferred
    async def remove_node(self, name: str) -> None:
        """Forget a node that left the cluster: its record and its node settings. Never this
        store's own node (its server would fall back to the built-in listeners)."""
        n = self._node(name)
        if n == self.node:
            raise StoreError(
                f"{n} is this configuration's own node ([server] node); remove it "
                "with the configuration of another node"
            )
        await self._write("remove_node", tables.remove_node_txn, n, node=n)
        self._log.info("node {node} removed", node=n)

    @_deferred
    async def list_nodes(self) -> list[dict[str, Any]]:
        """Fire with every node that started or has settings: {name, hostname, started,
        settings}, sorted by name."""
        return await self._db.run_interaction("list_nodes", tables.list_nodes_txn, readonly=True)
