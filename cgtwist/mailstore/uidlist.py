"""The persistent UID list and metadata cache kept beside each Maildir folder.

``cgtwist-uidlist`` (like ``dovecot-uidlist``) maps Maildir base names to IMAP UIDs and holds
UIDVALIDITY and UIDNEXT; it is written atomically (tmp, fsync, rename, fsync dir) before any UID
reaches a client, so UIDs are stable across restarts and never reused (RFC 3501 §2.3.1.1).
``cgtwist-cache`` held sizes, dates and parsed headers before the index (``index.py``) took
them over; it is still read once to fill a folder's new index without re-reading its messages.
The uidlist also holds the MODSEQ reservation (``M``; see ``index.ModseqAllocator``) and the
first recent UID (``R``, as Dovecot's index header ``first_recent_uid``): every message from it
up is \\Recent for the next read-write session in any process to claim it (RFC 3501 §2.3.2).
Blocking; callers use threads.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Iterable, Optional
from urllib.parse import quote, unquote

from cgtwist.mailstore import maildir
from cgtwist.mailstore.filemeta import Meta

UIDLIST_FILE = "cgtwist-uidlist"
CACHE_FILE = "cgtwist-cache"
DOVECOT_UIDLIST = "dovecot-uidlist"
_MAGIC = "cgtwist-uidlist 1"
_MAX_UID = 0xFFFFFFFF  # RFC 3501 §2.3.1.1: nz-number is 32-bit
Stamp = tuple[int, int, int, int]  # (device, inode, size, mtime) of the file


@dataclass
class UidList:
    """UIDVALIDITY, UIDNEXT and key -> UID for one folder."""

    uidvalidity: int
    uidnext: int = 1
    uids: dict[str, int] = field(default_factory=dict)
    # MODSEQ values up to this one may have been handed out (index.ModseqAllocator): kept
    # here, in the file that is fsynced before a UID or MODSEQ reaches a client.
    modseq_reserved: int = 0
    # RFC 3501 §2.3.2 across processes: messages from this UID up are \Recent and no
    # session has claimed them yet; a claim (under the folder's flock) moves it to UIDNEXT.
    # A file without it (older versions, Dovecot's) has nothing recent: UIDNEXT.
    first_recent: int = 1
    # The file as this object was read from or written to (``stamp``): another stamp on
    # disk means another process saved it since.
    stamp: Optional[Stamp] = field(default=None, compare=False)

    def assign(self, key: str) -> int:
        uid = self.uidnext
        if uid > _MAX_UID:
            raise OverflowError("UID space exhausted; the folder needs a new UIDVALIDITY")
        self.uids[key] = uid
        self.uidnext = uid + 1
        return uid


def load(folder: str) -> Optional[UidList]:
    """Read ``cgtwist-uidlist`` of ``folder``; None when missing or unreadable (then rebuild)."""
    try:
        with open(os.path.join(folder, UIDLIST_FILE), encoding="ascii") as f:
            st = os.fstat(f.fileno())
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        head = lines[0].split(" ")
        if " ".join(head[:2]) != _MAGIC:
            return None
        fields = {h[0]: int(h[1:]) for h in head[2:] if h}
        ul = UidList(
            uidvalidity=fields["V"],
            uidnext=fields["N"],
            modseq_reserved=fields.get("M", 0),
            first_recent=fields.get("R", fields["N"]),
            stamp=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
        )
        if not (0 < ul.uidvalidity <= _MAX_UID and ul.uidnext >= 1 and ul.modseq_reserved >= 0):
            return None
        ul.first_recent = min(max(ul.first_recent, 1), ul.uidnext)
        used: set[int] = set()
        for line in lines[1:]:
            if not line:
                continue
            uid_s, _, key = line.partition(" ")
            uid = int(uid_s)
            if not key or uid <= 0 or uid >= ul.uidnext or uid in used:
                return None  # a UID twice or beyond UIDNEXT: cannot be trusted, rebuild
            used.add(uid)
            ul.uids[unquote(key)] = uid
    except (ValueError, KeyError, IndexError):
        return None
    return ul


def moved_on(
    folder: str, ul: UidList, added: dict[str, int], gone: Iterable[str]
) -> Optional[UidList]:
    """(locked) The folder's uidlist as another process saved it, from its first line and
    what that process logged (``added`` key -> UID, ``gone`` keys) applied to ``ul`` (the
    list as this process last had it): reads one line, not one per message. None, and the
    caller reads the whole file (``load``), unless the result lists exactly as many UIDs
    with the same sum as the file says (``C``, ``S``: a change the log lacks, a writer
    killed between its uidlist and its log line, shows there) under the same UIDVALIDITY."""
    try:
        with open(os.path.join(folder, UIDLIST_FILE), encoding="ascii") as f:
            st = os.fstat(f.fileno())
            head = f.readline().rstrip("\n").split(" ")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        if " ".join(head[:2]) != _MAGIC:
            return None
        fields = {h[0]: int(h[1:]) for h in head[2:] if h}
        if fields["V"] != ul.uidvalidity:
            return None
        uids = dict(ul.uids)
        for key in gone:
            uids.pop(key, None)
        for key, uid in added.items():
            if uids.setdefault(key, uid) != uid:
                return None
        out = UidList(
            uidvalidity=fields["V"],
            uidnext=fields["N"],
            uids=uids,
            modseq_reserved=fields.get("M", 0),
            first_recent=fields.get("R", fields["N"]),
            stamp=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
        )
        if fields["C"] != len(uids) or fields["S"] != sum(uids.values()):
            return None
        if max(added.values(), default=0) >= out.uidnext:
            return None
    except (ValueError, KeyError, IndexError):
        return None
    out.first_recent = min(max(out.first_recent, 1), out.uidnext)
    return out


def load_dovecot(folder: str) -> Optional[UidList]:
    """Adopt Dovecot's ``dovecot-uidlist`` (version 3: ``3 V<validity> N<next> ...`` then
    ``<uid> [fields] :<file name>``) so a Maildir moved from Dovecot keeps its UIDs.

    Only used when cgtwist never indexed the folder (no uidlist and no cache of ours), so
    UIDs assigned by cgtwist can never be handed out again. None when absent or malformed.
    """
    try:
        with open(os.path.join(folder, DOVECOT_UIDLIST), encoding="utf-8", errors="strict") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        head = lines[0].split(" ")
        if head[0] != "3":
            return None
        fields = {h[0]: h[1:] for h in head[1:] if h}
        ul = UidList(uidvalidity=int(fields["V"]), uidnext=int(fields["N"]))
        ul.first_recent = ul.uidnext
        if not (0 < ul.uidvalidity <= _MAX_UID and ul.uidnext >= 1):
            return None
        for line in lines[1:]:
            if not line:
                continue
            uid_s, _, rest = line.partition(" ")
            _ext, colon, fname = rest.partition(":")
            uid = int(uid_s)
            if not colon or not fname or uid <= 0 or uid >= ul.uidnext:
                return None
            ul.uids[maildir.split_name(fname)[0]] = uid
    except (ValueError, KeyError, IndexError):
        return None
    return ul


def stamp(folder: str) -> Optional[Stamp]:
    """The uidlist file's identity (device, inode, size, mtime): ``save`` replaces the file,
    so another process's save shows as another stamp; None when there is none."""
    try:
        st = os.stat(os.path.join(folder, UIDLIST_FILE))
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def save(folder: str, ul: UidList) -> None:
    """Durably replace the folder's uidlist."""
    out = [
        f"{_MAGIC} V{ul.uidvalidity} N{ul.uidnext}"
        + (f" M{ul.modseq_reserved}" if ul.modseq_reserved else "")
        + (f" R{ul.first_recent}" if ul.first_recent != ul.uidnext else "")
        # How many UIDs the file lists and their sum: what a process that followed the
        # changes in the index log must hold to skip reading the rest (``moved_on``).
        + f" C{len(ul.uids)} S{sum(ul.uids.values())}"
    ]
    out.extend(f"{uid} {_quoted(key)}" for key, uid in sorted(ul.uids.items(), key=itemgetter(1)))
    maildir.write_atomic(
        os.path.join(folder, UIDLIST_FILE), ("\n".join(out) + "\n").encode("ascii")
    )
    ul.stamp = stamp(folder)


# What quote(key, safe=",=") leaves alone: Maildir keys as cgtwist, Dovecot and most
# deliverers make them. A save writes every key, and quote() of each one cost most of an
# APPEND's instructions in a folder of some thousand messages.
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9_.~,=-]")


def _quoted(key: str) -> str:
    return quote(key, safe=",=") if _NEEDS_QUOTING.search(key) else key


def load_cache(folder: str) -> tuple[dict[str, Meta], int]:
    """Read the metadata cache and the UIDVALIDITY it was written under (0 if unknown);
    damaged entries are dropped (recomputed later). The UIDVALIDITY lets a rebuilt uidlist
    pick a strictly larger one even within the same second."""
    try:
        with open(os.path.join(folder, CACHE_FILE), "rb") as f:
            raw = json.loads(f.read())
        if not isinstance(raw, dict) or raw.get("v") != 1:
            return {}, 0
        uv = raw.get("uv", 0)
        out: dict[str, Meta] = {}
        for key, v in raw.get("m", {}).items():
            try:
                out[key] = Meta.from_json(v)
            except (ValueError, TypeError):
                continue
        return out, uv if isinstance(uv, int) else 0
    except (OSError, ValueError):
        return {}, 0


def save_cache(folder: str, metas: dict[str, Meta], uidvalidity: int) -> None:
    data = json.dumps(
        {"v": 1, "uv": uidvalidity, "m": {k: m.to_json() for k, m in metas.items()}},
        separators=(",", ":"),
    )
    try:
        if os.path.isdir(folder):
            maildir.write_atomic(os.path.join(folder, CACHE_FILE), data.encode("utf-8"), sync=False)
    except OSError:
        pass  # a cache: losing it costs a re-parse only
