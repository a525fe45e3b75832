"""Summarise one access-vs-dovecot run: per-phase times of cgtwist and Dovecot and their ratio.

    python bench/access_ratios.py RESULTS_DIR

Reads the imap-<server>-c<N>.json and pop-<server>-c<N>.json files that imap-bench.py and
pop-bench.py wrote. The ratio is Dovecot's time over cgtwist's (for rates, cgtwist's rate over
Dovecot's): 1.0 is parity, above 1.0 cgtwist is faster. The project goal is >= 1.0.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from typing import Any

IMAP_PHASES = ["login", "select", "fetch_all", "fetch_bodies", "store", "store_reset", "search",
               "search_body", "logout"]
POP_PHASES = ["login", "stat", "list", "retr_all", "quit"]


def load(directory: str, proto: str) -> dict[tuple[str, int], dict[str, Any]]:
    """{(server, concurrency): summary row} for one protocol."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for path in glob.glob(os.path.join(directory, f"{proto}-*-c*.json")):
        m = re.match(rf"{proto}-(\w+)-c(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            data = json.load(f)
        errors: dict[int, int] = {}
        for run in data.get("runs", []):
            errors[run["concurrency"]] = errors.get(run["concurrency"], 0) + len(run.get("errors", []))
        for row in data["summary"]:
            row["errors"] = errors.get(int(row["concurrency"]), 0)
            out[(m.group(1), int(row["concurrency"]))] = row
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
    for proto, phases, rate in (("imap", IMAP_PHASES, "commands_per_s"), ("pop", POP_PHASES, "retr_per_s")):
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
            for ph in phases:
                a, b = cg["phase_median_ms"][ph], dv["phase_median_ms"][ph]
                rows.append([ph, str(c), f"{a:.1f}", f"{b:.1f}", flag or ratio(b, a)])
            a, b = cg[rate], dv[rate]
            rows.append([rate.replace("_per_s", "/s"), str(c), f"{a:.1f}", f"{b:.1f}",
                         flag or ratio(1 / b if b else 0, 1 / a if a else 0)])
        parts.append(table(f"{proto.upper()} (median per session; ratio = Dovecot time / cgtwist time; "
                           f"last row per c is a rate, ratio = cgtwist / Dovecot)", rows))
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(report(sys.argv[1]))
