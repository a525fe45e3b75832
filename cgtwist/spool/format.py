"""The spool file and journal formats: encode, decode and validate. Pure, no I/O.

A message file ``<id>.msg`` is::

    CGTWIST-SPOOL 1 <id> <envelope-length> <data-length>\\n   header (format version, own name)
    <envelope JSON, envelope-length octets>                 return-path, recipients, submit info
    <message, data-length octets>                           the message bytes, untouched
    \\nEND <sha256 hex of everything above>\\n                explicit trailer

The header carries the file's own id (Exim's insurance against a lost directory) and the lengths,
the trailer a checksum (Postfix: "every queue file must end with an explicit END record"), so a
truncated, zero-length, garbage or bit-flipped file is detected and never delivered.

The journal ``<id>.jrn`` beside it (Exim's ``-J`` file) is an append-only list of lines
``<crc32 hex> <JSON>\\n``; a torn last line or a line whose CRC does not match is ignored. Kinds:
``r`` a recipient's new state, ``a`` a delivery attempt (history), ``h`` held/released,
``b`` recipients whose failure was reported (bounced).
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from cgtwist.types import Envelope, Recipient

MAGIC = b"CGTWIST-SPOOL"
VERSION = 1
TRAILER_LEN = len(b"\nEND ") + 64 + 1
MAX_HEADER = 256
ID_RE = re.compile(r"^[0-9]{16}-[0-9]{1,10}-[0-9]{1,12}$")
_HEADER_RE = re.compile(rb"^CGTWIST-SPOOL ([0-9]+) (\S+) ([0-9]+) ([0-9]+)\n")


class SpoolCorrupt(Exception):
    """A spool file that fails validation; ``reason`` says how (for the quarantine log line)."""

    def __init__(self, msg_id: str, reason: str) -> None:
        super().__init__(f"{msg_id}: {reason}")
        self.msg_id = msg_id
        self.reason = reason


@dataclass
class SpoolEntry:
    """One spooled message with its journal applied (what the queue manager works from)."""

    msg_id: str
    envelope: Envelope
    queued: float
    data: Optional[bytes] = None
    history: list[dict[str, Any]] = field(default_factory=list)
    held: bool = False
    bounced: set[int] = field(default_factory=set)


# One encoder for every envelope and journal record: json.dumps with separators builds a
# new JSONEncoder at each call (a fifth of an envelope's encoding), the same text.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def valid_id(msg_id: str) -> bool:
    """True for ids this spool generates; anything else never becomes a path."""
    return isinstance(msg_id, str) and bool(ID_RE.match(msg_id))


def _recipient_dict(r: Recipient) -> dict[str, Any]:
    """``dataclasses.asdict`` for a Recipient (its fields are all strings), without asdict's
    recursive deep copy: this runs for every recipient of every message spooled."""
    return {name: getattr(r, name) for name in _RCPT_FIELD_ORDER}


def envelope_json(envelope: Envelope, queued: float) -> bytes:
    obj = {
        "sender": envelope.sender,
        "recipients": [_recipient_dict(r) for r in envelope.recipients],
        "submit": dict(envelope.submit),
        "params": dict(envelope.params),
        "queued": queued,
    }
    return _ENCODE(obj).encode("ascii")


def parse_envelope(raw: bytes) -> tuple[Envelope, float]:
    obj = json.loads(raw)
    rcpts = [
        Recipient(**{k: str(v) for k, v in r.items() if k in _RCPT_FIELDS})
        for r in obj["recipients"]
    ]
    env = Envelope(
        sender=str(obj["sender"]),
        recipients=rcpts,
        submit={str(k): str(v) for k, v in obj.get("submit", {}).items()},
        params={str(k): str(v) for k, v in obj.get("params", {}).items()},
    )
    return env, float(obj["queued"])


_RCPT_FIELD_ORDER = tuple(Recipient.__dataclass_fields__)
_RCPT_FIELDS = frozenset(_RCPT_FIELD_ORDER)


def encode(msg_id: str, env_json: bytes, data: bytes) -> tuple[list[bytes], int]:
    """The chunks of a message file (header, envelope, data, trailer) and its total size."""
    header = b"%s %d %s %d %d\n" % (
        MAGIC,
        VERSION,
        msg_id.encode("ascii"),
        len(env_json),
        len(data),
    )
    h = hashlib.sha256(header)
    h.update(env_json)
    h.update(data)
    trailer = b"\nEND " + h.hexdigest().encode("ascii") + b"\n"
    chunks = [header, env_json, data, trailer]
    return chunks, sum(len(c) for c in chunks)


def check_structure(msg_id: str, head: bytes, size: int, tail: bytes) -> tuple[int, int, int]:
    """Cheap validation from the first bytes, the file size and the last TRAILER_LEN bytes.

    Returns (header length, envelope length, data length) or raises SpoolCorrupt.
    """
    if size == 0:
        raise SpoolCorrupt(msg_id, "zero-length file")
    m = _HEADER_RE.match(head[:MAX_HEADER])
    if not m:
        raise SpoolCorrupt(msg_id, "no spool header (garbage)")
    if int(m.group(1)) != VERSION:
        raise SpoolCorrupt(msg_id, f"unknown format version {int(m.group(1))}")
    if m.group(2).decode("ascii", "replace") != msg_id:
        raise SpoolCorrupt(msg_id, "header names another message id")
    hlen, elen, dlen = m.end(), int(m.group(3)), int(m.group(4))
    expected = hlen + elen + dlen + TRAILER_LEN
    if size < expected:
        raise SpoolCorrupt(msg_id, f"truncated: {size} of {expected} octets")
    if size > expected:
        raise SpoolCorrupt(msg_id, f"trailing garbage: {size} octets, expected {expected}")
    if not (tail.startswith(b"\nEND ") and tail.endswith(b"\n") and len(tail) == TRAILER_LEN):
        raise SpoolCorrupt(msg_id, "missing END trailer")
    return hlen, elen, dlen


def decode(msg_id: str, raw: bytes) -> tuple[Envelope, float, bytes]:
    """Validate a whole message file and return (envelope, queued time, message bytes)."""
    hlen, elen, dlen = check_structure(msg_id, raw[:MAX_HEADER], len(raw), raw[-TRAILER_LEN:])
    body_end = hlen + elen + dlen
    digest = hashlib.sha256(memoryview(raw)[:body_end]).hexdigest().encode("ascii")
    if raw[body_end + 5 : body_end + 5 + 64] != digest:
        raise SpoolCorrupt(msg_id, "checksum mismatch")
    try:
        env, queued = parse_envelope(raw[hlen : hlen + elen])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SpoolCorrupt(msg_id, f"bad envelope: {e.__class__.__name__}") from None
    return env, queued, raw[hlen + elen : body_end]


def holds_message(msg_id: str, raw: bytes) -> bool:
    """Whether ``raw`` is the whole, valid spool file of ``msg_id``. An SMTP worker commits a
    message in place into a reserve file named ``<id>.rsv`` (``spool.Spool``): such a file
    holds a message only when its header names that very id and its checksum holds; a reserve
    file still holding its pool file's old message, or one half written when the writer
    stopped, does not (nobody was told 250 for it)."""
    try:
        decode(msg_id, raw)
    except SpoolCorrupt:
        return False
    return True


def journal_line(record: dict[str, Any]) -> bytes:
    body = _ENCODE(record).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(body), body)


def parse_journal(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """The valid journal records in order, and how many lines were torn or damaged."""
    out: list[dict[str, Any]] = []
    bad = 0
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # a torn last line (crash during append): never acted upon
        bad += 1
    for line in lines:
        crc, _, body = line.partition(b" ")
        try:
            if int(crc, 16) != zlib.crc32(body):
                raise ValueError("crc")
            rec = json.loads(body)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            bad += 1
            continue
        out.append(rec)
    return out, bad


def recipient_record(index: int, r: Recipient, when: float) -> dict[str, Any]:
    return {"k": "r", "i": index, "s": r.state, "ro": r.route, "d": r.detail, "t": when}


def apply_journal(entry: SpoolEntry, records: Iterable[dict[str, Any]]) -> None:
    """Replay journal records onto a freshly decoded entry (later records win)."""
    rcpts = entry.envelope.recipients
    for rec in records:
        kind = rec.get("k")
        try:
            if kind == "r":
                i = int(rec["i"])
                if 0 <= i < len(rcpts):
                    r = rcpts[i]
                    r.state = str(rec.get("s", r.state))
                    r.route = str(rec.get("ro", r.route))
                    r.detail = str(rec.get("d", r.detail))
            elif kind == "a":
                entry.history.append(rec)
            elif kind == "h":
                entry.held = bool(rec.get("v"))
            elif kind == "b":
                entry.bounced.update(int(i) for i in rec.get("i", []))
        except (KeyError, ValueError, TypeError):
            continue


def writer_pid(name: str) -> Optional[int]:
    """The process id in a spool file name (``<time>-<pid>-<n>.ext``), None if not one."""
    parts = name.rsplit(".", 1)[0].split("-")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
