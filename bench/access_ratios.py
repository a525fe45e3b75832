"""Summarise one access-vs-dovecot run: per-phase times of cgtwist and Dovecot and their ratio.

    python bench/access_ratios.py RESULTS_DIR

Reads the imap-<server>-c<N>[-h<K>].json and pop-<server>-c<N>[-h<K>].json files that
imap-bench.py and bench/pop_multi.py wrote: the halves K of an ABBA run are merged, every run of
both halves counted, so a median is over all of a server's sessions at that concurrency. The ratio is Dovecot's time over cgtwist's (for rates, cgtwist's rate over
Dovecot's): 1.0 is parity, above 1.0 cgtwist is faster. The project goal is >= 1.0.
"""

from __future__ import annotations

import glob
import json
import os
import re
import statistics
import sys
from typing import Any

IMAP_PHASES = [
    "login",
    "select",
    "fetch_all",
    "fetch_bodies",
    "store",
    "store_reset",
    "search",
    "search_body",
    "logout",
]
POP_PHASES = ["login", "stat", "list", "retr_all", "quit"]


def load(directory: str, proto: str) -> dict[tuple[str, int], dict[str, Any]]:
    """{(server, concurrency): summary row} for one protocol, over the runs of all halves: the
    median of the runs' phase medians and rates, the sum of their errors and sessions."""
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for path in sorted(glob.glob(os.path.join(directory, f"{proto}-*-c*.json"))):
        m = re.match(rf"{proto}-(\w+)-c(\d+)(?:-h\d+)?\.json$", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            data = json.load(f)
        for run in data.get("runs", []):
            runs.setdefault((m.group(1), int(run["concurrency"])), []).append(run)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for key, rs in runs.items():
        out[key] = {
            "errors": sum(len(r.get("errors", [])) for r in rs),
            "sessions": sum(int(r.get("sessions", 0)) for r in rs),
            "runs": len(rs),
            "size": sorted({r.get("exists", r.get("count")) for r in rs}, key=str),
            "phase_median_ms": {
                ph: statistics.median(r["phase_median_ms"][ph] for r in rs)
                for ph in rs[0]["phase_median_ms"]
            },
            **{
                rate: statistics.median(r[rate] for r in rs)
                for rate in ("commands_per_s", "retr_per_s")
                if rate in rs[0]
            },
        }
    return out


def ratio(dovecot: float, cgtwist: float) -> str:
    if not cgtwist or not dovecot or cgtwist != cgtwist or dovecot != dovecot:
        return "-"
    return f"{dovecot / cgtwist:.2f}"


def table(title: str, rows: list[list[str]]) -> str:
    head = ["phase", "c", "cgtwist ms", "dovecot ms", "ratio"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [title, "  ".join(h.rjust(widths[i]) for i, h in enumerate(head))]
    lines += ["  ".join(str(c).rjust(widths[i]) for i, c in enumerate(r)) for r in rows]
    return "\n".join(lines)


def report(directory: str) -> str:
    parts = []
    for proto, phases, rate in (
        ("imap", IMAP_PHASES, "commands_per_s"),
        ("pop", POP_PHASES, "retr_per_s"),
    ):
        data = load(directory, proto)
        concs = sorted({c for (_, c) in data})
        rows: list[list[str]] = []
        for c in concs:
            cg, dv = data.get(("cgtwist", c)), data.get(("dovecot", c))
            if not cg or not dv:
                continue
            # Failed sessions (e.g. a locked POP3 maildrop) did less work: no ratio for them.
            bad = cg["errors"] or dv["errors"]
            flag = f"ERR({cg['errors']}/{dv['errors']})" if bad else ""
            # A different mailbox size is different work: no ratio either.
            if cg["size"] != dv["size"]:
                flag = f"SIZE({cg['size']}/{dv['size']})"
            for ph in phases:
                a, b = cg["phase_median_ms"][ph], dv["phase_median_ms"][ph]
                rows.append([ph, str(c), f"{a:.1f}", f"{b:.1f}", flag or ratio(b, a)])
            a, b = cg[rate], dv[rate]
            rows.append(
                [
                    rate.replace("_per_s", "/s"),
                    str(c),
                    f"{a:.1f}",
                    f"{b:.1f}",
                    flag or ratio(1 / b if b else 0, 1 / a if a else 0),
                ]
            )
            rows.append(
                [
                    "sessions",
                    str(c),
                    f"{cg['sessions']} in {cg['runs']} runs",
                    f"{dv['sessions']} in {dv['runs']} runs",
                    "",
                ]
            )
        parts.append(
            table(
                f"{proto.upper()} (median per session; ratio = Dovecot time / cgtwist time; "
                f"last row per c is a rate, ratio = cgtwist / Dovecot)",
                rows,
            )
        )
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(report(sys.argv[1]))
