"""The mailbox storage quota end to end against a real twistd (issues 14 §2 and 19): an
account filled near its limit still receives what fits; a message that does not fit stays
queued with 4.2.2 and, after quota.grace, its sender gets a DSN with 5.2.2; imaplib's
GETQUOTAROOT reports the usage; APPEND over quota gets NO [OVERQUOTA]; after kill -9 and a
restart the usage is recounted from the disk; ``cgtwist-admin account show`` prints it."""

from __future__ import annotations

import imaplib
import json
import os
import re
import ssl
import uuid
from typing import Callable, Iterator

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server, wait_for

pytestmark = pytest.mark.e2e

LIMIT = 8 * 1024
FULL = "full@example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = str(tmp_path_factory.mktemp("quota"))
    srv = Server(os.path.join(base, "base"))
    srv.set_listeners(ALL_LISTENERS)
    srv.admin("settings", "set", "queue.retry_schedule", "[1]")
    with srv.running():
        srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
        srv.admin("account", "add", FULL, "--password", "full-secret")
        srv.admin("settings", "set", "quota.storage", "8K", "--account", FULL)
        srv.admin("settings", "set", "quota.grace", "4", "--account", FULL)
        yield srv


def message(size: int, subject: str) -> bytes:
    head = (
        f"From: alice@example.test\r\nTo: {FULL}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.test>\r\n\r\n"
    ).encode()
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


def disk_octets(server: Server) -> int:
    total = 0
    md = server.maildir("full")
    for folder in [md] + [os.path.join(md, e) for e in os.listdir(md) if e.startswith(".")]:
        for sub in ("cur", "new"):
            d = os.path.join(folder, sub)
            if os.path.isdir(d):
                total += sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d))
    return total


def imap(server: Server) -> imaplib.IMAP4_SSL:
    ctx: ssl.SSLContext = server.tls_context()
    m = imaplib.IMAP4_SSL(
        "localhost", server.port("imap", tls="implicit"), ssl_context=ctx, timeout=30
    )
    assert m.login(FULL, "full-secret")[0] == "OK"
    return m


def quota_storage(m: imaplib.IMAP4) -> tuple[int, int]:
    typ, data = m.getquotaroot("INBOX")
    assert typ == "OK", data
    quotaroot, quota = data  # imaplib: [[QUOTAROOT lines], [QUOTA lines]]
    assert quotaroot == [b'"INBOX" ""'], quotaroot
    text = b" ".join(x for x in quota if isinstance(x, bytes)).decode()
    found = re.search(r"STORAGE (\d+) (\d+)", text)
    assert found, text
    return int(found.group(1)), int(found.group(2))


def test_quota_defers_then_bounces_and_imap_reports_it(server: Server) -> None:
    # Near the limit: what fits is delivered.
    server.submit("alice@example.test", [FULL], message(6000, "fits"))
    server.wait_messages("full", 1, containing=b"Subject: fits")
    # This one does not fit: deferred with 4.2.2, kept in the queue, then bounced.
    server.submit("alice@example.test", [FULL], message(3000, "too much"))
    wait_for(
        lambda: re.search(
            r"<full@example\.test> LOCAL\(full@example\.test\) pending: 452 4\.2\.2",
            server.log_text(),
        ),
        what="the 4.2.2 deferral in the log",
    )
    dsn = server.wait_messages("alice", 1, containing=b"5.2.2")[0]
    assert b"Subject: too much" in dsn  # the DSN carries the message's headers
    assert not [m for m in server.messages("full") if b"Subject: too much" in m]
    log = server.log_text()
    assert "deferred: STORAGE quota reached" in log
    assert re.search(r"LOCAL\(full@example\.test\) failed: 552 5\.2\.2", log), log[-3000:]

    m = imap(server)
    try:
        caps = m.capabilities
        assert "QUOTA" in caps and "QUOTA=RES-STORAGE" in caps
        used, limit = quota_storage(m)
        assert limit == LIMIT // 1024
        assert used == -(-disk_octets(server) // 1024)
        # APPEND over quota: NO [OVERQUOTA], nothing stored.
        typ, data = m.append("INBOX", None, None, message(4000, "appended"))
        assert typ == "NO" and b"[OVERQUOTA]" in data[0], (typ, data)
        assert not [x for x in server.messages("full") if b"Subject: appended" in x]
        # What fits is appended.
        typ, data = m.append("INBOX", None, None, message(500, "small"))
        assert typ == "OK", data
        assert quota_storage(m)[0] == -(-disk_octets(server) // 1024)
    finally:
        m.logout()


def test_usage_after_kill_and_restart(server: Server) -> None:
    """The count lives in memory: after kill -9 a scan recounts it from the disk, including
    a message a program put into the Maildir while the server was down."""
    m = imap(server)
    try:
        quota_storage(m)  # the server counts the account now
    finally:
        m.logout()
    server.kill()
    with open(os.path.join(server.maildir("full"), "cur", "1.M1P1Q1.byhand:2,S"), "wb") as f:
        f.write(b"Subject: by hand\r\n\r\n" + b"y" * 1000 + b"\r\n")
    server.start()
    m = imap(server)
    try:
        assert quota_storage(m)[0] == -(-disk_octets(server) // 1024)
    finally:
        m.logout()
    shown = json.loads(server.admin("account", "show", FULL).stdout)["quota"]
    assert shown["storage_used"] == disk_octets(server)
    assert shown["storage_limit"] == LIMIT
    assert shown["grace"] == 4
    effective = server.admin("settings", "show", "--effective", "--account", FULL).stdout
    assert "quota.storage = 8192  (account)" in effective


SLOW = "slow@example.test"
GRACE = 45  # long enough for a stop, a start, a kill -9 and a start on a busy machine


def test_grace_counts_on_across_restart_and_kill(server: Server) -> None:
    """A message deferred over quota keeps its grace clock across a clean restart and a
    kill -9 (the queue journals its start with the deferral): every deferral after each
    restart says it fails sooner than the one before it (a new clock would say the whole
    grace again), and it bounces with 5.2.2 when the original grace ends."""
    server.admin("account", "add", SLOW, "--password", "slow-secret")
    server.admin("settings", "set", "quota.messages", "1", "--account", SLOW)
    server.admin("settings", "set", "quota.grace", str(GRACE), "--account", SLOW)
    server.submit("alice@example.test", [SLOW], message(600, "takes the room"))
    server.wait_messages("slow", 1, containing=b"Subject: takes the room")
    server.submit("alice@example.test", [SLOW], message(600, "waits for room"))
    said = re.compile(
        r"to slow@example\.test deferred: \w+ quota reached \(\d+ octets; failing after (\d+) s"
    )

    def lefts() -> list[int]:
        return [int(x) for x in said.findall(server.log_text())]

    def restart_and_check(restart: Callable[[], object]) -> None:
        # The clock has run for a few seconds: the last deferral says fewer than GRACE.
        wait_for(lambda: lefts() and lefts()[-1] <= GRACE - 3, timeout=GRACE, what="a wait")
        before, seen = lefts()[-1], len(lefts())
        restart()
        server.start()
        failed = re.compile(r"to slow@example\.test failed: \w+ quota still reached")
        wait_for(
            lambda: len(lefts()) > seen or failed.search(server.log_text()),
            timeout=GRACE,
            what="an attempt after the restart",
        )
        after = lefts()[seen:]
        assert all(left <= before for left in after), (before, after)

    restart_and_check(server.stop)
    restart_and_check(server.kill)
    dsn = server.wait_messages("alice", 1, containing=b"Subject: waits for room", timeout=90)[0]
    assert b"5.2.2" in dsn
    waited = re.search(
        r"to slow@example\.test failed: \w+ quota still reached after (\d+) s", server.log_text()
    )
    assert waited and int(waited.group(1)) >= GRACE, waited
    assert not [m for m in server.messages("slow") if b"Subject: waits for room" in m]
