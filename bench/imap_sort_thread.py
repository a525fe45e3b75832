"""SORT and THREAD on a large folder, in-process: how long each reactor turn of them works, and
how long the ordering takes that a real server runs in a mailstore thread.

    .venv/bin/python bench/imap_sort_thread.py [N]      (default 10,000 messages)
    NOGC=1 .venv/bin/python bench/imap_sort_thread.py   (cyclic GC off: the commands' own cost)

Messages go straight into a Maildir (60 % replies, N/5 subjects), a CgIMAP4Server on a
StringTransport selects it, and each command runs with the session clock telling real time, so
the 10 ms turn budget applies; every call scheduled on the clock is one reactor turn and is
timed. The ordering (sort or threading) is timed apart: a real server runs it off the reactor
above 1,000 messages. Numbers, not pass/fail: compare runs on the same machine.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer  # noqa: E402

from cgtwist.protocols.imap import sortcmds as imap_sortcmds  # noqa: E402
from tests.protocols.test_imap_support import Client, World  # noqa: E402

COMMANDS = (
    b"SEARCH ALL",
    b"SORT (DATE) UTF-8 ALL",
    b"SORT (REVERSE SUBJECT FROM) UTF-8 ALL",
    b"SORT (DISPLAYFROM) UTF-8 ALL",
    b"THREAD REFERENCES UTF-8 ALL",
    b"THREAD ORDEREDSUBJECT UTF-8 ALL",
    b"SORT (ARRIVAL) UTF-8 BODY topic",
)


def fill(cur: str, n: int) -> None:
    rnd = random.Random(1)
    for i in range(n):
        parent = rnd.randrange(i) if i and rnd.random() < 0.6 else None
        refs = f"References: <m{parent}@x>\r\n" if parent is not None else ""
        subject = ("Re: " if parent is not None else "") + f"topic {rnd.randrange(max(1, n // 5))}"
        msg = (
            f"From: User {rnd.randrange(500)} <u{rnd.randrange(500)}@example.com>\r\n"
            f"To: t{i % 97}@example.com\r\nSubject: {subject}\r\n"
            f"Date: Mon, {1 + i % 28:02d} Mar 2026 {i % 24:02d}:{i % 60:02d}:00 +0000\r\n"
            f"Message-ID: <m{i}@x>\r\n{refs}\r\nbody {i}\r\n"
        ).encode()
        with open(os.path.join(cur, f"{1700000000 + i}.M{i}P1.host:2,"), "wb") as f:
            f.write(msg)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    if os.environ.get("NOGC"):
        gc.disable()
    world = World()
    fill(os.path.join(world.realm.account("alice@example.com").path, "cur"), n)
    clock: Any = world.clock
    clock.rightNow = time.monotonic()
    clock.seconds = time.monotonic
    turns: list[float] = []
    later = clock.callLater

    def timed_later(delay: float, fn: Any, *a: Any, **kw: Any) -> Any:
        def run(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                turns.append(time.perf_counter() - t0)

        return later(delay, run, *a, **kw)

    clock.callLater = timed_later

    ordering: list[float] = []

    def off_reactor(self: Any, count: int, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        result = fn(*args)
        ordering.append(time.perf_counter() - t0)
        return defer.succeed(result)

    imap_sortcmds.SortCommands._off_reactor = off_reactor  # type: ignore[method-assign]

    c = Client(world)
    c.login()
    t0 = time.perf_counter()
    c.select()
    print(f"{n} messages; SELECT (first scan) {time.perf_counter() - t0:.2f} s")
    for command in COMMANDS:
        turns.clear()
        ordering.clear()
        clock.rightNow = time.monotonic()
        t0 = time.perf_counter()
        out = c.send(b"a " + command + b"\r\n")
        first = time.perf_counter() - t0
        while not any(x in out for x in (b"a OK", b"a NO", b"a BAD")):
            clock.rightNow = time.monotonic()
            clock.advance(0)
            out += c.take()
        total = time.perf_counter() - t0
        work = sorted(turns) or [0.0]
        print(
            f"{command.decode():40s} total {total * 1000:5.0f} ms, {len(turns) + 1:3d} turns: "
            f"first {first * 1000:5.1f} ms, then longest {work[-1] * 1000:5.1f} ms, "
            f"median {work[len(work) // 2] * 1000:4.1f} ms (ordering {sum(ordering) * 1000:4.0f} ms "
            f"of it, off the reactor on a server); reply {len(out)} octets"
        )


if __name__ == "__main__":
    main()
