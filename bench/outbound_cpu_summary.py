"""The outbound benchmark's CPU split, summarised: what each server costs per message and the
rate the machine could reach.

    python bench/outbound_cpu_summary.py CPU_CSV RATES_CSV CORES

CPU_CSV holds outbound_cpu.py's rows (label, group, cpu_s, ms_per_msg, cores) for each drain,
RATES_CSV the watcher's rates (for Postfix's steady rate). Printed per server, the mean over
its drains of each group's CPU ms per message and cores in use, then:

- the bench's own share per message (sinks, tarpit, DNS server, the watcher): what the
  machine spends on a message whoever sends it;
- the ceiling: CORES / that share, the steady rate with the server's own CPU at zero;
- for cgtwist, the CPU per message 1.5x Postfix's steady rate leaves it (CORES / target
  minus the bench's share), against what it uses;
- "other processes": the machine's busy time not in any group (others' work on a shared
  machine, the kernel's threads), per message: a large figure makes the run's rates noisy.
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict

# Work per message whoever sends: the sinks take each message, the DNS server answers
# cgtwist's lookups, the tarpits hold the stalled sessions.
BENCH_GROUPS = ("sinks (smtp-sink)", "tarpit", "dns server")
# Work per second, not per message: the sampler scans the queue every 0.1 s.
WATCHER = "watcher (this sampler)"


def main() -> None:
    cpu_csv, rates_csv, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ms: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    use: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in csv.DictReader(open(cpu_csv)):
        who = row["label"].rsplit("-", 1)[0]
        ms[who][row["group"]].append(float(row["ms_per_msg"]))
        use[who][row["group"]].append(float(row["cores"]))
    steady = defaultdict(list)
    for row in csv.DictReader(open(rates_csv)):
        steady[row["label"].rsplit("-", 1)[0]].append(float(row["steady_msgs_per_s"]))
    if not ms:
        print("CPU split: no rows (a drain too short for two snapshots?)")
        return
    print(
        f"\nCPU in the steady phase (10-90 %), ms per message delivered and cores busy, {cores} cores:"
    )
    own: dict[str, float] = {}
    bench: dict[str, float] = {}
    free: dict[str, float] = {}
    for who in sorted(ms):
        groups = ms[who]
        mean = {g: statistics.fmean(v) for g, v in groups.items()}
        busy = {g: statistics.fmean(v) for g, v in use[who].items()}
        print(f"  {who} drains:")
        for g in sorted(mean, key=lambda g: (g.startswith("machine"), not g.startswith(who), g)):
            print(f"    {g:46} {mean[g]:7.3f} ms/msg  {busy[g]:5.2f} cores")
        # The server's own: its tree's rows (the thread rows are parts of its root's row).
        own[who] = sum(v for g, v in mean.items() if g.startswith(who + ":") and " thread" not in g)
        bench[who] = sum(mean.get(g, 0.0) for g in BENCH_GROUPS)
        free[who] = cores - busy.get(WATCHER, 0.0)
        listed = sum(
            v for g, v in mean.items() if not g.startswith("machine") and " thread" not in g
        )
        other = mean.get("machine (all processes)", 0.0) - listed
        print(
            f"    -> {who} itself {own[who]:.3f} ms/msg; the bench per message (sinks, tarpit, "
            f"DNS) {bench[who]:.3f} ms/msg; the watcher {busy.get(WATCHER, 0.0):.2f} cores; "
            f"other processes {other:.3f} ms/msg"
        )
        if bench[who] > 0:
            print(
                f"    -> ceiling with {who}'s own CPU at zero: {free[who]:.2f} cores / "
                f"{bench[who]:.3f} ms = {1000 * free[who] / bench[who]:.0f} msg/s; with it: "
                f"{1000 * free[who] / (bench[who] + own[who]):.0f} msg/s (both cores busy)"
            )
    if "postfix" in steady and "cgtwist" in bench:
        pf = statistics.fmean(steady["postfix"])
        target = 1.5 * pf
        budget = 1000 * free["cgtwist"] / target - bench["cgtwist"]
        print(
            f"  1.5x Postfix's steady {pf:.0f} msg/s = {target:.0f} msg/s leaves cgtwist "
            f"{budget:.3f} ms/msg of CPU (free cores / target - the bench per message); "
            f"it used {own.get('cgtwist', float('nan')):.3f}"
        )


if __name__ == "__main__":
    main()
