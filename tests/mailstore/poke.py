"""Another process on one account's Maildir, told what to do line by line, for the
cross-process tests (tests/mailstore/test_crossprocess.py).

``python -m tests.mailstore.poke MAILDIR`` reads commands on stdin, one a line, does each in
its own notifier (disk work inline: nothing shared with the test process but the files) and
answers one JSON line per command, flushed at once (``{"ok": ..., ...}``; an exception:
``{"error": "Type: text"}``), so the test knows the change is on disk when it reads the answer:

* ``deliver SUBJECT [FOLDER]``: LOCAL's way, no lock: a file into ``new/`` (tmp, fsync,
  rename) of INBOX or FOLDER.
* ``append SUBJECT``: IMAP APPEND into INBOX (``{"uid": n}``).
* ``flag UID FLAG`` / ``unflag UID FLAG`` / ``expunge UID``: STORE +FLAGS, STORE -FLAGS,
  and EXPUNGE, in INBOX (the name a flag change replaced is removed at once).
* ``createuse NAME ATTR...``: CREATE NAME (USE (ATTR...)).
* ``create NAME`` / ``delete NAME`` / ``rename OLD NEW`` / ``subscribe NAME``: the folder tree.
* ``uidvalidity NAME``: the folder's UIDVALIDITY (selecting it).
* ``select``: SELECT INBOX and keep it selected (a session in IDLE); answers the RECENT
  count SELECT would announce (``{"recent": n}``).
* ``recent``: that session at a command boundary: its UIDs and which of them are \\Recent
  for it (``{"uids": [...], "recent": [...]}``).
* ``pop``: take the POP3 maildrop lock and keep it (``{"ok": true}`` or ``{"in_use": true}``).
* ``room OCTETS LIMIT``: whether APPEND of OCTETS fits an account limit of LIMIT octets.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from twisted.internet import defer
from twisted.mail import imap4

from cgtwist.account_settings import QuotaLimits
from cgtwist.mailstore import MailboxNotifier, MaildirAccount, maildir, names, pop


def _result(d: Any) -> Any:
    if not isinstance(d, defer.Deferred):
        return d
    out: list[Any] = []
    d.addBoth(out.append)
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def _msg(subject: str) -> bytes:
    return f"From: poke@example.com\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n".encode()


class _Idle:
    """A selected session's listener: takes every change at once, as a client in IDLE."""

    def __init__(self, box: Any) -> None:
        self.box = box

    def viewChanged(self) -> None:
        self.box.sync()


def main(md: str) -> None:
    account = MaildirAccount(md, "a@example.com", MailboxNotifier())
    held: list[int] = []
    selected: list[Any] = []
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        op, args = words[0], words[1:]
        try:
            out: dict[str, Any] = {"ok": True}
            if op == "deliver":
                where = names.folder_path(md, args[1]) if len(args) > 1 else md
                maildir.deliver(where, _msg(args[0]), to_new=True)
                out["t"] = time.time()  # committed: for bench/watch_push.py's delays
            elif op == "append":
                box = _result(account.select("INBOX", True))
                [uid] = _result(box.folder.add([(_msg(args[0]), [], None)], origin=box))
                out["uid"] = uid
                box.close()
            elif op in ("flag", "unflag", "expunge"):
                box = _result(account.select("INBOX", True))
                uid = int(args[0])
                flag = args[1] if op != "expunge" else "\\Deleted"
                mode = -1 if op == "unflag" else 1
                _result(box.store(imap4.MessageSet(uid), [flag], mode, True))
                if op == "expunge":
                    _result(box.expunge())
                box.close()
            elif op == "create":
                _result(account.create(args[0]))
            elif op == "createuse":
                _result(account.create(args[0], use=args[1:]))
            elif op == "delete":
                _result(account.delete(args[0]))
            elif op == "rename":
                _result(account.rename(args[0], args[1]))
            elif op == "subscribe":
                _result(account.subscribe(args[0]))
            elif op == "uidvalidity":
                box = _result(account.select(args[0], False))
                out["uidvalidity"] = box.uid_validity
                box.close()
            elif op == "select":
                box = _result(account.select("INBOX", True))
                out["recent"] = box.getRecentCount()
                box.addListener(_Idle(box))
                selected.append(box)
            elif op == "recent":
                box = selected[-1]
                _result(box.refresh())
                box.sync()
                msgs = box.fetch(imap4.MessageSet(1, None), True) if box.uids else []
                out["uids"] = [m.getUID() for _, m in msgs]
                out["recent"] = [m.getUID() for _, m in msgs if "\\Recent" in m.getFlags()]
            elif op == "pop":
                try:
                    held.append(pop.acquire_lock(md))
                except pop.MailboxInUse:
                    out = {"in_use": True}
            elif op == "room":
                limits = QuotaLimits(storage=int(args[1]))
                over = _result(
                    defer.ensureDeferred(
                        account.notifier.usage.room(account.account, md, limits, int(args[0]), 1)
                    )
                )
                out["over"] = bool(over)
            else:
                out = {"error": f"unknown command {op}"}
        except Exception as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
