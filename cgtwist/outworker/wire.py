"""The line protocol between the server and an outbound delivery worker.

Owns the encoding of one delivery attempt (server -> worker) and of its per-recipient answer
(worker -> server), and the checks a side applies before it believes a line. Every frame is
one line: a letter, a space, JSON; an attempt's line is followed by the message's octets (as
many as its ``len`` says), so the data is never re-encoded.

Server -> worker:
  ``S {settings}``   the administrator's settings (``Settings.overrides``), at start and on
                     every change;
  ``P``              a liveness probe, answered at once with ``P``;
  ``A {attempt}``    + ``len`` octets: ``n`` (the server's number for it), ``id`` (message
                     id), ``q`` (destination domain or ``[ip]``), ``s`` (envelope sender),
                     ``p`` (MAIL parameters as received), ``r`` ([address, NOTIFY, ORCPT] per
                     recipient), ``len``.
Worker -> server:
  ``D {result}``     ``n``, ``r`` ([state, detail] per recipient, in order), ``a`` (the
                     host-level attempts: [time, host, ip, reply, tls]);
  ``P``              the answer to a probe (the worker's reactor is turning);
  ``H``              ready: the worker's modules are loaded and its reactor runs.

A worker's answer is checked whole (its number, one state of delivered / failed / pending per
recipient, strings where strings belong): a bad line is refused with the reason, which the
server logs, never believed in part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

from cgtwist.types import Envelope, Recipient

STATES = frozenset({"delivered", "failed", "pending"})
MAX_HEADER = 1 << 20  # an attempt's or a result's JSON line (a few hundred recipients' details)
# Recipients of one attempt a worker takes: a result line holds a detail per recipient (at
# most about 2.5 kB each, JSON-escaped: bounce.one_line's 900 characters, the host and the
# address), so this many always fit in MAX_HEADER. Bigger attempts the server makes itself.
MAX_RECIPIENTS = 256


class BadFrame(ValueError):
    """A line the other side should not have sent (the text says what is wrong)."""


@dataclass
class Request:
    """One attempt as the worker receives it."""

    n: int
    msg_id: str
    queue: str
    envelope: Envelope
    data: bytes
    recipients: list[Recipient] = field(default_factory=list)


@dataclass(frozen=True)
class HostAttempt:
    """One host tried (``cgtwist.delivery.smtp.Attempt``'s fields), for the queue's history."""

    time: float
    host: str
    ip: str
    reply: str
    tls: Optional[str]


@dataclass(frozen=True)
class Result:
    """A worker's answer to attempt ``n``: (state, detail) per recipient, hosts tried."""

    n: int
    states: list[tuple[str, str]]
    attempts: list[HostAttempt]


def _json(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode_settings(overrides: Mapping[str, object]) -> bytes:
    return b"S " + _json(overrides) + b"\n"


def encode_request(
    n: int,
    msg_id: str,
    queue: str,
    envelope: Envelope,
    data: bytes,
    recipients: list[Recipient],
) -> bytes:
    header = {
        "n": n,
        "id": msg_id,
        "q": queue,
        "s": envelope.sender,
        "p": dict(envelope.params),
        "r": [[r.address, r.notify, r.orcpt] for r in recipients],
        "len": len(data),
    }
    return b"A " + _json(header) + b"\n" + data


@dataclass(frozen=True)
class _Header:
    """An ``A`` line, checked; its data follows."""

    n: int
    msg_id: str
    queue: str
    sender: str
    params: dict[str, str]
    recipients: list[tuple[str, str, str]]
    length: int


@dataclass(frozen=True)
class SettingsLine:
    """An ``S`` line: the administrator's settings."""

    overrides: dict[str, object]


@dataclass(frozen=True)
class Probe:
    """A ``P`` line: answer it."""


PROBE = b"P\n"
READY = b"H\n"


@dataclass(frozen=True)
class BadLine:
    """A line refused, with the reason."""

    why: str


Frame = Union[Request, SettingsLine, Probe, BadLine]


def decode_request_header(line: bytes) -> _Header:
    """The JSON of an ``A`` line, checked (the data that follows is read by the caller)."""
    h = _object(line[2:])
    n, msg_id, queue, sender = h.get("n"), h.get("id"), h.get("q"), h.get("s")
    params, rcpts, length = h.get("p"), h.get("r"), h.get("len")
    if not (
        isinstance(n, int)
        and isinstance(msg_id, str)
        and isinstance(queue, str)
        and isinstance(sender, str)
        and isinstance(params, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
        and isinstance(length, int)
        and length >= 0
        and isinstance(rcpts, list)
        and rcpts
        and all(
            isinstance(x, list) and len(x) == 3 and all(isinstance(v, str) for v in x)
            for x in rcpts
        )
    ):
        raise BadFrame("attempt line without its fields")
    return _Header(
        n,
        msg_id,
        queue,
        sender,
        {str(k): str(v) for k, v in params.items()},
        [(str(a), str(notify), str(orcpt)) for a, notify, orcpt in rcpts],
        length,
    )


def request_from(h: _Header, data: bytes) -> Request:
    recipients = [
        Recipient(address=a, notify=notify, orcpt=orcpt) for a, notify, orcpt in h.recipients
    ]
    envelope = Envelope(sender=h.sender, recipients=recipients, params=dict(h.params))
    return Request(h.n, h.msg_id, h.queue, envelope, data, recipients)


def encode_result(n: int, recipients: list[Recipient], attempts: list[HostAttempt]) -> bytes:
    return (
        b"D "
        + _json(
            {
                "n": n,
                "r": [[r.state, r.detail] for r in recipients],
                "a": [[a.time, a.host, a.ip, a.reply, a.tls] for a in attempts],
            }
        )
        + b"\n"
    )


def decode_result(line: bytes) -> Result:
    """A ``D`` line (without its newline), checked whole."""
    if not line.startswith(b"D "):
        raise BadFrame("not a result line")
    obj = _object(line[2:])
    n = obj.get("n")
    states = obj.get("r")
    attempts = obj.get("a", [])
    if not isinstance(n, int) or not isinstance(states, list) or not isinstance(attempts, list):
        raise BadFrame("result line without its number, states or attempts")
    out: list[tuple[str, str]] = []
    for item in states:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or item[0] not in STATES
            or not isinstance(item[1], str)
        ):
            raise BadFrame(f"bad recipient state {str(item)[:100]}")
        out.append((item[0], item[1]))
    tried: list[HostAttempt] = []
    for a in attempts:
        if (
            not isinstance(a, list)
            or len(a) != 5
            or not isinstance(a[0], (int, float))
            or not all(isinstance(v, str) for v in a[1:4])
            or not (a[4] is None or isinstance(a[4], str))
        ):
            raise BadFrame(f"bad host attempt {str(a)[:100]}")
        tried.append(HostAttempt(float(a[0]), a[1], a[2], a[3], a[4]))
    return Result(n, out, tried)


def _object(raw: bytes) -> dict[str, object]:
    try:
        obj = json.loads(raw)
    except ValueError as e:  # UnicodeDecodeError too
        raise BadFrame(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadFrame("not a JSON object")
    return {str(k): v for k, v in obj.items()}


class RequestReader:
    """The worker's side of its standard input: bytes in, whole frames out.

    ``feed(data)`` returns the frames completed: Request, SettingsLine, or BadLine for a line
    it refuses (the stream goes on at the next line).
    """

    def __init__(self) -> None:
        self._buf = b""  # a line being read
        self._header: Optional[_Header] = None  # an attempt whose data is being read
        self._body: list[bytes] = []  # its data so far, in pieces (never copied while growing)
        self._body_len = 0

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        while data:
            if self._header is not None:
                want = self._header.length - self._body_len
                piece, data = data[:want], data[want:]
                self._body.append(piece)
                self._body_len += len(piece)
                if self._body_len == self._header.length:
                    out.append(request_from(self._header, b"".join(self._body)))
                    self._header, self._body, self._body_len = None, [], 0
                continue
            nl = data.find(b"\n")
            if nl < 0:
                self._buf += data
                if len(self._buf) > MAX_HEADER:
                    self._buf = b""
                    out.append(BadLine(f"line over {MAX_HEADER} bytes dropped"))
                break
            line, data = self._buf + data[:nl], data[nl + 1 :]
            self._buf = b""
            try:
                if line.startswith(b"A "):
                    header = decode_request_header(line)
                    if header.length == 0:
                        out.append(request_from(header, b""))
                    else:
                        self._header = header
                elif line.startswith(b"S "):
                    out.append(SettingsLine(_object(line[2:])))
                elif line == b"P":
                    out.append(Probe())
                elif line:
                    out.append(BadLine(f"unknown line {line[:100]!r}"))
            except BadFrame as e:
                out.append(BadLine(str(e)))
        return out
