"""Messages of a Maildir folder as Twisted's IMAP message objects (IMessage, IMessageFile, IMessagePart).

Owns reading one message file: headers from the metadata cache when they suffice, otherwise
from the file; bodies served with CRLF line ends (bare LF counted and converted) so sizes and
octets agree; MIME sub-parts parsed on demand with the standard email parser. Never writes.
"""

from __future__ import annotations

import datetime
import email.parser
import email.policy
import io
import os
from email.message import Message as EmailMessage
from email.utils import formatdate
from typing import Any, BinaryIO, Callable, Optional, TypeVar

from twisted.mail import imap4
from zope.interface import implementer

from cgtwist.mailstore import filemeta, maildir
from cgtwist.mailstore.folder import Folder
from cgtwist.mailstore.scan import Entry
from cgtwist.message.headers import header_fields

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_RECENT = frozenset({"\\recent"})

T = TypeVar("T")


def _follow(folder: Folder, entry: Entry, use: Callable[[str], T]) -> Optional[T]:
    """``use(path)`` of the entry's file, following a rename by another session (the name
    the folder holds now, the one this session saw, else a search for the key); None if
    the file is gone."""
    current = folder.entries.get(entry.uid, entry)
    for e in (current, entry):
        try:
            return use(e.path(folder.path))
        except FileNotFoundError:
            continue
    # Renamed on disk by another client since the last scan: look for the key.
    found = maildir.find_key(entry.path(folder.path))
    if found is None:
        return None
    try:
        return use(found)
    except FileNotFoundError:
        return None


def _open_entry(folder: Folder, entry: Entry) -> Optional[BinaryIO]:
    """Open the entry's file (``_follow``); None if it is gone."""
    return _follow(folder, entry, lambda path: open(path, "rb"))


def _to_crlf(data: bytes) -> bytes:
    """``maildir.to_crlf``, in one pass over a file with bare LF line ends only (no CR in
    it, as most Maildir files written by other programs are): what each FETCH BODY[] of
    such a message does."""
    return data.replace(b"\n", b"\r\n") if b"\r" not in data else maildir.to_crlf(data)


def _read_entry(folder: Folder, entry: Entry) -> Optional[bytes]:
    """The entry's whole file (``_follow``); None if it is gone."""
    hint = entry.meta.size
    return _follow(folder, entry, lambda path: _read_file(path, hint))


def _read_file(path: str, hint: int) -> bytes:
    """A file's octets in one ``read`` when it holds at most ``hint`` (a message's size as
    served, never less than its file's: bare LF only grows to CRLF): open, read, close,
    where a buffered file object also asks fstat, isatty and reads once more for the end
    (every FETCH BODY[]). A larger file (the index out of date) is read on to its end."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, hint + 1)
        if len(data) <= hint:
            return data  # a short read of a regular file: its end
        chunks = [data]
        while True:
            more = os.read(fd, 1 << 20)
            if not more:
                return b"".join(chunks)
            chunks.append(more)
    finally:
        os.close(fd)


@implementer(imap4.IMessage, imap4.IMessageFile)
class MaildirMessage:
    """One message as a session sees it: UID, flags (with \\Recent for that session), size,
    internal date, headers and body. ``getHeaders`` values are str decoded latin-1 so each
    octet round-trips; ``open()`` gives the whole message with CRLF line ends."""

    # SEARCH makes one per message per command: slots keep that cheap.
    __slots__ = ("folder", "entry", "vanished", "flags", "recent", "_parsed")

    def __init__(self, folder: Folder, entry: Entry, flags: frozenset[str], recent: bool) -> None:
        self.folder = folder
        self.entry = entry
        self.vanished = False  # its file was found gone (expunged; not yet in the index)
        self.flags = flags
        self.recent = recent
        self._parsed: Optional[EmailMessage] = None

    # -- raw access for the IMAP layer ---------------------------------------------------------

    @property
    def uid(self) -> int:
        return self.entry.uid

    @property
    def modseq(self) -> int:
        """RFC 7162 MODSEQ: raised by every change of this message's flags; persisted in the
        folder's index and never lower after a restart, a crash or a rebuilt index."""
        return self.entry.modseq

    @property
    def meta(self) -> filemeta.Meta:
        """Cached facts: size, date, body size/lines, envelope and Content-* headers."""
        return self.entry.meta

    def _open(self) -> Optional[BinaryIO]:
        f = _open_entry(self.folder, self.entry)
        if f is None:
            self.vanished = True
        return f

    @property
    def expunged(self) -> bool:
        """Gone from the folder (another session expunged it) while this session still holds
        its sequence number: its flags are known, its text may be gone (RFC 2180 §4.1)."""
        return self.vanished or self.folder.entries.get(self.entry.uid) is not self.entry

    def cached(self, name: str, compute: Callable[[], bytes]) -> bytes:
        """A value derived from this immutable message (e.g. its BODYSTRUCTURE), computed once
        and kept in the folder's cache file across restarts. ``name`` should say what and which
        version (``"bodystructure-ext-1"``); ``compute`` must return bytes."""
        return self._remember(name, compute, save=True)

    def memo(self, name: str, compute: Callable[[], bytes]) -> bytes:
        """Like ``cached`` for values cheap to rebuild but asked for often (ENVELOPE on every
        ``FETCH 1:*``): kept in memory with the message's facts and written to the cache file
        only with its next save, so a first FETCH of a large folder causes no rewrites."""
        return self._remember(name, compute, save=False)

    def memo_text(self, name: str, compute: Callable[[], str]) -> str:
        """``memo`` for text: a value SEARCH derives from the cached header fields (an
        address field's searchable text, say), kept with the message's facts in the index
        so every later SEARCH finds it ready."""
        extra = self.entry.meta.extra
        hit = extra.get(name)
        if hit is not None:
            return hit
        value = compute()
        if self.folder.entries.get(self.entry.uid) is self.entry and len(extra) < 16:
            extra[name] = value
            self.folder.cache_changed(self.entry.uid, soon=False)
        return value

    def internal_day(self) -> datetime.date:
        """The UTC day of INTERNALDATE, as ``getInternalDate()`` states it (SEARCH BEFORE,
        ON, SINCE), straight from the index's epoch seconds."""
        try:
            return datetime.date.fromordinal(_EPOCH_ORDINAL + int(self.entry.meta.date // 86400))
        except (ValueError, OverflowError):
            return datetime.date(1970, 1, 1)

    def search_flags(self) -> frozenset[str]:
        """Flags lower-cased, \\Recent included for this session: what SEARCH's flag keys
        test, shared by every message with the same flags (no list per message)."""
        low = self.folder.lower_flags_of(self.entry)
        return low | _RECENT if self.recent else low

    def _remember(self, name: str, compute: Callable[[], bytes], save: bool) -> bytes:
        extra = self.entry.meta.extra
        hit = extra.get(name)
        if hit is not None:
            return hit.encode("latin-1")
        value = compute()
        # Only for a message still in the folder, and a few values per message at most.
        if self.folder.entries.get(self.entry.uid) is self.entry and len(extra) < 16:
            extra[name] = value.decode("latin-1")
            self.folder.cache_changed(self.entry.uid, soon=save)
        return value

    def read_bytes(self) -> bytes:
        """The whole message, CRLF line ends; b"" when it was expunged meanwhile (RFC 2180 §4.1)."""
        data = _read_entry(self.folder, self.entry)
        if data is None:
            self.vanished = True
            return b""
        return data if self.entry.meta.crlf else _to_crlf(data)

    def header_bytes(self) -> bytes:
        """The header block including the blank line that ends it, CRLF line ends."""
        f = self._open()
        if f is None:
            return b""
        with f:
            data = f.read(self.entry.meta.body_offset)
        return data if self.entry.meta.crlf else maildir.to_crlf(data)

    # -- IMessageFile --------------------------------------------------------------------------

    def open(self) -> BinaryIO:
        f = self.open_or_none()
        return f if f is not None else io.BytesIO(b"")

    def open_or_none(self) -> Optional[BinaryIO]:
        """Like open(), but None when the message file is gone (expunged by another session)."""
        f = self._open()
        if f is None or self.entry.meta.crlf:
            return f
        with f:
            return io.BytesIO(maildir.to_crlf(f.read()))

    # -- IMessage ------------------------------------------------------------------------------

    def getUID(self) -> int:
        return self.entry.uid

    def getFlags(self) -> list[str]:
        out = sorted(self.flags)
        if self.recent:
            out.append("\\Recent")
        return out

    def getInternalDate(self) -> str:
        return formatdate(self.entry.meta.date, localtime=False)

    def getSize(self) -> int:
        return self.entry.meta.size

    def getHeaders(self, negate: bool, *names: str) -> dict[str, str]:
        wanted = {n.lower() if isinstance(n, str) else n.decode("latin-1").lower() for n in names}
        if not negate and wanted and wanted <= filemeta.CACHED_HEADERS:
            cached = self.entry.meta.headers
            return {n: cached[n] for n in wanted if n in cached}
        headers = filemeta.parse_headers(self.header_bytes())
        if negate:
            return {k: v for k, v in headers.items() if k not in wanted}
        return {k: v for k, v in headers.items() if k in wanted}

    def header_value(self, name: str) -> Optional[str]:
        """One header's value (``name`` lower-case), from the cache when it is kept there."""
        if name in filemeta.CACHED_HEADERS:
            return self.entry.meta.headers.get(name)
        return self.getHeaders(False, name).get(name)

    def header_values(self, name: str) -> list[str]:
        """Every instance of one header field (``name`` lower-case), in order, folding kept.
        The cached fields are those RFC 5322 §3.6 allows once, so the cache answers them;
        for any other the header block is read (SEARCH HEADER X-Extra must see both
        ``X-Extra:`` lines, RFC 3501 §6.4.4)."""
        if name in filemeta.CACHED_HEADERS:
            value = self.entry.meta.headers.get(name)
            return [] if value is None else [value]
        return header_instances(self.header_bytes(), name)

    def getBodyFile(self) -> BinaryIO:
        """Only the body: offset 0 is its first octet (seek(0) does not go back to the header)."""
        f = self._open()
        if f is None:
            return io.BytesIO(b"")
        if self.entry.meta.crlf:
            return _Tail(f, self.entry.meta.body_offset)  # type: ignore[return-value]
        with f:
            f.seek(self.entry.meta.body_offset)
            return io.BytesIO(maildir.to_crlf(f.read()))

    def isMultipart(self) -> bool:
        ctype = self.entry.meta.headers.get("content-type", "")
        return ctype.strip().lower().startswith("multipart/")

    def getSubPart(self, part: int) -> MessagePart:
        if not self.isMultipart():
            raise TypeError("not a multipart message")
        if self._parsed is None:
            self._parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
                self.read_bytes()
            )
        return MessagePart(self._parsed).getSubPart(part)

    def __repr__(self) -> str:
        return f"<MaildirMessage {self.folder.account} {self.folder.name} uid={self.entry.uid}>"


def header_instances(block: bytes, name: str) -> list[str]:
    """All values of the field ``name`` (lower-case) in a header block, in order
    (``header_fields``: latin-1, folded lines joined with CRLF)."""
    return [value for field, value in header_fields(block) if field == name]


class _Tail:
    """A read-only file showing ``f`` from ``start`` on: positions are relative to ``start``,
    so a large body streams from disk instead of being copied into memory."""

    def __init__(self, f: BinaryIO, start: int) -> None:
        self._f = f
        self._start = start
        f.seek(start)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def readline(self, limit: int = -1) -> bytes:
        return self._f.readline(limit)

    def __iter__(self) -> Any:
        return iter(self._f)

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            return self._f.seek(self._start + max(0, pos)) - self._start
        return max(0, self._f.seek(pos, whence) - self._start)

    def tell(self) -> int:
        return self._f.tell() - self._start

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Tail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@implementer(imap4.IMessagePart)
class MessagePart:
    """A MIME part of a message, from the standard library's parse tree (CRLF line ends)."""

    def __init__(self, part: EmailMessage) -> None:
        self.part = part
        self._bytes: Optional[bytes] = None

    def _raw(self) -> bytes:
        if self._bytes is None:
            self._bytes = maildir.to_crlf(
                self.part.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n"))
            )
        return self._bytes

    def getHeaders(self, negate: bool, *names: str) -> dict[str, str]:
        wanted = {n.lower() if isinstance(n, str) else n.decode("latin-1").lower() for n in names}
        out: dict[str, str] = {}
        for k, v in self.part.items():
            k = k.lower()
            if k in out or (k in wanted) == negate:
                continue
            out[k] = str(v)
        return out

    def getBodyFile(self) -> BinaryIO:
        raw = self._raw()
        return io.BytesIO(raw[filemeta.split_header(raw) :])

    def getSize(self) -> int:
        raw = self._raw()
        return len(raw) - filemeta.split_header(raw)

    def isMultipart(self) -> bool:
        return self.part.is_multipart()

    def getSubPart(self, part: int) -> MessagePart:
        if not self.part.is_multipart():
            raise TypeError("not a multipart part")
        payload = self.part.get_payload()
        if not isinstance(payload, list) or part < 0:
            raise IndexError(part)
        sub = payload[part]
        if not isinstance(sub, EmailMessage):
            raise IndexError(part)
        return MessagePart(sub)
