"""The IMAP side of one IDLE push, in one process: what a delivery costs the reactor thread for
every session that has the folder open, and what an idling session holds.

    python bench/idle_push_cost.py [--sessions 100] [--messages 1000] [--deliveries 50]
                                   [--profile] [--memory]

``--sessions`` sessions of one account (real CgIMAP4Server objects on in-memory transports,
as tests/protocols/test_imap_support.py builds them) LOGIN, SELECT INBOX (holding
``--messages`` messages) and IDLE. Each delivery writes one message into the Maildir's new/
as an MDA would and calls the notifier's ``mailbox_changed`` (what LOCAL delivery calls); the
time runs until every session has written its ``* N EXISTS``. Disk work runs inline, so the
figure is the reactor's share plus the folder's rescan, without thread hops, SMTP or queue.
Prints the median and the worst per delivery and per session. ``--profile`` prints cProfile's
top functions over all deliveries; ``--memory`` prints the bytes tracemalloc sees per idling
session (the growth from ``--sessions`` to twice as many, divided by the sessions added).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.protocols.test_imap_support import MESSAGE, Client, World  # noqa: E402

USER = b"alice@example.com"


def idle_clients(world: World, n: int) -> list[Client]:
    out = []
    for _ in range(n):
        c = Client(world)
        c.login(USER)
        c.select()
        assert c.send(b"I1 IDLE\r\n").startswith(b"+")
        out.append(c)
    return out


def drop_into_new(world: World, n: int) -> None:
    md = world.realm.account(USER.decode()).path
    name = f"{time.time_ns()}.push{n}.bench"
    tmp = os.path.join(md, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(MESSAGE)
    os.rename(tmp, os.path.join(md, "new", name))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--deliveries", type=int, default=50)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--memory", action="store_true")
    a = ap.parse_args()
    world = World({"auth": {"max_userip_connections": 0}})
    for i in range(a.messages):
        drop_into_new(world, -i)
    if a.memory:
        tracemalloc.start(1)
    clients = idle_clients(world, a.sessions)
    if a.memory:
        gc.collect()
        first = tracemalloc.get_traced_memory()[0]
        more = idle_clients(world, a.sessions)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - first
        print(
            f"traced per idling session: {grown / a.sessions:.0f} B ({a.messages} messages in the folder)"
        )
        for c in more:
            c.close()
        tracemalloc.stop()
    for c in clients:
        c.take()
    prof = cProfile.Profile() if a.profile else None
    times = []
    for n in range(a.deliveries):
        drop_into_new(world, n)
        t = time.perf_counter()
        if prof is not None:
            prof.enable()
        world.notifier.mailbox_changed(USER.decode(), "INBOX")
        if prof is not None:
            prof.disable()
        times.append(time.perf_counter() - t)
        for c in clients:
            out = c.take()
            assert b" EXISTS" in out, out
    med, worst = statistics.median(times), max(times)
    print(
        f"{a.sessions} idling sessions, {a.messages} messages: per delivery median "
        f"{1000 * med:.2f} ms, worst {1000 * worst:.2f} ms; per session "
        f"{1e6 * med / a.sessions:.1f} us"
    )
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
