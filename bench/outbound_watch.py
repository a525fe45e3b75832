"""Watch an MTA's queue drain for the outbound benchmark and report the delivery rate.

Counts queue files (cgtwist: ``Queue/*.msg``; Postfix: every file under incoming, active,
deferred, maildrop) every ``INTERVAL`` seconds (default 0.1: a coarser sample would round a
drain of a few seconds by a large fraction) from ``t0`` until only the stalled destinations'
messages remain, then prints one CSV row:

    label, healthy messages, delivered, seconds, msgs/s over the whole drain (start-up
    included), first_s (the first sample that saw a message gone), msgs/s from that first
    delivery (start-up excluded, the same way for both servers), steady msgs/s (10 % to 90 %
    of the healthy messages delivered), still queued, ok|timeout

t0 is taken before the server's start command, for both servers: "whole drain" includes the
start-up of either (Python's import time, Postfix's postfix-script checks), "from first
delivery" excludes it for both by the same criterion, measured by this same sampler.

    python bench/outbound_watch.py LABEL T0 TOTAL STALLED TIMEOUT cgtwist|postfix DIR
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import outbound_cpu  # noqa: E402  (beside this script, not a package)


def count(kind: str, root: str) -> int:
    if kind == "cgtwist":
        with os.scandir(root) as it:
            return sum(1 for e in it if e.name.endswith(".msg"))
    n = 0
    for sub in ("incoming", "active", "deferred", "maildrop"):
        for _dir, _subdirs, files in os.walk(os.path.join(root, sub)):
            n += len(files)
    return n


def main() -> None:
    label, t0, total, stalled, timeout, kind, root = sys.argv[1:8]
    interval = float(os.environ.get("INTERVAL", "0.1"))
    start, n_total, n_stalled = float(t0), int(total), int(stalled)
    healthy = n_total - n_stalled
    series: list[tuple[float, int]] = []
    deadline = start + float(timeout)
    # CPU per process group over the steady phase (outbound_cpu): snapshots at the first
    # samples that saw 10 % and 90 % of the healthy mail gone.
    cpu_out = os.environ.get("CPU_OUT")
    marks: list[tuple[float, int, outbound_cpu.Snapshot]] = []
    while True:
        left = count(kind, root)
        now = time.time()
        done = n_total - left
        series.append((now - start, done))
        if cpu_out and len(marks) < 2 and done >= (0.1, 0.9)[len(marks)] * healthy:
            roots = marks[0][2].roots if marks else None
            marks.append((time.time(), done, outbound_cpu.snapshot(roots)))
        if left <= n_stalled or now > deadline:
            break
        # Sample on a fixed grid, not "interval after the count": the count itself takes time.
        time.sleep(max(0.0, interval - (time.time() - now)))
    elapsed, done = series[-1]

    def at(fraction: float) -> float:
        goal = fraction * healthy
        return next((t for t, d in series if d >= goal), elapsed)

    t10, t90 = at(0.1), at(0.9)
    steady = 0.8 * healthy / (t90 - t10) if t90 > t10 else float("nan")
    # The last sample at which nothing had gone yet: delivery began after it.
    first = max((t for t, d in series if d <= 0), default=0.0)
    from_first = done / (elapsed - first) if elapsed > first else float("nan")
    print(
        f"{label},{healthy},{done},{elapsed:.2f},{done / elapsed:.1f},{first:.2f},{from_first:.1f},"
        f"{steady:.1f},{n_total - done},{'ok' if done >= healthy else 'timeout'}",
        flush=True,
    )
    if cpu_out and len(marks) == 2:
        (t1, d1, s1), (t2, d2, s2) = marks
        with open(cpu_out, "a") as f:
            f.write(outbound_cpu.report(label, outbound_cpu.split(s1, s2), d2 - d1, t2 - t1))
            f.write("\n")
    with open(os.environ.get("SERIES_OUT", os.devnull), "a") as f:
        for t, d in series:
            f.write(f"{label},{t:.2f},{d}\n")


if __name__ == "__main__":
    main()
