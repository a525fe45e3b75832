"""Schema migrations: apply the numbered deltas in cgtwist.storage.schema, once each, in order.

Owns the ``schema_version`` table and the order of deltas. Runs inside one write transaction
(see Database.migrate), so two processes opening a fresh database never both apply a delta, and a
failed delta leaves the database as it was.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import time

from cgtwist.storage import schema
from cgtwist.storage.database import Cursor

_DELTA_RE = re.compile(r"^delta_(\d{3})_\w+$")


def deltas() -> list[tuple[int, list[str]]]:
    """Every delta as (version, statements), sorted by version; versions must not repeat."""
    found: dict[int, list[str]] = {}
    for mod in pkgutil.iter_modules(schema.__path__):
        m = _DELTA_RE.match(mod.name)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise RuntimeError(f"two schema deltas numbered {version}")
        module = importlib.import_module(f"{schema.__name__}.{mod.name}")
        found[version] = list(module.STATEMENTS)
    return sorted(found.items())


def migrate_txn(cur: Cursor) -> int:
    """Bring the schema up to date; return the resulting version."""
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY, "
        f"applied {cur.engine.bigint} NOT NULL)"
    )
    cur.engine.lock_schema(cur)
    row = cur.query_one("SELECT MAX(version) FROM schema_version")
    current = int(row[0]) if row and row[0] is not None else 0
    known = deltas()
    newest = known[-1][0] if known else 0
    if current > newest:
        raise RuntimeError(
            f"database schema version {current} is newer than this cgtwist ({newest}); "
            "upgrade cgtwist"
        )
    for version, statements in known:
        if version <= current:
            continue
        for sql in statements:
            cur.execute(cur.engine.render_schema(sql))
        cur.execute(
            "INSERT INTO schema_version (version, applied) VALUES (?, ?)",
            (version, int(time.time())),
        )
        current = version
    return current
