"""An account's Maildir++ tree on disk, blocking: its first layout, folder directories made,
renamed and taken back durably, and the subscriptions file.

Owns the files of the tree that are not messages and not one folder's: which folders a new
account gets (``provision``, RFC 6154 special-use names, subscribed), the graveyard a DELETE
renames a folder into (``DELETED_PREFIX``), Dovecot's ``subscriptions`` file and the last
UIDVALIDITY handed out (``UIDVALIDITY_FILE``), the last two changed under one flock per
account (``tree_lock``) by every process that serves the account. Every
function here runs in a thread; what may be done and in what order (names, limits, special-use
attributes kept through RENAME) is ``cgtwist.mailstore.account``'s, which calls these. No
Twisted, no state.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from cgtwist.mailstore import maildir, names, specialuse
from cgtwist.mailstore.names import INBOX, MailboxNameError

SUBSCRIPTIONS_FILE = "subscriptions"
# RFC 6154 special-use folders created for every new account (name: attribute).
SPECIAL_USE = specialuse.DEFAULTS
DELETED_PREFIX = "cgtwist-deleted-"  # no leading dot: never listed as a folder


def provision(path: str) -> bool:
    """(blocking) Create the Maildir at ``path`` with the special-use folders, subscribed.

    Idempotent; True when anything was created. Used by the realm on first login. A default
    attribute held by another existing folder (its folder was renamed, or CREATE gave it to
    a new one) is left there: the default name is not made again beside it. One no folder
    holds (its folder was deleted) goes back to a re-created default folder.
    """
    created = maildir.ensure(path)
    maildir.clean_tmp(path)
    for entry in os.listdir(path):
        if entry.startswith(DELETED_PREFIX):  # a DELETE interrupted by a crash
            shutil.rmtree(os.path.join(path, entry), ignore_errors=True)
        elif entry.startswith("."):
            maildir.clean_tmp(os.path.join(path, entry))
    subs = read_subscriptions(path)
    uses = specialuse.load(path)
    defaults: set[str] = set()
    changed = False
    for name, attr in SPECIAL_USE.items():
        holder = uses.holder(attr)
        if holder not in (None, name) and maildir.is_maildir(names.folder_path(path, holder)):
            continue
        defaults.add(name)
        created = maildir.ensure(names.folder_path(path, name)) or created
        if attr not in uses.of(name):
            uses.assign(name, uses.of(name) + (attr,))
            changed = True
    if changed and specialuse.file_exists(path):  # without the file the defaults hold
        specialuse.save(path, uses.snapshot())
    if created or not os.path.exists(os.path.join(path, SUBSCRIPTIONS_FILE)):
        write_subscriptions(path, subs | {INBOX, *defaults})
    return created


def remove_new(dirs: list[str]) -> None:
    """(blocking) Take back folders a refused CREATE made: remove them, then make that
    durable, innermost first."""
    for d in reversed(dirs):
        shutil.rmtree(d, ignore_errors=True)
    if dirs:
        maildir.fsync_dir(os.path.dirname(dirs[0]))


def ensure_all(dirs: list[str]) -> None:
    """(blocking) Make each Maildir in ``dirs``, in order, durably (``maildir.ensure``)."""
    for d in dirs:
        maildir.ensure(d)


def rename_all(
    parent: str, moves: list[tuple[str, str]], done: Optional[list[tuple[str, str]]] = None
) -> None:
    """(blocking) Rename each (old, new) path within ``parent`` (Maildir++ folders are all
    entries of the account's Maildir), then fsync ``parent`` once, also when one failed, so
    the renames made are durable; ``done`` collects them."""
    made = done if done is not None else []
    try:
        for old, new in moves:
            os.rename(old, new)
            made.append((old, new))
    finally:
        if made:
            maildir.fsync_dir(parent)


def read_subscriptions(path: str) -> set[str]:
    out: set[str] = set()
    try:
        with open(os.path.join(path, SUBSCRIPTIONS_FILE), "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return out
    for raw in lines:
        if not raw or raw.startswith(b"V\t"):
            continue
        try:
            out.add(names.normalize(names.mutf7_decode(raw.strip(b"\r"), strict=False)))
        except MailboxNameError:
            continue
    return out


def write_subscriptions(path: str, subs: set[str]) -> None:
    text = "".join(names.mutf7_encode(n) + "\n" for n in sorted(subs))
    maildir.write_atomic(os.path.join(path, SUBSCRIPTIONS_FILE), text.encode("ascii"))


TREE_LOCK_FILE = "cgtwist-tree.lock"  # flock(2)ed around the account-wide files below
UIDVALIDITY_FILE = "cgtwist-uidvalidity"  # the last UIDVALIDITY any folder of the account got


@contextmanager
def tree_lock(path: str) -> Iterator[None]:
    """(thread) Hold the account-wide files of the Maildir at ``path`` (its subscriptions and
    last UIDVALIDITY) against every other thread and process: an flock(2) of
    ``TREE_LOCK_FILE``, opened anew per call (each open is its own lock owner), dropped by
    the kernel when the process dies. A Maildir that cannot hold the file is changed
    unlocked (logged by the caller's failure, if any, as before)."""
    try:
        fd: Optional[int] = os.open(
            os.path.join(path, TREE_LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
    except OSError:
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def next_uidvalidity(path: str, clock: Callable[[], float]) -> int:
    """(thread) A UIDVALIDITY for a new folder of the account at ``path``: the clock, but
    above every one any process handed to a folder of the account before (kept in
    ``UIDVALIDITY_FILE`` under ``tree_lock``, as Dovecot's ``dovecot-uidvalidity``), so a
    folder deleted and created again, in this process or another, within one second never
    gets its old UIDVALIDITY back (RFC 3501 §2.3.1.1)."""
    with tree_lock(path):
        name = os.path.join(path, UIDVALIDITY_FILE)
        try:
            with open(name, "rb") as f:
                last = int(f.read().strip() or b"0")
        except (OSError, ValueError):
            last = 0
        v = max(int(clock()), last + 1) & 0xFFFFFFFF or 1
        try:
            maildir.write_atomic(name, b"%d\n" % v)
        except OSError:
            pass  # the clock alone, as before: the folder is made all the same
        return v


def change_subscriptions(path: str, add: set[str], remove: set[str]) -> set[str]:
    """(thread) SUBSCRIBE/UNSUBSCRIBE across processes: read the subscriptions file afresh
    under ``tree_lock``, add and remove those names, write it durably; returns the set as
    written (another process's subscriptions of a moment ago included, never overwritten)."""
    with tree_lock(path):
        subs = read_subscriptions(path)
        new = (subs | add) - remove
        if new != subs:
            write_subscriptions(path, new)
        return new


def stamp(path: str, name: str) -> Optional[tuple[int, int, int]]:
    """(one stat) Identity and change time of the file ``name`` in ``path``, None when absent:
    a process's copy of it is current while this stays the same."""
    try:
        st = os.stat(os.path.join(path, name))
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
