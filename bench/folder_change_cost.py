"""Instructions one process spends per STORE and per APPEND in a Maildir folder.

    PYTHONPATH=TREE valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect=functools_reduce --dump-after=functools_reduce \\
        --callgrind-out-file=OUT/cg.out .venv/bin/python bench/folder_change_cost.py store|append
    then (PROGRAM TOTALS of OUT/cg.out.2 - OUT/cg.out.1) / 400 per operation

Runs ``Folder.set_flags`` (toggling \\Flagged, as STORE does) or ``Folder.add`` (APPEND)
through the mailstore's own code, disk work inline, in a folder of 1,000 messages: rounds of
100 and 500 operations, each inside ``functools.reduce``, so callgrind's count of the
difference is the operations' own work, the same from run to run however busy the machine is
(system calls count as the instructions that issue them, not the kernel's). Used to check
that the cross-process folder lock and log sync cost a single process next to nothing.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from typing import Any

from twisted.internet import defer

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, maildir, provision

MESSAGES = 1000
DATA = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: cost\r\n\r\nhello\r\n"


def _result(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def main(what: str) -> None:
    md = os.path.join(tempfile.mkdtemp(prefix="folder-cost-"), "Maildir")
    provision(md)
    for _ in range(MESSAGES):
        maildir.deliver(md, DATA, to_new=True)
    account = MaildirAccount(md, "a@example.com", MailboxNotifier())
    box = _result(account.select("INBOX", True))
    folder = box.folder
    count = [0]

    def store(acc: int, _i: int) -> int:
        uid = 1 + count[0] % MESSAGES
        count[0] += 1
        mode = 1 if (count[0] // MESSAGES) % 2 == 0 else -1
        _result(folder.set_flags([uid], ["\\Flagged"], mode, origin=box))
        return acc + 1

    def append(acc: int, _i: int) -> int:
        _result(folder.add([(DATA, [], None)], origin=box))
        return acc + 1

    step = store if what == "store" else append
    for n in (100, 500):
        functools.reduce(step, range(n), 0)


if __name__ == "__main__":
    main(sys.argv[1])
