"""The Accounts page's own cost per click, in one process: SQL statements, rows the search
looked at, CPU in the store query and in the template, with no server and no other load.

    PYTHONPATH=. .venv/bin/python bench/webadmin_page_cost.py DOMAIN [--repeat 20]

Reads the SQLite store $CGTWIST_CONFIG names (bench/webadmin_accounts.py fills one) and runs
bench/webadmin_clicks.py's round of clicks (first page, next pages, a jump to the middle,
searches) through ``cgtwist.storage.directory.account_page_txn`` on a plain connection, then
renders ``accounts.html`` with the result as the page handler does. Prints per click the
statements run, how many times LOWER() ran (the rows a search looked at: the real name is
lower-cased once per row) and the median CPU milliseconds of the query and of the render.
CPU time, not wall time: the machine is shared, and CPU per click is what stays still.
Run it against an older tree (its PYTHONPATH) to compare.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import time
import urllib.parse
from types import SimpleNamespace
from typing import Any, Optional

if not os.environ.get("PYTHONPATH"):  # given: the tree to measure (an older one, say)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cgtwist.config import load  # noqa: E402
from cgtwist.storage import directory  # noqa: E402
from cgtwist.storage.database import Cursor  # noqa: E402
from cgtwist.storage.engines import SqliteEngine, engine_for_url  # noqa: E402
from cgtwist.web.render import Templates  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from webadmin_clicks import SEARCHES  # noqa: E402


class Counting(Cursor):
    """A Cursor that counts the statements it runs."""

    statements = 0

    def execute(self, sql: str, args: Any = ()) -> None:
        Counting.statements += 1
        super().execute(sql, args)


def page_args(kind: str, value: str, last: Any) -> tuple[str, Optional[str]]:
    """(search, after) of one click; "next" pages follow the last page."""
    if kind in ("next", "search-next"):
        return last.search, getattr(last, "next_after", last.last)  # an older tree: .last
    if kind == "jump":
        return "", value
    if kind == "search":
        return value, None
    return "", None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("domain")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--middle", default="user050000")
    args = ap.parse_args()
    config = load()
    engine = engine_for_url(config.database_url)
    if not isinstance(engine, SqliteEngine):
        sys.exit("webadmin_page_cost: a SQLite store only")
    conn = sqlite3.connect(engine.path, isolation_level=None)
    lowered = [0]

    def lower(text: Any) -> Any:
        lowered[0] += 1
        return None if text is None else str(text).lower()

    conn.create_function("lower", 1, lower)  # the rows a search looks at, counted
    cur = Counting(conn.cursor(), engine)
    templates = Templates()
    session = SimpleNamespace(
        account="webadmin@example.test",
        rights=SimpleNamespace(server_admin=True, any_admin=True),
        csrf="x",
        notes=[],
    )
    clicks: list[tuple[str, str]] = [
        ("first", ""),
        ("next", ""),
        ("next", ""),
        ("jump", args.middle),
    ]
    for kind, words in SEARCHES:
        clicks.append((kind, words))
        if words == "novak":
            clicks.append(("search-next", ""))
    print(f"{'click':<22} {'SQL':>4} {'rows looked at':>14} {'query ms':>9} {'render ms':>10}")
    last: Any = None
    for kind, value in clicks:
        search, after = page_args(kind, value, last)
        q_cpu, r_cpu = [], []
        for _ in range(args.repeat):
            Counting.statements, lowered[0] = 0, 0
            t0 = time.process_time()
            page = directory.account_page_txn(cur, args.domain, search, 50, after)
            t1 = time.process_time()
            templates.page(
                "accounts.html",
                session=session,
                csrf="x",
                notes=[],
                path="/admin/domains",
                domain=args.domain,
                page=page,
                search=search,
                next_url="/n?after=" + urllib.parse.quote(page.last or ""),
                previous_url="",
                accounts_url="/admin/domains/" + args.domain + "/accounts",
            )
            t2 = time.process_time()
            q_cpu.append(1000 * (t1 - t0))
            r_cpu.append(1000 * (t2 - t1))
        label = f"{kind} {value}".strip()
        print(
            f"{label:<22} {Counting.statements:>4} {lowered[0]:>14} "
            f"{statistics.median(q_cpu):>9.2f} {statistics.median(r_cpu):>10.2f}"
        )
        last = page


if __name__ == "__main__":
    main()
