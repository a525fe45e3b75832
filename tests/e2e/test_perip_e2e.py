"""Per-IP limits against a real server: Client IPs are exempt from the per-IP connection caps
(SMTP, POP3, IMAP), many users behind one NAT address log in at once, and the login cap counts
sessions per account and IP (``auth.max_userip_connections``).

Clients bind to different loopback addresses (127.0.0.5 is a Client IP, the others are not),
so one server sees an office network and strangers side by side.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Iterator

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server

pytestmark = pytest.mark.e2e

CLIENT_IP = "127.0.0.5"
USERS = [f"nat{i}" for i in range(10)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(os.path.join(str(tmp_path_factory.mktemp("cgtwist")), "base"))
    srv.set_listeners(ALL_LISTENERS)
    for key, value in (
        ("clients.ips", CLIENT_IP),
        ("smtp.max_connections_per_ip", 3),
        ("access.max_connections_per_ip", 12),
        ("auth.allow_plaintext", True),
    ):
        srv.admin("settings", "set", key, json.dumps(value))
    with srv.running():
        for user in USERS:
            srv.admin("account", "add", f"{user}@example.test", "--password", f"{user}-secret")
        yield srv


def connect(server: Server, proto: str, source: str) -> tuple[socket.socket, bytes]:
    """A plain connection from ``source`` and the server's first line."""
    s = socket.create_connection(
        ("127.0.0.1", server.port(proto)), timeout=30, source_address=(source, 0)
    )
    return s, s.makefile("rb").readline()


def greetings(server: Server, proto: str, source: str, n: int) -> list[bytes]:
    socks, lines = [], []
    try:
        for _ in range(n):
            s, line = connect(server, proto, source)
            socks.append(s)
            lines.append(line)
    finally:
        for s in socks:
            s.close()
    return lines


GOOD = {"smtp": b"220 ", "pop3": b"+OK", "imap": b"* OK"}


@pytest.mark.parametrize("proto,cap", [("smtp", 3), ("pop3", 12), ("imap", 12)])
def test_client_ip_is_exempt_from_connection_caps(server: Server, proto: str, cap: int) -> None:
    """A Client IP may hold more connections than the per-IP cap; a stranger gets the refusal."""
    lines = greetings(server, proto, CLIENT_IP, cap + 3)
    assert all(line.startswith(GOOD[proto]) for line in lines), lines
    lines = greetings(server, proto, "127.0.0.6", cap + 1)
    assert all(line.startswith(GOOD[proto]) for line in lines[:cap]), lines
    assert not lines[cap].startswith(GOOD[proto]), lines


def imap_sessions(
    server: Server, source: str, users: list[str]
) -> tuple[list[socket.socket], list[bytes]]:
    """Open one IMAP connection per user from ``source``, send every LOGIN before reading any
    reply (so they run at once, as a NAT's users or a client's parallel connections do)."""
    socks = [connect(server, "imap", source)[0] for _ in users]
    for i, (s, user) in enumerate(zip(socks, users, strict=True)):
        s.sendall(b"a%d LOGIN %s@example.test %s-secret\r\n" % (i, user.encode(), user.encode()))
    replies = []
    for s in socks:
        f = s.makefile("rb")
        line = f.readline()
        while line.startswith(b"* "):
            line = f.readline()
        replies.append(line)
    return socks, replies


def test_users_behind_one_nat_log_in_at_once(server: Server) -> None:
    """Ten users behind one (non-Client) address log in at the same moment: all ten get in."""
    socks, replies = imap_sessions(server, "127.0.0.7", USERS)
    try:
        assert all(b" OK " in r for r in replies), replies
    finally:
        for s in socks:
            s.close()


def test_sessions_per_account_and_ip_are_capped(server: Server) -> None:
    """auth.max_userip_connections (10) sessions of one account from one IP; the 11th is told
    NO [UNAVAILABLE]; the same account from another IP still gets in."""
    socks, replies = imap_sessions(server, "127.0.0.8", ["nat0"] * 11)
    try:
        assert sum(b" OK " in r for r in replies) == 10, replies
        refused = [r for r in replies if b" OK " not in r]
        assert refused and refused[0].split(b" ", 1)[1].startswith(b"NO [UNAVAILABLE]"), replies
        other, more = imap_sessions(server, "127.0.0.9", ["nat0"])
        other[0].close()
        assert b" OK " in more[0], more
    finally:
        for s in socks:
            s.close()
