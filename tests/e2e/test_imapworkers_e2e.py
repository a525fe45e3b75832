"""IMAP and POP3 sessions in worker processes (``imap.workers``) with a real twistd.

What an administrator notices with ``imap.workers = 2``: IMAP and POP3 work on every
listener (STARTTLS and implicit TLS, real clients), sessions run in both workers, mail the
server delivers reaches a session in a worker, two clients on one folder in different workers
see each other's changes, the limits set for the server hold for the server as a whole (not
once per worker), WebUser lists and ends sessions in workers, a worker killed with -9 is
replaced and what it held is given back, and reload and shutdown reach the workers.
"""

from __future__ import annotations

import imaplib
import os
import socket
import uuid
from typing import Iterator, Optional

import pytest

from tests.e2e.harness import Server, wait_for

pytestmark = pytest.mark.e2e

HOST = "localhost"  # the generated certificate's name; 127.0.0.1 here
LISTENERS = [
    {"protocol": "http", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0},
    {"protocol": "pop3", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
    {"protocol": "pop3", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
    {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
]
USER, PASSWORD = "alice@example.test", "alice-secret"


@pytest.fixture
def server(tmp_path: object) -> Iterator[Server]:
    srv = Server(str(tmp_path / "base"))  # type: ignore[operator]
    srv.set_listeners(LISTENERS)
    srv.admin("settings", "set", "imap.workers", "2")
    srv.admin("account", "add", USER, "--password", PASSWORD)
    try:
        yield srv
    finally:
        srv.close()


def wait_for_workers(server: Server, n: int) -> list[int]:
    """Wait until exactly ``n`` IMAP workers run and accept; their pids."""

    def ready() -> bool:
        live = set(server.worker_pids(kind="imap"))
        return len(live) == n and set(server.worker_pids(ready=True, kind="imap")) >= live

    wait_for(ready, 120, f"{n} imap worker(s) ready")
    return server.worker_pids(kind="imap")


def start(server: Server, n: int = 2) -> list[int]:
    server.start()
    return wait_for_workers(server, n)


def imap(server: Server, tls: str = "implicit") -> imaplib.IMAP4:
    ctx = server.tls_context()
    if tls == "implicit":
        return imaplib.IMAP4_SSL(
            HOST, server.port("imap", tls="implicit"), ssl_context=ctx, timeout=60
        )
    m = imaplib.IMAP4(HOST, server.port("imap"), timeout=60)
    m.starttls(ssl_context=ctx)
    return m


def login(server: Server, tls: str = "implicit") -> imaplib.IMAP4:
    m = imap(server, tls)
    m.login(USER, PASSWORD)
    return m


def serving_pid(client: socket.socket, pids: list[int]) -> Optional[int]:
    """Which of ``pids`` holds the server end of ``client``'s TCP connection (by the socket
    inode in /proc/net/tcp and each process's /proc/<pid>/fd)."""
    local_port = client.getsockname()[1]
    server_port = client.getpeername()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for row in f.readlines()[1:]:
            cols = row.split()
            lport = int(cols[1].split(":")[1], 16)
            rport = int(cols[2].split(":")[1], 16)
            if lport == server_port and rport == local_port:
                inode = cols[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def one_per_worker(
    server: Server, pids: list[int], tls: str = "implicit"
) -> dict[int, imaplib.IMAP4]:
    """Log in until each worker serves a session: {pid: client}; the extra clients log out."""
    found: dict[int, imaplib.IMAP4] = {}
    spare: list[imaplib.IMAP4] = []
    for _ in range(40):
        m = login(server, tls)
        pid = serving_pid(m.sock, pids)
        assert pid is not None, "no worker holds the connection"
        if pid in found:
            spare.append(m)
        else:
            found[pid] = m
        if len(found) == len(pids):
            break
    for m in spare:
        m.logout()
    assert len(found) == len(pids), f"sessions only in {sorted(found)} of {pids}"
    return found


def message(tag: str) -> bytes:
    return (
        f"From: bob@elsewhere.test\r\nTo: {USER}\r\nSubject: {tag}\r\n\r\nbody {tag}\r\n"
    ).encode()


def noop_until(m: imaplib.IMAP4, key: str, want: bytes, what: str) -> None:
    """NOOP (a command: the session catches up with other processes' changes) until an
    untagged ``key`` answer (EXISTS, EXPUNGE, FETCH) contains ``want``."""
    seen: list[bytes] = []

    def found() -> bool:
        assert m.noop()[0] == "OK"
        seen.extend(x for x in m.untagged_responses.pop(key, []) if isinstance(x, bytes))
        return any(want in x for x in seen)

    wait_for(found, 60, what)


def test_sessions_run_in_both_workers_and_see_the_servers_delivery(server: Server) -> None:
    """Logins over implicit TLS and STARTTLS land in both workers (the server accepts none
    itself); a message the server delivers by SMTP reaches a selected INBOX in a worker."""
    pids = start(server)
    clients = one_per_worker(server, pids)
    starttls = login(server, tls="starttls")
    assert serving_pid(starttls.sock, pids) in pids
    for m in clients.values():
        assert m.select("INBOX")[0] == "OK"
    tag = uuid.uuid4().hex
    server.send("bob@elsewhere.test", [USER], message(tag))
    server.wait_messages("alice", 1, containing=tag.encode())
    for m in clients.values():
        noop_until(m, "EXISTS", b"1", "the delivered message announced in a worker")
        typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and tag.encode() in data[0][1], data
    for m in [*clients.values(), starttls]:
        m.logout()
    assert "imap worker" in server.log_text()


def test_clients_in_different_workers_see_each_others_changes(server: Server) -> None:
    """Two sessions on one INBOX in different workers: APPEND, STORE and EXPUNGE by one
    reach the other (as EXISTS, FETCH FLAGS, EXPUNGE), with the same UIDs in both."""
    pids = start(server)
    a, b = one_per_worker(server, pids).values()
    for m in (a, b):
        assert m.select("INBOX")[0] == "OK"
    for i in range(3):
        assert a.append("INBOX", None, None, message(f"append-{i}"))[0] == "OK"
    noop_until(b, "EXISTS", b"3", "b sees a's three APPENDs")
    uids_a = a.uid("SEARCH", "ALL")[1][0].split()
    uids_b = b.uid("SEARCH", "ALL")[1][0].split()
    assert uids_a == uids_b and len(set(uids_a)) == 3
    assert b.store("2", "+FLAGS", "(\\Flagged)")[0] == "OK"
    noop_until(a, "FETCH", b"\\Flagged", "a sees b's STORE")
    assert a.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert a.expunge()[0] == "OK"
    noop_until(b, "EXPUNGE", b"1", "b sees a's EXPUNGE")
    assert b.uid("SEARCH", "ALL")[1][0].split() == uids_a[1:]
    assert b.search(None, "FLAGGED")[1][0] == b"1"
    for m in (a, b):
        m.logout()
