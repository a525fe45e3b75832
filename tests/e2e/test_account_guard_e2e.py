"""Guessing one account from many addresses, against a real server: failures over SMTP AUTH,
IMAP and POP3 from different IPs share one per-account budget; once it is spent the right
password from a stranger gets exactly the wrong-password reply, and from a Client IP it still
works. Clients bind to different loopback addresses (127.0.0.5 is the Client IP)."""

from __future__ import annotations

import imaplib
import json
import os
import smtplib
import socket
from typing import Iterator

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server, wait_for

pytestmark = pytest.mark.e2e

CLIENT_IP = "127.0.0.5"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(os.path.join(str(tmp_path_factory.mktemp("cgtwist")), "base"))
    srv.set_listeners(ALL_LISTENERS)
    for key, value in (
        ("clients.ips", CLIENT_IP),
        ("auth.allow_plaintext", True),
        ("auth.fail_delays", [0]),
        ("auth.account_max_failures", 3),
        ("auth.account_delay", 0.1),
        ("auth.account_max_delay", 0.2),
    ):
        srv.admin("settings", "set", key, json.dumps(value))
    with srv.running():
        srv.admin("account", "add", "carol@example.test", "--password", "carol-secret")
        yield srv


class SourcedIMAP(imaplib.IMAP4):
    """imaplib from a chosen loopback source address."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


def imap_login(server: Server, source: str, password: str) -> str:
    m = SourcedIMAP(server.port("imap"), source)
    try:
        m.login("carol@example.test", password)
        return "OK"
    except imaplib.IMAP4.error as e:
        return str(e)
    finally:
        m.shutdown()


def pop3_login(server: Server, source: str, password: str) -> str:
    sock = socket.create_connection(
        ("127.0.0.1", server.port("pop3")), timeout=30, source_address=(source, 0)
    )
    f = sock.makefile("rb")
    try:
        f.readline()
        sock.sendall(b"USER carol@example.test\r\n")
        f.readline()
        sock.sendall(b"PASS " + password.encode() + b"\r\n")
        return f.readline().decode().strip()
    finally:
        sock.close()


def smtp_login(server: Server, source: str, password: str) -> int:
    with smtplib.SMTP(
        "127.0.0.1", server.port("smtp"), timeout=30, source_address=(source, 0)
    ) as s:
        s.ehlo("client.example.test")
        try:
            s.login("carol@example.test", password)
            return 235
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code


def test_guessing_from_many_addresses_locks_the_account(server: Server) -> None:
    """Three wrong passwords from three IPs over three protocols lock carol: the right password
    from a fourth address is answered as a wrong one (IMAP and POP3), one log line says so;
    from the Client IP it still logs in."""
    wrong_imap = imap_login(server, "127.0.0.12", "guess-1")
    assert "AUTHENTICATIONFAILED" in wrong_imap
    assert smtp_login(server, "127.0.0.11", "guess-2") == 535
    wrong_pop = pop3_login(server, "127.0.0.13", "guess-3")
    assert wrong_pop.startswith("-ERR [AUTH]")
    wait_for(
        lambda: "auth account locked: account=carol@example.test" in server.log_text(),
        30,
        "the lock's log line",
    )
    assert imap_login(server, "127.0.0.14", "carol-secret") == wrong_imap
    assert pop3_login(server, "127.0.0.15", "carol-secret") == wrong_pop
    assert smtp_login(server, "127.0.0.16", "carol-secret") == 535
    wait_for(
        lambda: (
            "auth refused: account=carol@example.test ip=127.0.0.14 reason=locked"
            in server.log_text()
        ),
        30,
        "the refusal's log line",
    )
    assert imap_login(server, CLIENT_IP, "carol-secret") == "OK"
    assert smtp_login(server, CLIENT_IP, "carol-secret") == 235
