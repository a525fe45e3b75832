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
import poplib
import signal
import smtplib
import socket
import uuid
from typing import Any, Iterator, Optional

import pytest

from tests.e2e.harness import Server, wait_for
from tests.e2e.test_web_sessions_e2e import id_of, sessions, web

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


def wait_for_new_workers(server: Server, n: int, old: list[int]) -> list[int]:
    """Wait until every one of ``old`` has ended and ``n`` new workers accept."""
    wait_for(
        lambda: not set(old) & set(server.worker_pids(kind="imap")),
        120,
        "the old imap workers to end",
    )
    return wait_for_workers(server, n)


def start(server: Server, n: int = 2) -> list[int]:
    server.start()
    return wait_for_workers(server, n)


class SourcedIMAP(imaplib.IMAP4_SSL):
    """imaplib over implicit TLS from a chosen loopback address (``source``)."""

    def __init__(self, source: str, *args: Any, **kw: Any) -> None:
        self.source = source
        super().__init__(*args, **kw)

    def _create_socket(self, timeout: Optional[float]) -> socket.socket:
        sock = socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def imap(server: Server, tls: str = "implicit", source: str = "127.0.0.1") -> imaplib.IMAP4:
    ctx = server.tls_context()
    if tls == "implicit":
        return SourcedIMAP(
            source, HOST, server.port("imap", tls="implicit"), ssl_context=ctx, timeout=60
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
    server: Server, pids: list[int], tls: str = "implicit", login_first: bool = True
) -> dict[int, imaplib.IMAP4]:
    """Connect (and log in, with ``login_first``) until each worker serves a session:
    {pid: client}; an extra client logs out at once."""
    found: dict[int, imaplib.IMAP4] = {}
    for _ in range(40):
        m = login(server, tls) if login_first else imap(server, tls)
        pid = serving_pid(m.sock, pids)
        assert pid is not None, "no worker holds the connection"
        if pid in found:
            # Out at once: kept open, a run of connections the kernel hands one worker on a
            # busy machine would reach auth.max_userip_connections before the other's turn.
            m.logout()
        else:
            found[pid] = m
        if len(found) == len(pids):
            break
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


def test_copy_in_one_worker_is_recent_in_the_other(server: Server) -> None:
    """imaptest's ``copy`` with its sessions in different workers: b has the target
    selected, a COPYs three messages into it; b's NOOP announces 3 EXISTS and 3 RECENT and
    FETCH FLAGS shows \\Recent, for b alone (RFC 3501 §2.3.2: exactly one session); a
    later SELECT in a's worker finds nothing recent any more."""
    pids = start(server)
    a, b = one_per_worker(server, pids).values()
    assert a.create("Target")[0] == "OK"
    for i in range(3):
        assert a.append("INBOX", None, None, message(f"copy-{i}"))[0] == "OK"
    assert b.select("Target")[0] == "OK"
    assert a.select("INBOX")[0] == "OK"
    assert a.copy("1:3", "Target")[0] == "OK"
    noop_until(b, "EXISTS", b"3", "b sees a's COPY")
    recent = b.response("RECENT")[1]  # SELECT's 0, then the NOOP's
    assert recent and recent[-1] == b"3", recent
    typ, data = b.fetch("1:3", "(FLAGS)")
    assert typ == "OK" and all(b"\\Recent" in x for x in data), data
    assert a.select("Target")[0] == "OK"
    assert a.response("RECENT")[1] == [b"0"]  # SELECT flushes the earlier answers
    for m in (a, b):
        m.logout()


def admitted(server: Server, source: str, tries: int) -> tuple[list[imaplib.IMAP4], int]:
    """Open ``tries`` IMAP connections from ``source``: (those greeted OK, how many were
    refused with the server's ``* BYE Too many connections``)."""
    kept, refused = [], 0
    for _ in range(tries):
        try:
            kept.append(imap(server, source=source))
        except imaplib.IMAP4.error as e:  # the greeting was a BYE
            assert "Too many connections" in str(e), e
            refused += 1
    return kept, refused


def test_per_ip_limit_holds_across_workers_and_a_killed_worker_gives_back(
    server: Server,
) -> None:
    """access.max_connections_per_ip = 3 admits three connections from an IP whichever
    worker accepts them, not three per worker. A worker killed with -9 is restarted, its
    clients are cut, the other worker's sessions carry on, the killed worker's connections
    no longer count, and no delivered message is lost."""
    server.admin("settings", "set", "access.max_connections_per_ip", "3")
    pids = start(server)
    source = "127.0.0.31"
    kept, refused = admitted(server, source, 6)
    assert (len(kept), refused) == (3, 3)
    assert "imap worker: too many connections from 127.0.0.31" in server.log_text()
    tag = uuid.uuid4().hex
    server.send("bob@elsewhere.test", [USER], message(tag + "-before"))
    server.wait_messages("alice", 1, containing=tag.encode())

    by_pid = {pid: [m for m in kept if serving_pid(m.sock, pids) == pid] for pid in pids}
    victim = max(pids, key=lambda pid: len(by_pid[pid]))
    survivors = [m for pid in pids if pid != victim for m in by_pid[pid]]
    os.kill(victim, signal.SIGKILL)
    for m in by_pid[victim]:
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            m.noop()
    for m in survivors:
        assert m.noop()[0] == "OK"
    wait_for_new_workers(server, 2, [victim])
    assert "imap worker" in server.log_text() and "signal 9" in server.log_text()
    server.send("bob@elsewhere.test", [USER], message(tag + "-after"))
    server.wait_messages("alice", 2, containing=tag.encode())
    # the dead worker's connections were given back: 3 - survivors may connect again
    more, refused = admitted(server, source, 4)
    assert (len(more), refused) == (3 - len(survivors), 1 + len(survivors))
    m = login(server)
    assert m.select("INBOX")[0] == "OK"
    typ, data = m.search(None, "SUBJECT", tag)
    assert typ == "OK" and len(data[0].split()) == 2
    m.logout()
    for c in survivors + more:
        c.logout()


def test_sessions_per_account_and_ip_count_across_workers(server: Server) -> None:
    """auth.max_userip_connections = 2: the third login of the account from one IP is
    refused wherever it lands; a session ended gives its place back."""
    server.admin("settings", "set", "auth.max_userip_connections", "2")
    start(server)
    logged, refused = [], 0
    for _ in range(4):
        m = imap(server)
        try:
            m.login(USER, PASSWORD)
            logged.append(m)
        except imaplib.IMAP4.error as e:
            assert "Maximum number of connections" in str(e), e
            refused += 1
            m.logout()
    assert (len(logged), refused) == (2, 2)
    logged.pop().logout()

    def place_back() -> bool:
        m = imap(server)
        try:
            m.login(USER, PASSWORD)
        except imaplib.IMAP4.error:
            m.logout()
            return False
        logged.append(m)
        return True

    wait_for(place_back, 30, "a login once a session ended")
    for m in logged:
        m.logout()


def test_failed_logins_in_both_workers_count_for_the_servers_penalty(server: Server) -> None:
    """The login brake is the server's: one failed login in each worker makes two failures
    of the IP, which (protection.autoblacklist.threshold = 2) blacklists it for SMTP too."""
    for key, value in (
        ("auth.fail_delays", "[0]"),
        ("protection.autoblacklist.threshold", "2"),
    ):
        server.admin("settings", "set", key, value)
    pids = start(server)
    source = "127.0.0.41"
    seen: set[int] = set()
    for _ in range(40):
        m = imap(server, source=source)
        pid = serving_pid(m.sock, pids)
        if pid in seen:
            m.logout()
            continue
        assert pid is not None
        seen.add(pid)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login(USER, f"wrong-{pid}")
        m.logout()
        if len(seen) == 2:
            break
    assert len(seen) == 2
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", server.port("smtp"), source_address=(source, 0), timeout=30)
    assert refused.value.smtp_code == 554, refused.value
    assert "auto-blacklisted ip=127.0.0.41" in server.log_text()


def test_wrong_passwords_in_both_workers_lock_the_account_in_both(server: Server) -> None:
    """auth.account_max_failures = 2: one wrong password in each worker locks the account
    for every worker (the server counts and announces the lock): the right password is then
    refused in both, and the lock is logged once."""
    for key, value in (
        ("auth.fail_delays", "[0]"),
        ("auth.account_max_failures", "2"),
        ("auth.account_delay", "0"),
        ("auth.account_max_delay", "0"),
    ):
        server.admin("settings", "set", key, value)
    pids = start(server)
    clients = one_per_worker(server, pids, login_first=False)
    for pid, m in clients.items():
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login(USER, f"wrong-{pid}")
        m.logout()
    assert "auth account locked: account=alice@example.test" in server.log_text()
    clients = one_per_worker(server, pids, login_first=False)
    for m in clients.values():
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.login(USER, PASSWORD)
        m.logout()


def pop(server: Server, tls: str = "implicit") -> poplib.POP3:
    ctx = server.tls_context()
    if tls == "implicit":
        return poplib.POP3_SSL(HOST, server.port("pop3", tls="implicit"), context=ctx, timeout=60)
    p = poplib.POP3(HOST, server.port("pop3"), timeout=60)
    p.stls(context=ctx)
    return p


def test_pop3_and_webuser_sessions_in_workers(server: Server) -> None:
    """POP3 works in the workers (STLS and implicit TLS); WebUser lists the IMAP and POP3
    sessions the workers serve, ends the IMAP one with its End button (``* BYE``) and the
    POP3 one with a password change (``-ERR``)."""
    start(server)
    tag = uuid.uuid4().hex
    server.send("bob@elsewhere.test", [USER], message(tag))
    server.wait_messages("alice", 1, containing=tag.encode())
    p = pop(server, tls="starttls")
    p.user(USER)
    p.pass_(PASSWORD)
    assert tag.encode() in b"\n".join(p.retr(1)[1])
    p.quit()

    m = login(server)
    p = pop(server)
    p.user(USER)
    p.pass_(PASSWORD)
    c = web(server, USER, PASSWORD)
    listed = sessions(c)
    assert sorted(proto for proto, _this, _id in listed) == ["IMAP", "POP3", "Web"], listed
    r = c.submit("/sessions", "/sessions/end", {"id": id_of(listed, "IMAP")})
    assert r.status == 303
    bye = m.readline()
    assert bye.startswith(b"* BYE ") and b"WebUser" in bye, bye
    m.shutdown()
    wait_for(
        lambda: sorted(proto for proto, _t, _i in sessions(c)) == ["POP3", "Web"],
        30,
        "the IMAP session off the list",
    )
    form = {"current": PASSWORD, "new": "alice-secret-2", "again": "alice-secret-2"}
    r = c.submit("/", "/password", dict(form, end_mail="1"))
    assert r.status == 303
    goodbye = p.file.readline()
    assert goodbye.startswith(b"-ERR "), goodbye
    p.close()


def test_reload_restart_and_shutdown_reach_the_workers(server: Server) -> None:
    """A changed setting reaches the sessions in workers (APPENDLIMIT follows
    imap.max_literal); a changed imap.workers restarts them; 0 brings IMAP back into the
    server; SIGTERM says BYE to a session in a worker and leaves no worker behind."""
    pids = start(server)
    server.admin("settings", "set", "imap.max_literal", "12345")

    def capability_has(word: bytes) -> bool:
        m = imap(server)
        try:
            return word in b" ".join(m.capability()[1])
        finally:
            m.logout()

    wait_for(lambda: capability_has(b"APPENDLIMIT=12345"), 60, "the new APPENDLIMIT")
    assert set(server.worker_pids(kind="imap")) == set(pids)  # a reload, not a restart
    server.admin("settings", "set", "imap.workers", "1")
    (one,) = wait_for_new_workers(server, 1, pids)
    m = login(server)
    assert serving_pid(m.sock, [one]) == one
    m.logout()
    server.admin("settings", "set", "imap.workers", "0")
    wait_for(lambda: not server.worker_pids(kind="imap"), 60, "no imap worker left")
    m = login(server)
    assert serving_pid(m.sock, [server.proc.pid]) == server.proc.pid  # type: ignore[union-attr]
    m.logout()
    server.admin("settings", "set", "imap.workers", "2")
    pids = wait_for_new_workers(server, 2, [one])
    m = login(server)
    assert serving_pid(m.sock, pids) in pids
    proc = server.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    bye = m.readline()
    assert bye.startswith(b"* BYE"), bye
    m.shutdown()
    assert proc.wait(90) in (0, -signal.SIGTERM)  # twistd re-raises the signal it stopped on
    server.proc = None
    assert not server.worker_pids(kind="imap")
    assert "still open after" not in server.log_text()


def test_idle_in_a_worker_hears_a_delivery_and_another_workers_append(server: Server) -> None:
    """A session IDLE in one worker is told at once (no command from it) of a message the
    server delivered and of an APPEND made in the other worker."""
    pids = start(server)
    idler, other = one_per_worker(server, pids).values()
    assert idler.select("INBOX")[0] == "OK"
    tag = idler._new_tag()  # type: ignore[attr-defined]
    idler.send(tag + b" IDLE\r\n")
    assert idler.readline().startswith(b"+ ")

    def next_exists() -> bytes:
        """The next EXISTS line during IDLE (RECENT may come with it); the socket's
        timeout bounds the wait."""
        while True:
            line = idler.readline()
            assert line, "the connection closed during IDLE"
            if line.endswith(b" EXISTS\r\n"):
                return line

    server.send("bob@elsewhere.test", [USER], message("pushed-1"))
    assert next_exists() == b"* 1 EXISTS\r\n"
    assert other.append("INBOX", None, None, message("pushed-2"))[0] == "OK"
    assert next_exists() == b"* 2 EXISTS\r\n"
    idler.send(b"DONE\r\n")
    while not (reply := idler.readline()).startswith(tag):
        pass
    assert b" OK " in reply, reply
    idler.logout()
    other.logout()


def test_a_server_killed_takes_its_workers_and_its_successor_serves(server: Server) -> None:
    """kill -9 of the server: its IMAP workers see their pipe end and exit (a session in one
    is cut, the listening sockets close), so a new server binds and serves IMAP again in new
    workers."""
    pids = start(server)
    m = login(server)
    server.kill()
    wait_for(
        lambda: not set(pids) & set(server.worker_pids(kind="imap")),
        60,
        "the workers of the killed server to exit",
    )
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        m.noop()
    new = start(server)
    assert not set(new) & set(pids)
    m = login(server)
    assert m.select("INBOX")[0] == "OK"
    m.logout()
