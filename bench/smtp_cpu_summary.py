"""Where the two cores go in smtp-vs-postfix.sh: CPU per message per process group, per server
and session count (the median over the runs).

    python bench/smtp_cpu_summary.py CPU_CSV

CPU_CSV holds ``outbound_cpu.py report`` rows (label, group, cpu_s, ms_per_msg, cores), one set
per run, labelled ``<server>-s<sessions>-r<run>``, each measured from just before the client
starts until the last message is in the Maildir. A server's groups are its process tree: for
cgtwist the server (its reactor thread and its file-work threads apart, each also as user time
alone, which holds the process's one GIL) and its SMTP workers; for Postfix the master and its
children by program (smtpd, cleanup, qmgr, local, trivial-rewrite, ...; those that exited
meanwhile as "children ended meanwhile"). Beside them: the loopback DNS server, the machine's
busy time (``machine``: the client smtp-source, the bench's polling, other people's work and
the kernel's threads are the rest of it) and, from it, the rate the cores allow when nothing
else ran: cores / the server tree's ms per message.

A rate alone cannot say which process is the ceiling; this can, and CPU time per message moves
less with the machine's load than a wall-clock rate.
"""

from __future__ import annotations

import csv
import os
import re
import statistics
import sys
from collections import defaultdict

_LABEL = re.compile(r"^(?P<who>.+)-s(?P<sessions>\d+)-r(?P<run>\d+)$")
MACHINE = "machine (all processes)"


def tree_total(rows: dict[str, float], who: str) -> float:
    """The server tree's ms per message: its root and every child group (the root's thread
    rows are parts of the root, not added again)."""
    total = 0.0
    for group, ms in rows.items():
        if not group.startswith(who + ": "):
            continue
        if " main thread" in group or " other threads" in group:
            continue
        total += ms
    return total


def main() -> None:
    path = sys.argv[1]
    cores = os.cpu_count() or 1
    # (who, sessions) -> group -> [ms per message, one per run]
    ms: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        for row in csv.DictReader(f):
            m = _LABEL.match(row["label"])
            if m is None:
                continue
            key = (m["who"], int(m["sessions"]))
            ms[key][row["group"]].append(float(row["ms_per_msg"]))
    if not ms:
        print("CPU split: no rows")
        return
    print(f"\nCPU per message by process group (ms, median of the runs; {cores} cores):")
    for (who, sessions), groups in sorted(ms.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = {g: statistics.median(v) for g, v in groups.items()}
        print(f"  {who}, {sessions} sessions:")
        for group, value in med.items():
            if group.startswith(who + ": ") or group == "dns server":
                name = group[len(who) + 2 :] if group.startswith(who + ": ") else group
                print(f"    {name:44} {value:7.3f}")
        total = tree_total(med, who)
        machine = med.get(MACHINE, float("nan"))
        ceiling = cores / total * 1000 if total > 0 else float("nan")
        print(f"    {'server tree, all':44} {total:7.3f}   (the cores allow {ceiling:.0f} msg/s)")
        print(f"    {'machine (all processes)':44} {machine:7.3f}")


if __name__ == "__main__":
    main()
