"""Where the cores go during an outbound drain: CPU time per message per process group.

The outbound benchmark's machine runs everything at once: the MTA under test, the sinks that
take its mail, the DNS server cgtwist asks, the tarpits, and the watcher counting the queue.
A rate alone cannot say whether the MTA is the limit; this can. ``outbound_watch.py`` takes a
snapshot when 10 % of the healthy mail has gone and another at 90 % (the steady phase it rates)
and prints, per group, the CPU seconds used between them, per message delivered and as a share
of the machine's cores, plus the whole machine's busy time (``/proc/stat``), so that other work
on a shared machine shows up as "other processes" instead of as a slower server.

Groups come from the environment (``CPU_GROUPS``: ``name=pid,pid;name=pid``; ``CPU_TREE``:
``name=pidfile``, a process tree whose root's pid is read from the file at the first snapshot).
A tree is split by what each process is: the root, its children by program name (Postfix's
``qmgr``, ``smtp``, ...; a cgtwist worker by its module, ``outworker``), and the children that
ended in between (counted through the root's ``cutime``/``cstime``: Postfix's ``smtp``
processes exit after 100 deliveries). The root of a cgtwist tree also gets its main thread
(the reactor) and its other threads (file work) on lines of their own, each also as user time
alone: the user time of all of them holds the one GIL of the process.

From the figures: with the MTA's own CPU per message at zero, the other groups' CPU per
message bounds the rate the machine can reach (cores / their ms per message), and a target
rate leaves the MTA cores / target minus theirs per message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

HZ = os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    pid: int
    ppid: int
    name: str
    ticks: int  # utime + stime
    children: int  # cutime + cstime (children waited for)
    main: int  # the main thread's utime + stime
    user: int = 0  # utime (all threads)
    main_user: int = 0  # the main thread's utime


@dataclass
class Snapshot:
    procs: dict[int, Proc] = field(default_factory=dict)
    machine_busy: int = 0  # ticks, all CPUs, not idle/iowait
    roots: dict[str, int] = field(default_factory=dict)  # tree name -> root pid
    own: float = 0.0  # this process's CPU seconds


def _stat(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    ticks, children = int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])
    name = comm
    if comm.startswith("python"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            cmd = ""
        for module in ("outworker", "smtpworker", "imapworker"):
            if f"cgtwist.{module}" in cmd:
                name = module
    main, main_user = ticks, int(rest[11])
    try:
        with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
            t = f.read().decode("ascii", "replace")
        tr = t[t.rindex(")") + 2 :].split()
        main, main_user = int(tr[11]) + int(tr[12]), int(tr[11])
    except (OSError, ValueError, IndexError):
        pass
    return Proc(pid, int(rest[1]), name, ticks, children, main, int(rest[11]), main_user)


def _machine_busy() -> int:
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return sum(cpu) - cpu[3] - cpu[4]


def _groups() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for part in filter(None, os.environ.get("CPU_GROUPS", "").split(";")):
        name, _, pids = part.partition("=")
        out[name] = [int(p) for p in pids.split(",") if p.strip()]
    return out


def _trees() -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, os.environ.get("CPU_TREE", "").split(";")):
        name, _, pidfile = part.partition("=")
        out[name] = pidfile
    return out


def _root_pid(pidfile: str) -> int:
    try:
        with open(pidfile) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def snapshot(roots: dict[str, int] | None = None) -> Snapshot:
    """Every process's CPU ticks now; ``roots`` the tree roots found at the first snapshot
    (None: read them from their pid files)."""
    snap = Snapshot(machine_busy=_machine_busy())
    snap.roots = (
        dict(roots)
        if roots is not None
        else {n: _root_pid(p) for n, p in _trees().items() if _root_pid(p)}
    )
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            p = _stat(int(entry.name))
            if p is not None:
                snap.procs[p.pid] = p
    t = os.times()
    snap.own = t.user + t.system
    return snap


def _descendants(snap: Snapshot, root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for p in snap.procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        for c in kids.get(pid, []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def split(before: Snapshot, after: Snapshot) -> list[tuple[str, float]]:
    """(label, CPU seconds between the snapshots) per group and part of a tree, and
    ``machine (all processes)``; the watcher's own time as ``watcher``."""
    rows: list[tuple[str, float]] = []

    def used(pid: int) -> float:
        a, b = after.procs.get(pid), before.procs.get(pid)
        if a is None:
            return 0.0
        return (a.ticks - (b.ticks if b is not None and b.name == a.name else 0)) / HZ

    for name, pids in _groups().items():
        rows.append((name, sum(used(p) for p in pids)))
    for name, root in before.roots.items():
        if root not in after.procs:
            continue
        r0, r1 = before.procs.get(root), after.procs[root]
        rows.append((f"{name}: {r1.name} (root)", used(root)))
        if name.startswith("cgtwist") and r0 is not None:
            # The reactor (main thread) and the file-work threads, user and system time
            # apart: user time holds the process's GIL, most system time (file system
            # calls) does not.
            main_u = r1.main_user - r0.main_user
            main_s = (r1.main - r1.main_user) - (r0.main - r0.main_user)
            all_u, all_s = r1.user - r0.user, (r1.ticks - r1.user) - (r0.ticks - r0.user)
            for part, u, s in (
                ("main thread", main_u, main_s),
                ("other threads", all_u - main_u, all_s - main_s),
            ):
                rows.append((f"{name}: {r1.name} {part}", (u + s) / HZ))
                rows.append((f"{name}: {r1.name} {part} (user)", u / HZ))
        now = _descendants(after, root)
        then = _descendants(before, root)
        by_name: dict[str, float] = {}
        for pid in now:
            label = after.procs[pid].name
            by_name[label] = by_name.get(label, 0.0) + used(pid)
        for label, s in sorted(by_name.items(), key=lambda kv: -kv[1]):
            rows.append((f"{name}: {label}", s))
        # Children reaped by the root in between: their whole life is in its cutime/cstime,
        # less what the first snapshot had already counted of those alive then.
        reaped = (r1.children - (r0.children if r0 else 0)) / HZ
        reaped -= sum(before.procs[p].ticks / HZ for p in then - now if p in before.procs)
        if abs(reaped) >= 0.005:
            rows.append((f"{name}: children ended meanwhile", reaped))
    rows.append(("watcher (this sampler)", after.own - before.own))
    rows.append(("machine (all processes)", (after.machine_busy - before.machine_busy) / HZ))
    return rows


def report(label: str, rows: list[tuple[str, float]], messages: int, seconds: float) -> str:
    """Lines ``label,group,cpu_s,ms_per_msg,cores``: the CSV the benchmark summarises."""
    out = []
    for group, s in rows:
        ms = 1000 * s / messages if messages else float("nan")
        cores = s / seconds if seconds > 0 else float("nan")
        out.append(f"{label},{group},{s:.2f},{ms:.3f},{cores:.2f}")
    return "\n".join(out)


def main() -> None:
    """``outbound_cpu.py snap FILE`` (a snapshot, pickled; the tree roots from CPU_TREE) and
    ``outbound_cpu.py report BEFORE AFTER LABEL MESSAGES SECONDS`` (the rows between two
    snapshots), for a script that measures between two moments of its own
    (outbound-profile.sh)."""
    import pickle
    import sys

    if sys.argv[1] == "snap":
        with open(sys.argv[2], "wb") as f:
            pickle.dump(snapshot(), f)
        return
    before_file, after_file, label, messages, seconds = sys.argv[2:7]
    with open(before_file, "rb") as f:
        before = pickle.load(f)
    with open(after_file, "rb") as f:
        after = pickle.load(f)
    print(report(label, split(before, after), int(messages), float(seconds)))


if __name__ == "__main__":
    main()
