"""twistd without -n: a traditional Unix daemon with pidfile and logfile, stopped by SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from tests.e2e.harness import ALL_LISTENERS, BIN, NOBODY, REPO, Server, wait_for

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_daemonizes_and_stops_gracefully_on_sigterm(tmp_path, request) -> None:  # type: ignore[no-untyped-def]
    """The daemon writes its pidfile, logs to the logfile, tells an idle SMTP client 421 on
    SIGTERM and exits, removing the pidfile; the log ends with twistd's last line, written
    after the reactor stopped (it stayed in the log buffer and was lost)."""
    srv = Server(str(tmp_path / "base"))
    request.addfinalizer(srv.dns.stop)
    srv.set_listeners(ALL_LISTENERS[:1])
    r = subprocess.run(
        srv.twistd_argv(daemon=True),
        env=srv.env,
        cwd=srv.base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: "cgtwist ready" in srv.log_text(), 60, "the daemon to be ready")
    pid = int(open(srv.pidfile).read().strip())
    assert alive(pid)
    sock = socket.create_connection(("127.0.0.1", srv.port("smtp")), timeout=30)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220")
    sock.sendall(b"EHLO client.test\r\n")
    line = f.readline()
    while line[3:4] == b"-":
        line = f.readline()
    os.kill(pid, signal.SIGTERM)
    assert f.readline().startswith(b"421")
    wait_for(lambda: not alive(pid), 60, "the daemon to exit")
    assert not os.path.exists(srv.pidfile)
    assert "cgtwist stopped" in srv.log_text()
    last = srv.log_text().splitlines()[-2:]
    assert [line.split("] ", 1)[1] for line in last] == [
        "Main loop terminated.",
        "Server Shut Down.",
    ], last


@pytest.mark.parametrize("program", ["twistd", "cgtwist-admin"])
def test_bad_config_file_is_one_line(tmp_path, program) -> None:  # type: ignore[no-untyped-def]
    """A typo in the config file gives ``FILE:LINE: KEY: problem`` and exit status 1, not
    twistd's 18 lines of usage text before it; cgtwist-admin says the same."""
    conf = tmp_path / "cgtwist.conf"
    conf.write_text('[server]\nbase_dir = "spool"\nmain_domian = "example.test"\n')
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("CGTWIST_CONFIG", None)
    if program == "twistd":
        argv = [os.path.join(BIN, "twistd"), "-n", "cgtwist", "--config", str(conf)]
    else:
        argv = [sys.executable, "-m", "cgtwist.cli", "--config", str(conf), "domain", "list"]
    r = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == ""
    assert r.stderr == f"{conf}:3: server.main_domian: unknown key\n"
    assert not (tmp_path / "spool").exists()


def test_settings_changes_are_logged_when_applied(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A change made with cgtwist-admin while the server runs shows in the server's log with
    its old and new value once applied; a refused one is neither stored nor logged."""
    srv = Server(str(tmp_path / "base"))
    try:
        srv.set_listeners(ALL_LISTENERS[:1])
        with srv.running():
            srv.admin("settings", "set", "smtp.max_recipients", "50")
            wait_for(
                lambda: "setting smtp.max_recipients applied: 100 -> 50" in srv.log_text(),
                60,
                "the change to be logged",
            )
            r = srv.admin(
                "settings", "set", "nonsense.key", "1", "--account", "postmaster", check=False
            )
            assert r.returncode == 1
            assert r.stderr == (
                "cgtwist-admin: error: unknown account setting 'nonsense.key' "
                "(known: admin, domain_admin, mail.max_message_size, password.min_classes, "
                "password.min_length, quota.grace, quota.max_folders, quota.messages, "
                "quota.storage, rules.allowed, smtp.send_as)\n"
            )
            srv.admin("settings", "unset", "smtp.max_recipients")
            wait_for(
                lambda: "setting smtp.max_recipients applied: 50 -> 100" in srv.log_text(),
                60,
                "the second change to be logged",
            )
            assert "nonsense" not in srv.log_text()
    finally:
        srv.close()


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_files_are_private_and_the_log_is_rotated_with_a_bound(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Started from a shell with umask 022 over an older version's leftovers, the server
    keeps what it creates (store, key, account directories, messages, log) to its owner,
    tightens what exists (and logs it), and rotates its log keeping only [log] keep files,
    also on SIGUSR1, where twistd kept every 1 MB file."""
    base = str(tmp_path / "base")
    old_umask = os.umask(0o022)
    try:
        srv = Server(base, extra_config="[log]\nmax_size = 65536\nkeep = 2\n")
        leftover = os.path.join(base, "Domains", "example.test", "olduser")
        os.makedirs(leftover)
        os.chmod(leftover, 0o755)
        with open(srv.logfile, "w") as f:
            f.write("an older run's line\n" * 4000)  # 80 kB: past max_size
        for i in range(1, 18):
            with open(f"{srv.logfile}.{i}", "w") as f:
                f.write("older\n")
        srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
        srv.set_listeners(ALL_LISTENERS[:1])
        with srv.running():
            with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as s:
                s.sendmail(
                    "carol@example.test",
                    ["alice@example.test"],
                    b"Subject: private\r\n\r\nhello\r\n",
                )
            srv.wait_messages("alice", 1)
            j = lambda *p: os.path.join(base, *p)  # noqa: E731
            for path in (j("cgtwist.db"), j("tls", "key.pem"), srv.logfile, srv.logfile + ".1"):
                assert _mode(path) == 0o600, (path, oct(_mode(path)))
            for suffix in ("-wal", "-shm"):
                if os.path.exists(j("cgtwist.db" + suffix)):
                    assert _mode(j("cgtwist.db" + suffix)) == 0o600
            assert _mode(j("cgtwist.ctl")) & 0o077 == 0
            for path in (
                base,
                j("Domains"),
                j("Domains", "example.test"),
                leftover,
                j("Domains", "example.test", "alice"),
                j("Queue"),
            ):
                assert _mode(path) == 0o700, (path, oct(_mode(path)))
            maildir = srv.maildir("alice")
            for sub in ("new", "cur"):
                for name in os.listdir(os.path.join(maildir, sub)):
                    assert _mode(os.path.join(maildir, sub, name)) == 0o600
            assert f"file mode of {leftover} tightened from 0755 to 0700" in srv.log_text()
            rotated = sorted(n for n in os.listdir(base) if n.startswith("cgtwist.log."))
            assert rotated == ["cgtwist.log.1", "cgtwist.log.2"]
            assert "an older run's line" in open(srv.logfile + ".1").read()
            assert srv.proc is not None
            os.kill(srv.proc.pid, signal.SIGUSR1)
            wait_for(
                lambda: "cgtwist ready" in open(srv.logfile + ".1").read(),
                60,
                "SIGUSR1 to rotate the log",
            )
            assert sorted(n for n in os.listdir(base) if n.startswith("cgtwist.log.")) == rotated
    finally:
        os.umask(old_umask)


@pytest.mark.parametrize("folder_owner", ["service user", "root"])
def test_pidfile_after_sigterm_when_started_as_root_with_uid(folder_owner: str) -> None:
    """Started as root with --uid 65534 and its pid file in a folder that user owns (the
    unit's RuntimeDirectory, README's /run/cgtwist), the server removes the pid file when
    SIGTERM stops it, after root is gone, and the log still gets its last lines. In a
    root-owned folder (README's /run and the unit's RuntimeDirectory before they were
    given to cgtwist) it stays, and the log says why: the layout the docs now avoid."""
    if os.geteuid() != 0:
        pytest.skip("needs root")

    work = tempfile.mkdtemp(prefix="cgtwist-e2e-pid-")
    server = Server(os.path.join(work, "base"))
    try:
        os.chmod(work, 0o755)
        run = os.path.join(work, "run")
        os.mkdir(run, 0o755)
        if folder_owner == "service user":
            os.chown(run, NOBODY, NOBODY)
        server.pidfile = os.path.join(run, "cgtwist.pid")
        server.set_listeners(ALL_LISTENERS[:1])
        server.start_as_nobody(work)
        assert os.stat(server.pidfile).st_uid == 0  # written before the drop
        server.stop()
        log = server.log_text()
        assert log.splitlines()[-1].endswith("] Server Shut Down."), log[-500:]
        if folder_owner == "service user":
            assert not os.path.exists(server.pidfile)
            assert "No permission to delete pid file" not in log
        else:
            assert os.path.exists(server.pidfile)
            assert "Warning: No permission to delete pid file" in log
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)


def test_a_bad_stored_setting_is_named_in_the_log_and_not_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A setting the store holds but that fails its check (edited by hand, another version)
    does not stop the server: the log names it and why, and its default applies (SIZE
    advertises the default smtp.max_message_size instead of a word)."""
    import json
    import sqlite3

    srv = Server(str(tmp_path / "base"))
    try:
        srv.set_listeners(ALL_LISTENERS[:1])
        with sqlite3.connect(os.path.join(srv.base, "cgtwist.db")) as db:
            db.execute(
                "INSERT INTO server_settings (name, value) VALUES (?, ?)",
                ("smtp.max_message_size", json.dumps("ten megabytes")),
            )
        with srv.running():
            assert (
                "setting smtp.max_message_size in the store is not used: "
                "smtp.max_message_size must be a non-negative integer"
            ) in srv.log_text()
            with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=60) as c:
                c.ehlo("client.test")
                assert c.esmtp_features["size"] == "10485760"
    finally:
        srv.close()
