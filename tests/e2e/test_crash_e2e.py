"""Crash safety with a real process: nothing said 250 to is lost, nothing half-received appears.

Uses SIGKILL (kill -9) from outside and the CGTWIST_CRASHPOINT hook, which makes the server
SIGKILL itself at a named point of the spool or delivery protocol.
"""

from __future__ import annotations

import os
import smtplib
import socket
import uuid

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path) -> Server:  # type: ignore[no-untyped-def]
    srv = Server(str(tmp_path / "base"))
    srv.set_listeners(ALL_LISTENERS[:1])
    srv.admin("domain", "list")  # creates the store
    srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
    yield srv
    srv.close()


def message(tag: str) -> bytes:
    return f"From: a@elsewhere.test\r\nTo: alice@example.test\r\nSubject: {tag}\r\n\r\nbody {tag}\r\n".encode()


def queue_files(server: Server) -> list[str]:
    q = os.path.join(server.base, "Queue")
    return (
        sorted(n for n in os.listdir(q) if n.endswith((".msg", ".tmp"))) if os.path.isdir(q) else []
    )


def count(server: Server, tag: str) -> int:
    return sum(1 for m in server.messages("alice") if f"Subject: {tag}".encode() in m)


def test_kill_right_after_250_then_restart_delivers_exactly_once(server: Server) -> None:
    """The server dies during local delivery of a message it accepted; after restart it is
    delivered once and the spool is empty."""
    server.start(extra_env={"CGTWIST_CRASHPOINT": "local-before-rename"})
    tag = uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tag))  # got 250
    assert server.proc is not None
    server.proc.wait(60)  # it killed itself in the middle of delivering
    assert count(server, tag) == 0
    assert any(n.endswith(".msg") for n in queue_files(server))
    server.proc = None
    server.start()
    wait_for(lambda: count(server, tag) == 1, 30, "delivery after restart")
    wait_for(lambda: not queue_files(server), 30, "an empty spool")
    assert count(server, tag) == 1


def test_external_kill9_after_250_loses_nothing(server: Server) -> None:
    """kill -9 from outside right after the 250 reply: after restart the message is there once."""
    server.start()
    tag = uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tag))
        server.kill()
    server.start()
    wait_for(lambda: count(server, tag) == 1, 30, "the accepted message")
    wait_for(lambda: not queue_files(server), 30, "an empty spool")


def test_kill_mid_data_delivers_nothing(server: Server) -> None:
    """A message whose DATA was cut by a crash never appears, and its .tmp is cleaned up."""
    server.start()
    tag = uuid.uuid4().hex
    sock = socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=30)
    f = sock.makefile("rb")
    f.readline()
    for cmd in (
        b"EHLO c.test",
        b"MAIL FROM:<a@elsewhere.test>",
        b"RCPT TO:<alice@example.test>",
        b"DATA",
    ):
        sock.sendall(cmd + b"\r\n")
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
    assert line.startswith(b"354")
    sock.sendall(message(tag)[:40])
    server.kill()
    sock.close()
    server.start()
    # A message that was fully accepted afterwards proves the queue ran since the restart.
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message("after"))
    wait_for(lambda: count(server, "after") == 1, 30, "the later message")
    assert count(server, tag) == 0
    assert not [n for n in queue_files(server) if n.endswith(".tmp")]


@pytest.mark.parametrize("point", ["spool-before-fsync", "spool-before-rename"])
def test_crash_before_commit_gives_no_250_and_no_message(server: Server, point: str) -> None:
    """Killed before the spool file is committed: the client saw no 250, nothing is delivered."""
    server.start(extra_env={"CGTWIST_CRASHPOINT": point})
    tag = uuid.uuid4().hex
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
            s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tag))
    assert server.proc is not None
    server.proc.wait(60)
    server.proc = None
    server.start()
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message("after"))
    wait_for(lambda: count(server, "after") == 1, 30, "the later message")
    assert count(server, tag) == 0
    assert not [n for n in queue_files(server) if n.endswith(".tmp")]


def test_crash_after_rename_before_reply_delivers(server: Server) -> None:
    """Killed after the rename but before the 250 was written: at-least-once, so the message is
    delivered after restart even though the client saw no reply (it may resend: RFC 1047)."""
    server.start(extra_env={"CGTWIST_CRASHPOINT": "spool-after-rename"})
    tag = uuid.uuid4().hex
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
            s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tag))
    assert server.proc is not None
    server.proc.wait(60)
    server.proc = None
    server.start()
    wait_for(lambda: count(server, tag) == 1, 30, "delivery of the committed message")
