"""Summarise a smtp-load CSV as medians per server and session count, and the ratio A/B.

    python bench/ratios.py FILE.csv cgtwist postfix

When the runs of A and B alternate (the rows are in the order they ran), a second table gives
the delivered ratio of each A/B pair by which of the two ran first: a difference between the
two columns is an order effect (one run leaving the machine in a state that costs the next).
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict


def main() -> None:
    path, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
    acc: dict[tuple[str, int], list[float]] = defaultdict(list)
    dlv: dict[tuple[str, int], list[float]] = defaultdict(list)
    order: dict[tuple[str, int], list[int]] = defaultdict(list)  # row numbers of the runs
    with open(path) as f:
        for n, row in enumerate(csv.DictReader(f)):
            key = (row["label"], int(row["sessions"]))
            acc[key].append(float(row["accept_msg_s"]))
            if row["deliver_msg_s"]:
                dlv[key].append(float(row["deliver_msg_s"]))
                order[key].append(n)
    sessions = sorted({s for (_, s) in acc})
    print(
        f"{'sessions':>8} {a + ' acc':>12} {b + ' acc':>12} {'ratio':>6} "
        f"{a + ' dlv':>12} {b + ' dlv':>12} {'ratio':>6}"
    )
    for s in sessions:

        def med(d: dict[tuple[str, int], list[float]], who: str, s: int = s) -> float:
            v = d.get((who, s))
            return statistics.median(v) if v else float("nan")

        aa, ba, ad, bd = med(acc, a), med(acc, b), med(dlv, a), med(dlv, b)
        print(
            f"{s:>8} {aa:>12.1f} {ba:>12.1f} {aa / ba:>6.2f} {ad:>12.1f} {bd:>12.1f} {ad / bd:>6.2f}"
        )
    by_order(sessions, dlv, order, a, b)


def by_order(
    sessions: list[int],
    dlv: dict[tuple[str, int], list[float]],
    order: dict[tuple[str, int], list[int]],
    a: str,
    b: str,
) -> None:
    """Median delivered ratio of the i-th A run over the i-th B run, by which ran first."""
    rows = []
    for s in sessions:
        first: dict[str, list[float]] = {a: [], b: []}
        pairs = zip(
            dlv.get((a, s), []),
            dlv.get((b, s), []),
            order.get((a, s), []),
            order.get((b, s), []),
            strict=False,
        )
        for ra, rb, na, nb in pairs:
            first[a if na < nb else b].append(ra / rb)
        rows.append((s, first[a], first[b]))
    if not any(fa and fb for _, fa, fb in rows):
        return  # not alternated
    print(
        f"\ndelivered ratio by which ran first (median, n)\n{'sessions':>8} "
        f"{a + ' first':>16} {b + ' first':>16}"
    )
    for s, fa, fb in rows:

        def cell(v: list[float]) -> str:
            return f"{statistics.median(v):.2f} (n={len(v)})" if v else "-"

        print(f"{s:>8} {cell(fa):>16} {cell(fb):>16}")


if __name__ == "__main__":
    main()
