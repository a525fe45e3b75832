"""Outbound delivery end to end: a real twistd, real loopback SMTP sinks, the real CLI.

An authenticated user sends to remote domains whose MX records (on the loopback test DNS server)
point at 127.0.0.1, where a small SMTP sink started by the test listens; ``smtp.remote_port``
points the server at it. Covered: byte-exact relaying with dot-stuffing, 5xx -> an RFC 3464 DSN
in the sender's Maildir, 4xx -> queued with its attempt history, then ``queue retry``, a SIGKILL
in the middle of a multi-recipient delivery, PIPE delivery through a Router record and the
``Submitted/`` pickup.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import os
import re
import smtplib
import socketserver
import ssl
import stat
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import pytest

from tests.e2e.harness import DEFAULT_ZONE, Server, wait_for

pytestmark = pytest.mark.e2e

ID_RE = re.compile(r"^([0-9]{16}-[0-9]{1,10}-[0-9]{1,12}) ", re.M)
SINK_DOMAINS = (
    "ok.test",
    "reject.test",
    "defer.test",
    "later.test",
    "fast.test",
    "slow.test",
    "hold.test",
    "drop.test",
    "bounce.test",
    "other.test",
)
LISTENERS = [
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "tls": "starttls", "submission": True},
]


# ---- the loopback sink ------------------------------------------------------------------------


@dataclass
class Received:
    """One message the sink accepted: envelope, the data as the client meant it, and the
    exact octets seen on the wire between DATA and the final dot (dot-stuffed)."""

    sender: str
    recipients: list[str]
    data: bytes
    wire: bytes
    tls: bool


class Sink:
    """A loopback SMTP server in a thread; what it answers is set per recipient domain.

    Modes: ``accept``; ``rcpt-4xx``/``rcpt-5xx`` (refuse at RCPT); ``data-4xx``/``data-5xx``
    (refuse after the final dot); ``stall`` (hold the RCPT reply until ``unstall()``, then
    accept). Offers STARTTLS when given a certificate and key.
    """

    def __init__(self, tls_files: Optional[tuple[str, str]] = None) -> None:
        self.modes: dict[str, str] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.unstalled = threading.Event()
        self.stalled = threading.Event()  # set when a stalled RCPT is waiting
        self.tls: Optional[ssl.SSLContext] = None
        if tls_files is not None:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*tls_files)
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                sink._session(self)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.unstalled.set()
        self.server.shutdown()
        self.server.server_close()

    def mode(self, domain: str) -> str:
        return self.modes.get(domain.lower(), "accept")

    def messages(self, marker: bytes = b"") -> list[Received]:
        with self.lock:
            return [r for r in self.received if marker in r.data]

    def wait(self, marker: bytes, count: int = 1, timeout: float = 60) -> list[Received]:
        return wait_for(
            lambda: len(self.messages(marker)) >= count and self.messages(marker),  # type: ignore[no-any-return]
            timeout,
            f"{count} message(s) {marker!r} at the sink",
        )

    def _session(self, h: socketserver.StreamRequestHandler) -> None:
        rfile, wfile, tls = h.rfile, h.wfile, False

        def reply(text: str) -> None:
            wfile.write(text.encode() + b"\r\n")
            wfile.flush()

        reply("220 sink.test ESMTP loopback sink")
        sender, rcpts = "", []
        while True:
            line = rfile.readline(4096)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                ext = ["8BITMIME", "SIZE 104857600", "ENHANCEDSTATUSCODES"]
                if self.tls is not None and not tls:
                    ext.append("STARTTLS")
                reply(
                    "250-sink.test\r\n"
                    + "\r\n".join(
                        ("250 " if i == len(ext) - 1 else "250-") + e for i, e in enumerate(ext)
                    )
                )
            elif cmd.upper() == "STARTTLS" and self.tls is not None and not tls:
                reply("220 2.0.0 go ahead")
                conn = self.tls.wrap_socket(h.connection, server_side=True)
                rfile, wfile, tls = conn.makefile("rb"), conn.makefile("wb"), True
                sender, rcpts = "", []
            elif verb == "MAIL":
                sender, rcpts = _path(cmd), []
                reply("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpt = _path(cmd)
                mode = self.mode(rcpt.rpartition("@")[2])
                if mode == "stall":
                    self.stalled.set()
                    self.unstalled.wait(60)
                    mode = self.mode(rcpt.rpartition("@")[2])
                if mode == "rcpt-4xx":
                    reply("451 4.3.0 sink: try again later")
                elif mode == "rcpt-5xx":
                    reply("550 5.1.1 sink: no such user here")
                else:
                    rcpts.append(rcpt)
                    reply("250 2.1.5 ok")
            elif verb == "DATA":
                if not rcpts:
                    reply("554 5.5.1 no valid recipients")
                    continue
                reply("354 go ahead")
                wire, data = b"", b""
                while True:
                    chunk = rfile.readline()
                    if not chunk:
                        return
                    if chunk == b".\r\n":
                        break
                    wire += chunk
                    data += chunk[1:] if chunk.startswith(b".") else chunk  # RFC 5321 §4.5.2
                modes = {self.mode(r.rpartition("@")[2]) for r in rcpts}
                if "data-5xx" in modes:
                    reply("554 5.6.0 sink: content rejected")
                elif "data-4xx" in modes:
                    reply("451 4.3.0 sink: queue full, try later")
                else:
                    with self.lock:
                        self.received.append(Received(sender, list(rcpts), data, wire, tls))
                    reply("250 2.0.0 queued at the sink")
                sender, rcpts = "", []
            elif verb == "RSET":
                sender, rcpts = "", []
                reply("250 2.0.0 ok")
            elif verb == "NOOP":
                reply("250 2.0.0 ok")
            elif verb == "QUIT":
                reply("221 2.0.0 bye")
                return
            else:
                reply("502 5.5.2 not implemented")


def _path(cmd: str) -> str:
    m = re.search(r"<([^>]*)>", cmd)
    return m.group(1) if m else ""


# ---- the server under test --------------------------------------------------------------------


def sink_zone() -> dict[str, list[str]]:
    """Every sink domain's MX is sink.test = 127.0.0.1 (never a non-loopback address)."""
    zone = dict(DEFAULT_ZONE)
    zone["sink.test"] = ["A 127.0.0.1"]
    for d in SINK_DOMAINS:
        zone[d] = ["MX 10 sink.test"]
    return zone


def make_server(base: str, sink: Sink, accounts: tuple[str, ...] = ("alice", "bob")) -> Server:
    """A server with a submission port and ``accounts``, delivering remote mail to ``sink``.

    Failed deliveries wait an hour, so only ``queue retry`` (or a restart) tries them again.
    """
    srv = Server(base, dns_records=sink_zone())
    srv.set_listeners(LISTENERS)
    srv.admin("settings", "set", "smtp.remote_port", str(sink.port))
    srv.admin("settings", "set", "queue.retry_schedule", "[3600]")
    for name in accounts:
        srv.admin("account", "add", f"{name}@example.test", "--password", f"{name}-secret")
    return srv


def send(
    server: Server, rcpts: list[str], message: bytes, sender: str = "alice@example.test"
) -> None:
    """Submit as the authenticated ``sender`` on the submission port (STARTTLS, AUTH)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", server.port("smtp", submission=True), timeout=30) as s:
        s.ehlo("client.test")
        s.starttls(context=ctx)
        s.ehlo("client.test")
        s.login(sender, f"{sender.split('@')[0]}-secret")
        refused = s.sendmail(sender, rcpts, message)
        assert not refused, refused


def make_message(
    rcpts: list[str], body: str = "Hello.\r\n", sender: str = "alice@example.test"
) -> tuple[bytes, bytes]:
    """(message, marker): the marker is a unique Message-ID to find it again."""
    tag = uuid.uuid4().hex
    msg = (
        f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: outbound {tag}\r\n"
        f"Message-ID: <{tag}@client.test>\r\n\r\n{body}"
    ).encode()
    return msg, tag.encode()


def queued_ids(server: Server, *filters: str) -> list[str]:
    out = server.admin("queue", "list", *filters).stdout
    return ID_RE.findall(out)


def queue_files(server: Server) -> list[str]:
    q = os.path.join(server.base, "Queue")
    return (
        sorted(n for n in os.listdir(q) if n.endswith((".msg", ".jrn"))) if os.path.isdir(q) else []
    )


def dsns(server: Server, marker: bytes, account: str = "alice") -> list[email.message.EmailMessage]:
    """Reports in ``account``'s INBOX about the message with ``marker``."""
    out = []
    for raw in server.messages(account):
        if marker in raw and b"multipart/report" in raw:
            out.append(email.message_from_bytes(raw, policy=email.policy.default))
    return out  # type: ignore[return-value]


def delivery_status(report: email.message.EmailMessage) -> list[Any]:
    """The per-message and per-recipient field blocks of the message/delivery-status part."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    (part,) = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    blocks: list[Any] = part.get_payload()  # type: ignore[assignment]
    return blocks


# ---- tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Server]:
    with make_server(str(tmp_path_factory.mktemp("outbound") / "base"), sink).running() as srv:
        yield srv


def test_remote_delivery_is_byte_exact_with_dot_stuffing(server: Server, sink: Sink) -> None:
    """A message an authenticated user sends to a remote domain reaches the remote server
    unchanged below our trace header: lines starting with a dot are dot-stuffed on the wire
    and restored, every line ends in CRLF."""
    body = ".leading dot\r\n..two dots\r\n.\r\nend of . text\r\n\r\n"
    msg, marker = make_message(["carol@ok.test", "dave@ok.test"], body)
    send(server, ["carol@ok.test", "dave@ok.test"], msg)
    (got,) = sink.wait(marker)
    assert got.sender == "alice@example.test"
    assert sorted(got.recipients) == ["carol@ok.test", "dave@ok.test"], "one transaction per domain"
    assert got.data.endswith(msg), "the message body changed on the way"
    assert got.data[: -len(msg)].startswith(b"Received: ")
    assert b"\r\n..leading dot\r\n...two dots\r\n..\r\nend of . text\r\n" in got.wire
    assert b"\n" not in got.wire.replace(b"\r\n", b""), "a bare LF went on the wire"
    wait_for(lambda: not queued_ids(server, "--recipient", "@ok.test"), 60, "an empty queue")


def test_5xx_gives_the_sender_a_dsn(server: Server, sink: Sink) -> None:
    """A recipient the remote server refuses for good comes back to the sender as an RFC 3464
    report from <> in their INBOX, naming the recipient, Action failed and the 5.x.x status;
    the other recipient is delivered and not reported."""
    sink.modes["reject.test"] = "rcpt-5xx"
    msg, marker = make_message(["nobody@reject.test", "erin@ok.test"])
    send(server, ["nobody@reject.test", "erin@ok.test"], msg)
    sink.wait(marker)
    (report,) = wait_for(lambda: dsns(server, marker), 60, "the DSN in alice's INBOX")
    raw = report.as_bytes()
    assert b"Return-Path: <>" in raw
    per_message, *per_rcpt = delivery_status(report)
    assert per_message["Reporting-MTA"].startswith("dns;")
    assert len(per_rcpt) == 1, "only the failed recipient is reported"
    assert "nobody@reject.test" in per_rcpt[0]["Final-Recipient"]
    assert per_rcpt[0]["Action"] == "failed"
    assert re.match(r"5\.\d+\.\d+$", per_rcpt[0]["Status"]), per_rcpt[0]["Status"]
    assert "550" in per_rcpt[0]["Diagnostic-Code"]
    assert marker in raw, "the returned message (or its headers) is attached"
    wait_for(lambda: not queued_ids(server, "--recipient", "reject.test"), 60, "an empty queue")


def test_4xx_stays_queued_with_history_then_retry_delivers(server: Server, sink: Sink) -> None:
    """A remote 451 keeps the message queued: queue list shows it pending with the reply,
    queue show its attempts (time, host, reply, TLS); once the remote side is fixed,
    queue retry delivers it at once and it leaves the queue without any DSN."""
    sink.modes["defer.test"] = "data-4xx"
    msg, marker = make_message(["frank@defer.test"])
    send(server, ["frank@defer.test"], msg)

    def listed() -> Optional[str]:
        out = server.admin("queue", "list", "--recipient", "frank@defer.test").stdout
        return out if "attempts 1" in out else None

    out = wait_for(listed, 60, "the deferred message in queue list")
    (msg_id,) = ID_RE.findall(out)
    assert "frank@defer.test  pending  SMTP(defer.test)" in out
    assert "451 4.3.0 sink: queue full" in out
    assert re.search(r"next \S+ \S+ \(in (59m|1h)", out), out
    show = server.admin("queue", "show", msg_id).stdout
    assert "sender:   alice@example.test" in show
    assert "account:  alice@example.test" in show
    assert re.search(r"sink\.test \[127\.0\.0\.1\]  (no TLS|TLSv1\.[23])  \"451 4\.3\.0", show), (
        show
    )
    assert re.search(r"SMTP\(defer\.test\)  frank@defer\.test pending \"[^\"]*451", show), show

    sink.modes["defer.test"] = "accept"
    assert "1 delivery(ies)" in server.admin("queue", "retry", msg_id).stdout
    sink.wait(marker)
    wait_for(lambda: msg_id not in queued_ids(server), 60, "the message to leave the queue")
    assert not dsns(server, marker)


def test_pipe_delivery_through_a_router_record(server: Server, tmp_path: Any) -> None:
    """A Router record sending an address to "program args"@pipe runs that program from the
    application directory with the message on stdin and its arguments, without a shell."""
    apps = tmp_path / "apps"
    apps.mkdir()
    out = tmp_path / "piped"
    out.mkdir()
    script = apps / "save"
    script.write_text(f"#!/bin/sh\ncat > '{out}'/\"$1\".eml\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    server.admin("settings", "set", "pipe.app_dir", str(apps))
    table = tmp_path / "router.txt"
    table.write_text('<robot@example.test> = "save robot-arg"@pipe ; mail to a program\n')
    server.admin("router", "set", str(table))
    msg, marker = make_message(
        ["robot@example.test"], "for the program\r\n", sender="bob@example.test"
    )
    send(server, ["robot@example.test"], msg, sender="bob@example.test")
    target = out / "robot-arg.eml"
    wait_for(target.exists, 60, "the PIPE program's output")
    data = wait_for(lambda: marker in target.read_bytes() and target.read_bytes(), 60, "all of it")
    assert data.endswith(msg.replace(b"\r\n", b"\n")) or data.endswith(msg)
    wait_for(lambda: not queued_ids(server, "--recipient", "pipe"), 60, "an empty queue")


def test_submitted_file_is_delivered(server: Server, sink: Sink) -> None:
    """A message file written into Submitted/ (as .tmp, renamed .sub) is picked up, delivered
    to its Envelope-To recipients and deleted."""
    tag = uuid.uuid4().hex
    text = (
        f"From: app@example.test\nEnvelope-To: gina@ok.test\nTo: someone@ok.test\n"
        f"Subject: submitted {tag}\n\nfrom a program\n"
    )
    sub = os.path.join(server.base, "Submitted")
    tmp = os.path.join(sub, f"{tag}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(sub, f"{tag}.sub"))
    (got,) = sink.wait(tag.encode())
    assert got.recipients == ["gina@ok.test"]
    assert b"Envelope-To" not in got.data
    assert b"\r\nfrom a program\r\n" in got.data
    wait_for(lambda: not os.path.exists(os.path.join(sub, f"{tag}.sub")), 60, "the .sub to go")
    assert not [n for n in os.listdir(sub) if n.endswith(".bad")]


def _journal_says_delivered(server: Server, msg_id: str, address: str) -> bool:
    """The durable journal (not memory) records ``address`` as delivered."""
    try:
        with open(os.path.join(server.base, "Queue", msg_id + ".jrn"), "rb") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return False
    for line in lines:
        _crc, _, body = line.partition(b" ")
        try:
            rec = json.loads(body)
        except ValueError:
            continue
        if rec.get("k") == "a" and any(
            r[0] == address and r[1] == "delivered" for r in rec.get("r", [])
        ):
            return True
    return False


def test_kill_mid_delivery_resumes_only_unfinished_recipients(tmp_path: Any) -> None:
    """SIGKILL while one destination has the message and another is still being delivered:
    after restart only the unfinished recipient gets it; nobody gets a duplicate or a DSN."""
    sink = Sink()
    srv = make_server(str(tmp_path / "base"), sink, accounts=("alice",))
    try:
        srv.start()
        sink.modes["slow.test"] = "stall"
        msg, marker = make_message(["hank@fast.test", "ivy@slow.test"])
        send(srv, ["hank@fast.test", "ivy@slow.test"], msg)
        sink.wait(marker)
        wait_for(sink.stalled.is_set, 60, "the slow destination to be mid-delivery")
        (msg_id,) = queued_ids(srv)
        wait_for(
            lambda: _journal_says_delivered(srv, msg_id, "hank@fast.test"),
            60,
            "the fast recipient's result in the journal",
        )
        srv.kill()
        assert msg_id + ".msg" in queue_files(srv)
        assert [r.recipients for r in sink.messages(marker)] == [["hank@fast.test"]]

        sink.modes["slow.test"] = "accept"
        sink.unstalled.set()
        srv.start()
        sink.wait(marker, 2)
        wait_for(
            lambda: msg_id + ".msg" not in queue_files(srv), 60, "the message to leave the queue"
        )
        got = sorted(tuple(r.recipients) for r in sink.messages(marker))
        assert got == [("hank@fast.test",), ("ivy@slow.test",)], got
        assert not dsns(srv, marker)
    finally:
        srv.stop()
        srv.close()
        sink.close()
