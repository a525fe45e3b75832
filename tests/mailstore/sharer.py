"""A process changing one shared Maildir folder, for tests/mailstore/test_multiprocess.py.

``python -m tests.mailstore.sharer MAILDIR NAME COUNT`` selects INBOX in its own notifier
(disk work inline: nothing shared with any other process but the files) and makes COUNT
rounds (0: until killed) of: APPEND a message, toggle \\Flagged on a message, and every
fourth round EXPUNGE one of its own. Each change is printed as a JSON line, flushed at once
(``{"op": ..., "uid": ..., "modseq": ...}``), so a test that kills it knows what it was told.
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import Any

from twisted.internet import defer
from twisted.mail import imap4

from cgtwist.mailstore import MailboxNotifier, MaildirAccount


def _result(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def _say(**kw: object) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def main(md: str, name: str, count: int) -> None:
    account = MaildirAccount(md, "a@example.com", MailboxNotifier())
    box = _result(account.select("INBOX", True))
    mine: list[int] = []
    rounds = itertools.count() if count == 0 else range(count)
    for i in rounds:
        data = f"From: {name}@example.com\r\nSubject: {name} {i}\r\n\r\nbody\r\n".encode()
        [uid] = _result(box.folder.add([(data, [], None)], origin=box))
        mine.append(uid)
        _say(op="add", uid=uid, modseq=box.modseq_of(uid))
        _result(box.refresh())
        box.sync()
        # A message of either process: the newest the folder holds.
        target = max(box.uids)
        flagged = "\\Flagged" in box.flags_of(target)
        _result(box.store(imap4.MessageSet(target), ["\\Flagged"], -1 if flagged else 1, True))
        if target in box.uids:
            _say(op="store", uid=target, modseq=box.modseq_of(target))
        if i % 4 == 3 and len(mine) > 1:
            gone = mine.pop(0)
            _say(op="expunging", uid=gone)  # a kill may come before the "expunge" line
            _result(box.store(imap4.MessageSet(gone), ["\\Deleted"], 1, True))
            _result(box.expunge())
            if gone not in box.uids:
                _say(op="expunge", uid=gone, modseq=box.highest_modseq)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
