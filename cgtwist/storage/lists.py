"""The list store: mailing lists, subscribers, held and digest posts in the database.

Owns the SQL of schema delta 004 and how its rows decode into ``cgtwist.lists.model`` values.
Every public method returns a Deferred; SQL runs in named ``_txn`` functions through
``Database.run_interaction`` on the pool's threads. It validates names and fields (a value the
LIST agent would not act on is refused, not stored) and decides nothing about mail.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import time
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar

from cgtwist.errors import AlreadyExists, InvalidName, NotFound
from cgtwist.lists import csvio
from cgtwist.lists.addresses import candidates
from cgtwist.lists.model import (
    DEFAULT_FIELDS,
    FIELDS,
    MailingList,
    Subscriber,
    check_field,
    check_mode,
    check_subscriber_address,
)
from cgtwist.paths import check_account, check_domain
from cgtwist.storage import tables
from cgtwist.storage.database import Cursor, Database
from cgtwist.storage.directory import _like
from cgtwist.storage.storebase import _deferred

T = TypeVar("T")

HELD, DIGEST = "held", "digest"


def split_list_address(address: str) -> tuple[str, str]:
    """``name@domain`` -> (name, domain), both checked; raises InvalidName."""
    name, at, domain = address.strip().rpartition("@")
    if not at:
        raise InvalidName(f"a list is name@domain, not {address!r}")
    return check_account(name), check_domain(domain)


@dataclasses.dataclass(frozen=True)
class StoredMessage:
    """A held or digest post: its id, sender, subject, when it was kept, and its octets."""

    id: str
    sender: str
    subject: str
    created: float
    data: bytes = b""


def _list_of(row: tuple[Any, ...]) -> MailingList:
    name, domain, raw, last_digest = row[0], row[1], row[2], row[3]
    fields = dict(DEFAULT_FIELDS)
    fields.update({k: v for k, v in json.loads(raw or "{}").items() if k in FIELDS})
    return MailingList(
        name=name,
        domain=domain,
        last_digest=float(last_digest),
        digest_number=int(row[4]),
        **fields,
    )


_LIST_COLS = "l.name, d.name, l.settings, l.last_digest, l.digest_number, l.id"
_SUB_COLS = "address, mode, state, bounces, first_bounce, suspended_at, real_name"


def _checked(subs: Iterable[Subscriber]) -> list[Subscriber]:
    """Subscribers with their address and mode checked and normalised (ValueError if not)."""
    return [
        dataclasses.replace(s, address=check_subscriber_address(s.address), mode=check_mode(s.mode))
        for s in subs
    ]


def _put_subscribers_txn(
    cur: Cursor, lid: int, rows: list[Subscriber], replace: bool, now: int
) -> int:
    if replace:
        cur.execute("DELETE FROM list_subscribers WHERE list_id = ?", (lid,))
    for s in rows:
        values = (
            s.mode,
            s.state,
            s.bounces,
            int(s.first_bounce),
            int(s.suspended_at),
            s.real_name,
        )
        cur.execute(
            "UPDATE list_subscribers SET mode = ?, state = ?, bounces = ?, "
            "first_bounce = ?, suspended_at = ?, real_name = ? "
            "WHERE list_id = ? AND address = ?",
            (*values, lid, s.address),
        )
        if not cur.rowcount:
            cur.execute(
                f"INSERT INTO list_subscribers (list_id, {_SUB_COLS}, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (lid, s.address, *values, now),
            )
    return len(rows)


def _sub_of(row: tuple[Any, ...]) -> Subscriber:
    return Subscriber(
        row[0], row[1], row[2], int(row[3]), float(row[4]), float(row[5]), row[6] or ""
    )


def _list_row_txn(cur: Cursor, name: str, domain: str) -> Optional[tuple[Any, ...]]:
    did = tables.resolve_domain_txn(cur, domain)
    if did is None:
        return None
    return cur.query_one(
        f"SELECT {_LIST_COLS} FROM lists l JOIN domains d ON d.id = l.domain_id "
        "WHERE l.domain_id = ? AND l.name = ?",
        (did, name),
    )


def _list_id_txn(cur: Cursor, name: str, domain: str) -> int:
    row = _list_row_txn(cur, name, domain)
    if row is None:
        raise NotFound(f"list {name}@{domain} does not exist")
    return int(row[5])


class ListStore:
    """Lists of the domains in ``db`` (the account store's database)."""

    def __init__(self, db: Database, now: Callable[[], float] = time.time) -> None:
        self._db = db
        self._now = now

    async def _read(self, desc: str, fn: Callable[..., T], *args: Any) -> T:
        return await self._db.run_interaction(desc, fn, *args, readonly=True)

    async def _write(self, desc: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._db.run_interaction(desc, fn, *args)
        except Exception as e:
            if self._db.is_integrity_error(e):
                raise AlreadyExists(f"{desc}: already exists") from None
            raise

    # ---- lists ---------------------------------------------------------------------------

    @_deferred
    async def add_list(self, address: str, values: Optional[Mapping[str, Any]] = None) -> None:
        """Create list ``name@domain`` in one of our domains, with ``values`` over the defaults.

        A list shares its domain's name space with accounts, aliases, forwarders and groups
        (``tables.claim_name_txn``, in the same transaction)."""
        name, domain = split_list_address(address)
        fields = {k: check_field(k, v) for k, v in (values or {}).items()}
        now = int(self._now())

        def txn(cur: Cursor) -> None:
            did = tables.claim_name_txn(cur, name, domain, "list", via_alias=False)
            cur.execute(
                "INSERT INTO lists (domain_id, name, settings, created) VALUES (?, ?, ?, ?)",
                (did, name, json.dumps(fields, sort_keys=True), now),
            )

        await self._write("add_list", txn)

    @_deferred
    async def remove_list(self, address: str) -> None:
        name, domain = split_list_address(address)

        def txn(cur: Cursor) -> None:
            lid = _list_id_txn(cur, name, domain)
            for table in ("list_messages", "list_subscribers"):
                cur.execute(f"DELETE FROM {table} WHERE list_id = ?", (lid,))
            cur.execute("DELETE FROM lists WHERE id = ?", (lid,))

        await self._write("remove_list", txn)

    @_deferred
    async def get_list(self, address: str) -> Optional[MailingList]:
        """The list at ``name@domain`` (domain aliases followed), or None."""
        try:
            name, domain = split_list_address(address)
        except InvalidName:
            return None
        row = await self._read("get_list", _list_row_txn, name, domain)
        return _list_of(row) if row else None

    @_deferred
    async def list_lists(self, domain: Optional[str] = None) -> list[MailingList]:
        d = check_domain(domain) if domain else None

        def txn(cur: Cursor) -> list[tuple[Any, ...]]:
            sql = f"SELECT {_LIST_COLS} FROM lists l JOIN domains d ON d.id = l.domain_id"
            if d is None:
                return cur.query(sql + " ORDER BY d.name, l.name")
            return cur.query(sql + " WHERE d.name = ? ORDER BY l.name", (d,))

        return [_list_of(r) for r in await self._read("list_lists", txn)]

    @_deferred
    async def set_list(self, address: str, values: Mapping[str, Any]) -> MailingList:
        """Change fields of a list (each checked); fires with the list as it now is."""
        name, domain = split_list_address(address)
        fields = {k: check_field(k, v) for k, v in values.items()}

        def txn(cur: Cursor) -> tuple[Any, ...]:
            row = _list_row_txn(cur, name, domain)
            if row is None:
                raise NotFound(f"list {name}@{domain} does not exist")
            current = json.loads(row[2] or "{}")
            current.update(fields)
            cur.execute(
                "UPDATE lists SET settings = ? WHERE id = ?",
                (json.dumps(current, sort_keys=True), row[5]),
            )
            return (*row[:2], json.dumps(current), *row[3:])

        return _list_of(await self._write("set_list", txn))

    @_deferred
    async def find_list(self, local: str, domain: str) -> Optional[str]:
        """Routing: the list ``local@domain`` is an address of (``dev-on`` -> ``dev@...``),
        as ``name@domain`` in the list's own domain; None when it is no list's."""
        try:
            d = check_domain(domain)
        except InvalidName:
            return None
        names = []
        for role in candidates(local):
            try:
                names.append(check_account(role.name))
            except InvalidName:
                continue
        if not names:
            return None

        def txn(cur: Cursor) -> Optional[str]:
            for n in names:
                row = _list_row_txn(cur, n, d)
                if row is not None:
                    return f"{row[0]}@{row[1]}"
            return None

        return await self._read("find_list", txn)

    # ---- subscribers ---------------------------------------------------------------------

    @_deferred
    async def subscribers(
        self, address: str, mode: Optional[str] = None, state: Optional[str] = None
    ) -> list[Subscriber]:
        """Every subscriber of the list (of ``mode`` and ``state`` when given), by address."""
        name, domain = split_list_address(address)

        def txn(cur: Cursor) -> list[Subscriber]:
            lid = _list_id_txn(cur, name, domain)
            sql = f"SELECT {_SUB_COLS} FROM list_subscribers WHERE list_id = ?"
            args: list[Any] = [lid]
            for column, value in (("mode", mode), ("state", state)):
                if value is not None:
                    sql += f" AND {column} = ?"
                    args.append(value)
            # rows become Subscribers here, in the database's thread: a list of 100,000 is
            # too many objects to make on the reactor at each post's expansion
            return [_sub_of(r) for r in cur.query(sql + " ORDER BY address", args)]

        return await self._read("subscribers", txn)

    @_deferred
    async def subscribers_csv(self, address: str) -> str:
        """Every subscriber of the list as CSV (cgtwist.lists.csvio), read and written in the
        database's thread: a list of 100,000 is seconds of rows to objects to text, which must
        not stop the server's reactor (WebAdmin's export runs in the server)."""
        name, domain = split_list_address(address)

        def txn(cur: Cursor) -> str:
            lid = _list_id_txn(cur, name, domain)
            sql = f"SELECT {_SUB_COLS} FROM list_subscribers WHERE list_id = ? ORDER BY address"
            return csvio.export([_sub_of(r) for r in cur.query(sql, [lid])])

        return await self._read("subscribers_csv", txn)

    @_deferred
    async def subscriber_page(
        self, address: str, search: str = "", limit: int = 200
    ) -> tuple[int, int, list[Subscriber]]:
        """(subscribers in all, those with ``search`` anywhere in their address, the first
        ``limit`` of these by address): one page of a list of any size, counted and cut in
        SQL so that a list of 100,000 costs the web page no more than one of 100."""
        name, domain = split_list_address(address)

        def txn(cur: Cursor) -> tuple[int, int, list[tuple[object, ...]]]:
            lid = _list_id_txn(cur, name, domain)

            def count(where: str, args: list[object]) -> int:
                row = cur.query_one(f"SELECT COUNT(*) FROM list_subscribers WHERE {where}", args)
                return int(row[0]) if row else 0

            where = "list_id = ?"
            args: list[object] = [lid]
            total = matching = count(where, args)
            if search:
                where += " AND LOWER(address) LIKE ? ESCAPE '\\'"
                args.append(_like(search.lower()))
                matching = count(where, args)
            rows = cur.query(
                f"SELECT {_SUB_COLS} FROM list_subscribers WHERE {where} ORDER BY address LIMIT ?",
                [*args, limit],
            )
            return total, matching, rows

        total, matching, rows = await self._read("subscriber_page", txn)
        return total, matching, [_sub_of(r) for r in rows]

    @_deferred
    async def get_subscriber(self, address: str, subscriber: str) -> Optional[Subscriber]:
        name, domain = split_list_address(address)
        try:
            who = check_subscriber_address(subscriber)
        except ValueError:
            return None

        def txn(cur: Cursor) -> Optional[tuple[Any, ...]]:
            lid = _list_id_txn(cur, name, domain)
            return cur.query_one(
                f"SELECT {_SUB_COLS} FROM list_subscribers WHERE list_id = ? AND address = ?",
                (lid, who),
            )

        row = await self._read("get_subscriber", txn)
        return _sub_of(row) if row else None

    @_deferred
    async def put_subscribers(
        self, address: str, subs: Iterable[Subscriber], replace: bool = False
    ) -> int:
        """Add or update subscribers (all or none); ``replace``: drop everyone else first
        (a CSV import of the whole list). Fires with how many were written."""
        name, domain = split_list_address(address)
        rows = _checked(subs)
        now = int(self._now())

        def txn(cur: Cursor) -> int:
            return _put_subscribers_txn(cur, _list_id_txn(cur, name, domain), rows, replace, now)

        return await self._write("put_subscribers", txn)

    @_deferred
    async def import_csv(self, address: str, text: str, replace: bool = False) -> int:
        """Add (``replace``: set) the subscribers of a CSV text (``cgtwist.lists.csvio``), all
        or none. The text is parsed and checked in the database's thread, like the export: a
        100,000-line upload from WebAdmin is seconds of parsing that must not stop the
        server's reactor. ValueError names the first bad line; nothing is written then."""
        name, domain = split_list_address(address)
        now = int(self._now())

        def txn(cur: Cursor) -> int:
            lid = _list_id_txn(cur, name, domain)  # NotFound before a parse of a long text
            return _put_subscribers_txn(cur, lid, _checked(csvio.parse(text)), replace, now)

        return await self._write("import_csv", txn)

    @_deferred
    async def remove_subscriber(self, address: str, subscriber: str) -> bool:
        """Remove one subscriber; fires True if there was one."""
        name, domain = split_list_address(address)
        who = check_subscriber_address(subscriber)

        def txn(cur: Cursor) -> bool:
            lid = _list_id_txn(cur, name, domain)
            cur.execute(
                "DELETE FROM list_subscribers WHERE list_id = ? AND address = ?", (lid, who)
            )
            return bool(cur.rowcount)

        return await self._write("remove_subscriber", txn)

    # ---- held and digest posts -----------------------------------------------------------

    @_deferred
    async def keep(self, address: str, kind: str, sender: str, subject: str, data: bytes) -> str:
        """Keep a post (``kind`` HELD or DIGEST); fires with its new id."""
        name, domain = split_list_address(address)
        msg_id = secrets.token_hex(8)
        now = int(self._now())
        text = base64.b64encode(data).decode("ascii")

        def txn(cur: Cursor) -> None:
            lid = _list_id_txn(cur, name, domain)
            cur.execute(
                "INSERT INTO list_messages (id, list_id, kind, sender, subject, created, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (msg_id, lid, kind, sender[:320], subject[:200], now, text),
            )

        await self._write("keep_" + kind, txn)
        return msg_id

    @_deferred
    async def kept(self, address: str, kind: str, with_data: bool = False) -> list[StoredMessage]:
        """The posts a list keeps of ``kind``, oldest first."""
        name, domain = split_list_address(address)
        cols = "id, sender, subject, created" + (", data" if with_data else "")

        def txn(cur: Cursor) -> list[tuple[Any, ...]]:
            lid = _list_id_txn(cur, name, domain)
            return cur.query(
                f"SELECT {cols} FROM list_messages WHERE list_id = ? AND kind = ? "
                "ORDER BY created, id",
                (lid, kind),
            )

        return [
            StoredMessage(
                r[0], r[1], r[2], float(r[3]), base64.b64decode(r[4]) if with_data else b""
            )
            for r in await self._read("kept_" + kind, txn)
        ]

    @_deferred
    async def take(self, address: str, kind: str, msg_id: str) -> Optional[StoredMessage]:
        """Remove and return a kept post (an approved or rejected held post); None when it
        is gone (decided already, or by another node)."""
        name, domain = split_list_address(address)

        def txn(cur: Cursor) -> Optional[tuple[Any, ...]]:
            lid = _list_id_txn(cur, name, domain)
            row = cur.query_one(
                "SELECT id, sender, subject, created, data FROM list_messages "
                "WHERE list_id = ? AND kind = ? AND id = ?",
                (lid, kind, msg_id),
            )
            if row is not None:
                cur.execute("DELETE FROM list_messages WHERE id = ?", (msg_id,))
            return row

        row = await self._write("take_" + kind, txn)
        if row is None:
            return None
        return StoredMessage(row[0], row[1], row[2], float(row[3]), base64.b64decode(row[4]))

    @_deferred
    async def finish_digest(self, address: str, ids: Iterable[str]) -> int:
        """The digest of the posts ``ids`` is out: forget them, note the time, and fire with
        the issue number (one more than before when there were posts)."""
        name, domain = split_list_address(address)
        taken = list(ids)
        now = int(self._now())

        def txn(cur: Cursor) -> int:
            row = _list_row_txn(cur, name, domain)
            if row is None:
                raise NotFound(f"list {name}@{domain} does not exist")
            lid, number = int(row[5]), int(row[4]) + (1 if taken else 0)
            for msg_id in taken:
                cur.execute(
                    "DELETE FROM list_messages WHERE list_id = ? AND kind = ? AND id = ?",
                    (lid, DIGEST, msg_id),
                )
            cur.execute(
                "UPDATE lists SET last_digest = ?, digest_number = ? WHERE id = ?",
                (now, number, lid),
            )
            return number

        return await self._write("finish_digest", txn)
