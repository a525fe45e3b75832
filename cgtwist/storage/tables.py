"""SQL over the account tables: the ``_txn`` functions AccountStore runs on pool threads.

Owns the queries and how rows decode into values (Account, info dicts). Every function takes a
``Cursor`` inside a transaction opened by Database.run_interaction and must not block on
anything but the database; no hashing, no Deferreds, no reactor here.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from cgtwist.errors import AlreadyExists, InvalidName, NotFound, StoreError
from cgtwist.paths import check_account, check_domain
from cgtwist.storage.database import Cursor
from cgtwist.storage.storebase import InvalidValue
from cgtwist.types import Account

# CommuniGate "Enabled Services" (COMMUNIGATE.md a.1, a.6). The effective set of an account is
# its own set intersected with its domain's; None (the default) means every service.
# WebMail is not among them until cgtwist serves it: a name nothing enforces is refused.
SERVICES = ("mail", "pop", "imap", "relay", "roaming")
POSTMASTER = "postmaster"
PBX = "pbx"
KIND_USER = "user"
KIND_SERVICE = "service"  # exists for mail routing, can never log in (pbx)


def check_target_address(target: str, domain: str) -> str:
    """Validate an alias, forwarder or group target address; a bare name means that name in
    the domain of the alias (forwarder, group)."""
    t = target.strip()
    if not t or len(t) > 320 or any(c.isspace() or c in '<>"(),;:\\[]' or ord(c) < 32 for c in t):
        raise InvalidValue(f"invalid alias target {target!r}")
    local, sep, dom = t.rpartition("@")
    if not sep:
        local, dom = t, domain
    if not local or len(local) > 64:
        raise InvalidValue(f"invalid alias target {target!r}")
    try:
        dom = check_domain(dom)
    except InvalidName:
        raise InvalidValue(f"invalid alias target {target!r}") from None
    return f"{local}@{dom}"


def services_json(services: Optional[frozenset[str]]) -> Optional[str]:
    return None if services is None else json.dumps(sorted(services))


def services_of(raw: Optional[str]) -> frozenset[str]:
    return frozenset(SERVICES) if raw is None else frozenset(json.loads(raw))


def meta_get_txn(cur: Cursor, name: str) -> Optional[str]:
    row = cur.query_one("SELECT value FROM meta WHERE name = ?", (name,))
    return row[0] if row else None


def domain_id_txn(cur: Cursor, d: str) -> Optional[int]:
    row = cur.query_one("SELECT id FROM domains WHERE name = ?", (d,))
    return int(row[0]) if row else None


def domain_alias_txn(cur: Cursor, a: str) -> Optional[int]:
    row = cur.query_one("SELECT domain_id FROM domain_aliases WHERE name = ?", (a,))
    return int(row[0]) if row else None


def resolve_domain_txn(cur: Cursor, d: str) -> Optional[int]:
    did = domain_id_txn(cur, d)
    return did if did is not None else domain_alias_txn(cur, d)


def account_row_txn(cur: Cursor, did: int, n: str) -> Optional[int]:
    row = cur.query_one("SELECT id FROM accounts WHERE domain_id = ? AND name = ?", (did, n))
    return int(row[0]) if row else None


def alias_target_txn(cur: Cursor, did: int, n: str) -> Optional[str]:
    row = cur.query_one("SELECT target FROM aliases WHERE domain_id = ? AND name = ?", (did, n))
    return row[0] if row else None


# The objects that share a domain's names, as in CommuniGate (one name, one object), with the
# table each lives in. The Router asks for them in its own order, so a name held twice would
# send one object's mail silently to the other: every add claims the name through
# ``claim_name_txn``, in the transaction that inserts it.
NAME_HOLDERS = (
    ("an account", "accounts"),
    ("an alias", "aliases"),
    ("a forwarder or group", "groups"),
    ("a list", "lists"),
)


def name_holder_txn(cur: Cursor, did: int, n: str) -> Optional[str]:
    """What holds name ``n`` in domain ``did`` (``"an account"``, ..., see NAME_HOLDERS)."""
    for what, table in NAME_HOLDERS:
        if cur.query_one(f"SELECT 1 FROM {table} WHERE domain_id = ? AND name = ?", (did, n)):
            return what
    return None


def claim_name_txn(cur: Cursor, did: int, n: str, d: str, what: str) -> None:
    """Refuse a new ``what`` (a NAME_HOLDERS label) named ``n`` when any object holds it."""
    holder = name_holder_txn(cur, did, n)
    if holder == what:
        raise AlreadyExists(f"{what.split(' ', 1)[1]} {n}@{d} already exists")
    if holder is not None:
        raise AlreadyExists(f"{n}@{d} is {holder}")


def get_domain_txn(cur: Cursor, d: str) -> Optional[dict[str, Any]]:
    row = cur.query_one(
        "SELECT id, name, enabled, services, settings FROM domains WHERE name = ?", (d,)
    )
    if row is None:
        return None
    did = row[0]
    aliases = [
        r[0]
        for r in cur.query(
            "SELECT name FROM domain_aliases WHERE domain_id = ? ORDER BY name", (did,)
        )
    ]
    count = cur.query_one("SELECT COUNT(*) FROM accounts WHERE domain_id = ?", (did,))
    return {
        "name": row[1],
        "enabled": bool(row[2]),
        "services": sorted(services_of(row[3])),
        "settings": json.loads(row[4]),
        "aliases": aliases,
        "accounts": int(count[0]) if count else 0,
    }


def domain_settings_txn(cur: Cursor, d: str) -> Optional[dict[str, object]]:
    """The stored settings of domain ``d`` or of the domain it is an alias of (None: neither)."""
    did = resolve_domain_txn(cur, d)
    if did is None:
        return None
    row = cur.query_one("SELECT settings FROM domains WHERE id = ?", (did,))
    return dict(json.loads(row[0])) if row else None


def scoped_settings_txn(
    cur: Cursor, n: str, d: str
) -> Optional[tuple[dict[str, object], dict[str, object], frozenset[str]]]:
    """(domain settings, account settings, effective services) of account ``n@d`` (domain
    aliases followed), or None when there is no such account."""
    did = resolve_domain_txn(cur, d)
    if did is None:
        return None
    row = cur.query_one(
        "SELECT d.settings, a.settings, a.services, d.services FROM accounts a "
        "JOIN domains d ON a.domain_id = d.id WHERE a.domain_id = ? AND a.name = ?",
        (did, n),
    )
    if row is None:
        return None
    services = services_of(row[2]) & services_of(row[3])
    return dict(json.loads(row[0])), dict(json.loads(row[1])), services


def update_domain_txn(
    cur: Cursor, d: str, svc: Optional[frozenset[str]], enabled: Optional[bool]
) -> None:
    if domain_id_txn(cur, d) is None:
        raise NotFound(f"domain {d} does not exist")
    if svc is not None:
        cur.execute("UPDATE domains SET services = ? WHERE name = ?", (services_json(svc), d))
    if enabled is not None:
        cur.execute("UPDATE domains SET enabled = ? WHERE name = ?", (1 if enabled else 0, d))


def add_domain_alias_txn(cur: Cursor, a: str, d: str) -> None:
    did = domain_id_txn(cur, d)
    if did is None:
        raise NotFound(f"domain {d} does not exist")
    if domain_id_txn(cur, a) is not None or domain_alias_txn(cur, a) is not None:
        raise AlreadyExists(f"domain {a} already exists")
    cur.execute("INSERT INTO domain_aliases (name, domain_id) VALUES (?, ?)", (a, did))


def remove_domain_txn(cur: Cursor, d: str, force: bool) -> None:
    did = domain_id_txn(cur, d)
    if did is None:
        raise NotFound(f"domain {d} does not exist")
    accounts = cur.query_one("SELECT COUNT(*) FROM accounts WHERE domain_id = ?", (did,))
    aliases = cur.query_one("SELECT COUNT(*) FROM aliases WHERE domain_id = ?", (did,))
    groups = cur.query_one("SELECT COUNT(*) FROM groups WHERE domain_id = ?", (did,))
    na, nl = (int(accounts[0]) if accounts else 0), (int(aliases[0]) if aliases else 0)
    ng = int(groups[0]) if groups else 0
    if (na or nl or ng) and not force:
        what = f"{na} account(s) and {nl} alias(es)"
        if ng:
            what = f"{na} account(s), {nl} alias(es) and {ng} forwarder(s) or group(s)"
        raise StoreError(f"domain {d} has {what}; remove them first or force")
    for table in ("accounts", "aliases", "domain_aliases", "groups"):
        cur.execute(f"DELETE FROM {table} WHERE domain_id = ?", (did,))
    cur.execute("DELETE FROM domains WHERE id = ?", (did,))


_ACCOUNT_COLUMNS = (
    "SELECT a.name, d.name, a.real_name, a.kind, a.enabled, a.services, a.settings, d.services,"
    " d.enabled, a.password, a.created FROM accounts a JOIN domains d ON a.domain_id = d.id "
)


def row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "name": row[0],
        "domain": row[1],
        "real_name": row[2],
        "kind": row[3],
        "enabled": bool(row[4]),
        "own_services": None if row[5] is None else services_of(row[5]),
        "services": services_of(row[5]) & services_of(row[7]),
        "settings": json.loads(row[6]),
        "domain_enabled": bool(row[8]),
        "password": row[9],
        "has_password": bool(row[9]),
        "created": row[10],
    }


def account_of(row: Mapping[str, Any]) -> Account:
    return Account(
        name=row["name"],
        domain=row["domain"],
        real_name=row["real_name"],
        services=frozenset(row["services"]),
        settings=row["settings"],
    )


def info_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """What an administrator may see of an account row (never the hash)."""
    account = account_of(row)
    return {
        "address": account.address,
        "real_name": account.real_name,
        "kind": row["kind"],
        "enabled": row["enabled"],
        "has_password": row["has_password"],
        "services": sorted(row["own_services"]) if row["own_services"] is not None else None,
        "effective_services": sorted(account.services),
        "settings": dict(account.settings),
        "created": row["created"],
    }


def account_full_txn(cur: Cursor, n: str, d: str) -> Optional[dict[str, Any]]:
    did = resolve_domain_txn(cur, d)
    if did is None:
        return None
    row = cur.query_one(_ACCOUNT_COLUMNS + "WHERE a.domain_id = ? AND a.name = ?", (did, n))
    return row_dict(row) if row else None


def list_accounts_txn(cur: Cursor, d: str) -> list[dict[str, Any]]:
    did = resolve_domain_txn(cur, d)
    if did is None:
        raise NotFound(f"domain {d} does not exist")
    rows = cur.query(_ACCOUNT_COLUMNS + "WHERE a.domain_id = ? ORDER BY a.name", (did,))
    return [row_dict(r) for r in rows]


def login_row_txn(cur: Cursor, n: str, d: str) -> Optional[dict[str, Any]]:
    row = account_full_txn(cur, n, d)
    if row is not None:
        return row
    target = resolve_alias_txn(cur, n, d)
    if target is None:
        return None
    local, _, dom = target.rpartition("@")
    try:
        return account_full_txn(cur, check_account(local), check_domain(dom))
    except InvalidName:
        return None


def remove_account_txn(cur: Cursor, n: str, d: str, main: str) -> None:
    did = resolve_domain_txn(cur, d)
    if did is None or account_row_txn(cur, did, n) is None:
        raise NotFound(f"account {n}@{d} does not exist")
    if n == POSTMASTER and did == domain_id_txn(cur, main):
        raise StoreError(f"{n}@{main} is the administrator and cannot be removed")
    cur.execute("DELETE FROM accounts WHERE domain_id = ? AND name = ?", (did, n))


def set_password_txn(cur: Cursor, n: str, d: str, phc: str, old: Optional[str]) -> None:
    did = resolve_domain_txn(cur, d)
    if did is None or account_row_txn(cur, did, n) is None:
        raise NotFound(f"account {n}@{d} does not exist")
    if old is None:
        cur.execute(
            "UPDATE accounts SET password = ? WHERE domain_id = ? AND name = ?", (phc, did, n)
        )
    else:  # a rehash: only if nobody changed the password meanwhile
        cur.execute(
            "UPDATE accounts SET password = ? WHERE domain_id = ? AND name = ? AND password = ?",
            (phc, did, n, old),
        )


def update_account_txn(
    cur: Cursor,
    n: str,
    d: str,
    real: Optional[str],
    svc: Optional[frozenset[str]],
    enabled: Optional[bool],
) -> None:
    did = resolve_domain_txn(cur, d)
    if did is None or account_row_txn(cur, did, n) is None:
        raise NotFound(f"account {n}@{d} does not exist")
    where = " WHERE domain_id = ? AND name = ?"
    if real is not None:
        cur.execute("UPDATE accounts SET real_name = ?" + where, (real, did, n))
    if svc is not None:
        cur.execute("UPDATE accounts SET services = ?" + where, (services_json(svc), did, n))
    if enabled is not None:
        cur.execute("UPDATE accounts SET enabled = ?" + where, (1 if enabled else 0, did, n))


def add_alias_txn(cur: Cursor, n: str, d: str, target: str) -> None:
    did = resolve_domain_txn(cur, d)
    if did is None:
        raise NotFound(f"domain {d} does not exist")
    claim_name_txn(cur, did, n, d, "an alias")
    cur.execute("INSERT INTO aliases (domain_id, name, target) VALUES (?, ?, ?)", (did, n, target))


def remove_alias_txn(cur: Cursor, n: str, d: str) -> None:
    did = resolve_domain_txn(cur, d)
    if did is None or alias_target_txn(cur, did, n) is None:
        raise NotFound(f"alias {n}@{d} does not exist")
    cur.execute("DELETE FROM aliases WHERE domain_id = ? AND name = ?", (did, n))


def list_aliases_txn(cur: Cursor, d: Optional[str]) -> list[tuple[str, str]]:
    sql = "SELECT a.name, d.name, a.target FROM aliases a JOIN domains d ON a.domain_id = d.id"
    if d is None:
        rows = cur.query(sql + " ORDER BY d.name, a.name")
    else:
        did = resolve_domain_txn(cur, d)
        if did is None:
            raise NotFound(f"domain {d} does not exist")
        rows = cur.query(sql + " WHERE a.domain_id = ? ORDER BY a.name", (did,))
    return [(f"{r[0]}@{r[1]}", r[2]) for r in rows]


def resolve_alias_txn(cur: Cursor, n: str, d: str) -> Optional[str]:
    did = resolve_domain_txn(cur, d)
    return alias_target_txn(cur, did, n) if did is not None else None


def delete_one_txn(cur: Cursor, sql: str, args: tuple[Any, ...], missing: str) -> None:
    cur.execute(sql, args)
    if cur.rowcount == 0:
        raise NotFound(missing)


def upsert_setting_txn(cur: Cursor, key: str, value: str) -> None:
    cur.execute(cur.engine.upsert("server_settings", ("name",), ("value",)), (key, value))


def change_settings_txn(
    cur: Cursor,
    table: str,
    where: str,
    args: tuple[Any, ...],
    what: str,
    key: str,
    value: Any,
    unset: bool,
) -> None:
    row = cur.query_one(f"SELECT id, settings FROM {table} WHERE {where}", args)
    if row is None:
        raise NotFound(f"{what} does not exist")
    values = json.loads(row[1])
    if unset:
        if key not in values:
            raise NotFound(f"{what} has no setting {key}")
        del values[key]
    else:
        values[key] = value
    cur.execute(
        f"UPDATE {table} SET settings = ? WHERE id = ?",
        (json.dumps(values, sort_keys=True), row[0]),
    )


def settings_txn(cur: Cursor, node: str) -> list[tuple[str, str]]:
    """(name, JSON) of the cluster-wide settings, then of ``node``'s own (they win)."""
    return cur.query("SELECT name, value FROM server_settings ORDER BY name") + cur.query(
        "SELECT name, value FROM node_settings WHERE node = ? ORDER BY name", (node,)
    )


def upsert_node_setting_txn(cur: Cursor, node: str, key: str, value: str) -> None:
    cur.execute(
        cur.engine.upsert("node_settings", ("node", "name"), ("value",)), (node, key, value)
    )


def register_node_txn(cur: Cursor, node: str, hostname: str, started: int) -> None:
    cur.execute(
        cur.engine.upsert("nodes", ("name",), ("hostname", "started")), (node, hostname, started)
    )


def list_nodes_txn(cur: Cursor) -> list[dict[str, Any]]:
    nodes: dict[str, dict[str, Any]] = {}
    for name, hostname, started in cur.query("SELECT name, hostname, started FROM nodes"):
        nodes[name] = {"name": name, "hostname": hostname, "started": started, "settings": {}}
    for node, key, value in cur.query("SELECT node, name, value FROM node_settings"):
        entry = nodes.setdefault(
            node, {"name": node, "hostname": "", "started": None, "settings": {}}
        )
        entry["settings"][key] = json.loads(value)
    return [nodes[k] for k in sorted(nodes)]


def remove_node_txn(cur: Cursor, node: str) -> None:
    cur.execute("DELETE FROM node_settings WHERE node = ?", (node,))
    settings = cur.rowcount
    cur.execute("DELETE FROM nodes WHERE name = ?", (node,))
    if not settings and not cur.rowcount:
        raise NotFound(f"node {node} does not exist")


# The column list of an account row (``row_dict``), for the other modules that page accounts.
ACCOUNT_COLUMNS = _ACCOUNT_COLUMNS
