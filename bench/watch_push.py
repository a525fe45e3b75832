"""How long another process's delivery takes to reach a session idle in this one, through
the cross-process watch (``MailboxNotifier.watch_other_processes``).

    PYTHONPATH=TREE .venv/bin/python bench/watch_push.py [--deliveries 200] [--messages 1000]

This process serves one session on INBOX (``--messages`` messages) on a real reactor, disk
work in the reactor's threads, as an IMAP worker does; another process
(``tests/mailstore/poke.py``) delivers as LOCAL does (tmp, fsync, rename into new/, no lock)
one message every 20 ms. The delay of each is from the other process's commit (its clock
after the rename) to the session's view holding the new message (its EXISTS ready to
send). Prints p50, p99 and the worst, in milliseconds. ``--same-process`` measures the push
without the watch for comparison: deliveries made in this process and announced by
``mailbox_changed``, as the server's LOCAL does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import reactor  # noqa: E402

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, maildir, provision  # noqa: E402

DATA = b"From: a@example.com\r\nSubject: warm\r\n\r\nhello\r\n"


class Timer:
    def __init__(self, box: Any) -> None:
        self.box = box
        self.seen: list[float] = []
        box.addListener(self)

    def viewChanged(self) -> None:
        up = self.box.sync(True)
        if up.exists is not None:
            now = time.time()
            while len(self.seen) < up.exists - self.base:
                self.seen.append(now)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deliveries", type=int, default=200)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument(
        "--same-process",
        action="store_true",
        help="for comparison: deliveries made here (a thread) and pushed by mailbox_changed, "
        "as the server's LOCAL does, without the watch",
    )
    a = ap.parse_args()
    md = os.path.join(tempfile.mkdtemp(prefix="watch-push-"), "Maildir")
    provision(md)
    for _ in range(a.messages):
        maildir.deliver(md, DATA, to_new=True)
    notifier = MailboxNotifier(reactor)
    if not a.same_process:
        notifier.watch_other_processes()
    account = MaildirAccount(md, "a@example.com", notifier)
    commits: list[float] = []
    state: dict[str, Any] = {}

    def deliver_here() -> None:
        for i in range(a.deliveries):
            maildir.deliver(md, DATA.replace(b"warm", b"m%d" % i), to_new=True)
            commits.append(time.time())
            reactor.callFromThread(notifier.mailbox_changed, "a@example.com", "INBOX")
            time.sleep(0.02)

    def deliver_all() -> None:
        p = subprocess.Popen(
            [sys.executable, "-m", "tests.mailstore.poke", md],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.stdin is not None and p.stdout is not None
        for i in range(a.deliveries):
            p.stdin.write(f"deliver m{i}\n")
            p.stdin.flush()
            commits.append(json.loads(p.stdout.readline())["t"])
            time.sleep(0.02)
        p.stdin.close()
        p.wait()

    def check() -> None:
        timer = state["timer"]
        if len(timer.seen) >= a.deliveries:
            reactor.stop()
        else:
            reactor.callLater(0.05, check)

    def started(box: Any) -> None:
        timer = Timer(box)
        timer.base = len(box.uids)
        state["timer"] = timer
        work = deliver_here if a.same_process else deliver_all
        threading.Thread(target=work, daemon=True).start()
        reactor.callLater(0.05, check)

    account.select("INBOX", True).addCallback(started)
    reactor.run()
    delays = sorted((s - c) * 1000 for s, c in zip(state["timer"].seen, commits, strict=False))
    q = statistics.quantiles(delays, n=100)
    who = "this process (mailbox_changed)" if a.same_process else "another process (watch)"
    print(
        f"{len(delays)} deliveries by {who}: push delay p50 {q[49]:.1f} ms, "
        f"p99 {q[98]:.1f} ms, worst {delays[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
