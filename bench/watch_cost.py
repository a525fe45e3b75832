"""Instructions a process spends per STORE and per APPEND with the cross-process watch on
(``MailboxNotifier.watch_other_processes``) and off: what its own changes cost it in
inotify events read and the catch-up they schedule.

    PYTHONPATH=TREE valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect=functools_reduce --dump-after=functools_reduce \\
        --callgrind-out-file=OUT/cg.out .venv/bin/python bench/watch_cost.py store|append on|off
    then (PROGRAM TOTALS of OUT/cg.out.2 - OUT/cg.out.1) / 400 per operation

As ``bench/folder_change_cost.py`` (whose figures "off" repeats): ``Folder.set_flags``
(toggling \\Flagged) or ``Folder.add`` in a folder of 1,000 messages with a session open,
disk work inline, rounds of 100 and 500 operations inside ``functools.reduce``. With the
watch on, each operation is followed by what the reactor would do next: read the inotify
descriptor (``FolderWatch``'s reader) and run the catch-up it scheduled, until nothing is
scheduled any more; the delayed confirmation of a look made within a timestamp tick is run
too. So the difference on - off is the whole price of the process's own changes waking it.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from typing import Any, Callable

from twisted.internet import defer

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, maildir, provision, watch

MESSAGES = 1000
DATA = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: cost\r\n\r\nhello\r\n"


def _result(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


class _Call:
    def __init__(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        self.fn, self.args, self.live = fn, args, True

    def active(self) -> bool:
        return self.live

    def cancel(self) -> None:
        self.live = False


class StepReactor:
    """Just enough of a reactor for FolderWatch, run by hand: readers and delayed calls are
    kept, ``settle()`` reads the descriptor and runs every call due (delays ignored)."""

    def __init__(self) -> None:
        self.readers: list[Any] = []
        self.calls: list[_Call] = []

    def addReader(self, r: Any) -> None:
        self.readers.append(r)

    def removeReader(self, r: Any) -> None:
        self.readers.remove(r)

    def callLater(self, _delay: float, fn: Callable[..., object], *args: object) -> _Call:
        c = _Call(fn, args)
        self.calls.append(c)
        return c

    def settle(self) -> None:
        for r in self.readers:
            r.doRead()
        while self.calls:
            calls, self.calls = self.calls, []
            for c in calls:
                if c.live:
                    c.live = False
                    c.fn(*c.args)
            for r in self.readers:
                r.doRead()


def main(what: str, on: str) -> None:
    md = os.path.join(tempfile.mkdtemp(prefix="watch-cost-"), "Maildir")
    provision(md)
    for _ in range(MESSAGES):
        maildir.deliver(md, DATA, to_new=True)
    notifier = MailboxNotifier()
    reactor = StepReactor()
    if on == "on":
        # The notifier's disk work stays inline; only the watch gets the hand-run reactor.
        notifier._watch = watch.FolderWatch(reactor)
    account = MaildirAccount(md, "a@example.com", notifier)
    box = _result(account.select("INBOX", True))
    folder = box.folder
    reactor.settle()
    count = [0]

    def store(acc: int, _i: int) -> int:
        uid = 1 + count[0] % MESSAGES
        count[0] += 1
        mode = 1 if (count[0] // MESSAGES) % 2 == 0 else -1
        _result(folder.set_flags([uid], ["\\Flagged"], mode, origin=box))
        reactor.settle()
        return acc + 1

    def append(acc: int, _i: int) -> int:
        _result(folder.add([(DATA, [], None)], origin=box))
        reactor.settle()
        return acc + 1

    step = store if what == "store" else append
    for n in (100, 500):
        functools.reduce(step, range(n), 0)
    if on == "on":
        assert notifier._watch is not None and notifier._watch.watched == 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
