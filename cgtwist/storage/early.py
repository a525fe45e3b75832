"""Reading the server settings before the reactor runs, to bind the listeners as root.

Owns one blocking, read-only query of ``server_settings`` (and this node's ``node_settings``,
which win: listeners are per node, docs/CLUSTER.md) from whichever database the URL names, made in ``privilegedStartService`` before twistd drops root: ports below 1024 can only be
bound then, so the configured listeners must be known then. It never writes and never creates
anything (the server migrates and bootstraps later, as the unprivileged user); the store proper
is cgtwist.storage.store.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from cgtwist.storage.database import StoreUnavailable
from cgtwist.storage.engines import PostgresEngine, SqliteEngine, engine_for_url

_QUERY = "SELECT name, value FROM server_settings"
_NODE_QUERY = "SELECT name, value FROM node_settings WHERE node = {}"


def read_server_settings(url: str, timeout: float, node: str = "default") -> dict[str, Any]:
    """The settings an administrator stored (name -> value) for ``node``, read without the
    reactor: the cluster's, with the node's own rows over them.

    A database not created yet (no SQLite file, no ``server_settings`` table) has none: the
    built-in defaults are its configuration. A database that cannot be read raises
    StoreUnavailable: binding the built-in defaults instead would open ports the administrator
    never configured, and the configured ones could not be bound after root is dropped.
    """
    engine = engine_for_url(url, timeout)
    if isinstance(engine, SqliteEngine):
        rows = _read_sqlite(engine.path, timeout, node)
    elif isinstance(engine, PostgresEngine):
        rows = _read_postgres(engine, node)
    else:  # pragma: no cover - engine_for_url knows only these two
        raise StoreUnavailable(f"cannot read settings from {engine.describe()}")
    out: dict[str, Any] = {}
    for name, value in rows:
        try:
            out[str(name)] = json.loads(value)
        except ValueError:
            continue  # the store refuses such values; the server reports it after start
    return out


def _read_sqlite(path: str, timeout: float, node: str) -> list[tuple[Any, ...]]:
    if not os.path.exists(path):
        return []
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        try:
            rows = con.execute(_QUERY).fetchall()
            try:  # schema 2 on; before it the node's settings are among the above
                rows += con.execute(_NODE_QUERY.format("?"), (node,)).fetchall()
            except sqlite3.OperationalError as e:
                if "no such table" not in str(e):
                    raise
            return rows
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise StoreUnavailable(f"cannot read the settings from sqlite:{path}: {e}") from None
    except sqlite3.Error as e:
        raise StoreUnavailable(f"cannot read the settings from sqlite:{path}: {e}") from None


def _read_postgres(engine: PostgresEngine, node: str) -> list[tuple[Any, ...]]:
    import psycopg2

    args, kwargs = engine.connect_args()
    try:
        con = psycopg2.connect(*args, **kwargs)
    except psycopg2.Error as e:
        raise StoreUnavailable(
            f"cannot connect to postgresql:{engine.where}: {str(e).strip()}"
        ) from None
    try:
        engine.on_connect(con)  # statement_timeout: a stuck lock must not hang the start
        cur = con.cursor()
        cur.execute("SELECT to_regclass('server_settings') IS NOT NULL")
        row = cur.fetchone()
        if not row or not row[0]:
            return []
        cur.execute(_QUERY)
        rows = list(cur.fetchall())
        cur.execute("SELECT to_regclass('node_settings') IS NOT NULL")
        row = cur.fetchone()
        if row and row[0]:
            cur.execute(_NODE_QUERY.format("%s"), (node,))
            rows += cur.fetchall()
        return rows
    except psycopg2.Error as e:
        raise StoreUnavailable(
            f"cannot read the settings from postgresql:{engine.where}: {str(e).strip()}"
        ) from None
    finally:
        con.close()
