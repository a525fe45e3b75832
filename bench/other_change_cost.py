"""What one process's next look at a folder costs after another process changed 1 message.

    PYTHONPATH=. .venv/bin/python bench/other_change_cost.py [SIZES] [OPS] [N]
        (default: 2000,10000 store,append,expunge,deliver 200)
    PYTHONPATH=TREE valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect=functools_reduce --callgrind-out-file=OUT/cg.out \\
        .venv/bin/python bench/other_change_cost.py 2000 store 200
    then PROGRAM TOTALS of OUT/cg.out / 200: instructions per look

Two ``MaildirAccount``s on one Maildir, each with its own ``MailboxNotifier`` (so its own
``Folder``, index log position and directory times: two processes as far as the mail store
is concerned; the folder lock is an flock of a file opened anew, which two open files in one
process contend for as two processes do), disk work inline. The writer changes one message
(STORE +FLAGS of one message, APPEND of one, EXPUNGE of one, or a delivery into new/ as
LOCAL makes it, without the lock); then the reader's session looks as it does before each
IMAP command (``Folder.refresh``, which applies what changed). Only the reader's looks run
inside ``functools.reduce``, so callgrind's count is theirs alone, the same however busy the
machine. Without valgrind it prints per look the CPU time and the directory listings and
stat calls it made, for folder sizes 2,000 and 10,000: a look that costs in proportion to
the change stays flat from one size to the other, one that relists the folder grows.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from typing import Any, Callable

from twisted.internet import defer

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, maildir, provision

DATA = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: cost\r\n\r\nhello\r\n"


def _result(d: Any) -> Any:
    if not isinstance(d, defer.Deferred):
        return d
    out: list[Any] = []
    d.addBoth(out.append)
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


class _Counted:
    """os.listdir and os.stat counted (the reader's look only)."""

    def __init__(self) -> None:
        self.on = False
        self.listdir = 0
        self.listed = 0
        self.stat = 0
        self._listdir, self._stat = os.listdir, os.stat

    def install(self) -> None:
        def listdir(p: Any = ".") -> list[str]:
            out = self._listdir(p)
            if self.on:
                self.listdir += 1
                self.listed += len(out)
            return out

        def stat(*a: Any, **kw: Any) -> os.stat_result:
            if self.on:
                self.stat += 1
            return self._stat(*a, **kw)

        os.listdir = listdir  # type: ignore[assignment]
        os.stat = stat  # type: ignore[assignment]


class _Session:
    """A selected session's listener, as an IMAP session in IDLE: takes changes at once."""

    def __init__(self, box: Any) -> None:
        self.box = box

    def viewChanged(self) -> None:
        self.box.sync()


def run(size: int, op: str, n: int, counted: _Counted) -> dict[str, float]:
    md = os.path.join(tempfile.mkdtemp(prefix="other-cost-"), "Maildir")
    provision(md)
    for _ in range(size + n):
        maildir.deliver(md, DATA, to_new=True)
    writer = MaildirAccount(md, "a@example.com", MailboxNotifier())
    reader = MaildirAccount(md, "a@example.com", MailboxNotifier())
    wbox = _result(writer.select("INBOX", True))
    wbox.addListener(_Session(wbox))  # selected read-write: takes the folder's \Recent
    rbox = _result(reader.select("INBOX", True))
    rbox.addListener(_Session(rbox))
    # Both caught up, their index written.
    _result(wbox.folder.refresh(force=True))
    _result(rbox.folder.refresh(force=True))
    wfolder, rfolder = wbox.folder, rbox.folder
    uids = list(wfolder.uids)
    step = [0]

    def change() -> None:
        i = step[0]
        step[0] += 1
        if op == "store":
            uid = uids[i % len(uids)]
            _result(wfolder.set_flags([uid], ["\\Flagged"], 1 if (i // len(uids)) % 2 == 0 else -1))
        elif op == "append":
            _result(wfolder.add([(DATA, [], None)], origin=wbox))
        elif op == "expunge":
            _result(wfolder.expunge([uids[i]], origin=wbox))
        elif op == "deliver":
            maildir.deliver(md, DATA, to_new=True)
        else:
            raise SystemExit(f"unknown op {op}")

    def look(acc: int, _i: int) -> int:
        counted.on = True
        _result(rfolder.refresh(origin=rbox))
        rbox.sync()
        counted.on = False
        return acc + 1

    def once(fn: Callable[[], None]) -> None:
        change()
        # Past the window in which a directory time is too fresh to vouch for a listing
        # (scan._MTIME_TRUST), as between two commands of a client: not a look at its edge.
        time.sleep(0.06)
        fn()

    # Warm-up (not counted): the first of each kind pays for imports and caches.
    for _ in range(3):
        once(lambda: look(0, 0))
    counted.listdir = counted.listed = counted.stat = 0
    cpu = 0.0
    for _ in range(n):
        change()
        time.sleep(0.06)
        t = time.process_time()
        functools.reduce(look, range(1), 0)
        cpu += time.process_time() - t
    if op == "deliver":  # the writer never looked: the reader found every delivery
        assert len(rfolder.uids) == len(uids) + n + 3, "the reader missed a delivery"
    else:
        assert rfolder.uids == wfolder.uids, "the reader is not in step with the writer"
    return {
        "us": 1e6 * cpu / n,
        "listdir": counted.listdir / n,
        "listed": counted.listed / n,
        "stat": counted.stat / n,
    }


def main() -> None:
    sizes = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "2000,10000").split(",")]
    ops = (sys.argv[2] if len(sys.argv) > 2 else "store,append,expunge,deliver").split(",")
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    counted = _Counted()
    counted.install()
    print(f"load {open('/proc/loadavg').read().strip()}")
    print(
        f"{'messages':>8} {'change':>8} {'cpu us/look':>12} {'listdir':>8} {'names':>8} {'stat':>6}"
    )
    for size in sizes:
        for op in ops:
            r = run(size, op, n, counted)
            print(
                f"{size:>8} {op:>8} {r['us']:>12.0f} {r['listdir']:>8.2f} "
                f"{r['listed']:>8.0f} {r['stat']:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
