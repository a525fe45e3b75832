"""POP3 with C clients on C maildrops: the shared pop-bench.py's session, one account per client.

    python bench/pop_multi.py --shared ../shared/bench --port 1110 --user popbench --password P \
        --maildir '/home/popbench/drop{n}/Maildir' --messages 1000 --concurrency 1,4 --runs 10 \
        --json out.json

Why not pop-bench.py itself: it logs every client into the same maildrop, and cgtwist locks a
maildrop for one POP3 session (RFC 1939 §8, the CommuniGate Pro behaviour; issue 3) where
Dovecot by default does not (pop3_lock_session = no), so with more than one client cgtwist
answers -ERR [IN-USE] and the two servers would do different work. Here client n (1-based)
logs in as USER<n> with its own maildrop (--maildir with {n}), for both servers alike: the
same work, and no lock is contended. Each session is pop-bench.py's own (``one_session``:
USER/PASS, STAT, LIST, RETR of every message, QUIT, no DELE) and the JSON has pop-bench.py's
layout, so bench/access_ratios.py reads it unchanged.

Population (untimed): every maildrop up to --messages, the same deterministic messages
(benchlib.populate_maildir into Maildir/new), then --warmup untimed sessions per account, which
also make each server build its index of each maildrop before anything is timed.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import multiprocessing as mp
import os
import sys
import time
from typing import Any


def load_pop_bench(shared: str) -> Any:
    sys.path.insert(0, shared)
    spec = importlib.util.spec_from_file_location("pop_bench", os.path.join(shared, "pop-bench.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def account(a: argparse.Namespace, n: int) -> argparse.Namespace:
    b = copy.copy(a)
    b.user = f"{a.user}{n}"
    b.maildir = a.maildir.format(n=n)
    return b


def run_once(pb: Any, a: argparse.Namespace, conc: int) -> dict[str, Any]:
    """pop-bench.py's run_once, with client w on account w+1."""
    barrier = mp.Barrier(conc + 1)
    q: Any = mp.Queue()
    procs = [
        mp.Process(target=pb.worker, args=(account(a, w + 1), w, barrier, q)) for w in range(conc)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    for _ in procs:
        _wid, out, err = q.get()
        results.extend(out)
        if err:
            errors.append(err)
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    med = pb.benchlib.med
    return {
        "concurrency": conc,
        "sessions": len(results),
        "wall_s": wall,
        "errors": errors,
        "sessions_per_s": len(results) / wall,
        "commands_per_s": sum(sum(r["n"].values()) for r in results) / wall,
        "retr_per_s": sum(r["n"]["retr_all"] for r in results) / wall,
        "mbytes_per_s": sum(r["bytes"] for r in results) / wall / 1e6,
        "phase_median_ms": {ph: 1000 * med([r["t"][ph] for r in results]) for ph in pb.PHASES},
        "phase_cmds": {ph: (results[0]["n"][ph] if results else 0) for ph in pb.PHASES},
        "count": results[0]["count"] if results else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shared", required=True, help="the directory of pop-bench.py and benchlib.py")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True, help="account prefix: client n logs in as USER<n>")
    ap.add_argument("--password", required=True)
    ap.add_argument("--maildir", required=True, help="account n's Maildir, with {n}")
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--sessions", type=int, default=1, help="sessions per client per run")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1, help="untimed sessions per account first")
    ap.add_argument("--json")
    a = ap.parse_args()
    pb = load_pop_bench(a.shared)
    concs = [int(x) for x in a.concurrency.split(",")]
    for n in range(1, max(concs) + 1):
        b = account(a, n)
        have = pb.pop_count(b)
        if have < a.messages:
            pb.benchlib.populate_maildir(b.maildir, have, a.messages - have, b.user, a.seed)
            pb.benchlib.wait_for_count(lambda b=b: pb.pop_count(b), a.messages)
        for _ in range(a.warmup):
            pb.one_session(b)
    summary, all_runs = [], []
    for conc in concs:
        runs = []
        for r in range(a.runs):
            res = run_once(pb, a, conc)
            res["run"] = r + 1
            runs.append(res)
            all_runs.append(res)
            print(
                f"c={conc} run={r + 1} wall={res['wall_s']:.3f}s RETR/s={res['retr_per_s']:.0f} "
                f"errors={len(res['errors'])}",
                flush=True,
            )
            for e in res["errors"][:3]:
                print("   error:", e, flush=True)
        med = pb.benchlib.med
        summary.append(
            {
                "concurrency": conc,
                "count": runs[0]["count"],
                "wall_s": med([x["wall_s"] for x in runs]),
                "sessions_per_s": med([x["sessions_per_s"] for x in runs]),
                "retr_per_s": med([x["retr_per_s"] for x in runs]),
                "mbytes_per_s": med([x["mbytes_per_s"] for x in runs]),
                "phase_median_ms": {
                    ph: med([x["phase_median_ms"][ph] for x in runs]) for ph in pb.PHASES
                },
                "phase_cmds": runs[0]["phase_cmds"],
            }
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "summary": summary, "runs": all_runs}, f, indent=1)


if __name__ == "__main__":
    main()
