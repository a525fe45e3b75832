"""A domain of many accounts, made quickly through the store's own add_account.

    PYTHONPATH=. .venv/bin/python bench/webadmin_accounts.py DOMAIN COUNT [--concurrency 8]

For bench/webadmin-latency.sh: creates DOMAIN (unless it exists) and the accounts
``user000001``..``user<COUNT>`` in the store that $CGTWIST_CONFIG names, each with a real name
out of a small list of first and last names (so that a search finds some, as a real directory
would). Every account goes through ``AccountStore.add_account`` (the same name checks,
transaction and row as ``cgtwist-admin account add``), not 100,000 CLI processes and not SQL
of its own. The password is hashed once (argon2id, as the server hashes) and that hash is given
to every account (``password_hash``): 100,000 argon2id hashes would take an hour of CPU and
measure nothing the page shows. Run it before the server starts (or while it runs: the store
announces each change). Each account is its own transaction, committed to disk as the
server commits (SQLite synchronous=FULL): about 2-4 ms each here, so 100,000 take minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from cgtwist.config import load  # noqa: E402
from cgtwist.storage.passwords import PasswordHasher  # noqa: E402
from cgtwist.storage.store import open_store  # noqa: E402

FIRST = "Anna Ben Clara David Emma Felix Greta Hugo Ida Jonas Karin Lars Mia Nils Olga Paul".split()
LAST = (
    "Meyer Schmidt Novak Dubois Rossi Silva Jensen Kowalski Moreau Fischer Costa Weber "
    "Lindqvist Horvat Petrov Ortega Keller Brandt Vogel Sauer Wolff Haas Roth Frank"
).split()
PASSWORD = "bench-account-secret"


def real_name(i: int) -> str:
    """A deterministic real name: every FIRST x LAST pair recurs, so a last name matches
    1/len(LAST) of the domain and a first-and-last name 1/(len(FIRST)*len(LAST))."""
    return f"{FIRST[i % len(FIRST)]} {LAST[(i // len(FIRST)) % len(LAST)]}"


def account_name(i: int) -> str:
    return f"user{i:06d}"


async def populate(reactor: Any, domain: str, count: int, concurrency: int) -> None:
    config = load()
    hasher = PasswordHasher(reactor)
    # One connection: SQLite takes one writer at a time, and writers on two connections of
    # this pool would wait on each other's lock (and give up after the busy timeout).
    store = await open_store(config.database_url, config.main_domain, reactor, 1, 1, hasher)
    try:
        if await store.get_domain(domain) is None:
            await store.add_domain(domain)
        phc = await hasher.hash(PASSWORD)  # once: see the module docstring
        t0 = time.monotonic()
        sem = defer.DeferredSemaphore(concurrency)

        async def add(i: int) -> None:
            await store.add_account(
                account_name(i), domain, real_name=real_name(i), password_hash=phc
            )

        done = 0
        step = 5000
        for start in range(1, count + 1, step):
            stop = min(count + 1, start + step)
            await defer.gatherResults(
                [
                    sem.run(lambda i=i: defer.Deferred.fromCoroutine(add(i)))
                    for i in range(start, stop)
                ],
                consumeErrors=True,
            )
            done = stop - 1
            print(
                f"  {done} accounts in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True
            )
        print(f"{count} accounts in {domain} in {time.monotonic() - t0:.1f} s", flush=True)
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("domain")
    ap.add_argument("count", type=int)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    task.react(
        lambda reactor: defer.Deferred.fromCoroutine(
            populate(reactor, args.domain, args.count, args.concurrency)
        )
    )


if __name__ == "__main__":
    main()
