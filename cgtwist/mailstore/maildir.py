"""Blocking Maildir file operations: flags in file names, unique names, durable writes.

Owns the on-disk format (maildir(5), Maildir++ info ``:2,FLAGS``) and nothing else: no state
but the lock that serialises directory creation, no Twisted. Callers run these functions in a
thread. Writes follow maildir(5): write ``tmp/``, fsync, rename into ``new/``/``cur/``, fsync the
directory; every name made is durable (its directory fsynced, and the inode fsynced after a
link, which changes its link count) before the function returns. The one exception is
``FLAG_LOG``, a hint never needed for a message to survive (see note_renames). What a
message file says (its size as served, its cached headers) is cgtwist.mailstore.filemeta.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Optional, Union

from cgtwist import crashpoint as cp
from cgtwist.durable import DirSyncs, make_dirs, sync_filesystem, write_all

# The mailstore's directory fsync is this module's name (``maildir.fsync_dir``): its other
# modules call it through here, and tests patch it here to fail one directory's.
from cgtwist.durable import fsync_dir as fsync_dir

SUBDIRS = ("cur", "new", "tmp")

# IMAP system flag <-> Maildir info letter (maildir(5); Dovecot maps $Forwarded to P).
FLAG_TO_LETTER: Mapping[str, str] = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "$Forwarded": "P",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
LETTER_TO_FLAG: Mapping[str, str] = {v: k for k, v in FLAG_TO_LETTER.items()}
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_CANON = {f.lower(): f for f in FLAG_TO_LETTER}

KEYWORDS_FILE = "dovecot-keywords"  # Dovecot's letter a..z -> keyword map, shared format
FLAG_LOG = "cgtwist-flaglog"  # "old<TAB>new" cur/ names of flag changes whose old name may remain
MAX_KEYWORDS = 26


_counter = itertools.count()


def canonical_flag(flag: str) -> str:
    """System flags and $Forwarded are case-insensitive (RFC 3501 §2.3.2); keywords keep case."""
    return _CANON.get(flag.lower(), flag)


def split_name(fname: str) -> tuple[str, str]:
    """``key:2,FS`` -> (``key``, ``FS``); a name without info gives (name, "").

    Dovecot's non-standard fields after a further comma (``:2,FS,xyz``) are not flags.
    """
    key, sep, info = fname.partition(":")
    if sep and info.startswith("2,"):
        return key, info[2:].split(",", 1)[0]
    return key, ""


def join_name(key: str, letters: Iterable[str]) -> str:
    """The ``cur/`` file name for ``key`` with the given info letters, sorted (maildir(5))."""
    return f"{key}:2,{''.join(sorted(set(letters)))}"


def unique_key(hostname: Optional[str] = None) -> str:
    """A new unique Maildir base name: ``<secs>.M<usec>P<pid>Q<n>.<host>`` (maildir(5))."""
    now = time.time()
    host = (
        (hostname or socket.gethostname() or "localhost")
        .replace("/", "\\057")
        .replace(":", "\\072")
    )
    return f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{next(_counter)}.{host}"


# Held while directories are created and their parents fsynced, and while another thread
# checks whether they exist: a thread that finds a Maildir half a moment after another created
# it must not deliver into it (and acknowledge) before its entry in the parent is durable.
_creating = threading.Lock()


def ensure(path: str, mode: int = 0o700) -> bool:
    """Create ``path`` with cur/new/tmp if missing, durably; True when something was created.

    Each directory made (the Maildir, and any missing parent: domain, account, a ``.Folder``'s
    Maildir) is fsynced in its parent, and the Maildir after its cur/new/tmp: without that a
    power cut can leave mail delivered into a directory no name leads to (lost+found). The
    file system is synced first (``durable.sync_filesystem``: no stale entry can then claim a
    new directory's inode after a cut); a Maildir is created once, so that costs nothing on
    the delivery path."""
    with _creating:
        if all(os.path.isdir(os.path.join(path, sub)) for sub in SUBDIRS):
            return False
        sync_filesystem(_existing(path))
        created = make_dirs(path, mode, synced=True)
        made = False
        for sub in SUBDIRS:
            try:
                os.mkdir(os.path.join(path, sub), mode)
                made = True
            except FileExistsError:
                pass
        if made:
            fsync_dir(path)
        return created or made


def _existing(path: str) -> str:
    """``path`` or its nearest ancestor that exists."""
    p = os.path.abspath(path)
    while not os.path.isdir(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return p


def clean_tmp(path: str, now: Optional[float] = None, age: float = 36 * 3600) -> int:
    """Remove files left in ``tmp/`` for more than ``age`` seconds (maildir(5): 36 hours);
    returns how many. A delivery in progress is never that old."""
    now = time.time() if now is None else now
    removed = 0
    tmp = os.path.join(path, "tmp")
    try:
        names = os.listdir(tmp)
    except OSError:
        return 0
    for name in names:
        p = os.path.join(tmp, name)
        try:
            st = os.lstat(p)
            if now - st.st_mtime > age and not os.path.isdir(p):
                os.unlink(p)
                removed += 1
        except OSError:
            continue
    return removed


def is_maildir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cur")) and os.path.isdir(os.path.join(path, "new"))


def write_atomic(path: str, data: bytes, sync: bool = True) -> None:
    """Replace ``path`` with ``data``: tmp file, fsync, rename, fsync the directory."""
    tmp = f"{path}.{os.getpid()}.{next(_counter)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        fsync_dir(os.path.dirname(path) or ".")


class CommitFailed(OSError):
    """A message was named in its folder but could not be made durable (an fsync failed).

    ``withdrawn`` says its name was removed again, so a retry stores it once; when False the
    name ``filename`` stayed (removing it failed too) and a retry may store it twice."""

    def __init__(self, error: BaseException, filename: str, withdrawn: bool) -> None:
        code = getattr(error, "errno", None) or errno.EIO
        super().__init__(code, getattr(error, "strerror", None) or str(error) or os.strerror(code))
        self.filename = filename
        self.withdrawn = withdrawn


Source = Union[bytes, bytearray, memoryview, BinaryIO, list[bytes]]


class MessageSave:
    """One message on its way into the Maildir folder at ``path``: made by ``open`` (a new
    file in ``tmp/``, then ``write``) or ``link_from`` (COPY: a hard link of the source),
    then ``commit`` (durable; returns the file name) or ``abort`` (nothing is left). The one
    save path of LOCAL delivery (``MaildirWriter.deliver``), APPEND and COPY (``deliver``), as
    Dovecot's LDA and APPEND share ``mail_save_context``.

    The file goes to ``new/`` (``to_new``) or to ``cur/`` with the info ``letters``; ``sized``
    puts the size in the name (``<key>,S=<size>``, LOCAL's names, which readers use for
    RFC822.SIZE without a stat). ``mtime`` becomes the INTERNALDATE. ``points`` are the crash
    points (before naming, after the commit) of the caller, for tests that kill the process
    there.

    maildir(5)'s way: the file is written in ``tmp/``, fsynced, renamed into place and the
    directory fsynced. A rename leaves the inode's link count alone, so one fsync of the file
    and one of the directory (shared among threads) make it durable. An O_TMPFILE file linked
    into ``new/`` saved the tmp/ entry but needed a second fsync of the file after the link
    (ext4 without a journal does not write the link count with the directory): on the SMTP
    path at one session that third flush per message cost more than the tmp/ entry (issue 21).
    Every name made is durable when ``commit`` returns, unless the caller syncs the directory
    itself (``commit(sync=False)``, once for a batch). A failed directory fsync removes the
    name again (``CommitFailed``), so a retry does not store the message twice."""

    def __init__(
        self,
        path: str,
        *,
        to_new: bool = True,
        letters: str = "",
        mtime: Optional[float] = None,
        sized: bool = False,
        hostname: Optional[str] = None,
        points: tuple[str, str] = ("", ""),
    ) -> None:
        self.path = path
        self.sub = "new" if to_new else "cur"
        self.letters = letters
        self.mtime = mtime
        self.sized = sized
        self.hostname = hostname
        self.points = points
        self.size = 0
        self.key = ""
        self._tmp: Optional[str] = None  # the tmp/ name, until the rename
        self._fd = -1
        self._linked = False  # link_from gave the file its tmp/ name: nothing to write

    @classmethod
    def open(cls, path: str, **kw: Any) -> MessageSave:
        """A new save with its file created (raises OSError; nothing is left then)."""
        save = cls(path, **kw)
        save._create()
        return save

    def _create(self) -> None:
        while True:
            key = unique_key(self.hostname)
            tmp = os.path.join(self.path, "tmp", key)
            try:
                self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            self.key, self._tmp = key, tmp
            return

    def write(self, source: Source) -> None:
        """Append ``source``: bytes, a list of chunks (one writev) or a binary file, read in
        64 KiB pieces (a big APPEND is never held twice)."""
        if isinstance(source, list):
            write_all(self._fd, source)
            self.size += sum(len(c) for c in source)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            write_all(self._fd, [bytes(source)])
            self.size += len(source)
        else:
            while True:
                chunk = source.read(1 << 16)
                if not chunk:
                    break
                write_all(self._fd, [chunk])
                self.size += len(chunk)

    @classmethod
    def link_from(cls, path: str, source: str, **kw: Any) -> Optional[MessageSave]:
        """A save of the existing message file ``source`` (COPY) by a hard link into ``tmp/``,
        so no byte is copied; None when it cannot be linked (another file system), and the
        caller copies its bytes with ``open`` + ``write``. Raises FileNotFoundError when
        ``source`` is gone."""
        save = cls(path, **kw)
        while True:
            key = unique_key(save.hostname)
            tmp = os.path.join(path, "tmp", key)
            try:
                os.link(source, tmp)
            except FileExistsError:
                continue
            except FileNotFoundError:
                raise
            except OSError:
                return None
            break
        save.key, save._tmp, save._linked = key, tmp, True
        # The link raised the file's link count, which no directory fsync writes on every
        # file system: the fsync in commit writes it, or a cut could leave two names on an
        # inode counting one, and expunging either would free the other's message.
        try:
            save._fd = os.open(tmp, os.O_RDONLY)
        except BaseException:
            unlink_quiet(tmp)
            raise
        return save

    def abort(self) -> None:
        """Drop the message: close the file and remove its tmp/ name."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._tmp is not None:
            unlink_quiet(self._tmp)
            self._tmp = None

    def _name(self) -> str:
        base = f"{self.key},S={self.size}" if self.sized else self.key
        return base if self.sub == "new" else join_name(base, self.letters)

    def commit(self, sync: Union[bool, Callable[[str], None]] = True) -> str:
        """Make the message durable under its name in ``new/`` or ``cur/``; return the name.

        fsync the file (its data, and the INTERNALDATE, and the link count a COPY's link
        raised), rename it from tmp/, then fsync the directory: ``sync`` True does it here, a
        callable is called with the directory to do it (a shared ``DirSync``: group commit
        among threads), False leaves it to the caller. On any error before the name exists
        nothing is left; after it, CommitFailed."""
        before, after = self.points
        name = ""
        try:
            if self.mtime is not None and not self._linked:
                os.utime(self._fd, (self.mtime, self.mtime))  # before the fsync: durable too
            os.fsync(self._fd)  # the data, before any name can lead to it
            if before:
                cp.crashpoint(before)
            name = self._name()
            assert self._tmp is not None
            os.rename(self._tmp, os.path.join(self.path, self.sub, name))
            self._tmp = None
        except BaseException:
            self.abort()
            raise
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        if sync:
            folder = os.path.join(self.path, self.sub)
            try:
                if callable(sync):
                    sync(folder)
                else:
                    fsync_dir(folder)
            except BaseException as e:
                raise self._withdraw(name, e) from e
        if after:
            cp.crashpoint(after)
        return name

    def _withdraw(self, name: str, error: BaseException) -> CommitFailed:
        """Remove ``name`` again after its commit failed (from cur/ where an IMAP session may
        have moved it meanwhile); the CommitFailed to raise."""
        where = os.path.join(self.path, self.sub, name)
        try:
            try:
                os.unlink(where)
            except FileNotFoundError:
                moved = find_key(where)
                if moved is None:
                    return CommitFailed(error, name, True)  # nothing left to remove
                where = moved
                os.unlink(where)
        except OSError:
            return CommitFailed(error, name, False)
        try:
            fsync_dir(os.path.dirname(where))  # best effort: the withdrawal durable too
        except OSError:
            pass
        return CommitFailed(error, name, True)


class MaildirWriter:
    """``MaildirWriter(hostname=None, syncs=None, points=("", ""))``: the Maildir save path of
    a process that delivers (LOCAL), made once by its owner and passed in: the group commit of
    directory fsyncs (one ``DirSync`` per folder, shared by the threads delivering into it),
    the host name in file names and the caller's crash points."""

    def __init__(
        self,
        hostname: Optional[str] = None,
        syncs: Optional[DirSyncs] = None,
        points: tuple[str, str] = ("", ""),
    ) -> None:
        self.hostname = hostname
        self.syncs = syncs if syncs is not None else DirSyncs()
        self.points = points

    def deliver(self, path: str, chunks: list[bytes], ensure_dirs: bool = True) -> str:
        """Blocking: ``chunks`` durably into ``new/`` of the Maildir ``path`` (created if
        missing, unless ``ensure_dirs`` is False: a missing ``tmp/`` or ``new/`` then raises
        FileNotFoundError); the name, ``<key>,S=<size>``. The fsync of ``new/`` is shared
        with the other threads delivering into it; when it fails the name is removed again
        (CommitFailed): the recipient stays pending, and every delivery sharing that fsync
        withdraws its own."""
        if ensure_dirs:
            ensure(path)  # fsyncs each directory it makes in its parent (domain, account, ...)
        save = MessageSave.open(path, sized=True, hostname=self.hostname, points=self.points)
        try:
            save.write(chunks)
        except BaseException:
            save.abort()
            raise
        return save.commit(self.syncs.sync)


def deliver(
    path: str,
    source: Union[bytes, BinaryIO, str],
    letters: str = "",
    mtime: Optional[float] = None,
    to_new: bool = False,
    hostname: Optional[str] = None,
    sync: bool = True,
) -> tuple[str, str]:
    """Durably add one message to the Maildir at ``path``; return (key, file name in ``cur``/``new``).

    ``source`` is the message bytes, a binary file, or the path of an existing message file to
    hard-link (copy when linking is impossible). ``mtime`` becomes the INTERNALDATE. With
    ``sync`` False the caller fsyncs the ``cur``/``new`` directory itself (once for a batch)
    before the message counts as stored; everything else is durable when this returns.
    A ``MessageSave`` in tmp/ (APPEND and COPY).
    """
    kw: dict[str, Any] = dict(to_new=to_new, letters=letters, mtime=mtime, hostname=hostname)
    save = MessageSave.link_from(path, source, **kw) if isinstance(source, str) else None
    if save is None:
        if isinstance(source, str):
            with open(source, "rb") as f:
                source = f.read()
        save = MessageSave.open(path, **kw)
        try:
            save.write(source)
        except BaseException:
            save.abort()
            raise
    fname = save.commit(sync)
    return save.key, fname


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def move_to_cur(
    path: str, fnames: Iterable[str], cur_names: Iterable[str]
) -> tuple[dict[str, str], dict[str, OSError]]:
    """Move the messages ``fnames`` of ``new/`` into ``cur/`` (info ``:2,``) so that no power
    cut loses one: link each into cur/, fsync cur/ once, then unlink the new/ names and fsync
    new/ once. A rename would be one step, but the removal from new/ can reach the disk before
    the arrival in cur/ (LOCAL delivery fsyncs new/ all the time; writeback too), leaving the
    message in lost+found; an unlink not yet durable would let an expunged message come back
    from new/ as a new one. ``cur_names`` (the listing of cur/) finds messages already in cur/
    under their key (a move cut short): those only lose their new/ name, if it is the same file.

    Returns ({new name: cur name} for the messages now in cur/, {new name: error} for those
    left in new/); a name that left new/ meanwhile is in neither. Between the link and the
    unlink the inode has two names and a link count of 2 that is never fsynced: after a cut
    the count on disk may be one short, which e2fsck corrects (a file system without a journal
    is always checked after a crash)."""
    new_dir, cur_dir = os.path.join(path, "new"), os.path.join(path, "cur")
    in_cur = {split_name(n)[0]: n for n in cur_names}
    moved: dict[str, str] = {}
    failed: dict[str, OSError] = {}
    for fname in fnames:
        key = split_name(fname)[0]
        src = os.path.join(new_dir, fname)
        try:
            dest = in_cur.get(key)
            if dest is not None:
                try:
                    same = os.path.samestat(os.lstat(src), os.lstat(os.path.join(cur_dir, dest)))
                except FileNotFoundError:
                    if not os.path.lexists(src):
                        raise
                    dest = None  # the cur/ name went meanwhile: link under a fresh one
                else:
                    if not same:
                        failed[fname] = FileExistsError(
                            errno.EEXIST, "another message has this key in cur/", dest
                        )
                        continue
            if dest is None:
                dest = join_name(key, "")
                os.link(src, os.path.join(cur_dir, dest))
            moved[fname] = dest
        except FileNotFoundError:
            continue  # left new/ meanwhile (another process moved or removed it)
        except OSError as e:
            failed[fname] = e
    if moved:
        fsync_dir(cur_dir)
        for fname in moved:
            try:
                os.unlink(os.path.join(new_dir, fname))
            except FileNotFoundError:
                pass
        fsync_dir(new_dir)
    return moved, failed


def note_renames(path: str, pairs: Iterable[tuple[str, str]]) -> None:
    """Append (old, new) cur/ names of flag changes to ``FLAG_LOG``, without an fsync: a hint
    for a scan after a crash that finds both names of one file, saying which one is newer.
    A process crash keeps it (the page cache survives); a power cut may lose it, and then
    the flags may revert, as they may anyway before the batch's fsync (folder.flush)."""
    data = "".join(f"{old}\t{new}\n" for old, new in pairs).encode("utf-8", "surrogateescape")
    if not data:
        return
    fd = os.open(os.path.join(path, FLAG_LOG), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def newest_names(path: str) -> dict[str, str]:
    """{key: the newest cur/ name ``FLAG_LOG`` knows}; lines that do not parse (a power
    cut can leave zeros at its end) are skipped."""
    try:
        with open(os.path.join(path, FLAG_LOG), "rb") as f:
            data = f.read()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in data.decode("utf-8", "surrogateescape").split("\n"):
        old, sep, new = line.partition("\t")
        if sep and "\t" not in new and "/" not in new and "\0" not in new:
            key = split_name(new)[0]
            if key and split_name(old)[0] == key:
                out[key] = new
    return out


def clear_renames(path: str) -> None:
    """Empty ``FLAG_LOG`` once every old name it lists is gone (no fsync: a hint)."""
    try:
        os.truncate(os.path.join(path, FLAG_LOG), 0)
    except FileNotFoundError:
        pass


def find_key(stale_path: str) -> Optional[str]:
    """The current path of the message whose old path was ``stale_path`` (its flags, and so
    its name, may have changed, or it moved from new/ to cur/), or None when it is gone."""
    folder = os.path.dirname(os.path.dirname(stale_path))
    key = split_name(os.path.basename(stale_path))[0]
    for sub in ("cur", "new"):
        try:
            names = os.listdir(os.path.join(folder, sub))
        except OSError:
            continue
        for name in names:
            if split_name(name)[0] == key:
                return os.path.join(folder, sub, name)
    return None


def to_crlf(data: bytes) -> bytes:
    """Normalise line ends to CRLF (IMAP/POP3 send CRLF; Maildir files may use bare LF)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def read_keywords(path: str) -> dict[int, str]:
    """Dovecot's ``dovecot-keywords``: ``<index> <name>`` lines, index 0 = letter ``a``."""
    out: dict[int, str] = {}
    try:
        with open(os.path.join(path, KEYWORDS_FILE), encoding="utf-8", errors="replace") as f:
            for line in f:
                idx, _, name = line.rstrip("\n").partition(" ")
                if idx.isdigit() and int(idx) < MAX_KEYWORDS and name and " " not in name:
                    out[int(idx)] = name
    except OSError:
        pass
    return out


def write_keywords(path: str, keywords: Mapping[int, str]) -> None:
    text = "".join(f"{i} {n}\n" for i, n in sorted(keywords.items()))
    write_atomic(os.path.join(path, KEYWORDS_FILE), text.encode("utf-8"))


def allocate_keywords(
    path: str, names: Iterable[str], known: Optional[Mapping[int, str]] = None
) -> dict[int, str]:
    """(thread) The keyword map of the Maildir folder ``path`` with a letter for each of
    ``names`` (matched without case; a keyword past the 26th is left out).

    The one allocator of keyword letters, for IMAP STORE, APPEND and COPY (``Folder``) and
    LOCAL delivery's rule Mark alike: it holds ``lock_keywords`` while it reads
    ``dovecot-keywords`` afresh, gives each new name a free letter and writes the map
    durably, so two allocations (two threads, or two processes) never hand out one letter
    twice nor write over each other's keyword. ``known`` (a Folder's map in memory) fills
    letters the file lacks (a file removed behind our back, whose letters messages still
    carry) but never overrides it. The map is on disk before any message is named with a
    letter from it: a crash in between leaves a keyword no message carries, never a letter
    that means another keyword."""
    with lock_keywords(path):
        keywords = read_keywords(path)
        taken = {n.lower() for n in keywords.values()}
        changed = False
        for i, n in (known or {}).items():
            if i not in keywords and n.lower() not in taken:
                keywords[i] = n
                taken.add(n.lower())
                changed = True
        for name in names:
            if name.lower() in taken:
                continue
            free = next((i for i in range(MAX_KEYWORDS) if i not in keywords), None)
            if free is None:
                continue
            keywords[free] = name
            taken.add(name.lower())
            changed = True
        if changed:
            write_keywords(path, keywords)
    return keywords


@contextmanager
def lock_keywords(path: str) -> Iterator[None]:
    """(thread) Hold the keyword map of folder ``path`` exclusively: an flock(2) of the
    folder's directory. Each call opens the directory anew, and flock treats every open file
    description as its own owner, so this excludes other threads of this process as well as
    other processes; the kernel drops it when the process dies (no stale lock file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def keyword_letters(path: str, names: Iterable[str]) -> str:
    """(thread) The info letters of the IMAP keywords ``names`` in the Maildir ``path``,
    allocating letters for new ones as IMAP APPEND does (``allocate_keywords``)."""
    names = list(names)
    index_of: dict[str, int] = {}
    for i, n in sorted(allocate_keywords(path, names).items()):
        index_of.setdefault(n.lower(), i)  # a name the file holds twice: its first letter
    return "".join(sorted({chr(97 + index_of[n.lower()]) for n in names if n.lower() in index_of}))


def mark_new(path: str, fname: str, flags: tuple[str, ...]) -> str:
    """Blocking: give a message just delivered into ``new/`` the ``flags`` (a rule's "Mark":
    system flags and IMAP keywords, whose letters come from the mailstore's one allocator,
    ``keyword_letters``, which IMAP STORE and APPEND share): it
    moves to ``cur/`` under its key with the info letters (maildir(5)), linked
    there and made durable before its ``new/`` name goes, as ``move_to_cur`` does. A
    failure leaves it in ``new/`` unflagged, never lost; returns its name."""
    letters = "".join(FLAG_TO_LETTER[f] for f in flags if f in FLAG_TO_LETTER)
    keywords = [f for f in flags if f not in FLAG_TO_LETTER]
    if keywords:  # IMAP keywords ("Mark" Junk): Dovecot's letters, as APPEND stores them
        try:
            letters += keyword_letters(path, keywords)
        except OSError:
            pass  # the keyword map unwritable: the message keeps its system flags
    new, cur = os.path.join(path, "new"), os.path.join(path, "cur")
    dest = join_name(split_name(fname)[0], letters)
    linked = False
    try:
        os.link(os.path.join(new, fname), os.path.join(cur, dest))
        linked = True
        fsync_dir(cur)
        os.unlink(os.path.join(new, fname))
    except OSError:  # gone from new/ meanwhile (an IMAP scan moved it), or cur/ unusable
        if linked:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(cur, dest))
        return fname
    with contextlib.suppress(OSError):
        fsync_dir(new)
    return dest
