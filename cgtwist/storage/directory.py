"""One page of a domain's accounts (keyset paging and search done by the database), and
every domain in one transaction.

Owns the SQL that lists accounts a page at a time (WebAdmin's Accounts page, which must stay
fast at 100,000 accounts): ``name > after`` / ``name < before`` on the ``(domain_id, name)``
unique index with a LIMIT, never an OFFSET that walks the skipped rows, and never the whole
list in Python; a search (a substring, which no index serves) looks at a bounded window of
accounts per page, never at all 100,000. It must not format or decide rights; rows leave as
``tables.info_of`` dicts (never a password hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from cgtwist.errors import NotFound
from cgtwist.storage import tables
from cgtwist.storage.database import Cursor

MAX_PAGE = 500
# Accounts a search looks at per page (the ``web.account_search_rows`` setting's default): a
# search is a substring (LIKE '%x%') of the name or real name, which no index serves, so each
# page looks at this many accounts in name order from where the last page stopped, not at the
# whole domain; Next searches on from there.
SEARCH_ROWS = 5000


@dataclass(frozen=True)
class AccountPage:
    """Accounts of one page, sorted by name, and where the neighbouring pages start.

    ``next_after`` / ``previous_before``: the keyset positions of the next and previous pages
    (``after=`` / ``before=``), None where there is no such page. A search looks at a bounded
    window of the domain per page (``searched``: its first and last name, or None when it
    covered the whole domain), so a page may show fewer than ``limit`` matches, or none, and
    still have a next page. ``matching`` counts the matches in the whole domain only when the
    domain is no larger than that window (else None: counting would scan every account).
    """

    domain: str
    search: str
    total: int  # accounts in the whole domain
    accounts: list[dict[str, Any]]
    next_after: Optional[str]
    previous_before: Optional[str]
    matching: Optional[int] = None
    searched: Optional[tuple[str, str]] = None

    @property
    def has_next(self) -> bool:
        return self.next_after is not None

    @property
    def has_previous(self) -> bool:
        return self.previous_before is not None

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


_MATCH = " AND (a.name LIKE ? ESCAPE '\\' OR LOWER(a.real_name) LIKE ? ESCAPE '\\')"


def _names(
    cur: Cursor, did: int, bound: str, start: Optional[str], skip: int, count: int
) -> list[str]:
    """``count`` names from the ``skip``-th after (``bound`` ">") or before ("<") ``start`` in
    name order (from the domain's first or last name when ``start`` is None): an OFFSET over
    the (domain_id, name) index alone, never the table rows."""
    order = "" if bound == ">" else " DESC"
    where = "" if start is None else f" AND name {bound} ?"
    args: list[object] = [did]
    if start is not None:
        args.append(start)
    args += [count, skip]
    rows = cur.query(
        f"SELECT name FROM accounts WHERE domain_id = ?{where} ORDER BY name{order}"
        " LIMIT ? OFFSET ?",
        args,
    )
    return [str(r[0]) for r in rows]


def _next_name(cur: Cursor, did: int, bound: str, start: Optional[str]) -> Optional[str]:
    """The first name after (">") or before ("<") ``start``, or None."""
    found = _names(cur, did, bound, start, 0, 1)
    return found[0] if found else None


def _window_end(
    cur: Cursor, did: int, bound: str, start: Optional[str], size: int
) -> Optional[str]:
    """The last name of the ``size`` names a search looks at from ``start``, or None when
    they reach the domain's end (then the window needs no bound and there is no next one)."""
    found = _names(cur, did, bound, start, size - 1, 2)
    return found[0] if len(found) == 2 else None


def _rows(
    cur: Cursor, did: int, where: str, args: Sequence[object], desc: bool, limit: int
) -> list[tuple[object, ...]]:
    order = " ORDER BY a.name DESC" if desc else " ORDER BY a.name"
    return cur.query(
        tables.ACCOUNT_COLUMNS + "WHERE a.domain_id = ?" + where + order + " LIMIT ?",
        [did, *args, limit + 1],
    )


def account_page_txn(
    cur: Cursor,
    d: str,
    search: str,
    limit: int,
    after: Optional[str] = None,
    before: Optional[str] = None,
    search_rows: int = SEARCH_ROWS,
) -> AccountPage:
    """``limit`` accounts of domain ``d`` whose name or real name contains ``search``
    (case-insensitive), after the name ``after`` or before the name ``before``; a search looks
    at no more than ``search_rows`` accounts (see AccountPage)."""
    did = tables.resolve_domain_txn(cur, d)
    if did is None:
        raise NotFound(f"domain {d} does not exist")
    limit = max(1, min(int(limit), MAX_PAGE))
    search_rows = max(limit, int(search_rows))
    total_row = cur.query_one("SELECT COUNT(*) FROM accounts WHERE domain_id = ?", (did,))
    total = int(total_row[0]) if total_row else 0  # the covering index alone: no row is read
    backward = before is not None
    start = before if backward else after
    bound = "<" if backward else ">"
    where, args = "", []
    if start is not None:
        where, args = f" AND a.name {bound} ?", [start]
    window_end = None  # the last name the window covers (in paging direction), None: to the end
    matching = None
    if search:
        pattern = _like(search.lower())
        if total > search_rows:
            window_end = _window_end(cur, did, bound, start, search_rows)
            if window_end is not None:
                where += f" AND a.name {'>' if backward else '<'}= ?"
                args.append(window_end)
        else:
            found = cur.query_one(
                "SELECT COUNT(*) FROM accounts a WHERE a.domain_id = ?" + _MATCH,
                (did, pattern, pattern),
            )
            matching = int(found[0]) if found else 0
        where += _MATCH
        args += [pattern, pattern]
    rows = _rows(cur, did, where, args, backward, limit)
    full = len(rows) > limit
    rows = rows[:limit]
    names = [str(r[0]) for r in rows]
    # Where this page's look stopped: its last match when the page is full, else the
    # window's end (nothing in between matched), else the end of the domain.
    stop = names[-1] if full else window_end
    searched = None
    if search and total > search_rows:
        first_seen = _next_name(cur, did, bound, start)
        last_seen = stop or _next_name(cur, did, "<" if not backward else ">", None)
        if first_seen is not None and last_seen is not None:
            searched = (first_seen, last_seen) if not backward else (last_seen, first_seen)
    if backward:
        rows.reverse()
        accounts = [tables.info_of(tables.row_dict(r)) | {"name": r[0]} for r in rows]
        # before= came from a later page, so there is a next one: after this page's last
        # match, or (none shown) after the last name before ``before``, or from the domain's
        # start ("", not None) when no name precedes it
        next_after = (accounts[-1]["name"] if accounts else None) or _next_name(
            cur, did, "<", before
        )
        return AccountPage(d, search, total, accounts, next_after or "", stop, matching, searched)
    accounts = [tables.info_of(tables.row_dict(r)) | {"name": r[0]} for r in rows]
    previous_before = None
    if after is not None:
        previous_before = (accounts[0]["name"] if accounts else None) or _next_name(
            cur, did, ">", after
        )
    return AccountPage(d, search, total, accounts, stop, previous_before, matching, searched)


def domains_txn(cur: Cursor) -> list[dict[str, Any]]:
    """Every domain as ``tables.get_domain_txn`` describes it (aliases, services, flags, how
    many accounts), sorted by name: one transaction for WebAdmin's Domains page and ``domain
    list``, not a round trip to the database thread per domain."""
    names = [r[0] for r in cur.query("SELECT name FROM domains ORDER BY name")]
    return [info for info in (tables.get_domain_txn(cur, n) for n in names) if info is not None]
