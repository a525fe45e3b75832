"""The verified-credential cache against a real server: repeat IMAP and POP3 logins with the
same password keep working, and after ``cgtwist-admin account passwd`` or ``account set
--disable`` the old password is refused on the very next login, over both protocols."""

from __future__ import annotations

import imaplib
import json
import os
import poplib
from typing import Iterator

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server

pytestmark = pytest.mark.e2e

ACCOUNT = "dana@example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(os.path.join(str(tmp_path_factory.mktemp("cgtwist")), "base"))
    srv.set_listeners(ALL_LISTENERS)
    for key, value in (("auth.allow_plaintext", True), ("auth.fail_delays", [0])):
        srv.admin("settings", "set", key, json.dumps(value))
    with srv.running():
        srv.admin("account", "add", ACCOUNT, "--password", "first-secret")
        yield srv


def imap_login(server: Server, password: str) -> str:
    m = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=30)
    try:
        m.login(ACCOUNT, password)
        return "OK"
    except imaplib.IMAP4.error as e:
        return str(e)
    finally:
        m.shutdown()


def pop3_login(server: Server, password: str) -> str:
    p = poplib.POP3("127.0.0.1", server.port("pop3"), timeout=30)
    try:
        p.user(ACCOUNT)
        return p.pass_(password).decode()
    except poplib.error_proto as e:
        reply = e.args[0]
        return reply.decode() if isinstance(reply, bytes) else str(reply)
    finally:
        p.close()


def test_changed_password_refused_at_once(server: Server) -> None:
    """Logins that the cache now answers keep working; a password change takes effect on
    the next login, the new password works, and wrong passwords stay wrong throughout."""
    for _ in range(3):
        assert imap_login(server, "first-secret") == "OK"
        assert pop3_login(server, "first-secret").startswith("+OK")
    assert "AUTHENTICATIONFAILED" in imap_login(server, "first-secreT")
    server.admin("account", "passwd", ACCOUNT, "--password", "second-secret")
    assert "AUTHENTICATIONFAILED" in imap_login(server, "first-secret")
    assert pop3_login(server, "first-secret").startswith("-ERR")
    assert imap_login(server, "second-secret") == "OK"
    assert pop3_login(server, "second-secret").startswith("+OK")


def test_disabled_account_refused_at_once(server: Server) -> None:
    """A cached password does not let a disabled account in, and works again once enabled."""
    server.admin("account", "passwd", ACCOUNT, "--password", "third-secret")
    assert imap_login(server, "third-secret") == "OK"
    server.admin("account", "set", ACCOUNT, "--disable")
    assert "AUTHENTICATIONFAILED" in imap_login(server, "third-secret")
    server.admin("account", "set", ACCOUNT, "--enable")
    assert imap_login(server, "third-secret") == "OK"
