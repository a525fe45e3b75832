"""Three real ``twistd cgtwist`` nodes on one PostgreSQL database (issue 20, docs/CLUSTER.md).

Each node has its own base directory (spool, Maildirs), its own ``[server] node`` name and its
own listeners on its own loopback address; accounts and cluster-wide settings live in the
shared database, and a change made through any node is announced with LISTEN/NOTIFY. Every
wait is for a condition with a deadline of a few seconds; how long the change actually took
to reach each node is printed (``pytest -s``), never asserted.

Needs ``CGTWIST_TEST_PG_URL`` (tests/storage/pg_throwaway.sh); skipped without it.
"""

from __future__ import annotations

import imaplib
import json
import os
import smtplib
import time
from typing import Any, Callable, Iterator

import pytest

from tests.e2e.harness import Server, wait_for

PG_URL = os.environ.get("CGTWIST_TEST_PG_URL", "")
NODES = {"n1": "127.0.0.2", "n2": "127.0.0.3", "n3": "127.0.0.4"}
# Announced changes reach a node in milliseconds; the deadline only bounds a failure. It stays
# below the 5 s the account caches lived for before announcements, so a node that merely waits
# for its cache to expire fails this test.
DEADLINE = 4.0


def listeners(address: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"protocol": "smtp", "address": address, "port": 0, "tls": "starttls"},
        {
            "protocol": "imap",
            "address": address,
            "port": 0,
            "tls": "starttls",
            "allow_plain_auth": True,
        },
        *extra,
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    if not PG_URL:
        pytest.skip("set CGTWIST_TEST_PG_URL to run the cluster tests (pg_throwaway.sh)")
    import psycopg2

    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP SCHEMA public CASCADE")
        cur.execute("CREATE SCHEMA public")
    conn.close()
    root = str(tmp_path_factory.mktemp("cluster"))
    servers: dict[str, Server] = {}
    try:
        for node, address in NODES.items():
            srv = Server(
                os.path.join(root, node),
                server_config=f'node = "{node}"\n',
                extra_config=f'[database]\nurl = "{PG_URL}"\n',
            )
            servers[node] = srv
            srv.set_listeners(listeners(address))  # this node's own row
        for srv in servers.values():
            srv.start()
        servers["n1"].admin("account", "add", "alice@example.test", "--password", "alice-pw")
        yield servers
    finally:
        for srv in servers.values():
            srv.stop()
            srv.close()


def address_of(srv: Server) -> str:
    return str(next(p["address"] for p in srv.ports() if p["bound"]))


def bound(srv: Server) -> list[tuple[str, str, int]]:
    return sorted((p["protocol"], p["address"], p["port"]) for p in srv.ports() if p["bound"])


def rcpt(srv: Server, address: str) -> int:
    """The reply code to RCPT TO:<address> on the node's SMTP listener."""
    with smtplib.SMTP(address_of(srv), srv.port("smtp"), timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        s.mail("someone@elsewhere.test")
        code, _ = s.rcpt(address)
        return int(code)


def login(srv: Server, user: str, password: str) -> bool:
    imap = imaplib.IMAP4(address_of(srv), srv.port("imap"), timeout=30)
    try:
        imap.login(user, password)
        return True
    except imaplib.IMAP4.error:
        return False
    finally:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def max_size(srv: Server) -> int:
    with smtplib.SMTP(address_of(srv), srv.port("smtp"), timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        return int(s.esmtp_features.get("size", "0"))


def measure(what: str, servers: list[Server], cond: Callable[[Server], bool]) -> None:
    """Wait (deadline DEADLINE) until ``cond`` holds on every node; print how long each took,
    counted from the same start while the nodes are checked in turn (an IMAP login costs one
    argon2 verification, ~0.1 s, so the later nodes' figures include the earlier logins)."""
    start = time.monotonic()
    took = []
    for srv in servers:
        wait_for(lambda s=srv: cond(s), DEADLINE, f"{what} on {os.path.basename(srv.base)}")
        took.append(f"{os.path.basename(srv.base)} {time.monotonic() - start:.3f}s")
    print(f"\nMEASURED {what}: {', '.join(took)} after the cgtwist-admin command returned")


def test_each_node_binds_its_own_listeners(cluster: dict[str, Server]) -> None:
    """Three nodes, three sets of sockets: each binds the listeners of its own row."""
    for node, address in NODES.items():
        assert {a for _p, a, _port in bound(cluster[node])} == {address}, node
        assert {p for p, _a, _port in bound(cluster[node])} == {"smtp", "imap"}, node


def test_account_created_on_one_node_works_on_every_node(cluster: dict[str, Server]) -> None:
    """A new account is accepted and logs in on every node at once, even on a node that had
    just answered 550 for it (its negative cache is dropped by the announcement)."""
    others = [cluster["n2"], cluster["n3"]]
    for srv in others:
        assert rcpt(srv, "dave@example.test") == 550
    mine = bound(cluster["n1"])
    cluster["n1"].admin("account", "add", "dave@example.test", "--password", "dave-pw")
    assert bound(cluster["n1"]) == mine  # the reload after an unrelated change keeps them
    measure("new account accepted by RCPT", others, lambda s: rcpt(s, "dave@example.test") == 250)
    measure(
        "new account logs in (IMAP)",
        list(cluster.values()),
        lambda s: login(s, "dave@example.test", "dave-pw"),
    )


def test_account_removed_on_one_node_is_refused_on_every_node(cluster: dict[str, Server]) -> None:
    """A removed account is refused everywhere at once, also where it was just accepted."""
    cluster["n2"].admin("account", "add", "erin@example.test", "--password", "erin-pw")
    others = [cluster["n1"], cluster["n3"]]
    for srv in others:
        wait_for(lambda s=srv: rcpt(s, "erin@example.test") == 250, DEADLINE, "erin accepted")
    cluster["n2"].admin("account", "remove", "erin@example.test")
    measure(
        "removed account refused by RCPT", others, lambda s: rcpt(s, "erin@example.test") == 550
    )


def test_setting_changed_on_one_node_applies_on_all(cluster: dict[str, Server]) -> None:
    """A cluster-wide setting (the SIZE limit) set through one node applies on every node."""
    cluster["n3"].admin("settings", "set", "smtp.max_message_size", "7654321")
    measure(
        "smtp.max_message_size in EHLO SIZE",
        list(cluster.values()),
        lambda s: max_size(s) == 7654321,
    )


def test_a_nodes_listeners_never_change_when_anothers_do(cluster: dict[str, Server]) -> None:
    """n2 gains a POP3 listener, set through n1 (so only the announcement tells n2); n1 and
    n3 keep exactly their sockets, also after they applied a later change (announcements
    arrive in order, so they had seen n2's)."""
    before = {node: bound(cluster[node]) for node in ("n1", "n3")}
    pop3 = {"protocol": "pop3", "address": NODES["n2"], "port": 0, "tls": "starttls"}
    cluster["n1"].admin(
        "settings", "set", "listeners", json.dumps(listeners(NODES["n2"], pop3)), "--node", "n2"
    )
    measure(
        "n2's new POP3 listener bound",
        [cluster["n2"]],
        lambda s: any(p == "pop3" for p, _a, _port in bound(s)),
    )
    cluster["n2"].admin("settings", "set", "smtp.max_message_size", "1234567")
    measure(
        "a later cluster-wide change",
        [cluster["n1"], cluster["n3"]],
        lambda s: max_size(s) == 1234567,
    )
    for node in ("n1", "n3"):
        assert bound(cluster[node]) == before[node], node
    shown = json.loads(
        cluster["n1"]
        .admin("settings", "show", "listeners", "--node", "n2")
        .stdout.splitlines()[0]
        .split(" = ", 1)[1]
        .split("  (")[0]
    )
    assert pop3 in shown
