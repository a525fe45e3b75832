"""Forwarders and Groups in the store: names of a domain that send mail on to other addresses.

Owns the ``groups`` table (schema delta 005) and its ``_txn`` functions, and the store half
``GroupStore`` that ``AccountStore`` is built on: add, change, remove, list and resolve. A
forwarder hands mail on to its targets and, being a local name, is accepted from anyone
(CommuniGate's Forwarders); a group delivers a copy to each member. What routing makes of
them is ``cgtwist.router`` (``GroupQuery``); delivery is ``cgtwist.delivery.group``.
"""

from __future__ import annotations

import json
from typing import Iterable, Optional

from cgtwist.errors import InvalidName, NotFound
from cgtwist.paths import check_account, check_domain
from cgtwist.router import Group
from cgtwist.storage import tables
from cgtwist.storage.database import Cursor
from cgtwist.storage.settings_store import SettingsStore
from cgtwist.storage.storebase import InvalidValue, _deferred

KINDS = ("forwarder", "group")
MAX_TARGETS = 1000


def check_targets(targets: Iterable[str], domain: str) -> tuple[str, ...]:
    """Validated, de-duplicated target addresses (a bare name is in ``domain``); at least one."""
    out: list[str] = []
    for t in targets:
        if not t.strip():
            continue
        address = tables.check_target_address(t, domain)
        if address.lower() not in (x.lower() for x in out):
            out.append(address)
    if not out:
        raise InvalidValue("a forwarder or group needs at least one address")
    if len(out) > MAX_TARGETS:
        raise InvalidValue(f"at most {MAX_TARGETS} addresses")
    return tuple(out)


def group_row_txn(cur: Cursor, did: int, n: str) -> Optional[Group]:
    row = cur.query_one(
        "SELECT kind, targets FROM groups WHERE domain_id = ? AND name = ?", (did, n)
    )
    return Group(row[0], tuple(json.loads(row[1]))) if row else None


def resolve_group_txn(cur: Cursor, n: str, d: str) -> Optional[Group]:
    did = tables.resolve_domain_txn(cur, d)
    return None if did is None else group_row_txn(cur, did, n)


def add_group_txn(
    cur: Cursor, n: str, d: str, kind: str, targets: tuple[str, ...], now: int
) -> None:
    did = tables.resolve_domain_txn(cur, d)
    if did is None:
        raise NotFound(f"domain {d} does not exist")
    tables.claim_name_txn(cur, did, n, d, "a forwarder or group")
    cur.execute(
        "INSERT INTO groups (domain_id, name, kind, targets, created) VALUES (?, ?, ?, ?, ?)",
        (did, n, kind, json.dumps(list(targets)), now),
    )


def set_targets_txn(cur: Cursor, n: str, d: str, kind: str, targets: tuple[str, ...]) -> None:
    did = tables.resolve_domain_txn(cur, d)
    found = None if did is None else group_row_txn(cur, did, n)
    if found is None or found.kind != kind:
        raise NotFound(f"{kind} {n}@{d} does not exist")
    cur.execute(
        "UPDATE groups SET targets = ? WHERE domain_id = ? AND name = ?",
        (json.dumps(list(targets)), did, n),
    )


def remove_group_txn(cur: Cursor, n: str, d: str, kind: str) -> None:
    did = tables.resolve_domain_txn(cur, d)
    found = None if did is None else group_row_txn(cur, did, n)
    if found is None or found.kind != kind:
        raise NotFound(f"{kind} {n}@{d} does not exist")
    cur.execute("DELETE FROM groups WHERE domain_id = ? AND name = ?", (did, n))


def list_groups_txn(cur: Cursor, kind: str, d: Optional[str]) -> list[tuple[str, tuple[str, ...]]]:
    sql = (
        "SELECT g.name, d.name, g.targets FROM groups g JOIN domains d ON g.domain_id = d.id "
        "WHERE g.kind = ?"
    )
    args: tuple[object, ...] = (kind,)
    if d is not None:
        did = tables.resolve_domain_txn(cur, d)
        if did is None:
            raise NotFound(f"domain {d} does not exist")
        sql += " AND g.domain_id = ?"
        args = (kind, did)
    rows = cur.query(sql + " ORDER BY d.name, g.name", args)
    return [(f"{r[0]}@{r[1]}", tuple(json.loads(r[2]))) for r in rows]


class GroupStore(SettingsStore):
    """Forwarders and Groups (the half of AccountStore over the ``groups`` table)."""

    def _kind(self, kind: str) -> str:
        if kind not in KINDS:
            raise InvalidValue(f"kind must be one of {', '.join(KINDS)}")
        return kind

    @_deferred
    async def add_group(self, kind: str, name: str, domain: str, targets: Iterable[str]) -> None:
        """Create forwarder or group ``name@domain`` sending on to ``targets``."""
        k, n, d = self._kind(kind), check_account(name), check_domain(domain)
        t = check_targets(targets, d)
        if f"{n}@{d}" in (x.lower() for x in t):
            raise InvalidValue(f"a {k} cannot send to itself")
        await self._write("add_group", add_group_txn, n, d, k, t, int(self._now()))
        self._log.info("{kind} {name} -> {targets} created", kind=k, name=f"{n}@{d}", targets=t)

    @_deferred
    async def set_group_targets(
        self, kind: str, name: str, domain: str, targets: Iterable[str]
    ) -> None:
        """Replace the targets (members) of forwarder or group ``name@domain``."""
        k, n, d = self._kind(kind), check_account(name), check_domain(domain)
        t = check_targets(targets, d)
        if f"{n}@{d}" in (x.lower() for x in t):
            raise InvalidValue(f"a {k} cannot send to itself")
        await self._write("set_group_targets", set_targets_txn, n, d, k, t)
        self._log.info("{kind} {name} -> {targets} changed", kind=k, name=f"{n}@{d}", targets=t)

    @_deferred
    async def remove_group(self, kind: str, name: str, domain: str) -> None:
        k, n, d = self._kind(kind), check_account(name), check_domain(domain)
        await self._write("remove_group", remove_group_txn, n, d, k)
        self._log.info("{kind} {name} removed", kind=k, name=f"{n}@{d}")

    @_deferred
    async def list_groups(
        self, kind: str, domain: Optional[str] = None
    ) -> list[tuple[str, tuple[str, ...]]]:
        """Fire with [(address, targets), ...] of one kind, of one domain or of all."""
        k = self._kind(kind)
        d = check_domain(domain) if domain else None
        return await self._db.run_interaction("list_groups", list_groups_txn, k, d, readonly=True)

    @_deferred
    async def resolve_group(self, name: str, domain: str) -> Optional[Group]:
        """Fire with the Group (kind, targets) named ``name@domain`` or None."""
        try:
            n, d = check_account(name), check_domain(domain)
        except InvalidName:
            return None
        return await self._db.run_interaction(
            "resolve_group", resolve_group_txn, n, d, readonly=True
        )
