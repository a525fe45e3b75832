"""Per-role CPU time per message from two snapshots of the server's threads (smtp-cpu-profile.sh).

    python3 cpu_split.py BEFORE AFTER SERVER_PID MESSAGES    (the last line: all roles together)

A snapshot has one line per thread: ``pid tid utime stime`` (clock ticks, from
``/proc/<pid>/task/<tid>/stat``). Threads are grouped by role: the server's reactor (its main
thread), the server's other threads (``cgtwist-io`` file work, adbapi), the SMTP workers'
reactors and the workers' other threads. The total alone hides which of them a change moved:
the workers' reactors carry the SMTP dialogue, the server's reactor the queue, the io threads
mostly system time (fsync, the Maildir's inode allocation).
"""

from __future__ import annotations

import os
import sys


def read(path: str) -> dict[tuple[str, str], tuple[int, int]]:
    snap = {}
    with open(path) as f:
        for line in f:
            pid, tid, utime, stime = line.split()
            snap[(pid, tid)] = (int(utime), int(stime))
    return snap


def split(
    before: dict[tuple[str, str], tuple[int, int]],
    after: dict[tuple[str, str], tuple[int, int]],
    server: str,
) -> dict[str, list[int]]:
    """Ticks used between the snapshots, by role; a thread that started in between counts whole."""
    roles: dict[str, list[int]] = {}
    for (pid, tid), (u1, s1) in after.items():
        u0, s0 = before.get((pid, tid), (0, 0))
        role = ("server" if pid == server else "workers") + (
            " reactor" if pid == tid else " threads"
        )
        acc = roles.setdefault(role, [0, 0])
        acc[0] += u1 - u0
        acc[1] += s1 - s0
    return roles


def main() -> None:
    before, after, server, messages = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    us_per_tick = 1e6 / os.sysconf("SC_CLK_TCK")
    roles = split(read(before), read(after), server)
    total = [0, 0]
    for role in ("server reactor", "server threads", "workers reactor", "workers threads"):
        u, s = roles.get(role, [0, 0])
        total[0] += u
        total[1] += s
        print(
            f"{role:16} user {u * us_per_tick / messages:6.0f}us sys {s * us_per_tick / messages:6.0f}us per message"
        )
    u, s = total
    print(
        f"{'all':16} user {u * us_per_tick / messages:6.0f}us sys {s * us_per_tick / messages:6.0f}us "
        f"per message: server cpu ms/msg {(u + s) * us_per_tick / messages / 1000:.2f}"
    )


if __name__ == "__main__":
    main()
