"""IMAP IDLE, one round against one server: memory per held connection and the push delay.

    python bench/idle_bench.py --label cgtwist-1 --port P --accounts 100 --conns 200 \
        --root-pid PID --deliver smtp:127.0.0.1:PORT --domain example.test --json out.json
    python bench/idle_bench.py --label dovecot-1 --port 1143 --accounts 100 --conns 200 \
        --root-pid "$(cat /run/dovecot/master.pid)" \
        --deliver 'maildir:/home/imapbench/accounts/idlebench{n}/Maildir' --json out.json

1. Warm-up: ``--warm`` connections (default 10; idle-vs-dovecot.sh passes one per account)
   log in, select, idle and close, and the server's process count settles back, so that what
   a server sets up once or once per account (code loaded on first use, the password
   hasher's buffers, the auth process's cache, an account's open folder) is no part of the
   per-connection figure.
2. Memory of all the server's processes (``--root-pid`` and its descendants: Dovecot's master,
   auth, login and one imap process per connection; cgtwist's twistd and its workers): the
   sum of Rss and Pss from /proc/PID/smaps_rollup, before any connection.
3. ``--conns`` connections, connection i logged in as idlebench<(i mod accounts) + 1>, INBOX
   selected, IDLE (RFC 2177) entered; at most ``--open-parallel`` logins at a time; the
   memory sum again at half of them and with all of them idling. Per connection: the growth
   over all of them / conns, and the marginal cost (the growth from half to all / the other
   half), which leaves out what the first connections set up once.
4. One delivery per account, account n at ``n * --gap`` seconds: ``maildir:`` writes a message
   into PATTERN/tmp and renames it into new/ (what an MDA such as Postfix's local(8) or
   dovecot-lda does: Dovecot notices it through inotify); ``smtp:`` sends it to the server's
   SMTP listener (cgtwist pushes on its own LOCAL delivery; it does not watch Maildirs that
   other programs write to). The delivery instant is the rename, or the moment the final "."
   of DATA is sent: cgtwist's delay therefore also holds its SMTP acceptance (spool fsync),
   queue and LOCAL delivery, work that Dovecot's delay leaves to an MDA. The SMTP acceptance
   time (to the 250 reply) is reported beside it.
5. Push delay per connection: from its account's delivery to the first ``* N EXISTS`` above
   what SELECT reported. p50/p99/max over all connections; a connection that hears nothing
   within ``--push-timeout`` counts as missed (and is no part of the percentiles).

Bounded: every step has a deadline (``--timeout`` in all), the number of connections is capped
by the caller, and every address is loopback. Prints one summary line and writes ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import statistics
import time
from typing import Any, Optional


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def memory(root: int) -> dict[str, int]:
    """Rss and Pss in kB, summed over ``root``'s process tree, and the number of processes."""
    total = {"rss_kb": 0, "pss_kb": 0, "processes": 0}
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("Rss", "Pss"):
                        total[key.lower() + "_kb"] += int(rest.split()[0])
        except OSError:  # gone meanwhile
            continue
        total["processes"] += 1
    return total


class Conn:
    """One IMAP connection: LOGIN, SELECT INBOX, IDLE, then it notes when EXISTS grows."""

    def __init__(self, index: int, account: int) -> None:
        self.index, self.account = index, account
        self.exists = 0
        self.pushed: Optional[float] = None
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def _until(self, tag: bytes) -> None:
        assert self.reader is not None
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError(f"connection {self.index} closed by the server")
            if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
                self.exists = int(line.split()[1])
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1 :].startswith(b"OK"):
                    raise ConnectionError(f"connection {self.index}: {line!r}")
                return

    async def open(self, host: str, port: int, user: str, password: str) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        greeting = await self.reader.readline()
        if not greeting.startswith(b"* OK"):
            raise ConnectionError(f"connection {self.index}: greeting {greeting!r}")
        self.writer.write(b'a1 LOGIN "%s" "%s"\r\n' % (user.encode(), password.encode()))
        await self._until(b"a1")
        self.writer.write(b"a2 SELECT INBOX\r\n")
        await self._until(b"a2")
        self.writer.write(b"a3 IDLE\r\n")
        while not (await self.reader.readline()).startswith(b"+"):
            pass

    async def watch(self) -> None:
        assert self.reader is not None
        before = self.exists
        while True:
            line = await self.reader.readline()
            if not line:
                return
            if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
                n = int(line.split()[1])
                if n > before and self.pushed is None:
                    self.pushed = time.monotonic()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


MESSAGE = (
    "From: <idle@{domain}>\r\nTo: <{to}>\r\nSubject: idle push {n}\r\n"
    "Message-ID: <idle.{stamp}.{n}@{domain}>\r\n\r\nOne delivery per account.\r\n"
)


class MaildirDelivery:
    """Writes the message into the account's Maildir/tmp and renames it into new/."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.accept_s: list[float] = []

    async def deliver(self, n: int, to: str, domain: str) -> float:
        md = self.pattern.format(n=n)
        st = os.stat(md)
        for sub in ("tmp", "new", "cur"):
            path = os.path.join(md, sub)
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)
                os.chown(path, st.st_uid, st.st_gid)
        name = f"{time.time():.6f}.idlebench{n}P{os.getpid()}.bench"
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "w") as f:
            f.write(MESSAGE.format(domain=domain, to=to, n=n, stamp=time.time_ns()))
        os.chown(tmp, st.st_uid, st.st_gid)
        t = time.monotonic()
        os.rename(tmp, os.path.join(md, "new", name))
        return t

    async def close(self) -> None:
        pass


class SmtpDelivery:
    """One SMTP session to the server; each message's instant is when its final "." is sent."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.accept_s: list[float] = []
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def _reply(self, expect: str) -> None:
        assert self.reader is not None
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("SMTP connection closed")
            if line[3:4] != b"-":
                break
        if not line.startswith(expect.encode()):
            raise ConnectionError(f"SMTP: expected {expect}, got {line!r}")

    async def _cmd(self, line: str, expect: str) -> None:
        assert self.writer is not None
        self.writer.write(line.encode() + b"\r\n")
        await self._reply(expect)

    async def deliver(self, n: int, to: str, domain: str) -> float:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            await self._reply("220")
            await self._cmd("EHLO idlebench.loopback", "250")
        await self._cmd(f"MAIL FROM:<idle@{domain}>", "250")
        await self._cmd(f"RCPT TO:<{to}>", "250")
        await self._cmd("DATA", "354")
        assert self.writer is not None
        self.writer.write(MESSAGE.format(domain=domain, to=to, n=n, stamp=time.time_ns()).encode())
        t = time.monotonic()
        self.writer.write(b".\r\n")
        await self._reply("250")
        self.accept_s.append(time.monotonic() - t)
        return t

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.write(b"QUIT\r\n")
            self.writer.close()


async def settle(root: int, before: int, until: float) -> None:
    """Wait until the warm-up's processes are gone: Dovecot's imap processes exit after their
    client left. Back at ``before`` processes, or once the count has not moved for 2 s: a
    service started on first use stays (Dovecot's stats, when the script had to start
    Dovecot), and waiting for it to go held the round until its deadline."""
    last, since = memory(root)["processes"], time.monotonic()
    while last > before and time.monotonic() < until:
        await asyncio.sleep(0.05)
        n = memory(root)["processes"]
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= 2.0:
            return


async def probe(directory: Optional[str], pid: int, deadline: float) -> None:
    """With ``--probe DIR``: ask the server's probe (bench/idle_probe) for its objects now,
    and wait until it has written them."""
    if directory is None:
        return
    had = len(os.listdir(directory))
    os.kill(pid, signal.SIGUSR2)
    while len([n for n in os.listdir(directory) if n.endswith(".json")]) <= had:
        if time.monotonic() > deadline:
            raise SystemExit("the server's probe wrote nothing (is bench/idle_probe on its path?)")
        await asyncio.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


async def run(a: argparse.Namespace) -> dict[str, Any]:
    if not ipaddress.ip_address(a.host).is_loopback:
        raise SystemExit(f"refusing non-loopback address {a.host}")
    kind, _, where = a.deliver.partition(":")
    delivery: Any
    if kind == "maildir":
        delivery = MaildirDelivery(where)
    elif kind == "smtp":
        host, _, port = where.rpartition(":")
        if not ipaddress.ip_address(host).is_loopback:
            raise SystemExit(f"refusing non-loopback address {host}")
        delivery = SmtpDelivery(host, int(port))
    else:
        raise SystemExit(f"--deliver maildir:PATTERN or smtp:HOST:PORT, not {a.deliver!r}")
    deadline = time.monotonic() + a.timeout
    gate = asyncio.Semaphore(a.open_parallel)

    async def open_one(c: Conn) -> None:
        async with gate:
            await c.open(a.host, a.port, f"{a.user}{c.account}", a.password)

    settled = memory(a.root_pid)["processes"]
    warm = [Conn(i, i % a.accounts + 1) for i in range(a.warm)]
    await asyncio.wait_for(
        asyncio.gather(*(open_one(c) for c in warm)), deadline - time.monotonic()
    )
    for c in warm:
        c.close()
    await settle(a.root_pid, settled, min(deadline, time.monotonic() + 30))
    await probe(a.probe, a.root_pid, deadline)
    before = memory(a.root_pid)
    conns = [Conn(i, i % a.accounts + 1) for i in range(a.conns)]
    half = a.conns // 2
    t_open = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(open_one(c) for c in conns[:half])), deadline - time.monotonic()
    )
    at_half = memory(a.root_pid)
    await probe(a.probe, a.root_pid, deadline)
    await asyncio.wait_for(
        asyncio.gather(*(open_one(c) for c in conns[half:])), deadline - time.monotonic()
    )
    open_s = time.monotonic() - t_open
    idling = memory(a.root_pid)
    await probe(a.probe, a.root_pid, deadline)
    watchers = [asyncio.ensure_future(c.watch()) for c in conns]
    delivered: dict[int, float] = {}
    start = time.monotonic()
    for n in range(1, a.accounts + 1):
        await asyncio.sleep(max(0.0, start + (n - 1) * a.gap - time.monotonic()))
        to = f"{a.user}{n}@{a.domain}" if kind == "smtp" else f"{a.user}{n}"
        delivered[n] = await asyncio.wait_for(
            delivery.deliver(n, to, a.domain), deadline - time.monotonic()
        )
    await delivery.close()
    push_deadline = min(deadline, time.monotonic() + a.push_timeout)
    while any(c.pushed is None for c in conns) and time.monotonic() < push_deadline:
        await asyncio.sleep(0.01)
    after = memory(a.root_pid)
    for w in watchers:
        w.cancel()
    for c in conns:
        c.close()
    delays = [1000 * (c.pushed - delivered[c.account]) for c in conns if c.pushed is not None]
    accept = [1000 * s for s in delivery.accept_s]
    return {
        "label": a.label,
        "conns": a.conns,
        "accounts": a.accounts,
        "deliver": kind,
        "gap_s": a.gap,
        "open_s": open_s,
        "memory_before": before,
        "memory_half": at_half,
        "memory_idling": idling,
        "memory_after_push": after,
        "rss_kb_per_conn": (idling["rss_kb"] - before["rss_kb"]) / a.conns,
        "pss_kb_per_conn": (idling["pss_kb"] - before["pss_kb"]) / a.conns,
        "rss_kb_marginal": (idling["rss_kb"] - at_half["rss_kb"]) / (a.conns - half),
        "pss_kb_marginal": (idling["pss_kb"] - at_half["pss_kb"]) / (a.conns - half),
        "pushed": len(delays),
        "missed": a.conns - len(delays),
        "push_ms": delays,
        "push_p50_ms": percentile(delays, 50),
        "push_p99_ms": percentile(delays, 99),
        "push_max_ms": max(delays, default=float("nan")),
        "smtp_accept_p50_ms": statistics.median(accept) if accept else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--label", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument(
        "--user", default="idlebench", help="account prefix: idlebench1 ... idlebench<accounts>"
    )
    ap.add_argument("--password", default="benchpass")
    ap.add_argument("--domain", default="example.test")
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--root-pid", type=int, required=True, help="the server's top process")
    ap.add_argument("--deliver", required=True, help="maildir:PATTERN-with-{n} or smtp:HOST:PORT")
    ap.add_argument(
        "--gap", type=float, default=0.05, help="seconds between two accounts' deliveries"
    )
    ap.add_argument(
        "--warm", type=int, default=10, help="warm-up connections, opened and closed first"
    )
    ap.add_argument("--open-parallel", type=int, default=10, help="logins in flight at once")
    ap.add_argument("--push-timeout", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=600.0, help="the whole round")
    ap.add_argument("--json")
    ap.add_argument(
        "--probe",
        metavar="DIR",
        help="the server runs bench/idle_probe: probe it before, at half and with all idling "
        "(after each memory reading, which the probe's walk would disturb)",
    )
    a = ap.parse_args()
    r = asyncio.run(run(a))
    print(
        f"{r['label']}: {r['conns']} conns of {r['accounts']} accounts opened in {r['open_s']:.1f} s; "
        f"per conn RSS {r['rss_kb_per_conn']:.0f} kB PSS {r['pss_kb_per_conn']:.0f} kB "
        f"(marginal RSS {r['rss_kb_marginal']:.0f} kB PSS {r['pss_kb_marginal']:.0f} kB); "
        f"push p50 {r['push_p50_ms']:.1f} ms p99 {r['push_p99_ms']:.1f} ms max {r['push_max_ms']:.1f} ms; "
        f"missed {r['missed']}",
        flush=True,
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
