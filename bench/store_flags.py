"""Time 100 sequential UID STOREs through a real cgtwist IMAP server, tree against tree.

Usage: .venv/bin/python bench/store_flags.py TREE [TREE ...] [--runs 3] [--rounds 5]

Each TREE is a cgtwist source tree (e.g. ``git archive <commit> | tar -x -C /tmp/old``); its
own tests/e2e/harness.py starts ``twistd cgtwist`` with PYTHONPATH at that tree, DNS on
loopback. Runs alternate between the trees; each run starts a server, fills INBOX with 200
messages, SELECTs it, then times ``rounds`` x 100 single-message ``UID STORE +FLAGS`` (one
client, one command at a time, as the shared imap-bench's store phase) and prints the mean.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

ONE = r"""
import imaplib, os, ssl, sys, tempfile, time
tree, rounds = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, tree)
from tests.e2e.harness import ALL_LISTENERS, Server
srv = Server(os.path.join(tempfile.mkdtemp(prefix="store-flags-bench-"), "base"))
srv.set_listeners(ALL_LISTENERS)
with srv.running():
    srv.admin("account", "add", "bench@example.test", "--password", "bench-secret")
    ctx = ssl.create_default_context(cafile=os.path.join(srv.base, "tls", "cert.pem"))
    m = imaplib.IMAP4_SSL("localhost", srv.port("imap", tls="implicit"), ssl_context=ctx, timeout=60)
    m.login("bench@example.test", "bench-secret")
    md = srv.maildir("bench")
    for i in range(200):
        p = os.path.join(md, "tmp", f"k{i}.bench")
        with open(p, "wb") as f:
            f.write(f"From: a@x.test\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode())
        os.rename(p, os.path.join(md, "new", f"k{i}.bench"))
    assert int(m.select("INBOX")[1][0]) == 200
    uids = m.uid("SEARCH", None, "ALL")[1][0].split()[:100]
    for r in range(rounds):
        flag = "\\Flagged" if r % 2 == 0 else "\\Seen"
        t0 = time.perf_counter()
        for u in uids:
            assert m.uid("STORE", u, "+FLAGS", f"({flag})")[0] == "OK"
        print(time.perf_counter() - t0, flush=True)
        m.uid("STORE", b"1:*", "-FLAGS.SILENT", f"({flag})")
    m.logout()
"""


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    results: dict[str, list[float]] = {t: [] for t in a.trees}
    for run in range(a.runs):
        for tree in a.trees:
            out = subprocess.run(
                [sys.executable, "-c", ONE, os.path.abspath(tree), str(a.rounds)],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            ).stdout
            times = [float(x) for x in out.split()]
            results[tree] += times
            print(
                f"run {run} {tree}: mean {statistics.mean(times) * 1000:.1f} ms per 100 STOREs",
                flush=True,
            )
    for tree, times in results.items():
        print(
            f"{tree}: mean {statistics.mean(times) * 1000:.1f} ms, median {statistics.median(times) * 1000:.1f} ms "
            f"per 100 STOREs ({100 / statistics.mean(times):.0f} STORE/s)"
        )


if __name__ == "__main__":
    main()
