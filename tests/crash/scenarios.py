"""What the power-loss harness does to a server, and what must hold after each crash.

Owns the scenarios: each prepares a server, drives real clients (SMTP over smtplib, IMAP over
imaplib with TLS), writes every acknowledgement the client received into a ``Ledger`` (a 250
after DATA, a tagged OK for APPEND/COPY/MOVE/EXPUNGE, the UIDs a FETCH showed), and, given
the acknowledgements made before a cut, checks a server restarted on that crash state:

* every acknowledged message is delivered (at least once: RFC 5321 §6.1);
* no file in a Maildir is half a message (empty, truncated or unknown);
* an acknowledged MOVE or EXPUNGE is not undone (the message is not back in its source);
* a UID the client saw still names the same message under the same UIDVALIDITY
  (RFC 3501 §2.3.1.1): a message is never resurrected as a different one.

Duplicates of a message are allowed (at least once) and reported as notes. Messages carry a
tag in their Subject and a body that ends with a line naming the tag, so a stored file is
recognised and checked complete from its bytes alone.
"""

from __future__ import annotations

import imaplib
import os
import re
import smtplib
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from tests.e2e.harness import ALL_LISTENERS, Server, wait_for

SMTP_LISTENER = ALL_LISTENERS[0]
IMAP_LISTENER = ALL_LISTENERS[6]  # implicit TLS: LOGIN is allowed
ACCOUNT = "alice"
ADDRESS = "alice@example.test"
PASSWORD = "alice-secret"
_SUBJECT = re.compile(rb"^Subject: (crash-[0-9a-z-]+)\r?$", re.M)


# -- messages ---------------------------------------------------------------------------------
def body(tag: str, lines: int = 40) -> bytes:
    return (
        b"".join(
            b"line %d of %s: the quick brown fox jumps over the lazy dog\r\n" % (i, tag.encode())
            for i in range(lines)
        )
        + b"END "
        + tag.encode()
        + b"\r\n"
    )


def message(tag: str) -> bytes:
    return (
        f"From: sender@elsewhere.test\r\nTo: {ADDRESS}\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@crash.test>\r\n\r\n"
    ).encode() + body(tag)


def new_tag(label: str) -> str:
    return f"crash-{label}-{uuid.uuid4().hex[:10]}"


# -- the record of acknowledgements -----------------------------------------------------------
@dataclass(frozen=True)
class Ack:
    """One thing the client was told: ``kind`` ("smtp", "append", "copy", "move", "expunge",
    "uids", "present", or "begin-<kind>" when an operation was sent), about ``key``."""

    kind: str
    key: str
    info: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str) -> Any:
        return dict(self.info).get(name)


class Ledger:
    """The acknowledgements, in order; thread-safe (the client runs in its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acks: list[Ack] = []
        self.error: Optional[str] = None  # the client's own failure, if it had one

    def add(self, kind: str, key: str, **info: Any) -> None:
        with self._lock:
            self._acks.append(Ack(kind, key, tuple(sorted(info.items()))))

    def snapshot(self) -> tuple[Ack, ...]:
        with self._lock:
            return tuple(self._acks)


def keys(acks: tuple[Ack, ...], kind: str) -> list[str]:
    return [a.key for a in acks if a.kind == kind]


def first(acks: tuple[Ack, ...], kind: str, key: Optional[str] = None) -> Optional[Ack]:
    for a in acks:
        if a.kind == kind and (key is None or a.key == key):
            return a
    return None


# -- what is on the disk ------------------------------------------------------------------------
@dataclass
class Census:
    """Messages found in one Maildir folder: tag -> number of complete copies, and the files
    that are not a complete message."""

    counts: dict[str, int] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)


def census(folder: str) -> Census:
    c = Census()
    for sub in ("new", "cur"):
        d = os.path.join(folder, sub)
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            continue
        for name in names:
            path = os.path.join(d, name)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                c.broken.append(f"{sub}/{name} unreadable ({e.strerror})")
                continue
            m = _SUBJECT.search(data)
            if m is None:
                c.broken.append(f"{sub}/{name} ({len(data)} bytes, no known message)")
                continue
            tag = m.group(1).decode()
            if not data.endswith(body(tag)):
                c.broken.append(f"{sub}/{name} ({len(data)} bytes) is a truncated {tag}")
                continue
            c.counts[tag] = c.counts.get(tag, 0) + 1
    return c


def spool_files(base: str) -> list[str]:
    out = []
    for sub in ("Queue", os.path.join("Queue", "incoming")):
        try:
            out += [
                os.path.join(sub, n)
                for n in os.listdir(os.path.join(base, sub))
                if n.endswith(".msg")
            ]
        except FileNotFoundError:
            pass
    return out


def quarantined(base: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(base, "Queue", "corrupt")))
    except FileNotFoundError:
        return []


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- clients ------------------------------------------------------------------------------------
def smtp_send(
    server: Server, tag: str, ledger: Ledger, rcpts: tuple[str, ...] = (ADDRESS,)
) -> None:
    """One message in one session; the 250 after DATA is the acknowledgement (for every
    recipient: all of them were accepted, or sendmail raised)."""
    ledger.add("begin-smtp", tag)
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=600) as s:
        s.sendmail("sender@elsewhere.test", list(rcpts), message(tag))
    ledger.add("smtp", tag, rcpts=rcpts)


def undelivered(server: Server, acks: tuple[Ack, ...]) -> tuple[list[str], list[str], list[str]]:
    """For the messages acknowledged by SMTP (not counting those there before the scenario):
    (recipient copies missing, recipient copies duplicated, broken files), from every
    recipient's INBOX."""
    before = set(keys(acks, "present"))
    found = {ACCOUNT: census(server.maildir(ACCOUNT))}  # its broken files count in any case
    missing, dups = [], []
    for a in acks:
        if a.kind != "smtp" or a.key in before:
            continue
        for rcpt in a.get("rcpts") or (ADDRESS,):
            account = rcpt.split("@")[0]
            if account not in found:
                found[account] = census(server.maildir(account))
            n = found[account].counts.get(a.key, 0)
            if n == 0:
                missing.append(f"{a.key} for {account}")
            elif n > 1:
                dups.append(f"{a.key} for {account} x{n}")
    broken = [f"{account}/{b}" for account, c in found.items() for b in c.broken]
    return missing, dups, broken


def imap_connect(server: Server) -> imaplib.IMAP4_SSL:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    m = imaplib.IMAP4_SSL(
        "127.0.0.1", server.port("imap", tls="implicit"), ssl_context=ctx, timeout=600
    )
    m.login(ADDRESS, PASSWORD)
    return m


def imap_uids(m: imaplib.IMAP4_SSL) -> dict[str, list[int]]:
    """Tag -> UIDs in the selected mailbox."""
    typ, data = m.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out: dict[str, list[int]] = {}
    if typ != "OK":
        return out
    for item in data:
        if not isinstance(item, tuple):
            continue
        uid = re.search(rb"UID (\d+)", item[0])
        tag = re.search(rb"Subject: (crash-[0-9a-z-]+)", item[1])
        if uid and tag:
            out.setdefault(tag.group(1).decode(), []).append(int(uid.group(1)))
    return out


def _code(data: list[Any], name: bytes) -> Optional[list[bytes]]:
    for item in data:
        text = item if isinstance(item, bytes) else b""
        m = re.search(rb"\[" + name + rb" ([^\]]+)\]", text)
        if m:
            return m.group(1).split()
    return None


# -- scenarios ----------------------------------------------------------------------------------
class Scenario:
    """Base: one account, an SMTP and an IMAP listener. Subclasses fill in the steps."""

    name = "scenario"
    workers = 0  # smtp.workers
    arm_at_start = False  # number fsyncs from the server's start (spool recovery)

    def __init__(self, size: int) -> None:
        self.size = size  # messages (or rounds) the scenario sends

    def prepare(self, server: Server) -> None:
        """Before the server starts: the store (listeners, settings, account)."""
        server.set_listeners([SMTP_LISTENER, IMAP_LISTENER])
        if self.workers:
            server.admin("settings", "set", "smtp.workers", str(self.workers))
        server.admin("account", "add", ADDRESS, "--password", PASSWORD)

    def before_start(self, server: Server, ledger: Ledger) -> None:
        """Before the traced server starts (after ``prepare``)."""

    def setup(self, server: Server, ledger: Ledger) -> None:
        """After the traced server started, before fsyncs are numbered."""

    def drive(self, server: Server, ledger: Ledger) -> None:
        """The operations under test; record every acknowledgement in ``ledger``."""

    def check(self, server: Server, acks: tuple[Ack, ...]) -> Verdict:
        raise NotImplementedError

    def _inbox(self, server: Server) -> str:
        return server.maildir(ACCOUNT)

    def _delivered(self, server: Server, acks: tuple[Ack, ...], verdict: Verdict) -> None:
        """Each message acknowledged by SMTP is in each recipient's INBOX, complete."""
        missing, dups, broken = undelivered(server, acks)
        verdict.violations += [f"LOST: acknowledged by SMTP, not delivered: {m}" for m in missing]
        verdict.violations += [f"HALF-DELIVERED: {b}" for b in broken]
        verdict.notes += [f"duplicate: {d}" for d in dups]

    def settled(self, server: Server, ledger: Ledger) -> bool:
        """The live server finished the work the scenario gave it."""
        return not spool_files(server.base) and not undelivered(server, ledger.snapshot())[0]


class SmtpReceive(Scenario):
    """SMTP receive and LOCAL delivery: ``size`` messages, one session each, each to two
    accounts (so the spool journals per-recipient states)."""

    name = "smtp"
    OTHER = "bob@example.test"

    def prepare(self, server: Server) -> None:
        super().prepare(server)
        server.admin("account", "add", self.OTHER, "--password", PASSWORD)

    def drive(self, server: Server, ledger: Ledger) -> None:
        for i in range(self.size):
            smtp_send(server, new_tag(f"s{i}"), ledger, rcpts=(ADDRESS, self.OTHER))

    def check(self, server: Server, acks: tuple[Ack, ...]) -> Verdict:
        v = Verdict()
        self._delivered(server, acks, v)
        return v


class NewAccount(Scenario):
    """An account is created (cgtwist-admin writes the store) and mail to it is accepted:
    the account must survive with the mail, or the message has nowhere to go."""

    name = "account"

    def drive(self, server: Server, ledger: Ledger) -> None:
        for i in range(self.size):
            address = f"new{i}-{uuid.uuid4().hex[:6]}@example.test"
            server.admin("account", "add", address, "--password", PASSWORD)
            ledger.add("account", address)
            smtp_send(server, new_tag(f"n{i}"), ledger, rcpts=(address,))

    def check(self, server: Server, acks: tuple[Ack, ...]) -> Verdict:
        v = Verdict()
        self._delivered(server, acks, v)
        listed = server.admin("account", "list", check=False).stdout
        v.violations += [
            f"ACCOUNT GONE: {a} was created (and mailed) before the cut"
            for a in keys(acks, "account")
            if a.split("@")[0] not in listed
        ]
        return v


class SmtpWorkers(SmtpReceive):
    """The same with ``smtp.workers 2``: stored in Queue/incoming/ by a worker, adopted into
    Queue/ by the server.

    Queue/free/ starts with files of finished messages, as a running server's pool holds:
    after its first message a worker reserves them (``<id>.rsv``, named durably) and commits
    the next messages in place under those names, one fsync before the 250. None of the
    old messages may come back from a reserve file after a cut."""

    name = "smtp-workers"
    workers = 2
    POOL = 6

    def before_start(self, server: Server, ledger: Ledger) -> None:
        from cgtwist.spool import format as fmt
        from cgtwist.types import Envelope, Recipient

        free = os.path.join(server.base, "Queue", "free")
        os.makedirs(free, exist_ok=True)
        envelope = Envelope("sender@elsewhere.test", [Recipient(ADDRESS)])
        for i in range(self.POOL):
            old = f"{i + 1:016d}-1-{i + 1}"  # a finished message's id, long ago
            chunks, _ = fmt.encode(
                old, fmt.envelope_json(envelope, 1.0), message(f"crash-stalepool-{i}")
            )
            with open(os.path.join(free, old), "wb") as f:
                f.write(b"".join(chunks))

    def check(self, server: Server, acks: tuple[Ack, ...]) -> Verdict:
        v = super().check(server, acks)
        stale = census(server.maildir(ACCOUNT)).counts
        v.violations += [
            f"BROUGHT BACK: a pool file's old message {tag} was delivered"
            for tag in stale
            if tag.startswith("crash-stalepool-")
        ]
        return v


class SpoolRecovery(Scenario):
    """Spool recovery: a message is accepted (250) by a server that SIGKILLs itself before
    delivering (the ``local-before-rename`` crash point); the disk is synced; the
    traced server then starts on it, numbering fsyncs from its start: recovery, delivery of
    the recovered messages and their removal from the spool are the operations cut at."""

    name = "recovery"
    arm_at_start = True

    def before_start(self, server: Server, ledger: Ledger) -> None:
        # One message: a restart with the crash point set would deliver (and die at) the
        # oldest queued message again before it accepted another.
        server.start(extra_env={"CGTWIST_CRASHPOINT": "local-before-rename"})
        smtp_send(server, new_tag("r0"), ledger)
        assert server.proc is not None
        server.proc.wait(120)  # it killed itself at the delivery
        server.proc = None
        assert spool_files(server.base), "the crash point left nothing queued"

    def check(self, server: Server, acks: tuple[Ack, ...]) -> Verdict:
        v = Verdict()
        self._delivered(server, acks, v)
        return v


class ImapMailbox(Scenario):
    """IMAP on a Maildir with delivered mail: SELECT (moves new/ to cur/), a delivery into
    new/, APPEND, COPY and MOVE to another folder, STORE \\Deleted + EXPUNGE, another
    delivery; ``size`` rounds of that on fresh messages."""

    name = "imap"
    FOLDER = "Archive"

    def setup(self, server: Server, ledger: Ledger) -> None:
        self.rounds: list[list[str]] = []
        for r in range(self.size):
            tags = [new_tag(f"m{r}{i}") for i in range(4)]
            self.rounds.append(tags)
            for tag in tags:
                smtp_send(server, tag, ledger)
        wait_for(
            lambda: all(
                t in census(self._inbox(server)).counts for round_ in self.rounds for t in round_
            ),
            120,
            "the setup mail",
        )
        m = imap_connect(server)
        try:
            typ, _ = m.create(self.FOLDER)
            assert typ == "OK", f"CREATE {self.FOLDER}: {typ}"
        finally:
            m.logout()
        for tag in keys(ledger.snapshot(), "smtp"):
            ledger.add("present", tag)

    def drive(self, server: Server, ledger: Ledger) -> None:
        m = imap_connect(server)
        try:
            for r, (keep, moved, gone, _untouched) in enumerate(self.rounds):
                typ, _ = m.select("INBOX")
                assert typ == "OK"
                ledger.add("select", f"round {r}")
                uidvalidity = int(m.response("UIDVALIDITY")[1][0] or 0)
                uids = imap_uids(m)
                ledger.add(
                    "uids",
                    "INBOX",
                    uidvalidity=uidvalidity,
                    map=tuple((t, u[0]) for t, u in sorted(uids.items())),
                )
                # Mail arrives after SELECT moved new/ to cur/: its delivery fsyncs new/. Wait
                # for it, so that it comes before APPEND's fsync of cur/ in every run.
                arrived = new_tag(f"d{r}")
                smtp_send(server, arrived, ledger)
                wait_for(
                    lambda tag=arrived: tag in census(self._inbox(server)).counts,  # type: ignore[misc]
                    120,
                    "the delivery after SELECT",
                )
                appended = new_tag(f"a{r}")
                ledger.add("begin-append", appended)
                typ, data = m.append("INBOX", "", imaplib.Time2Internaldate(0), message(appended))
                assert typ == "OK", data
                code = _code(data, b"APPENDUID")
                ledger.add(
                    "append",
                    appended,
                    uidvalidity=int(code[0]) if code else 0,
                    uid=int(code[1]) if code else 0,
                )
                ledger.add("begin-copy", keep)
                typ, data = m.uid("COPY", str(uids[keep][0]), self.FOLDER)
                assert typ == "OK", data
                ledger.add("copy", keep)
                ledger.add("begin-move", moved)
                typ, data = m.uid("MOVE", str(uids[moved][0]), self.FOLDER)
                assert typ == "OK", data
                ledger.add("move", moved)
                ledger.add("begin-expunge", gone)
                typ, data = m.uid("STORE", str(uids[gone][0]), "+FLAGS.SILENT", r"(\Deleted)")
                assert typ == "OK", data
                typ, data = m.expunge()
                assert typ == "OK", data
                ledger.add("expunge", gone)
                smtp_send(server, new_tag(f"e{r}"), ledger)
        finally:
            try:
                m.logout()
            except Exception:
                pass

    def _listing(self, server: Server, folder: str) -> tuple[int, dict[str, list[int]]]:
        m = imap_connect(server)
        try:
            typ, _ = m.select(folder)
            if typ != "OK":
                return 0, {}
            validity = int(m.response("UIDVALIDITY")[1][0] or 0)
            return validity, imap_uids(m)
        finally:
            m.logout()

    def check(self, server: Server, acks: tuple[Ack, ...]) -> Verdict:
        v = Verdict()
        inbox_dir = self._inbox(server)
        inbox = census(inbox_dir)
        archive = census(os.path.join(inbox_dir, "." + self.FOLDER))
        v.violations += [f"HALF-DELIVERED: {self.FOLDER}/{b}" for b in archive.broken]
        for tag in keys(acks, "present"):
            n_in, n_ar = inbox.counts.get(tag, 0), archive.counts.get(tag, 0)
            if first(acks, "move", tag):
                if n_ar == 0:
                    v.violations.append(f"LOST: moved {tag} is not in {self.FOLDER}")
                if n_in:
                    v.violations.append(f"RESURRECTED: moved {tag} is back in INBOX")
            elif first(acks, "expunge", tag):
                if n_in:
                    v.violations.append(f"RESURRECTED: expunged {tag} is back in INBOX")
            elif first(acks, "begin-move", tag):
                if n_in + n_ar == 0:
                    v.violations.append(f"LOST: {tag} (MOVE not acknowledged) is in no folder")
            elif first(acks, "begin-expunge", tag):
                pass  # EXPUNGE sent, no OK yet: either outcome is right
            else:
                if n_in == 0:
                    v.violations.append(f"LOST: {tag} is no longer in INBOX")
                if first(acks, "copy", tag) and n_ar == 0:
                    v.violations.append(f"LOST: copy of {tag} is not in {self.FOLDER}")
            if n_in > 1 or n_ar > 1:
                v.notes.append(f"duplicate: {tag} INBOX x{n_in}, {self.FOLDER} x{n_ar}")
        self._delivered(server, acks, v)  # and INBOX's broken files
        for tag in keys(acks, "append"):
            if inbox.counts.get(tag, 0) == 0:
                v.violations.append(f"LOST: APPEND of {tag} was acknowledged, not in INBOX")
        # UIDs (RFC 3501 §2.3.1.1): under one UIDVALIDITY a UID the client saw names the same
        # message for ever, and a message keeps its UID.
        try:
            validity, now = self._listing(server, "INBOX")
        except Exception as e:  # noqa: BLE001 - reported, not raised
            v.violations.append(f"IMAP after restart failed: {e!r}")
            return v
        by_uid = {u: t for t, us in now.items() for u in us}
        seen: dict[int, str] = {}
        for a in acks:
            if a.kind == "uids" and a.get("uidvalidity") == validity:
                seen.update({u: t for t, u in a.get("map")})
            elif a.kind == "append" and a.get("uidvalidity") == validity and a.get("uid"):
                seen[a.get("uid")] = a.key
        for uid, tag in sorted(seen.items()):
            other = by_uid.get(uid)
            if other is not None and other != tag:
                v.violations.append(f"UID REUSED: INBOX UID {uid} was {tag}, is now {other}")
            elif other is None and tag in now:
                v.violations.append(f"UID CHANGED: {tag} had UID {uid}, now {now[tag]}")
        if seen and not any(
            a.kind in ("uids", "append") and a.get("uidvalidity") == validity for a in acks
        ):
            v.notes.append(f"INBOX UIDVALIDITY changed to {validity}")
        return v


SCENARIOS: dict[str, type[Scenario]] = {
    cls.name: cls for cls in (SmtpReceive, SmtpWorkers, ImapMailbox, SpoolRecovery, NewAccount)
}
