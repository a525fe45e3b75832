"""In-process drivers: the real CgSMTP, CgIMAP4Server and POP3Server, fed one command at a time.

Each driver builds its protocol through its factory as ``cgtwist.app`` does (listener spec,
settings holder, portal with the project's AccountChecker where the test fakes allow, shared
AuthPenalty, clock), on a StringTransport, then sends a command, lets the clock run out any
failure delay, and checks the reply: SMTP one final ``ddd `` line (RFC 5321 §4.2), IMAP one
tagged OK/NO/BAD per tag (RFC 3501 §2.2.2) with literals skipped, POP3 one ``+OK``/``-ERR``
status line or a terminated multi-line answer (RFC 1939 §3). ``Watch`` fails a stall over a
second and any logged traceback.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

from twisted.internet import address, task
from twisted.internet.testing import StringTransport

from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec
from tests.fuzz.grammar import IMAPCommand
from tests.fuzz.watch import Watch

# Longer than any failure delay the settings below allow, shorter than every idle timeout
# (imap.preauth_timeout is 60 s), so the clock never closes a session by itself.
SETTLE = 20.0


class Closed(Exception):
    """The server closed the connection; the rest of the example is not sent."""


# -- SMTP ---------------------------------------------------------------------------------------
SMTP_REPLY = re.compile(rb"^[2-5][0-9][0-9]([ -].*)?$", re.S)


class SMTPDriver:
    """CgSMTP from SMTPFactory (with its own AuthPenalty) with the fake policy and submission
    of the SMTP unit tests and the project's AccountChecker over the POP3 tests' fake store."""

    STATES = ("fresh", "transaction", "authenticated")

    def __init__(self, state: str, watch: Watch) -> None:
        from cgtwist.core.auth import AccountChecker
        from tests.protocols.test_pop3_fakes import FakeStore
        from tests.protocols.test_smtp_fakes import Harness, make_portal

        store = FakeStore()
        store.add("alice", "secret", frozenset({"mail", "roaming"}))
        listener = ListenerSpec(
            "smtp", 587, submission=state == "authenticated", allow_plain_auth=True
        )
        self.watch = watch
        self.h = Harness(
            listener=listener,
            portal=make_portal(AccountChecker(store)),  # type: ignore[arg-type]
            overrides={"smtp.max_errors": 1000, "auth.max_failures": 1000},
        )
        self.in_data = False
        self.transcript: list[tuple[bytes, list[bytes]]] = []
        setup = {
            "fresh": [],
            "transaction": [
                b"EHLO c.example",
                b"MAIL FROM:<a@b.example>",
                b"RCPT TO:<alice@example.com>",
            ],
            "authenticated": [
                b"EHLO c.example",
                b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHNlY3JldA==",
            ],
        }[state]
        self._seen = len(self.h.transport.value())
        for line in setup:
            replies = self.send(line)
            assert replies[-1][:1] in b"23", (line, replies)

    def _replies(self) -> list[bytes]:
        out = self.h.transport.value()[self._seen :]
        self._seen += len(out)
        return [x for x in out.split(b"\r\n") if x]

    def send(self, line: bytes) -> list[bytes]:
        """Send one command (in DATA: ``line`` as the body, then the final dot); returns the
        reply lines after checking there is exactly one final reply."""
        if self.h.transport.disconnecting:
            raise Closed()
        data = line + b"\r\n"
        if self.in_data:
            data = (b".." if line == b"." else line) + b"\r\n.\r\n"
        self.watch.timed(data[:60], lambda: self.h.proto.dataReceived(data))
        self.h.clock.advance(SETTLE)
        replies = self._replies()
        self.transcript.append((data[:200], replies))
        for r in replies:
            assert SMTP_REPLY.match(r), f"not an SMTP reply: {r!r} to {data[:80]!r}"
        final = [r for r in replies if r[3:4] in (b" ", b"")]
        assert len(final) == 1, f"{len(final)} final replies to {data[:80]!r}: {replies!r}"
        self.in_data = final[0].startswith(b"354")
        if final[0].startswith(b"421") or final[0].startswith(b"221"):
            raise Closed()
        return replies

    def close(self) -> None:
        if not self.h.transport.disconnecting:
            self.h.proto.connectionLost(None)  # type: ignore[arg-type]


# -- IMAP ---------------------------------------------------------------------------------------
_LITERAL_AT_END = re.compile(rb"\{(\d+)\}$")


def imap_lines(data: bytes) -> list[bytes]:
    """Response lines with the contents of literals (``{n}`` at a line's end) skipped."""
    lines, i = [], 0
    while i < len(data):
        j = data.find(b"\r\n", i)
        if j < 0:
            lines.append(data[i:])
            break
        line = data[i:j]
        i = j + 2
        m = _LITERAL_AT_END.search(line)
        while m:  # the literal, then the rest of the same response line
            i += int(m.group(1))
            j = data.find(b"\r\n", i)
            j = len(data) if j < 0 else j
            rest = data[i:j]
            i = j + 2
            line += b"<literal>" + rest
            m = _LITERAL_AT_END.search(rest)
        lines.append(line)
    return lines


class IMAPDriver:
    """CgIMAP4Server from IMAPFactory over a real MaildirAccount (the IMAP unit tests' World,
    whose factory keeps its own AuthPenalty); LOGIN and AUTHENTICATE over a listener allowing
    plaintext."""

    STATES = ("not_authenticated", "authenticated", "selected")

    def __init__(self, state: str, watch: Watch) -> None:
        from tests.protocols.test_imap_support import MULTIPART, Client, World

        self.watch = watch
        self.world = World(
            {
                "auth.fail_delays": [1],
                "auth.max_failures": 1000,
                "imap.max_command_length": 8192,
                "imap.max_literal": 1024 * 1024,
            }
        )
        self.world.deliver("alice@example.com")
        self.world.deliver("alice@example.com", MULTIPART)
        self.client = Client(self.world, factory=self.world.factory(allow_plain=True))
        self.transcript: list[tuple[bytes, list[bytes]]] = []
        if state in ("authenticated", "selected"):
            self.client.login()
        if state == "selected":
            self.client.select()

    @property
    def closed(self) -> bool:
        return bool(self.client.transport.disconnecting) or self.client.proto._closed

    def _feed(self, data: bytes) -> bytes:
        if self.closed:
            return b""
        self.watch.timed(data[:60], lambda: self.client.proto.dataReceived(data))
        self.world.clock.advance(SETTLE)
        return self.client.take()

    def send(self, cmd: IMAPCommand) -> list[bytes]:
        if self.closed:
            raise Closed()
        tag = cmd.tag
        out = b""
        sizes = list(cmd.literal_sizes)
        parts = list(cmd.parts)
        line = parts.pop(0)
        while True:
            if not sizes:
                out += self._feed(line + b"\r\n")
                break
            size = sizes.pop(0)
            literal = parts.pop(0)
            rest = parts.pop(0)
            marker = b"{%d%s}" % (size, b"+" if cmd.plus else b"")
            if size > 1024 * 1024:
                # Too big to send: the server must refuse it without waiting for the bytes.
                out += self._feed(line + marker + b"\r\n")
                break
            literal = (literal + b"x" * size)[:size]
            if cmd.plus:
                line = line + marker + b"\r\n" + literal + rest
                continue
            out += self._feed(line + marker + b"\r\n")
            if not imap_lines(out) or not imap_lines(out)[-1].startswith(b"+"):
                break  # refused before the literal (tagged NO/BAD)
            line = literal + rest
        # Continuations the command asked for: IDLE ends with DONE, AUTHENTICATE gets a line.
        for _ in range(3):
            lines = imap_lines(out)
            if not lines or not lines[-1].startswith(b"+") or self.closed:
                break
            out += self._feed(b"DONE\r\n" if cmd.verb == b"IDLE" else b"*\r\n")
        lines = imap_lines(out)
        self.transcript.append((b"".join(cmd.parts)[:200], lines))
        self.check(tag, lines)
        return lines

    def check(self, tag: bytes, lines: list[bytes]) -> None:
        finals = []
        for line in lines:
            assert b"SERVERBUG" not in line, (
                f"server bug answering {self.transcript[-1][0]!r}: {line!r}"
            )
            if line.startswith((b"* ", b"+ ")) or line == b"+":
                continue
            t, _, rest = line.partition(b" ")
            assert t == tag and rest[:3] in (b"OK ", b"NO ", b"BAD"), (
                f"stray line {line!r} answering {self.transcript[-1][0]!r}"
            )
            finals.append(line)
        untagged_bad = [x for x in lines if x.startswith(b"* BAD")]
        if self.closed:
            assert len(finals) <= 1, lines
            assert finals or any(x.startswith(b"* BYE") for x in lines) or untagged_bad, (
                f"connection closed without a word after {self.transcript[-1][0]!r}: {lines!r}"
            )
        elif not finals:
            # A line the server cannot even take a tag from is answered "* BAD" (RFC 3501 §7.1.5).
            assert untagged_bad, f"no reply to {self.transcript[-1][0]!r}: {lines!r}"
        else:
            assert len(finals) == 1, f"{len(finals)} tagged replies: {lines!r}"
        if self.closed:
            raise Closed()

    def close(self) -> None:
        if not self.closed:
            self.client.close()


# -- POP3 ---------------------------------------------------------------------------------------
_POP3_BASE = tempfile.mkdtemp(prefix="cg-pop3-fuzz-")


class POP3Driver:
    """POP3Server from POP3Factory with the real MailRealm, PopMailbox and AccountChecker over
    the POP3 tests' fake account store, and the shared AuthPenalty."""

    STATES = ("authorization", "transaction")

    def __init__(self, state: str, watch: Watch) -> None:
        from cgtwist.protocols.pop3.server import POP3Factory
        from tests.protocols.test_pop3_fakes import FakeStore, deliver, make_portal

        self.watch = watch
        base = tempfile.mkdtemp(dir=_POP3_BASE)
        store = FakeStore()
        store.add("alice", "secret")
        portal, _realm = make_portal(base, store)
        self.clock = task.Clock()
        settings = SettingsHolder(Settings({"auth.fail_delays": [1], "auth.max_failures": 1000}))
        listener = ListenerSpec("pop3", 110, "127.0.0.1", "starttls", allow_plain_auth=True)
        self.factory = POP3Factory(
            listener,
            settings,
            portal,
            lambda: None,
            "mail.example.com",
            clock=self.clock,
            penalty=AuthPenalty(self.clock, settings),
        )
        deliver(base, "alice", b"Subject: one\r\n\r\nline\r\n.dot\r\n")
        deliver(base, "alice", b"Subject: two\n\nbare lf\n")
        self.proto = self.factory.buildProtocol(None)
        self.tr = StringTransport(peerAddress=address.IPv4Address("TCP", "192.0.2.20", 4000))
        self.proto.makeConnection(self.tr)
        assert self.tr.value().startswith(b"+OK")
        self.tr.clear()
        self.transcript: list[tuple[bytes, bytes]] = []
        if state == "transaction":
            assert self.send(b"USER alice@example.com").startswith(b"+OK")
            assert self.send(b"PASS secret").startswith(b"+OK Logged in")
        self.base = base

    def send(self, line: bytes) -> bytes:
        if self.tr.disconnecting:
            raise Closed()
        data = line + b"\r\n"

        def feed() -> None:
            self.proto.dataReceived(data)
            while self.tr.producer is not None:  # RETR of a large message streams
                self.tr.producer.resumeProducing()

        self.watch.timed(data[:60], feed)
        self.clock.advance(SETTLE)
        out = self.tr.value()
        self.tr.clear()
        self.transcript.append((data[:200], out))
        self.check(line, out)
        return out

    def check(self, line: bytes, out: bytes) -> None:
        assert out.endswith(b"\r\n"), f"no complete reply to {line[:80]!r}: {out[:200]!r}"
        first, _, rest = out.partition(b"\r\n")
        assert first.startswith((b"+OK", b"-ERR", b"+ ")), f"bad status {first!r} to {line[:80]!r}"
        if rest:
            # Only a multi-line answer may follow, ended by "." (RFC 1939 §3).
            verb = line.split(b" ", 1)[0].upper()
            assert first.startswith(b"+OK") and rest.endswith(b".\r\n"), (
                f"more than one reply to {line[:80]!r}: {out[:300]!r}"
            )
            assert verb in (b"CAPA", b"LIST", b"UIDL", b"RETR", b"TOP", b"AUTH"), (
                f"multi-line answer to {line[:80]!r}"
            )
            body = rest[:-3].split(b"\r\n")
            assert not any(x == b"." for x in body), f"unstuffed '.' line in {out[:300]!r}"
        if self.tr.disconnecting:
            raise Closed()

    def close(self) -> None:
        if not self.tr.disconnecting:
            self.tr.loseConnection()
        self.proto.connectionLost(None)  # type: ignore[arg-type]


def cleanup_dir(path: str) -> None:
    import shutil

    if os.path.isdir(path):
        shutil.rmtree(path, True)


def driver_for(protocol: str, state: str, watch: Watch) -> Any:
    return {"smtp": SMTPDriver, "imap": IMAPDriver, "pop3": POP3Driver}[protocol](state, watch)
