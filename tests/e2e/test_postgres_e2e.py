"""A real twistd on a PostgreSQL store: start-up as root, a frozen database, failed starts.

Issue 20 ("Deployment defects"): the configured listeners are bound before root is dropped
(item 1), a frozen database gives each protocol's temporary failure instead of a hang (item 2),
and a start that fails exits non-zero so an init system retries it (item 4). The PostgreSQL
tests need the throw-away cluster (``eval "$(sh tests/storage/pg_throwaway.sh start)"``); each
gets a database of its own on it.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import secrets
import shutil
import smtplib
import socket
import tempfile
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.e2e.harness import NOBODY, Server, wait_for
from tests.storage.dbcase import frozen_postgres, terminate_backends

pytestmark = pytest.mark.e2e

PG_URL = os.environ.get("CGTWIST_TEST_PG_URL", "")
HOST = "127.0.0.1"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the throw-away cluster, dropped after the test."""
    if not PG_URL:
        pytest.skip("set CGTWIST_TEST_PG_URL (tests/storage/pg_throwaway.sh) to run")
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"cg_e2e_{secrets.token_hex(4)}"
    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    try:
        admin.cursor().execute(f"CREATE DATABASE {name}")
        parts = urlsplit(PG_URL)
        yield urlunsplit(parts._replace(path="/" + name))
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.close()


def pg_config(url: str, timeout: float = 10.0) -> str:
    return f'[database]\nurl = "{url}"\ntimeout = {timeout}\n'


def listener(protocol: str, port: int = 0) -> dict[str, object]:
    return {"protocol": protocol, "address": HOST, "port": port, "tls": "starttls"}


def free_port_below_1024() -> int:
    for port in range(640, 1024):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024 on 127.0.0.1")


# -- item 1 ------------------------------------------------------------------------------------
def test_configured_low_port_bound_before_dropping_root(pg_url: str) -> None:
    """Started as root with --uid on a PostgreSQL store whose listeners name 127.0.0.1 on a
    port below 1024, the server binds that port before dropping root and serves it as
    nobody; no built-in default is bound."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    work = tempfile.mkdtemp(prefix="cgtwist-e2e-uid-")
    from psycopg2.extensions import parse_dsn

    sockdir = str(parse_dsn(PG_URL).get("host", ""))
    sockdir = sockdir if sockdir.startswith("/") else ""
    mode = os.stat(sockdir).st_mode if sockdir else None
    server = Server(os.path.join(work, "base"), extra_config=pg_config(pg_url))
    try:
        os.chmod(work, 0o755)
        if sockdir and mode is not None:
            os.chmod(sockdir, mode | 0o011)  # nobody may reach the socket in it
        port = free_port_below_1024()
        server.set_listeners([listener("smtp", port)])
        server.start_as_nobody(work)
        assert server.proc is not None
        with open(f"/proc/{server.proc.pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert uids == [str(NOBODY)] * 4
        with smtplib.SMTP(HOST, port, timeout=30) as smtp:
            assert smtp.noop()[0] == 250
        log = server.log_text()
        assert "cannot bind" not in log
        assert "1 listener(s)" in log
        assert [p["port"] for p in server.ports()] == [port]
    finally:
        server.stop()
        server.close()
        if sockdir and mode is not None:
            os.chmod(sockdir, mode)
        shutil.rmtree(work, ignore_errors=True)


# -- item 2 ------------------------------------------------------------------------------------
@pytest.fixture
def pg_server(pg_url: str, tmp_path: str) -> Iterator[Server]:
    server = Server(str(tmp_path) + "/base", extra_config=pg_config(pg_url, timeout=3))
    server.set_listeners([listener("smtp"), listener("pop3"), listener("imap")])
    with server.running():
        server.admin("account", "add", "alice@example.test", "--password", "alice-secret")
        yield server


def test_frozen_database_gives_temporary_failures(pg_server: Server) -> None:
    """With PostgreSQL frozen (SIGSTOP), RCPT answers 451 4.3.0, IMAP LOGIN NO [UNAVAILABLE]
    and POP3 PASS -ERR [SYS/TEMP] once the store's deadline passes, instead of hanging until
    the client gives up; after the database runs again, logins work again."""
    ctx = pg_server.tls_context()
    with frozen_postgres(PG_URL):
        with smtplib.SMTP(HOST, pg_server.port("smtp"), timeout=60) as smtp:
            smtp.ehlo("client.elsewhere.test")
            assert smtp.mail("someone@elsewhere.test")[0] == 250
            code, text = smtp.rcpt("alice@example.test")
            assert (code, text[:5]) == (451, b"4.3.0")

        imap = imaplib.IMAP4(HOST, pg_server.port("imap"), timeout=60)
        imap.starttls(ssl_context=ctx)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            imap.login("alice@example.test", "alice-secret")
        imap.logout()

        pop = poplib.POP3(HOST, pg_server.port("pop3"), timeout=60)
        pop.stls(context=ctx)
        pop.user("alice@example.test")
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            pop.pass_("alice-secret")
        pop.quit()
        log = pg_server.log_text()
        assert "no answer from" in log
        assert "Traceback" not in log  # an outage is a known condition: one line each

    def login_works() -> bool:
        imap = imaplib.IMAP4(HOST, pg_server.port("imap"), timeout=60)
        try:
            imap.starttls(ssl_context=ctx)
            imap.login("alice@example.test", "alice-secret")
            return True
        except imaplib.IMAP4.error:
            return False
        finally:
            imap.shutdown()

    wait_for(login_works, 60, "IMAP LOGIN to work again")


# -- item 3 ------------------------------------------------------------------------------------
def test_database_restart_is_invisible(pg_server: Server) -> None:
    """After PostgreSQL dropped every connection (as a restart does), the server's pooled
    connections are stale: cgtwist-admin's reload and a login each still succeed the first
    time (they failed once per pooled connection: 'server refused reload: server closed the
    connection unexpectedly')."""
    ctx = pg_server.tls_context()
    for n in range(3):
        assert terminate_backends(pg_url_of(pg_server)) >= 1
        r = pg_server.admin(
            "account", "add", f"user{n}@example.test", "--password", "pw-secret", check=False
        )
        assert r.returncode == 0, r.stderr
        assert terminate_backends(pg_url_of(pg_server)) >= 1
        imap = imaplib.IMAP4(HOST, pg_server.port("imap"), timeout=60)
        try:
            imap.starttls(ssl_context=ctx)
            assert imap.login(f"user{n}@example.test", "pw-secret")[0] == "OK"
        finally:
            imap.shutdown()
    assert "reconnecting and trying once more" in pg_server.log_text()


def pg_url_of(server: Server) -> str:
    with open(server.conf) as f:
        return next(line.split('"')[1] for line in f if line.startswith("url = "))


# -- item 4 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [("-n",), ()], ids=["nodaemon", "daemon"])
def test_database_down_at_start_exits_nonzero(tmp_path: str, mode: tuple[str, ...]) -> None:
    """PostgreSQL not running at start: the server says why and exits 1 (not 0), so systemd's
    Restart=on-failure tries again; as a daemon (Type=forking), the parent does."""
    pytest.importorskip("psycopg2")
    down = f"postgresql://postgres@/cgtwist?host={tmp_path}/no-such-socket-dir&port=5432"
    server = Server(str(tmp_path) + "/base", extra_config=pg_config(down, timeout=3))
    try:
        code, out = server.run_to_exit(daemon=not mode)
        assert code != 0, out
        assert "no-such-socket-dir" in out
    finally:
        server.close()


def test_failure_after_the_reactor_started_exits_nonzero(tmp_path: str) -> None:
    """A start that fails once the reactor runs (here: the spool folder cannot be created)
    also exits non-zero, after logging 'cgtwist failed to start'."""
    server = Server(str(tmp_path) + "/base")
    try:
        server.set_listeners([listener("smtp")])
        with open(os.path.join(server.base, "Queue"), "w") as f:
            f.write("a file where the spool folder belongs\n")
        code, out = server.run_to_exit()
        assert code != 0, out
        assert "cgtwist failed to start" in out
    finally:
        server.close()
