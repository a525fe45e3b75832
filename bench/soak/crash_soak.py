"""Crash soak: random ``kill -9`` of a cgtwist server (and of its SMTP workers) under SMTP load.

    .venv/bin/python bench/soak/crash_soak.py [--kills 20] [--workers 2] [--kill-workers]
        [--clients 4] [--max-messages 20000] [--max-seconds 900] [--seed N] [--keep]

Not part of CI: it takes minutes and its figures are the point. A real ``twistd cgtwist``
(started as the e2e harness does, with its own loopback DNS server, on one fixed SMTP port on
127.0.0.1) receives mail for one account from ``--clients`` smtplib clients. Each message
carries a unique ``X-Soak-Id`` header; a client records the id once the server's 250 to the
final dot came back, and only then. Between kills the load runs for a random 0.3-3 s; then
the server is killed with SIGKILL (with ``--workers N --kill-workers``, half of the kills hit
one running worker instead, which the server restarts itself) and restarted at once; the
clients keep trying through the outage. At the end the load stops, the queue is allowed to
drain, and the Maildir is read:

- missing: acknowledged ids never delivered (must be 0: a 250 is a promise);
- duplicates: deliveries beyond the first of an id (at-least-once allows them; fewer is better);
- corrupt: files quarantined in ``Queue/corrupt/``;

printed per kill (each acknowledged id is charged to the kill that ended the stretch of load
it was acknowledged in; the files that appeared in Queue/corrupt/ by the restart after that
kill) and in total, with duplicates per kill. Exit status 1 if anything is missing or the
queue did not drain.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from tests.e2e.harness import Server, wait_for  # noqa: E402  (after the path is set)

ID_HEADER = re.compile(rb"^X-Soak-Id: ([0-9a-f]{32})", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Load:
    """Clients sending until stopped or the message budget is spent; acks per epoch."""

    def __init__(self, port: int, clients: int, max_messages: int) -> None:
        self.port = port
        self.max_messages = max_messages
        self.epoch = 0  # the number of kills so far: which stretch of load an ack belongs to
        self.acked: dict[str, int] = {}  # id -> epoch of its 250
        self.attempts = 0
        self.refused = 0  # connections refused or cut (the server was down or died)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)
        ]
        for t in self.threads:
            t.start()

    def _next(self) -> Optional[str]:
        with self.lock:
            if self.stopping.is_set() or self.attempts >= self.max_messages:
                return None
            self.attempts += 1
            return uuid.uuid4().hex

    def _run(self, n: int) -> None:
        body = b"x" * 1500
        while not self.stopping.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
                    while True:
                        msg_id = self._next()
                        if msg_id is None:
                            return
                        data = (
                            f"From: soak{n}@elsewhere.test\r\nTo: alice@example.test\r\n"
                            f"Subject: soak {msg_id}\r\nX-Soak-Id: {msg_id}\r\n\r\n"
                        ).encode()
                        s.sendmail(
                            f"soak{n}@elsewhere.test", ["alice@example.test"], data + body + b"\r\n"
                        )
                        with self.lock:  # the 250 to the final dot came back
                            self.acked[msg_id] = self.epoch
            except (OSError, smtplib.SMTPException):
                with self.lock:
                    self.refused += 1
                if self.stopping.wait(0.05):
                    return

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)


def worker_pids(server: Server) -> list[int]:
    """Live (not zombie) children of the server running cgtwist.smtpworker.child, from /proc (the
    server's log rotates at 1 MB under this load, so its 'started' lines cannot be relied on)."""
    if server.proc is None:
        return []
    parent = server.proc.pid
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == parent and b"cgtwist.smtpworker.child" in cmd:
            pids.append(int(name))
    return pids


def alive(pid: int) -> bool:
    """Running and not a zombie (a killed server's workers are reparented and reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def corrupt_files(server: Server) -> list[str]:
    d = os.path.join(server.base, "Queue", "corrupt")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def queued(server: Server) -> int:
    n = 0
    for sub in ("Queue", os.path.join("Queue", "incoming")):
        d = os.path.join(server.base, sub)
        if os.path.isdir(d):
            n += sum(1 for name in os.listdir(d) if name.endswith(".msg"))
    return n


def delivered(server: Server) -> Counter[str]:
    """X-Soak-Id -> number of copies in alice's Maildir (new/ and cur/)."""
    out: Counter[str] = Counter()
    md = server.maildir("alice")
    for sub in ("new", "cur"):
        d = os.path.join(md, sub)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            try:
                with open(os.path.join(d, name), "rb") as f:
                    m = ID_HEADER.search(f.read(4096))
            except FileNotFoundError:
                continue
            if m:
                out[m.group(1).decode()] += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--workers", type=int, default=0, help="smtp.workers (0: the server receives)")
    ap.add_argument(
        "--kill-workers",
        action="store_true",
        help="with --workers: half of the kills hit a worker instead of the server",
    )
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--max-messages", type=int, default=20000, help="messages tried in all")
    ap.add_argument("--max-seconds", type=float, default=900, help="bound on the kill phase")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the base directory")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rnd = random.Random(seed)
    top = tempfile.mkdtemp(prefix="cgtwist-soak-")
    server = Server(os.path.join(top, "base"))
    port = free_port()
    server.set_listeners(
        [{"protocol": "smtp", "address": "127.0.0.1", "port": port, "tls": "starttls"}]
    )
    server.admin("settings", "set", "smtp.workers", str(args.workers))
    server.admin("account", "add", "alice@example.test", "--password", "alice-soak-secret")
    print(
        f"soak: seed {seed}, {args.kills} kills, smtp.workers {args.workers}"
        f"{' (workers killed too)' if args.kill_workers else ''}, {args.clients} clients, "
        f"base {server.base}",
        flush=True,
    )
    server.start()
    if args.workers:
        wait_for(lambda: len(worker_pids(server)) == args.workers, 60, "the workers")
    load = Load(port, args.clients, args.max_messages)
    kills: list[tuple[str, int]] = []  # (target, corrupt files found after its restart)
    t0 = time.monotonic()
    ok = False
    try:
        for i in range(args.kills):
            if time.monotonic() - t0 > args.max_seconds or load.attempts >= args.max_messages:
                print(f"soak: bound reached after {i} kills", flush=True)
                break
            before = len(load.acked)
            wait_for(lambda b=before: len(load.acked) > b, 120, "the load to get through")
            time.sleep(rnd.uniform(0.3, 3.0))  # a random moment to kill at, not a wait for a state
            live = worker_pids(server)
            if args.kill_workers and live and rnd.random() < 0.5:
                pid = rnd.choice(live)
                with load.lock:
                    os.kill(pid, signal.SIGKILL)
                    load.epoch += 1
                target = f"worker {pid}"
                wait_for(
                    lambda p=pid: (
                        p not in worker_pids(server) and len(worker_pids(server)) == args.workers
                    ),
                    120,
                    "the worker's successor",
                )
            else:
                with load.lock:
                    server.kill()
                    load.epoch += 1
                target = "server"
                wait_for(
                    lambda gone=live: not [p for p in gone if alive(p)],
                    60,
                    "the workers to follow the server",
                )
                server.start(ready_timeout=120)
                if args.workers:
                    wait_for(lambda: len(worker_pids(server)) == args.workers, 120, "the workers")
            kills.append((target, len(corrupt_files(server))))
            print(
                f"soak: kill {i + 1}: {target}; {len(load.acked)} acknowledged so far", flush=True
            )
    except BaseException:
        load.stop()
        server.close()
        print(f"soak: base directory kept: {server.base}")
        raise
    load.stop()
    try:
        drained = True
        try:
            wait_for(lambda: queued(server) == 0, 300, "the queue to drain")
        except AssertionError:
            drained = False
        copies = delivered(server)
        by_epoch: dict[int, list[str]] = {}
        for msg_id, epoch in load.acked.items():
            by_epoch.setdefault(epoch, []).append(msg_id)
        print(
            f"\n{'kill':>4} {'target':<16} {'acked':>6} {'missing':>7} {'dupes':>6} {'corrupt':>7}"
        )
        corrupt_before = 0
        total_missing = total_dupes = 0
        for epoch in range(len(kills) + 1):
            ids = by_epoch.get(epoch, [])
            missing = sum(1 for m in ids if copies[m] == 0)
            dupes = sum(copies[m] - 1 for m in ids if copies[m] > 1)
            total_missing += missing
            total_dupes += dupes
            if epoch < len(kills):
                target, corrupt_after = kills[epoch]
                label, corrupt = target, corrupt_after - corrupt_before
                corrupt_before = corrupt_after
            else:
                label, corrupt = "(after the last)", len(corrupt_files(server)) - corrupt_before
            print(
                f"{epoch + 1 if epoch < len(kills) else '-':>4} {label:<16} {len(ids):>6} "
                f"{missing:>7} {dupes:>6} {corrupt:>7}"
            )
        unacked = sum(1 for m in copies if m not in load.acked)
        n = max(1, len(kills))
        print(
            f"\nsoak: {len(kills)} kills in {time.monotonic() - t0:.0f}s; {load.attempts} messages "
            f"tried, {len(load.acked)} acknowledged, {unacked} delivered without an ack "
            f"(cut before the 250: allowed)"
        )
        print(
            f"soak: missing {total_missing}, duplicates {total_dupes} ({total_dupes / n:.2f} "
            f"per kill), corrupt {len(corrupt_files(server))}, queue drained: {drained}"
        )
        ok = total_missing == 0 and drained
    finally:
        server.stop()
        server.close()
        if args.keep or not ok:
            print(f"soak: base directory kept: {server.base}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
