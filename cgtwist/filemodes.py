"""File modes: tightening what already exists in the base directory to the server's umask.

Owns which existing paths hold something private (the store with its hashes, the TLS key, the
account directories whose names list the accounts, the spool) and removing the permission
bits the umask (``[server] umask``, default 0077) forbids. New files get the right mode from
the umask itself, set by the server and cgtwist-admin at start; this is for files an older
version or another tool created. Plain file work for a thread: never call it on the reactor.
It never widens a mode, follows no symlink and reads no more than the top of the tree plus
one directory entry per domain and account (not the messages).
"""

from __future__ import annotations

import os
import stat
from typing import Iterator

from cgtwist import paths

# Base-directory entries with something private in them, besides Domains/<domain>/<account>.
_PRIVATE = (
    paths.DB_FILE,
    paths.DB_FILE + "-wal",
    paths.DB_FILE + "-shm",
    paths.DB_FILE + "-journal",
    "cgtwist.ports",
    paths.TLS_DIR,
    os.path.join(paths.TLS_DIR, "cert.pem"),
    os.path.join(paths.TLS_DIR, "key.pem"),
    paths.QUEUE_DIR,
    paths.INCOMING_DIR,
    paths.CORRUPT_DIR,
    paths.FREE_DIR,
    paths.SUBMITTED_DIR,
    paths.DOMAINS_DIR,
)

Change = tuple[str, int, int]  # path, old mode, new mode


def base_paths(base_dir: str) -> Iterator[str]:
    """The base directory, its private entries, and each domain and account directory."""
    yield base_dir
    for name in _PRIVATE:
        yield os.path.join(base_dir, name)
    domains = os.path.join(base_dir, paths.DOMAINS_DIR)
    for domain in _subdirs(domains):
        yield domain
        yield from _subdirs(domain)


def _subdirs(path: str) -> Iterator[str]:
    try:
        with os.scandir(path) as it:
            entries = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    yield from sorted(entries)


def tighten(candidates: Iterator[str] | list[str], umask: int) -> list[Change]:
    """Remove the ``umask`` bits from each existing path's mode; return what changed.

    Missing paths, symlinks and paths we may not change are skipped (a file owned by root
    under a server that dropped root is left as it is, not an error)."""
    changed: list[Change] = []
    for path in candidates:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        old = stat.S_IMODE(st.st_mode)
        new = old & ~umask
        if new == old:
            continue
        try:
            os.chmod(path, new)
        except OSError:
            continue
        changed.append((path, old, new))
    return changed


def tighten_base(base_dir: str, umask: int) -> list[Change]:
    """``tighten`` over ``base_paths(base_dir)``."""
    return tighten(base_paths(base_dir), umask)


def log_paths(path: str) -> list[str]:
    """A log file and its rotated copies (``name.1``, ``name.2``, ... and dated ones)."""
    directory, name = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return [path]
    return [path] + sorted(os.path.join(directory, n) for n in names if n.startswith(name + "."))
