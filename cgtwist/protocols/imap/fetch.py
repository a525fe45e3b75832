"""IMAP FETCH responses: one message's requested items rendered as a stream of byte chunks.

Owns the wire form of FETCH data (RFC 3501 §6.4.5, §7.4.2): BODY[section]<partial> cut from the
raw message so HEADER + TEXT equals BODY[], partial origins echoed as ``<origin>``, literals sent
in bounded chunks so the caller can apply back-pressure. It does not write to a transport, set
flags or choose messages; the protocol does that.
"""

from __future__ import annotations

import email.utils
import io
from dataclasses import dataclass
from typing import IO, Any, Iterable, Iterator, Optional, Protocol, Sequence, Union

from twisted.mail import imap4

from cgtwist.logs import Logger
from cgtwist.protocols.imap import binary as imap_binary
from cgtwist.protocols.imap import sections as imap_sections
from cgtwist.protocols.imap import structure as imap_structure
from cgtwist.protocols.imap import typedimap4

log = Logger()

CHUNK = 65536
WHOLE = 1 << 20  # BODY[] of a message up to this size is read at once, larger ones streamed
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FALLBACK_STRUCTURE = [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 0, 0]


def open_raw(msg: Any) -> IO[bytes]:
    """The whole RFC 5322 message as a binary file (IMessageFile when offered)."""
    # The mailstore's messages provide it: no adapter lookup per message.
    mf: Any = msg if imap4.IMessageFile.providedBy(msg) else imap4.IMessageFile(msg, None)
    if mf is not None:
        f: IO[bytes] = mf.open()
        return f
    # Fall back to headers + body as Twisted's IMessagePart exposes them.
    head = _format_headers(msg.getHeaders(True))
    body = msg.getBodyFile()
    body.seek(0)
    return io.BytesIO(head + b"\r\n" + body.read())


def read_raw(msg: Any) -> bytes:
    """The whole message in one read: the store's ``read_bytes`` when it has one (CRLF line
    ends, b"" once expunged, as ``open`` gives), else through ``open_raw``."""
    whole = getattr(msg, "read_bytes", None)
    if whole is not None:
        data: bytes = whole()
        return data
    f = open_raw(msg)
    try:
        return f.read()
    finally:
        f.close()


def _format_headers(headers: dict[str, str]) -> bytes:
    out = []
    for k, v in headers.items():
        value = "\r\n".join(v.splitlines()) if isinstance(v, str) else v
        out.append(f"{k.title()}: {value}\r\n")
    return "".join(out).encode("utf-8", "replace")


def _split_header(f: IO[bytes]) -> tuple[int, int]:
    """(header length including the blank line, total size) of a raw message file."""
    f.seek(0, io.SEEK_END)
    size = f.tell()
    f.seek(0)
    buf = b""
    while len(buf) < size:
        data = f.read(CHUNK)
        if not data:
            break
        start = max(0, len(buf) - 3)
        buf += data
        for sep in (b"\r\n\r\n", b"\n\n"):
            i = buf.find(sep, start)
            if i >= 0:
                return i + len(sep), size
        if len(buf) > 8 * 1024 * 1024:
            break
    return size, size


def filter_header_lines(header: bytes, fields: list[bytes], negate: bool) -> bytes:
    """Keep (or with ``negate`` drop) the header fields named, folded lines included; end with
    the blank line (RFC 3501 §6.4.5 HEADER.FIELDS)."""
    wanted = {f.lower() for f in fields}
    out: list[bytes] = []
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        keep = (name in wanted) != negate
        if keep:
            out.append(line if line.endswith(b"\n") else line + b"\r\n")
    return b"".join(out) + b"\r\n"


def internal_date(msg: Any) -> bytes:
    """INTERNALDATE as ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (RFC 3501 §9 date-time)."""
    value = msg.getInternalDate()
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    t = email.utils.parsedate_tz(value) if value else None
    if t is None:
        t = (1970, 1, 1, 0, 0, 0, 0, 1, -1, 0)
    off = t[9] or 0
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    text = (
        f"{t[2]:02d}-{_MONTHS[t[1] - 1]}-{t[0]:04d} {t[3]:02d}:{t[4]:02d}:{t[5]:02d} "
        f"{sign}{off // 3600:02d}{(off % 3600) // 60:02d}"
    )
    return b'"' + text.encode("ascii") + b'"'


def flag_words(flags: Iterable[Union[str, bytes]], recent: bool = True) -> bytes:
    """A flag list's words, space separated; without ``\\Recent`` unless ``recent`` (an
    IMAP4rev2 session has no \\Recent, RFC 9051 §2.3.2)."""
    words = [f.encode("utf-8") if isinstance(f, str) else f for f in flags]
    if not recent:
        words = [w for w in words if w.lower() != b"\\recent"]
    return b" ".join(words)


def _flags(msg: Any, extra: Optional[str], recent: bool = True) -> bytes:
    flags = list(msg.getFlags())
    if extra and extra not in flags:
        flags.append(extra)
    return b"FLAGS (" + flag_words(flags, recent) + b")"


def _structure_name(extended: bool) -> str:
    return "bodystructure-%s-2" % ("ext" if extended else "basic")


def _structure_needs_file(msg: Any) -> bool:
    """A single part's structure comes from cached headers; a multipart or message/* one
    means reading and parsing the file."""
    heads = msg.getHeaders(False, "content-type")
    ctype = next((v for k, v in heads.items() if k.lower() == "content-type"), "") or ""
    return bool(ctype.strip().lower().startswith(("multipart/", "message/")))


def body_structure(msg: Any, extended: bool, pre: Optional[dict[Any, Any]] = None) -> bytes:
    """BODYSTRUCTURE/BODY from the raw message (or as ``precompute`` built it in a thread);
    malformed MIME gets a plain-text fallback."""
    name = _structure_name(extended)

    def compute() -> bytes:
        if pre is not None and ("structure", extended) in pre:
            return bytes(pre[("structure", extended)])
        cached = imap_structure.cached_structure(msg, extended)
        return (
            cached if cached is not None else imap_structure.body_structure(read_raw(msg), extended)
        )

    try:
        cheap = not _structure_needs_file(msg)
        # A single part is rebuilt from cached headers (kept in memory only); a multipart
        # message means parsing the file (kept in the cache file across restarts).
        keep = getattr(msg, "memo" if cheap else "cached", None)
        return bytes(keep(name, compute)) if keep is not None else compute()
    except Exception:
        log.failure("BODYSTRUCTURE failed for a malformed message; using text/plain")
        s = list(_FALLBACK_STRUCTURE)
        s[6] = msg.getSize()
        return typedimap4.collapse_nested_lists([s])


def section_name(part: Any) -> bytes:
    """``BODY[<section>]`` as echoed in the response (PEEK dropped, RFC 3501 §7.4.2)."""
    spec = b".".join(b"%d" % (p + 1) for p in part.part)
    if part.header is not None:
        h = part.header
        if h.fields:
            words = b" ".join(f.upper() for f in h.fields)
            name = b"HEADER.FIELDS" + (b".NOT" if h.negate else b"") + b" (" + words + b")"
        else:
            name = b"HEADER"
        spec = spec + b"." + name if spec else name
    elif part.text is not None:
        spec = spec + b".TEXT" if spec else b"TEXT"
    elif part.mime is not None:
        spec = spec + b".MIME" if spec else b"MIME"
    return b"BODY[" + spec + b"]"


def _literal_stream(f: IO[bytes], start: int, length: int, binary: bool = False) -> Iterator[bytes]:
    yield (b"~{%d}\r\n" if binary else b"{%d}\r\n") % length
    f.seek(start)
    left = length
    while left > 0:
        data = f.read(min(CHUNK, left))
        if not data:
            # The file shrank under us; pad so the literal length stays honest.
            yield b" " * left
            return
        left -= len(data)
        yield data


def _partial(part: Any, size: int) -> tuple[bytes, int, int]:
    """(suffix for the item name, start, length) for a ``<origin.count>`` request."""
    if part.partialBegin is None:
        return b"", 0, size
    begin = min(part.partialBegin, size)
    length = max(0, min(part.partialLength, size - begin))
    return b"<%d>" % part.partialBegin, begin, length


def _bytes_item(name: bytes, part: Any, data: bytes) -> Iterator[bytes]:
    suffix, start, length = _partial(part, len(data))
    yield name + suffix + b" "
    yield from _literal_stream(io.BytesIO(data), start, length)


def _section_bytes(raw: bytes, part: Any) -> Optional[bytes]:
    """The octets of ``BODY[<path>.<suffix>]`` sliced from the raw message, None when the
    section names no part (RFC 3501 §6.4.5; a message/rfc822 part's numbers continue into
    the message it holds)."""
    path = [p + 1 for p in part.part]
    root = imap_sections.parse(raw)
    node = imap_sections.resolve(root, path)
    if node is None:
        return None
    if part.mime is not None:
        return raw[node.start : node.body]
    if part.header is None and part.text is None:
        return raw[node.body : node.end]
    inner = imap_sections.message_of(root, node, path)
    if inner is None:
        return None
    if part.text is not None:
        return raw[inner.body : inner.end]
    header = raw[inner.start : inner.body]
    if part.header.fields:
        return filter_header_lines(header, list(part.header.fields), part.header.negate)
    return header


def _is_structure(item: Any) -> bool:
    return bool(
        item.type == "bodystructure"
        or (item.type == "body" and not (item.empty or item.header or item.text or item.mime))
    )


def needs_parse(query: list[Any]) -> bool:
    """Whether these items may mean reading and parsing a whole message: BODY[<part>...],
    BODYSTRUCTURE or BODY of a multipart, any BINARY item. Worth doing in a thread for a
    large message."""
    return any(
        _is_structure(i) or (i.type == "body" and i.part) or i.type in _BINARY for i in query
    )


_BINARY = ("binary", "binarysize")


def _binary_section(raw: bytes, item: Any) -> Any:
    """BINARY data of ``item``: bytes, None (no such part) or the UnknownCTE to raise."""
    try:
        return imap_binary.section(raw, item.part)
    except imap_binary.UnknownCTE as e:
        return e


def unknown_cte(pre: dict[Any, Any]) -> bool:
    """Whether ``precompute`` found a BINARY part whose encoding it cannot undo."""
    return any(isinstance(v, imap_binary.UnknownCTE) for v in pre.values())


def binary_item(msg: Any, item: Any, pre: Optional[dict[Any, Any]] = None) -> Iterator[bytes]:
    """``BINARY[part]<partial>`` or ``BINARY.SIZE[part]`` (RFC 3516 §4.2): the decoded part,
    as a literal8 when it holds NUL octets; UnknownCTE when its encoding is unknown."""
    if pre is not None and ("binary", id(item)) in pre:
        data = pre[("binary", id(item))]
    else:
        data = _binary_section(read_raw(msg), item)
    if isinstance(data, imap_binary.UnknownCTE):
        raise data
    name = item.name()
    if data is None:
        yield name + b" NIL"
        return
    if item.size:
        yield name + b" %d" % len(data)
        return
    suffix, start, length = _partial(item, len(data))
    yield name + suffix + b" "
    yield from _literal_stream(
        io.BytesIO(data), start, length, b"\x00" in data[start : start + length]
    )


def precompute(msg: Any, query: list[Any]) -> dict[Any, Any]:
    """(thread) Read and parse a message once for the items ``needs_parse`` names: their
    values, for ``fetch_response(..., pre=)`` to use on the reactor. Empty when anything
    fails: the items are then computed on the reactor as usual (and fail there, logged)."""
    out: dict[Any, Any] = {}
    try:
        raw: Optional[bytes] = None
        for item in query:
            if _is_structure(item):
                ext = item.type == "bodystructure"
                extra = getattr(getattr(msg, "meta", None), "extra", {})
                if (
                    ("structure", ext) in out
                    or _structure_name(ext) in extra
                    or not _structure_needs_file(msg)
                ):
                    continue
                raw = read_raw(msg) if raw is None else raw
                out[("structure", ext)] = imap_structure.body_structure(raw, ext)
            elif item.type == "body" and item.part:
                raw = read_raw(msg) if raw is None else raw
                out[("section", id(item))] = _section_bytes(raw, item)
            elif item.type in _BINARY:
                raw = read_raw(msg) if raw is None else raw
                out[("binary", id(item))] = _binary_section(raw, item)
    except Exception:
        return {}
    return out


def body_item(msg: Any, part: Any, pre: Optional[dict[Any, Any]] = None) -> Iterator[bytes]:
    """One ``BODY[...]`` item with its data."""
    name = section_name(part)
    if part.part:
        if pre is not None and ("section", id(part)) in pre:
            data = pre[("section", id(part))]
        else:
            data = _section_bytes(read_raw(msg), part)
        if data is None:
            yield name + b" NIL"  # no such part (Dovecot answers NIL as well)
            return
        yield from _bytes_item(name, part, data)
        return
    if part.empty and part.partialBegin is None and msg.getSize() <= WHOLE:
        # BODY[] of an everyday message: one read, one chunk with the literal's length.
        data = read_raw(msg)
        yield name + b" {%d}\r\n" % len(data) + data
        return
    f = open_raw(msg)
    try:
        head_len, size = _split_header(f)
        if part.header is not None:
            f.seek(0)
            header = f.read(head_len)
            if part.header.fields:
                header = filter_header_lines(header, list(part.header.fields), part.header.negate)
            yield from _bytes_item(name, part, header)
        elif part.text is not None:
            suffix, start, length = _partial(part, size - head_len)
            yield name + suffix + b" "
            yield from _literal_stream(f, head_len + start, length)
        elif part.mime is not None:
            f.seek(0)
            yield from _bytes_item(name, part, f.read(head_len))
        else:
            suffix, start, length = _partial(part, size)
            yield name + suffix + b" "
            yield from _literal_stream(f, start, length)
    finally:
        f.close()


def sets_seen(query: list[Any]) -> bool:
    """Whether fetching these items sets \\Seen (RFC 3501 §6.4.5: BODY[...] and RFC822[.TEXT])."""
    for item in query:
        if (
            item.type == "body"
            and not item.peek
            and (item.empty or item.header or item.text or item.mime)
        ):
            return True
        if item.type in ("rfc822", "rfc822text") or (item.type == "binary" and not item.peek):
            return True  # RFC 3516 §4.2: BINARY[] sets \\Seen as BODY[] does
    return False


def fetch_response(
    seq: int,
    msg: Any,
    query: list[Any],
    want_uid: bool,
    seen_added: bool = False,
    pre: Optional[dict[Any, Any]] = None,
    recent: bool = True,
) -> Iterator[bytes]:
    """Yield the chunks of one ``* seq FETCH (...)`` response (``pre``: what ``precompute``
    built in a thread; ``recent``: FLAGS may show \\Recent, not in IMAP4rev2)."""
    yield b"* %d FETCH (" % seq
    first = True
    types = {item.type for item in query}
    items = list(query)
    if want_uid and "uid" not in types:
        items.insert(0, imap4._FetchParser.UID())
    extra = "\\Seen" if seen_added else None
    if seen_added and "flags" not in types:
        items.append(imap4._FetchParser.Flags())
    for item in items:
        if not first:
            yield b" "
        first = False
        t = item.type
        if t == "uid":
            yield b"UID %d" % msg.getUID()
        elif t == "flags":
            yield _flags(msg, extra, recent)
        elif t == "internaldate":
            yield b"INTERNALDATE " + internal_date(msg)
        elif t == "rfc822size":
            yield b"RFC822.SIZE %d" % msg.getSize()
        elif t == "modseq":  # RFC 7162 §3.1.4
            yield b"MODSEQ (%d)" % (getattr(msg, "modseq", 0) or 0)
        elif t == "envelope":
            yield b"ENVELOPE " + imap_structure.envelope_of(msg)
        elif t == "bodystructure":
            yield b"BODYSTRUCTURE " + body_structure(msg, True, pre)
        elif t == "rfc822":
            yield from _whole(msg, b"RFC822", "all")
        elif t == "rfc822header":
            yield from _whole(msg, b"RFC822.HEADER", "header")
        elif t == "rfc822text":
            yield from _whole(msg, b"RFC822.TEXT", "text")
        elif t in _BINARY:
            yield from binary_item(msg, item, pre)
        elif t == "body":
            if item.empty or item.header or item.text or item.mime:
                yield from body_item(msg, item, pre)
            else:
                yield b"BODY " + body_structure(msg, False, pre)
        else:  # pragma: no cover - the parser only produces the types above
            raise ValueError(f"unknown fetch item {t}")
    yield b")\r\n"


# The items ``render`` answers: those of the index and the caches, BODY[] whole, the
# structures. Everything else (sections, partials, RFC822.*, BINARY) is fetch_response's.
_RENDERED = frozenset(
    ("uid", "flags", "internaldate", "rfc822size", "modseq", "envelope", "bodystructure")
)


class FetchItem(Protocol):
    """A parsed FETCH item (Twisted's ``_FetchParser`` classes, BINARY's, MODSEQ's) as
    ``render`` reads it: its type, and for BODY its section and partial."""

    type: str
    empty: bool
    part: Sequence[int]
    header: object
    text: object
    mime: object
    partialBegin: Optional[int]


class RenderedMessage(Protocol):
    """What ``render`` asks of a message itself (the rest through ``envelope_of``,
    ``read_raw`` and the structure, which take any message)."""

    def getUID(self) -> int: ...
    def getSize(self) -> int: ...


def renderable(query: Sequence[FetchItem]) -> bool:
    """Whether ``render`` answers every item of ``query``: the index's items, ENVELOPE, the
    structures and BODY[] (BODY.PEEK[]) of the whole message."""
    for item in query:
        t = item.type
        if t in _RENDERED:
            continue
        if t != "body" or item.part or item.header or item.text or item.mime:
            return False
        if item.empty and item.partialBegin is not None:
            return False
    return True


@dataclass(frozen=True)
class QueryFacts:
    """What a FETCH's items ask for (``query_facts``): a session sending the same items again
    and again (a mail client's UID FETCH <uid> (BODY.PEEK[]) per message) has them looked
    at once."""

    types: frozenset[str]
    parse: bool  # needs_parse
    renderable: bool
    sets_seen: bool


def query_facts(query: Sequence[FetchItem]) -> QueryFacts:
    items = list(query)
    return QueryFacts(
        frozenset(item.type for item in query),
        needs_parse(items),
        renderable(query),
        sets_seen(items),
    )


FlagCache = dict[tuple[object, ...], bytes]
_FLAG_CACHE_MAX = 256  # distinct flag sets a Renderer keeps the FLAGS item of


class Renderer:
    """``render`` for one command: its items looked at once, its FLAGS items kept per
    distinct flag set (the mailstore's messages share one frozenset per set), then called
    per message."""

    def __init__(
        self,
        query: Sequence[FetchItem],
        want_uid: bool,
        recent: bool = True,
        types: Optional[frozenset[str]] = None,
    ) -> None:
        """``types``: the items' types when known (``QueryFacts``)."""
        if types is None:
            types = frozenset(item.type for item in query)
        # BODY[]'s echoed name made once, not per message.
        self.items = [
            (item.type, item, section_name(item) if item.type == "body" and item.empty else b"")
            for item in query
        ]
        self.add_uid = want_uid and "uid" not in types
        self.has_flags = "flags" in types
        self.recent = recent
        self.flag_cache: FlagCache = {}

    def __call__(self, seq: int, msg: RenderedMessage, seen_added: bool = False) -> Optional[bytes]:
        """The message's whole response, or None when its BODY[] is over ``WHOLE``."""
        out: list[bytes] = []
        literals: Optional[list[tuple[int, bytes]]] = None  # (its item in out, BODY[] text)
        if self.add_uid:
            out.append(b"UID %d" % msg.getUID())
        extra = "\\Seen" if seen_added else None
        for t, item, name in self.items:
            if t == "uid":
                out.append(b"UID %d" % msg.getUID())
            elif t == "flags":
                out.append(_cached_flags(msg, extra, self.recent, self.flag_cache))
            elif t == "rfc822size":
                out.append(b"RFC822.SIZE %d" % msg.getSize())
            elif t == "envelope":
                out.append(b"ENVELOPE " + imap_structure.envelope_of(msg))
            elif t == "internaldate":
                out.append(b"INTERNALDATE " + internal_date(msg))
            elif t == "modseq":  # RFC 7162 §3.1.4
                out.append(b"MODSEQ (%d)" % (getattr(msg, "modseq", 0) or 0))
            elif t == "bodystructure":
                out.append(b"BODYSTRUCTURE " + body_structure(msg, True))
            elif item.empty:  # BODY[] (renderable: no section, no partial)
                if msg.getSize() > WHOLE:
                    return None
                data = read_raw(msg)
                out.append(name + b" {%d}\r\n" % len(data))
                if literals is None:
                    literals = []
                literals.append((len(out) - 1, data))
            else:
                out.append(b"BODY " + body_structure(msg, False))
        if seen_added and not self.has_flags:
            out.append(_cached_flags(msg, extra, self.recent, self.flag_cache))
        if literals is None:
            return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(out))
        # A message's text is copied once, into the response, not once per concatenation.
        parts = [b"* %d FETCH (" % seq]
        start = 0
        for i, data in literals:
            if start:
                parts.append(b" ")
            parts.append(b" ".join(out[start : i + 1]))
            parts.append(data)
            start = i + 1
        if start < len(out):
            parts.append(b" ")
            parts.append(b" ".join(out[start:]))
        parts.append(b")\r\n")
        return b"".join(parts)


def render(
    seq: int,
    msg: RenderedMessage,
    query: Sequence[FetchItem],
    want_uid: bool,
    seen_added: bool = False,
    recent: bool = True,
) -> Optional[bytes]:
    """One ``* seq FETCH (...)`` response whole, the same octets as ``fetch_response``
    yields, for a ``renderable`` query: one call and one bytes per message instead of a
    generator per message and per item (most of a ``FETCH 1:*``'s time per message and a
    tenth of a ``UID FETCH <uid> (BODY.PEEK[])``'s). None when the message is too large to
    read at once (BODY[] over ``WHOLE``): ``fetch_response`` streams it. A command with
    many messages makes one ``Renderer`` for all of them."""
    return Renderer(query, want_uid, recent)(seq, msg, seen_added)


def _cached_flags(
    msg: RenderedMessage, extra: Optional[str], recent: bool, cache: Optional[FlagCache]
) -> bytes:
    """``_flags``, kept in ``cache`` by the message's flag set when it has one (the mailstore's
    messages share one frozenset per distinct set of flags)."""
    flags = getattr(msg, "flags", None)
    if cache is None or not isinstance(flags, frozenset):
        return _flags(msg, extra, recent)
    key = (flags, getattr(msg, "recent", None), extra, recent)
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= _FLAG_CACHE_MAX:  # a session's Renderer outlives its command
            cache.clear()
        hit = cache[key] = _flags(msg, extra, recent)
    return hit


def _whole(msg: Any, name: bytes, which: str) -> Iterator[bytes]:
    f = open_raw(msg)
    try:
        head_len, size = _split_header(f)
        yield name + b" "
        if which == "all":
            yield from _literal_stream(f, 0, size)
        elif which == "header":
            yield from _literal_stream(f, 0, head_len)
        else:
            yield from _literal_stream(f, head_len, size - head_len)
    finally:
        f.close()
