"""One page of a domain's accounts (keyset paging and search done by the database), and
every domain in one transaction.

Owns the SQL that lists accounts a page at a time (WebAdmin's Accounts page, which must stay
fast at 100,000 accounts): ``name > after`` / ``name < before`` on the ``(domain_id, name)``
unique index with a LIMIT, never an OFFSET that walks the skipped rows, and never the whole
list in Python. It must not format or decide rights; rows leave as ``tables.info_of`` dicts
(never a password hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from cgtwist.errors import NotFound
from cgtwist.storage import tables
from cgtwist.storage.database import Cursor

MAX_PAGE = 500


@dataclass(frozen=True)
class AccountPage:
    """Accounts of one page, sorted by name, and where the neighbouring pages start."""

    domain: str
    search: str
    total: int  # matching accounts in the whole domain
    accounts: list[dict[str, Any]]
    has_next: bool
    has_previous: bool

    @property
    def first(self) -> Optional[str]:
        return self.accounts[0]["name"] if self.accounts else None

    @property
    def last(self) -> Optional[str]:
        return self.accounts[-1]["name"] if self.accounts else None


def _like(text: str) -> str:
    """A LIKE pattern that matches ``text`` anywhere, its own % _ and \\ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def account_page_txn(
    cur: Cursor,
    d: str,
    search: str,
    limit: int,
    after: Optional[str] = None,
    before: Optional[str] = None,
) -> AccountPage:
    """``limit`` accounts of domain ``d`` whose name or real name contains ``search``
    (case-insensitive), after the name ``after`` or before the name ``before``."""
    did = tables.resolve_domain_txn(cur, d)
    if did is None:
        raise NotFound(f"domain {d} does not exist")
    limit = max(1, min(int(limit), MAX_PAGE))
    where = " WHERE a.domain_id = ?"
    args: list[Any] = [did]
    if search:
        where += " AND (a.name LIKE ? ESCAPE '\\' OR LOWER(a.real_name) LIKE ? ESCAPE '\\')"
        pattern = _like(search.lower())
        args += [pattern, pattern]
    total_row = cur.query_one("SELECT COUNT(*) FROM accounts a" + where, args)
    total = int(total_row[0]) if total_row else 0
    if before is not None:
        rows = cur.query(
            tables.ACCOUNT_COLUMNS + where + " AND a.name < ? ORDER BY a.name DESC LIMIT ?",
            args + [before, limit + 1],
        )
        more_before = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        accounts = [tables.info_of(tables.row_dict(r)) | {"name": r[0]} for r in rows]
        return AccountPage(d, search, total, accounts, has_next=True, has_previous=more_before)
    page_where = where + (" AND a.name > ?" if after is not None else "")
    page_args = args + ([after] if after is not None else [])
    rows = cur.query(
        tables.ACCOUNT_COLUMNS + page_where + " ORDER BY a.name LIMIT ?", page_args + [limit + 1]
    )
    accounts = [tables.info_of(tables.row_dict(r)) | {"name": r[0]} for r in rows[:limit]]
    return AccountPage(
        d, search, total, accounts, has_next=len(rows) > limit, has_previous=after is not None
    )


def domains_txn(cur: Cursor) -> list[dict[str, Any]]:
    """Every domain as ``tables.get_domain_txn`` describes it (aliases, services, flags, how
    many accounts), sorted by name: one transaction for WebAdmin's Domains page and ``domain
    list``, not a round trip to the database thread per domain."""
    names = [r[0] for r in cur.query("SELECT name FROM domains ORDER BY name")]
    return [info for info in (tables.get_domain_txn(cur, n) for n in names) if info is not None]
