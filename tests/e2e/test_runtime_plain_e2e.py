"""``[server] runtime = plain``: the whole mail path on stock Twisted (cgtwist.runtime off).

What an administrator notices: with the fenced shortcuts through Twisted's internals turned
off, a message sent over SMTP (plain and STARTTLS, received by the server itself or by SMTP
worker processes) is delivered LOCAL and reads back over IMAP byte for byte, and the log
says which runtime each process runs. This is the path a Twisted upgrade that breaks one of
the shortcuts falls back to, so it must keep working on its own.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import ssl
import uuid
from typing import Iterator

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server, wait_for

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"


@pytest.fixture(params=[0, 2], ids=["in-server", "two-workers"])
def server(tmp_path, request: pytest.FixtureRequest) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    srv = Server(str(tmp_path / "base"), server_config='runtime = "plain"\n')
    srv.set_listeners(ALL_LISTENERS)
    srv.admin("settings", "set", "smtp.workers", str(request.param))
    srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
    srv.workers = request.param  # type: ignore[attr-defined]
    yield srv
    srv.close()


def message(tag: str) -> bytes:
    return (
        f"From: a@elsewhere.test\r\nTo: alice@example.test\r\nSubject: {tag}\r\n\r\n"
        f"body of {tag}\r\n" + "a longer line of the body to carry some bytes\r\n" * 200
    ).encode()


def imap_bodies(server: Server) -> dict[str, bytes]:
    """Every message in alice's INBOX read back over IMAP, by Subject."""
    m = imaplib.IMAP4(HOST, server.port("imap"), timeout=30)
    try:
        m.starttls(ssl_context=_insecure())
        m.login("alice@example.test", "alice-secret")
        m.select("INBOX")
        _, data = m.uid("SEARCH", "ALL")
        found = {}
        for uid in data[0].split():
            _, parts = m.uid("FETCH", uid, "(BODY.PEEK[])")
            body = parts[0][1]
            subject = re.search(rb"^Subject: (\S+)", body, re.M)
            if subject:
                found[subject.group(1).decode()] = body
    except BaseException:
        m.shutdown()
        raise
    m.logout()
    return found


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def test_smtp_to_local_to_imap_on_stock_twisted(server: Server) -> None:
    """Both SMTP paths deliver and IMAP reads each message back unchanged, with every
    process of the server saying it runs plain (and none tuned)."""
    server.start()
    workers = server.workers  # type: ignore[attr-defined]
    if workers:
        wait_for(
            lambda: len(set(re.findall(r"smtp worker (\d+) ready", server.log_text()))) == workers,
            120,
            f"{workers} workers ready",
        )
    tags = [uuid.uuid4().hex, uuid.uuid4().hex]
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=30) as s:
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tags[0]))
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=30) as s:
        s.starttls(context=_insecure())
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tags[1]))
    wait_for(lambda: set(tags) <= set(imap_bodies(server)), 60, "both messages over IMAP")
    bodies = imap_bodies(server)
    for tag in tags:
        assert bodies[tag].endswith(message(tag).split(b"\r\n\r\n", 1)[1])
    log = server.log_text()
    plain_lines = re.findall(r"runtime plain: .*Twisted's reactor loop.*", log)
    assert len(plain_lines) == 1 + workers, plain_lines  # the server and each worker
    assert "runtime tuned" not in log
    if workers:
        assert "[smtp-worker-" in log and "accepted msg_id=" in log  # received by workers
