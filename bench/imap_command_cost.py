"""The IMAP commands of bench/access-vs-dovecot.sh's session, one class at a time, for a count
of the server's instructions per command (bench/imap-instructions.sh runs it).

    imap_command_cost.py --port P --shared DIR populate --messages M --maildir DIR
    imap_command_cost.py --port P --shared DIR measure --pid PID --vgdb-prefix PFX --out FILE
        [--count N] [--rounds R] [--idle SECONDS] [--json FILE]
    imap_command_cost.py --port P --shared DIR repeat CLASS [--count N] [--rounds R]

``populate``: fill the Maildir with the bench's deterministic messages (the shared
benchlib.populate_maildir, as imap-bench.py does) up to M, then read the mailbox once the way
a bench session does (SELECT, FETCH 1:* with ENVELOPE, the searches), so the folder's index
holds what a warm run finds in it.

``measure``: the server runs under callgrind (pid PID, vgdb prefix PFX, dumps to FILE.<n>).
For each class the commands run once untimed (lazily built state is then built), then in
``--rounds`` rounds each between a zeroing of callgrind's counters and a dump; a dump's total
over the number of commands is that round's instructions per command, of the whole server
process (reactor and threads). The fewest of the rounds is the figure to compare: a round
may also hold work that does not belong to its commands (a collection of the garbage
collector's oldest generation, a timer of the folder's index), which the median shows.
The server's own timers run meanwhile, and a command under valgrind takes seconds: first
the idle server's instructions per second are counted, and "net" is a round's count less
that rate times the round's wall time (the figure least moved by the machine's load).
The classes are the bench's phases: ``noop`` (the floor of any command),
``fetch_body`` (UID FETCH <uid> (BODY.PEEK[])),
``store`` (UID STORE <uid> +FLAGS (\\Flagged)), ``store_reset`` (one UID STORE <set>
-FLAGS.SILENT), each header/flag SEARCH of the bench alone, ``search_body`` (SEARCH BODY),
``fetch_all`` (FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE)), ``select`` and ``logout``
(LOGOUT of a session logged in and with INBOX selected, its BYE read and the socket
closed, as imaplib's logout() does; the server's teardown of the session is counted too).
A class may have an untimed step before each round: every counted STORE changes the flag
(the messages' \\Flagged is cleared first, as the bench's reset leaves them, else a second
round would count STOREs that change nothing), every counted reset clears flags that are
set, and the sessions a LOGOUT round ends are opened first. The counted
commands of a class use other messages than its untimed round, so nothing a first FETCH of a
message leaves behind makes the counted one cheaper than in the bench.
"""

from __future__ import annotations

import argparse
import glob
import imaplib
import json
import os
import random
import subprocess
import sys
import time
from typing import Callable

SEARCHES = [
    ("UNSEEN",),
    ("FLAGGED",),
    ("FROM", '"alice"'),
    ("SUBJECT", '"quarterly"'),
    ("SINCE", "1-Jan-2025"),
    ("LARGER", "20000"),
]


LOGOUT_SESSIONS = 8  # sessions a logout round ends


def connect(port: int) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("imapbench1", "benchpass")
    return m


def check(result: tuple[str, list[object]], what: str) -> list[object]:
    typ, data = result
    if typ != "OK":
        raise SystemExit(f"{what}: {typ} {data!r}")
    return data


def uids_of(m: imaplib.IMAP4) -> list[int]:
    data = check(m.uid("SEARCH", "ALL"), "UID SEARCH ALL")
    raw = data[0]
    return [int(x) for x in raw.split()] if isinstance(raw, bytes) else []


def populate(a: argparse.Namespace) -> None:
    sys.path.insert(0, a.shared)
    import benchlib  # the shared bench's messages

    m = connect(a.port)
    have = int(check(m.select("INBOX"), "SELECT")[0] or 0)  # type: ignore[call-overload]
    m.logout()
    if have < a.messages:
        print(f"populating {a.messages - have} messages", flush=True)
        benchlib.populate_maildir(a.maildir, have, a.messages - have, "imapbench1", 42)
        deadline = time.monotonic() + 1200
        while True:
            m = connect(a.port)
            have = int(check(m.select("INBOX"), "SELECT")[0] or 0)  # type: ignore[call-overload]
            m.logout()
            if have >= a.messages or time.monotonic() > deadline:
                break
            time.sleep(1)
    m = connect(a.port)
    check(m.select("INBOX"), "SELECT")
    check(m.fetch("1:*", "(FLAGS UID RFC822.SIZE ENVELOPE)"), "FETCH 1:*")
    for crit in SEARCHES:
        check(m.search(None, *crit), "SEARCH")
    check(m.search(None, "BODY", '"zebrafish"'), "SEARCH BODY")
    m.logout()
    print(f"mailbox of {have} messages populated and read once", flush=True)


class Counter:
    """callgrind's counters of one server process, zeroed and dumped through its own vgdb
    prefix (never every callgrind run of the machine, which callgrind_control without a
    pid would address)."""

    def __init__(self, pid: int, prefix: str, out: str) -> None:
        if pid <= 0:
            raise SystemExit("no server pid")
        self.pid, self.prefix, self.out = str(pid), prefix, out

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", f"--vgdb-prefix={self.prefix}", *args, self.pid],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def zero(self) -> None:
        self._ctl("--zero")

    def dump(self) -> int:
        before = set(glob.glob(self.out + ".*"))
        self._ctl("--dump")
        deadline = time.monotonic() + 300
        while True:
            new = set(glob.glob(self.out + ".*")) - before
            for path in new:
                total = _total(path)
                if total is not None:
                    return total
            if time.monotonic() > deadline:
                raise SystemExit("callgrind wrote no dump")
            time.sleep(0.2)


def _total(path: str) -> int | None:
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    return None


Commands = Callable[[list[int]], int]
Prepare = Callable[[list[int]], None]


def classes(m: imaplib.IMAP4, port: int) -> dict[str, tuple[Commands, bool, Prepare]]:
    """The bench's command classes on session ``m``: name -> (run on these UIDs, giving the
    number of commands sent; whether it works over the whole mailbox; the untimed step
    before each round)."""

    def nothing(_us: list[int]) -> None:
        return None

    def fetch_body(us: list[int]) -> int:
        for u in us:
            check(m.uid("FETCH", str(u), "(BODY.PEEK[])"), "UID FETCH BODY.PEEK[]")
        return len(us)

    def store(us: list[int]) -> int:
        for u in us:
            check(m.uid("STORE", str(u), "+FLAGS", "(\\Flagged)"), "UID STORE")
        return len(us)

    def unflag(us: list[int]) -> None:
        check(m.uid("STORE", ",".join(map(str, us)), "-FLAGS.SILENT", "(\\Flagged)"), "unflag")

    def flag(us: list[int]) -> None:
        check(m.uid("STORE", ",".join(map(str, us)), "+FLAGS.SILENT", "(\\Flagged)"), "flag")

    def store_reset(us: list[int]) -> int:
        check(m.uid("STORE", ",".join(map(str, us)), "-FLAGS.SILENT", "(\\Flagged)"), "reset")
        return 1

    def searcher(crit: tuple[str, ...]) -> Commands:
        def go(_us: list[int]) -> int:
            check(m.search(None, *crit), "SEARCH")
            return 1

        return go

    def fetch_all(_us: list[int]) -> int:
        check(m.fetch("1:*", "(FLAGS UID RFC822.SIZE ENVELOPE)"), "FETCH 1:*")
        return 1

    def select(_us: list[int]) -> int:
        check(m.select("INBOX"), "SELECT")
        return 1

    def noop(us: list[int]) -> int:
        for _u in us:
            check(m.noop(), "NOOP")
        return len(us)

    sessions: list[imaplib.IMAP4] = []

    def open_sessions(us: list[int]) -> None:
        # Below the server's sessions per account and IP (imap.max_userip_connections,
        # 10 by default), this measuring session included.
        for _u in us[:LOGOUT_SESSIONS]:
            s = connect(port)
            check(s.select("INBOX"), "SELECT")
            sessions.append(s)

    def logout(_us: list[int]) -> int:
        n = len(sessions)
        while sessions:
            sessions.pop().logout()
        return n

    out: dict[str, tuple[Commands, bool, Prepare]] = {
        "noop": (noop, False, nothing),
        "fetch_body": (fetch_body, False, nothing),
        # The STOREs flag messages the reset then clears, as the bench's session does.
        "store": (store, False, unflag),
        "store_reset": (store_reset, False, flag),
    }
    for crit in SEARCHES:
        out["search " + " ".join(crit).replace('"', "")] = (searcher(crit), True, nothing)
    out["search_body"] = (searcher(("BODY", '"zebrafish"')), True, nothing)
    out["fetch_all"] = (fetch_all, True, nothing)
    out["select"] = (select, False, nothing)
    out["logout"] = (logout, False, open_sessions)
    return out


def session(a: argparse.Namespace) -> tuple[imaplib.IMAP4, int, list[int], list[int]]:
    """A session with INBOX selected: (it, messages, UIDs for untimed rounds, counted ones)."""
    m = connect(a.port)
    exists = int(check(m.select("INBOX"), "SELECT")[0] or 0)  # type: ignore[call-overload]
    uids = uids_of(m)
    picks = random.Random(1000).sample(uids, min(len(uids), 2 * a.count))
    return m, exists, picks[: a.count], picks[a.count :]


def measure(a: argparse.Namespace) -> None:
    counter = Counter(a.pid, a.vgdb_prefix, a.out)
    m, exists, warm, counted = session(a)
    # What the server does while no command runs (its timers), per second of wall time: a
    # command's count holds that much per second it took under valgrind, which depends on
    # the machine's load; "net" takes it out.
    counter.zero()
    t0 = time.monotonic()
    time.sleep(a.idle)
    idle = counter.dump() / (time.monotonic() - t0)
    print(
        f"server pid {a.pid}, INBOX of {exists} messages; per class {a.rounds} counted rounds "
        f"(of {a.count} commands for FETCH and STORE, of one for the others): the fewest "
        "instructions per command of a round, the median, and the fewest net of the "
        f"server's idle work ({idle:,.0f} instructions per second of wall time)",
        flush=True,
    )
    results: list[tuple[str, int, int, int, int]] = []
    chosen = classes(m, a.port)
    if a.only:
        names = [n.strip() for n in a.only.split(",")]
        unknown = [n for n in names if n not in chosen]
        if unknown:
            raise SystemExit(f"unknown classes {unknown}; known: {', '.join(chosen)}")
        chosen = {n: chosen[n] for n in names}
    for name, (commands, whole, prepare) in chosen.items():
        prepare(warm)
        commands(warm)
        per: list[tuple[int, int]] = []
        for _ in range(a.rounds):
            prepare(counted)
            counter.zero()
            t0 = time.monotonic()
            n = commands(counted)
            wall = time.monotonic() - t0
            total = counter.dump()
            per.append((total // n, int(max(0.0, total - idle * wall)) // n))
        per.sort()
        low, mid = per[0][0], per[len(per) // 2][0]
        net = min(p[1] for p in per)
        results.append((name, low, mid, net, net // exists if whole else 0))
        line = f"{name:22} {low:>13,} (median {mid:>13,}; net {net:>13,})"
        if whole:
            line += f"  net {net // exists:,} per message"
        print(line, flush=True)
    m.logout()
    searches = [r for r in results if r[0].startswith("search ")]
    if searches:
        print(
            f"{'search (the 6 keys)':22} {sum(r[1] for r in searches) // len(searches):>13,} "
            f"(net {sum(r[3] for r in searches) // len(searches):,}) on average"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"messages": exists, "count": a.count, "idle_per_s": idle, "classes": results},
                f,
                indent=1,
            )


def repeat(a: argparse.Namespace) -> None:
    """One class ``--rounds`` times (for a profile of the server: twistd --profile, py-spy)."""
    m, _exists, warm, counted = session(a)
    commands, _whole, prepare = classes(m, a.port)[a.name]
    for r in range(a.rounds):
        us = counted if r % 2 else warm
        prepare(us)
        commands(us)
    m.logout()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--shared", required=True, help="../shared/bench (benchlib.py)")
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("populate")
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--maildir", required=True)
    q = sub.add_parser("measure")
    q.add_argument("--pid", type=int, required=True)
    q.add_argument("--vgdb-prefix", required=True)
    q.add_argument("--out", required=True, help="callgrind's --callgrind-out-file")
    q.add_argument("--count", type=int, default=20)
    q.add_argument("--rounds", type=int, default=3)
    q.add_argument("--idle", type=float, default=5.0, help="seconds of idle calibration")
    q.add_argument("--json")
    q.add_argument("--only", help="comma-separated classes to count (default: all)")
    r = sub.add_parser("repeat")
    r.add_argument("name", help="a class: noop, fetch_body, store, 'search UNSEEN', ...")
    r.add_argument("--count", type=int, default=20)
    r.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    os.umask(0o022)
    {"populate": populate, "measure": measure, "repeat": repeat}[a.what](a)


if __name__ == "__main__":
    main()
