"""Listeners and TLS at run time: rebinding without a restart, clear bind errors, SIGHUP reload."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import ssl

import pytest
from cryptography import x509

from cgtwist.tls import generate_self_signed
from tests.e2e.harness import ALL_LISTENERS, Server, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path):  # type: ignore[no-untyped-def]
    srv = Server(str(tmp_path / "base"))
    srv.set_listeners(ALL_LISTENERS[:1])
    with srv.running():
        yield srv


def banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        return s.makefile("rb").readline()


def test_listener_change_rebinds_without_restart(server: Server) -> None:
    """Adding a POP3 listener and removing SMTP with cgtwist-admin takes effect at once."""
    smtp_port = server.port("smtp")
    assert banner(smtp_port).startswith(b"220")
    pop = {"protocol": "pop3", "address": "127.0.0.1", "port": 0, "tls": "starttls"}
    server.set_listeners([pop])
    wait_for(
        lambda: any(p["protocol"] == "pop3" and p["bound"] for p in server.ports()),
        30,
        "POP3 bound",
    )
    assert banner(server.port("pop3")).startswith(b"+OK")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", smtp_port), timeout=5).close()
    assert server.proc is not None and server.proc.poll() is None


def test_port_in_use_is_a_clear_log_line(server: Server) -> None:
    """A listener that cannot bind is logged with its name and the fix, and cgtwist-admin,
    which added it, prints why and exits 1 (it printed nothing and exited 0); the others keep
    working."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        listeners = [
            ALL_LISTENERS[0],
            {"protocol": "imap", "address": "127.0.0.1", "port": port, "tls": "starttls"},
        ]
        r = server.admin("settings", "set", "listeners", json.dumps(listeners), check=False)
        assert r.returncode == 1, r.stderr
        assert f"listener imap:127.0.0.1:{port} is not bound: address already in use" in r.stderr
        assert "smtp:" not in r.stderr  # the bound one is not reported as a problem
        wait_for(
            lambda: (
                f"imap:127.0.0.1:{port} cannot bind: address already in use" in server.log_text()
            ),
            30,
            "the bind error in the log",
        )
        states = {p["protocol"]: p for p in server.ports()}
        assert (
            states["imap"]["bound"] is False and "address already in use" in states["imap"]["error"]
        )
        assert banner(server.port("smtp")).startswith(b"220")
    finally:
        taken.close()


def served_certificate(port: int) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"EHLO c.test\r\n")
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
        raw.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220")
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_sighup_reloads_the_certificate(server: Server) -> None:
    """An administrator renews the certificate files and sends SIGHUP: the next handshake
    presents the new certificate, with no restart."""
    cert = os.path.join(server.base, "tls", "cert.pem")
    key = os.path.join(server.base, "tls", "key.pem")
    before = served_certificate(server.port("smtp"))
    generate_self_signed(cert, key, ["renewed.example.test", "localhost"])
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "TLS certificate reloaded" in server.log_text(), 30, "the reload log line")
    after = served_certificate(server.port("smtp"))
    assert after.serial_number != before.serial_number
    names = after.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "renewed.example.test" in names.get_values_for_type(x509.DNSName)


def test_reload_answer_waits_for_the_listener_change(server: Server) -> None:
    """When a change both closes a listener and adds one that cannot bind, the reload answer
    comes after the new one was tried (closing a socket takes a reactor turn), so
    cgtwist-admin still reports the failure and exits 1."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        pop = {"protocol": "pop3", "address": "127.0.0.1", "port": port, "tls": "starttls"}
        r = server.admin("settings", "set", "listeners", json.dumps([pop]), check=False)
        assert r.returncode == 1, r.stderr
        assert f"listener pop3:127.0.0.1:{port} is not bound: address already in use" in r.stderr
    finally:
        taken.close()


def test_invalid_stored_listeners_bind_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A listeners setting the store holds but the server cannot use (edited by hand, another
    version) fails the start, naming the setting, instead of binding the built-in defaults
    that nobody configured."""
    srv = Server(str(tmp_path / "base"))
    try:
        srv.set_listeners(ALL_LISTENERS[:1])
        with sqlite3.connect(os.path.join(srv.base, "cgtwist.db")) as db:
            bad = json.dumps([{"protocol": "smtp", "port": "twenty-five"}])
            # listeners are a node's setting (docs/CLUSTER.md): the default node's row
            changed = db.execute(
                "UPDATE node_settings SET value = ? WHERE name = 'listeners'", (bad,)
            ).rowcount
            assert changed == 1
        code, out = srv.run_to_exit()
        assert code != 0, out
        assert "invalid listeners setting" in out
        assert "bound on port" not in out
    finally:
        srv.close()
