"""Per-connection growth between two probes of bench/idle_probe (sitecustomize.py).

    python bench/idle_probe/diff.py PROBE_A.json PROBE_B.json CONNECTIONS [--top 30]

Prints, per type, the objects and ``sys.getsizeof`` bytes that each of the CONNECTIONS opened
between the two probes added, largest first, and (when the server ran with
PYTHONTRACEMALLOC) the traced bytes per connection by allocating source line.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("conns", type=int)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    with open(args.a) as f:
        a = json.load(f)
    with open(args.b) as f:
        b = json.load(f)
    n = args.conns
    rows = []
    for name in set(a["size"]) | set(b["size"]):
        ds = b["size"].get(name, 0) - a["size"].get(name, 0)
        dc = b["count"].get(name, 0) - a["count"].get(name, 0)
        rows.append((ds / n, dc / n, name))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"gc-tracked objects: {total:.0f} B per connection (getsizeof, shallow)")
    for ds, dc, name in rows[: args.top]:
        print(f"  {ds:9.1f} B  {dc:7.2f} objects  {name}")
    if b.get("traced"):
        keys = set(a.get("traced", {})) | set(b["traced"])
        grow = sorted(
            ((b["traced"].get(k, 0) - a.get("traced", {}).get(k, 0)) / n, k) for k in keys
        )[::-1]
        print(f"traced (tracemalloc): {sum(g for g, _k in grow):.0f} B per connection")
        for g, k in grow[: args.top]:
            print(f"  {g:9.1f} B  {k}")


if __name__ == "__main__":
    main()
