"""The delivery history ``cgtwist-admin rules replay`` runs rule sets over.

Owns the files under ``<base>/History/``: for every message the Rules see (the Server Rules at
the enqueuer, the Domain and Account Rules at LOCAL delivery), one JSON line with the envelope
(sender, recipients, the submit record: peer, protocol, account, TLS, SPF result, RBL zones),
the size and the header section (at most ``MAX_HEAD`` octets): everything a rule condition
reads. Lines are gathered on the reactor (no parsing there) and appended by a thread in
batches, one file per hour, never fsynced: the history is not mail, and the delivery path
gains no disk wait. Retention (``rules.history_days``) and size (``rules.history_max_mb``:
oldest hours go first; past it nothing is added until they have) are enforced at each batch.
Reading (``read_history``) skips a line being written and any it cannot read.
"""

from __future__ import annotations

import calendar
import json
import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, Mapping, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from cgtwist.logs import Logger
from cgtwist.message.headers import header_block
from cgtwist.settings import SettingsHolder
from cgtwist.types import Envelope

HISTORY_DIR = "History"
MAX_HEAD = 32 * 1024  # octets of a message's header section kept
MAX_BATCH = 500  # lines held before a write is started at once
MAX_HELD = 10 * MAX_BATCH  # lines held while a write is slow; more are not kept (logged)
FLUSH_DELAY = 1.0  # seconds lines wait for company before they are written
_PREFIX, _SUFFIX = "rules-", ".jsonl"
# Submit-record entries a condition reads (cgtwist.rules.facts.message_facts).
SUBMIT_KEYS = ("peer", "protocol", "account", "tls", "trusted", "spf", "rbl", "session")

log = Logger()
# One encoder for every line (json.dumps with separators builds a new one per call).
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def history_dir(base_dir: str) -> str:
    return os.path.join(base_dir, HISTORY_DIR)


@dataclass
class Delivered:
    """One message as the Rules saw it: ``level`` ``server`` (the enqueuer, every message)
    or ``local`` (delivered to ``account`` by LOCAL); ``head`` the header section's octets.
    Read-only once built (not frozen: one is built on the reactor for every message LOCAL
    delivers and another at the enqueuer, and a frozen dataclass's ``__init__`` sets each
    field through ``object.__setattr__``)."""

    when: float
    msg_id: str
    level: str
    sender: str
    recipients: tuple[str, ...]
    submit: Mapping[str, str] = field(default_factory=dict)
    size: int = 0
    head: bytes = b""
    account: str = ""

    def to_json(self) -> str:
        return _ENCODE(
            {
                "t": round(self.when, 3),
                "id": self.msg_id,
                "level": self.level,
                "account": self.account,
                "sender": self.sender,
                "rcpt": list(self.recipients),
                "submit": dict(self.submit),
                "size": self.size,
                "head": self.head.decode("latin-1"),  # every octet round-trips
            }
        )

    @classmethod
    def from_json(cls, line: str) -> Optional[Delivered]:
        """The record of one line, or None when it is not one (cut short, edited)."""
        try:
            o = json.loads(line)
            return cls(
                when=float(o["t"]),
                msg_id=str(o.get("id", "")),
                level=str(o["level"]),
                sender=str(o.get("sender", "")),
                recipients=tuple(str(r) for r in o.get("rcpt", ())),
                submit={str(k): str(v) for k, v in dict(o.get("submit", {})).items()},
                size=int(o.get("size", 0)),
                head=str(o.get("head", "")).encode("latin-1"),
                account=str(o.get("account", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeEncodeError):
            return None


def _hour_file(when: float) -> str:
    return _PREFIX + time.strftime("%Y%m%d%H", time.gmtime(when)) + _SUFFIX


def _hour_of(name: str) -> Optional[float]:
    """The UTC start of the hour a history file holds, or None for another file."""
    if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
        return None
    try:
        return float(calendar.timegm(time.strptime(name[len(_PREFIX) : -len(_SUFFIX)], "%Y%m%d%H")))
    except ValueError:
        return None


def _files(folder: str) -> list[tuple[float, str]]:
    """(hour, name) of the history files, oldest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = [(h, n) for n in names if (h := _hour_of(n)) is not None]
    return sorted(found)


def write_batch(
    folder: str, records: list[Delivered], now: float, days: int, max_bytes: int
) -> int:
    """(thread) Append ``records`` to their hours' files, then drop the hours older than
    ``days`` and the oldest while the history is over ``max_bytes``. Returns how many records
    were left out because the history was full (the newest hour alone at its limit)."""
    os.makedirs(folder, mode=0o750, exist_ok=True)
    by_file: dict[str, list[str]] = {}
    for r in records:
        by_file.setdefault(_hour_file(r.when), []).append(r.to_json() + "\n")
    left_out = 0
    for name, lines in by_file.items():
        path = os.path.join(folder, name)
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            size = 0
        if size >= max_bytes:
            left_out += len(lines)
            continue
        with open(path, "a", encoding="ascii") as f:  # no fsync: the history is not mail
            f.write("".join(lines))
    enforce(folder, now, days, max_bytes)
    return left_out


def enforce(folder: str, now: float, days: int, max_bytes: int) -> None:
    """(thread) Remove the hours older than ``days``, then the oldest hours while the history
    is larger than ``max_bytes`` (the newest hour stays)."""
    files = _files(folder)
    sizes: list[tuple[str, int]] = []
    for hour, name in files:
        path = os.path.join(folder, name)
        try:
            if hour + 3600 <= now - days * 86400:
                os.unlink(path)
                continue
            sizes.append((path, os.path.getsize(path)))
        except FileNotFoundError:
            continue
    total = sum(s for _p, s in sizes)
    for path, size in sizes[:-1]:
        if total <= max_bytes:
            break
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        total -= size


def read_history(base_dir: str, since: float, until: float) -> Iterator[Delivered]:
    """(blocking) The records from ``since`` to ``until`` (epoch seconds), oldest first; a
    line still being written, or damaged, is skipped. Safe while the server appends."""
    folder = history_dir(base_dir)
    for hour, name in _files(folder):
        if hour + 3600 <= since or hour > until:
            continue
        try:
            with open(os.path.join(folder, name), encoding="ascii", errors="replace") as f:
                for line in f:
                    if not line.endswith("\n"):
                        break  # being appended
                    r = Delivered.from_json(line)
                    if r is not None and since <= r.when <= until:
                        yield r
        except FileNotFoundError:
            continue  # removed by retention meanwhile


# Runs a blocking job off the reactor (a thread pool) and fires with its result.
Run = Callable[[Callable[[], int]], "defer.Deferred[int]"]


class RuleHistory:
    """``RuleHistory(base_dir, settings, clock, run)``: ``note`` what the Rules see; lines are
    written by ``run`` (the disk thread pool) in batches (one write per second at most, or per
    ``MAX_BATCH`` lines), in order, one batch at a time."""

    def __init__(
        self, base_dir: str, settings: SettingsHolder, clock: IReactorTime, run: Run
    ) -> None:
        self.folder = history_dir(base_dir)
        self.settings = settings
        self.clock = clock
        self.run = run
        self._batch: list[Delivered] = []
        self._timer: Optional[IDelayedCall] = None
        self._writing: Optional[defer.Deferred[None]] = None  # the batch being written
        self._full_logged = False
        self._dropped = 0  # lines not kept since the last write (MAX_HELD)

    def note(
        self, level: str, msg_id: str, envelope: Envelope, data: bytes, account: str = ""
    ) -> None:
        """Keep one message's envelope and header section (reactor: no parsing, no I/O)."""
        if self.settings.current.rules.history_days <= 0:
            return
        if len(self._batch) >= MAX_HELD:
            # The disk cannot keep up: the history loses lines, delivery never waits for it.
            self._dropped += 1
            return
        given = envelope.submit
        submit = {k: str(v) for k in SUBMIT_KEYS if (v := given.get(k))}
        self._batch.append(
            Delivered(
                self.clock.seconds(),
                msg_id,
                level,
                envelope.sender,
                tuple([r.address for r in envelope.recipients]),
                submit,
                len(data),
                header_block(data)[:MAX_HEAD],
                account,
            )
        )
        if len(self._batch) >= MAX_BATCH and self._writing is None:
            self.flush()
        elif self._timer is None:
            self._timer = self.clock.callLater(FLUSH_DELAY, self.flush)

    def flush(self) -> defer.Deferred[None]:
        """Start writing what is gathered (after the batch being written); a Deferred that
        fires when it is written (``close`` waits for it)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._writing is not None:
            # One batch at a time, in order: this one follows when the current one is done.
            return self._writing.addCallback(lambda _: self.flush())
        if not self._batch:
            return defer.succeed(None)
        batch, self._batch = self._batch, []
        rules = self.settings.current.rules
        dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warn(
                "rules history: {n} message(s) not kept: more than {held} lines waited for "
                "the disk",
                n=dropped,
                held=MAX_HELD,
            )
        finished: defer.Deferred[None] = defer.Deferred()
        self._writing = finished

        def written(left_out: int) -> None:
            if left_out and not self._full_logged:
                log.warn(
                    "rules history: full ({mb} MiB, rules.history_max_mb): {n} message(s) "
                    "not kept until older hours expire",
                    mb=rules.history_max_mb,
                    n=left_out,
                )
            self._full_logged = bool(left_out)

        def done(_: object) -> None:
            self._writing = None
            finished.callback(None)

        d = self.run(
            partial(
                write_batch,
                self.folder,
                batch,
                self.clock.seconds(),
                rules.history_days,
                rules.history_max_mb * 1024 * 1024,
            )
        )
        d.addCallback(written)
        d.addErrback(
            lambda f: log.failure("rules history: writing {n} line(s) failed", f, n=len(batch))
        )
        d.addBoth(done)
        return finished

    def close(self) -> defer.Deferred[None]:
        """Write what is still gathered (at stop)."""
        return self.flush()
