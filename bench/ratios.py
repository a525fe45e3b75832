"""Summarise a smtp-load CSV as medians per server and session count, and the ratio A/B.

    python bench/ratios.py FILE.csv cgtwist postfix
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
    with open(path) as f:
        for row in csv.DictReader(f):
            key = (row["label"], int(row["sessions"]))
            acc[key].append(float(row["accept_msg_s"]))
            if row["deliver_msg_s"]:
                dlv[key].append(float(row["deliver_msg_s"]))
    sessions = sorted({s for (_, s) in acc})
    print(f"{'sessions':>8} {a + ' acc':>12} {b + ' acc':>12} {'ratio':>6} "
          f"{a + ' dlv':>12} {b + ' dlv':>12} {'ratio':>6}")
    for s in sessions:
        def med(d: dict[tuple[str, int], list[float]], who: str) -> float:
            v = d.get((who, s))
            return statistics.median(v) if v else float("nan")
        aa, ba, ad, bd = med(acc, a), med(acc, b), med(dlv, a), med(dlv, b)
        print(f"{s:>8} {aa:>12.1f} {ba:>12.1f} {aa / ba:>6.2f} {ad:>12.1f} {bd:>12.1f} {ad / bd:>6.2f}")


if __name__ == "__main__":
    main()
