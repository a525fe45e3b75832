"""SORT and THREAD over IMAP on a 10,000-message folder: one server's timings, or the ratios.

    sort_thread_bench.py populate MAILDIR [--messages N] [--seed S]
    sort_thread_bench.py run --port P --user U --password W [--concurrency C] [--runs R]
                             [--warmup] [--json OUT]
    sort_thread_bench.py ratios DIR            (the JSON files of sort-thread-vs-dovecot.sh)

``populate`` writes the same threaded corpus into MAILDIR/new for every server (owned by
MAILDIR's owner, mtime = the Date: field): conversations of 1-40 messages whose replies carry
In-Reply-To and References, "Re:"/"RE:"/"Fwd:"/"[list]" subject prefixes and a few RFC 2047
subjects (so base-subject extraction has work to do), senders from a pool of 400 with display
names, bodies from 300 octets to 40 KB, a few messages without a Date: and replies that arrive
before the message they answer. ``run`` logs C clients in at once (one thread each, started
together), SELECTs INBOX and times each command of COMMANDS from its line to its tagged OK;
each run is one such session per client. Every SORT and THREAD answer's count of message
numbers is kept, so ``ratios`` can flag servers that did not answer the same question.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

COMMANDS = (
    b"SORT (ARRIVAL) UTF-8 ALL",
    b"SORT (DATE) UTF-8 ALL",
    b"SORT (REVERSE DATE) UTF-8 ALL",
    b"SORT (SUBJECT) UTF-8 ALL",
    b"SORT (FROM) UTF-8 ALL",
    b"SORT (SIZE) UTF-8 ALL",
    b"SORT (REVERSE ARRIVAL) UTF-8 ALL",
    b"SORT (SUBJECT DATE) UTF-8 SINCE 1-Jun-2025",
    b"UID SORT (REVERSE SIZE) UTF-8 ALL",
    b"THREAD REFERENCES UTF-8 ALL",
    b"THREAD ORDEREDSUBJECT UTF-8 ALL",
)

_WORDS = (
    "budget review release plan meeting notes server outage invoice travel offsite hiring "
    "design draft proposal minutes schedule backup migration quota report security patch "
    "holiday lunch roadmap feedback contract renewal licence audit printer network"
).split()
_FIRST = "Anna Ben Chloe David Emma Felix Grace Hugo Ines Jonas Karin Lukas Mia Noah Olga".split()
_LAST = "Muller Schmidt Dubois Rossi Garcia Smith Novak Jansen Berg Costa Weber Keller".split()


def corpus(n: int, seed: int) -> list[tuple[bytes, float]]:
    """``n`` messages (bytes with LF line ends, arrival time) in arrival order."""
    rnd = random.Random(seed)
    people = []
    for i in range(400):
        first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
        addr = f"{first.lower()}.{last.lower()}{i}@{rnd.choice(('example.com', 'example.org', 'example.net'))}"
        shape = rnd.random()
        if shape < 0.5:
            people.append(f"{first} {last} <{addr}>")
        elif shape < 0.7:
            people.append(f'"{last}, {first}" <{addr}>')
        else:
            people.append(addr)
    start = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    span = 600 * 24 * 3600  # 600 days of mail
    threads: list[dict[str, Any]] = []
    out: list[tuple[bytes, float]] = []
    for i in range(n):
        when = start + timedelta(seconds=span * i / n + rnd.randrange(3600))
        live = [t for t in threads[-300:] if t["left"] > 0]
        parent = None
        if live and rnd.random() < 0.6:
            t = rnd.choice(live)
            t["left"] -= 1
            parent = rnd.choice(t["ids"][-5:])
            refs = t["refs"][parent][-10:] + [parent]
            topic = t["subject"]
            prefix = rnd.choice(("Re: ", "Re: ", "Re: ", "RE: ", "Re: Re: ", "Fwd: ", "Re: [ops] "))
            subject = prefix + topic
        else:
            topic = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(2, 5))).capitalize()
            topic += f" #{i}"
            t = {"subject": topic, "ids": [], "refs": {}, "left": rnd.randint(0, 39)}
            threads.append(t)
            refs = []
            subject = ("[ops] " if rnd.random() < 0.2 else "") + topic
        mid = f"<st.{seed}.{i}@example.test>"
        t["ids"].append(mid)
        t["refs"][mid] = refs
        if rnd.random() < 0.05:  # an RFC 2047 subject
            subject = "=?UTF-8?Q?" + subject.replace(" ", "_").replace("?", "=3F") + "?="
        date = when
        if parent is not None and rnd.random() < 0.03:  # a reply that arrives out of order
            date = when - timedelta(hours=rnd.randint(1, 48))
        hdr = [
            f"From: {rnd.choice(people)}",
            f"To: {rnd.choice(people)}",
            f"Subject: {subject}",
            f"Message-ID: {mid}",
        ]
        if rnd.random() < 0.3:
            hdr.append(f"Cc: {rnd.choice(people)}, {rnd.choice(people)}")
        if rnd.random() > 0.01:
            hdr.append(f"Date: {format_datetime(date)}")
        if refs:
            hdr.append(f"In-Reply-To: {refs[-1]}")
            hdr.append("References: " + "\n ".join(refs))
        hdr += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"]
        size = int(300 * (40000 / 300) ** rnd.random())  # log-uniform 300 B .. 40 KB
        line = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\n"
        body = (line * (size // len(line) + 1))[:size]
        out.append((("\n".join(hdr) + "\n\n" + body).encode(), when.timestamp()))
    return out


def populate(maildir: str, n: int, seed: int) -> None:
    """The corpus into ``maildir``/new unless the Maildir already holds ``n`` messages."""
    st = os.stat(maildir)
    for sub in ("new", "cur", "tmp"):
        p = os.path.join(maildir, sub)
        os.makedirs(p, exist_ok=True)
        os.chown(p, st.st_uid, st.st_gid)
    have = len(os.listdir(os.path.join(maildir, "new"))) + len(
        os.listdir(os.path.join(maildir, "cur"))
    )
    if have == n:
        print(f"{maildir}: already {n} messages")
        return
    if have:
        sys.exit(f"{maildir} holds {have} messages, not {n}: empty it first")
    for i, (data, ts) in enumerate(corpus(n, seed)):
        name = f"{int(ts)}.M{i}P1.sortbench,S={len(data)}"
        tmp = os.path.join(maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.utime(tmp, (ts, ts))
        os.rename(tmp, os.path.join(maildir, "new", name))
    print(f"{maildir}: {n} messages written")


class Session:
    """One IMAP connection: a command and every line up to its tagged reply."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=600)
        self.file = self.sock.makefile("rb")
        self.n = 0
        greeting = self.file.readline()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"greeting {greeting!r}")

    def command(self, text: bytes) -> list[bytes]:
        self.n += 1
        tag = b"b%d" % self.n
        self.sock.sendall(tag + b" " + text + b"\r\n")
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise RuntimeError(f"connection closed during {text!r}")
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text!r}: {line!r}")
                return lines
            lines.append(line)

    def close(self) -> None:
        try:
            self.command(b"LOGOUT")
        except (OSError, RuntimeError):
            pass
        self.sock.close()


def answer_size(lines: list[bytes]) -> int:
    """How many message numbers a SORT or THREAD answer holds."""
    for line in lines:
        if line.startswith((b"* SORT", b"* THREAD")):
            return len(re.findall(rb"\d+", line))
    return -1


def one_session(a: argparse.Namespace, times: dict[str, list[float]], sizes: dict[str, int]) -> int:
    s = Session(a.host, a.port)
    s.command(b'LOGIN "%s" "%s"' % (a.user.encode(), a.password.encode()))
    exists = -1
    for line in s.command(b"SELECT INBOX"):
        m = re.match(rb"\* (\d+) EXISTS", line)
        if m:
            exists = int(m.group(1))
    for cmd in COMMANDS:
        t0 = time.perf_counter()
        lines = s.command(cmd)
        times[cmd.decode()].append(time.perf_counter() - t0)
        sizes[cmd.decode()] = answer_size(lines)
    s.close()
    return exists


def run(a: argparse.Namespace) -> None:
    times: dict[str, list[float]] = {c.decode(): [] for c in COMMANDS}
    sizes: dict[str, int] = {}
    exists: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(barrier: threading.Barrier) -> None:
        mine: dict[str, list[float]] = {c.decode(): [] for c in COMMANDS}
        mysizes: dict[str, int] = {}
        barrier.wait()
        try:
            n = one_session(a, mine, mysizes)
        except BaseException as e:  # reported after the run
            errors.append(e)
            return
        with lock:
            for k, v in mine.items():
                times[k].extend(v)
            sizes.update(mysizes)
            exists.append(n)

    runs = 1 if a.warmup else a.runs
    wall = 0.0
    for _ in range(runs):
        barrier = threading.Barrier(a.concurrency)
        threads = [threading.Thread(target=client, args=(barrier,)) for _ in range(a.concurrency)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall += time.perf_counter() - t0
        if errors:
            raise SystemExit(f"session failed: {errors[0]!r}")
    if a.warmup:
        print(f"warm-up: {len(exists)} session(s), EXISTS {sorted(set(exists))}")
        return
    result = {
        "concurrency": a.concurrency,
        "runs": runs,
        "exists": sorted(set(exists)),
        "sizes": sizes,
        "times": times,
        "wall_s": wall,
    }
    for cmd, ts in times.items():
        print(f"{cmd:45s} median {1000 * statistics.median(ts):9.1f} ms  n={len(ts)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f)


def ratios(directory: str) -> None:
    """Per command and concurrency: both servers' medians over every half, and the ratio."""
    data: dict[tuple[str, int], dict[str, Any]] = {}
    for name in sorted(os.listdir(directory)):
        m = re.match(r"sort-(cgtwist|dovecot)-c(\d+)-h\d+\.json$", name)
        if not m:
            continue
        with open(os.path.join(directory, name)) as f:
            r = json.load(f)
        slot = data.setdefault(
            (m.group(1), int(m.group(2))), {"times": {}, "sizes": {}, "exists": set()}
        )
        for cmd, ts in r["times"].items():
            slot["times"].setdefault(cmd, []).extend(ts)
        slot["sizes"].update(r["sizes"])
        slot["exists"].update(r["exists"])
    for c in sorted({c for _, c in data}):
        cg, dv = data.get(("cgtwist", c)), data.get(("dovecot", c))
        if cg is None or dv is None:
            continue
        print(
            f"\n{c} client(s); folder: cgtwist {sorted(cg['exists'])} dovecot {sorted(dv['exists'])} messages"
        )
        print(
            f"{'command':45s} {'cgtwist ms':>11s} {'dovecot ms':>11s} {'ratio':>7s}  n   answer sizes"
        )
        logs = []
        for cmd in (x.decode() for x in COMMANDS):
            a, b = cg["times"].get(cmd), dv["times"].get(cmd)
            if not a or not b:
                continue
            ma, mb = statistics.median(a), statistics.median(b)
            ratio = ma / mb if mb else float("inf")
            logs.append(ratio)
            sa, sb = cg["sizes"].get(cmd), dv["sizes"].get(cmd)
            same = "same" if sa == sb else f"DIFFER cgtwist {sa} dovecot {sb}"
            print(
                f"{cmd:45s} {1000 * ma:11.1f} {1000 * mb:11.1f} {ratio:7.2f}  {len(a):<3d} {same}"
            )
        if logs:
            geo = statistics.geometric_mean(logs)
            print(f"{'geometric mean of the ratios':45s} {'':11s} {'':11s} {geo:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("populate")
    p.add_argument("maildir")
    p.add_argument("--messages", type=int, default=10000)
    p.add_argument("--seed", type=int, default=19)
    r = sub.add_parser("run")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--password", required=True)
    r.add_argument("--concurrency", type=int, default=1)
    r.add_argument("--runs", type=int, default=2)
    r.add_argument("--warmup", action="store_true")
    r.add_argument("--json")
    q = sub.add_parser("ratios")
    q.add_argument("directory")
    a = ap.parse_args()
    if a.what == "populate":
        populate(a.maildir, a.messages, a.seed)
    elif a.what == "run":
        run(a)
    else:
        ratios(a.directory)


if __name__ == "__main__":
    main()
