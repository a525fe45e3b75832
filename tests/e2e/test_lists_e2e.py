"""Mailing lists end to end: a real twistd, real SMTP clients, a loopback DNS server and a
loopback sink as the remote subscribers' MX (#15).

Subscribe by mail with confirmation, post and receive with the RFC 2369 fields (remote copy at
the sink, local copy in a Maildir), a digest after the interval, moderation approved by reply
and rejected by ``cgtwist-admin``, bounces (the server's own DSNs and a VERP one) counted to
suspension, unsubscribe by mail and by the personalised copy's one-step mailto:.
"""

from __future__ import annotations

import email
import os
import re
import smtplib
import uuid
from typing import Iterator

import pytest

from tests.e2e.harness import ALL_LISTENERS, DEFAULT_ZONE, Server, wait_for
from tests.e2e.sink import Received, Sink
from tests.e2e.webclient import WebClient

pytestmark = pytest.mark.e2e

LIST = "dev@example.test"
ZONE = dict(
    DEFAULT_ZONE,
    **{
        "ext.test": ["MX 10 mx.ext.test"],
        "dead.test": ["MX 10 mx.ext.test"],
        "mx.ext.test": ["A 127.0.0.1"],
    },
)
TOKEN = re.compile(r"(?:subscribe|unsubscribe|approve|reject)\.\d+\.[\w-]+\.[\w-]+")


HTTPS = {"protocol": "http", "address": "127.0.0.1", "port": 0, "tls": "implicit"}


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    s.set_rule("dead.test", "reject")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Server]:
    base = str(tmp_path_factory.mktemp("lists"))
    srv = Server(os.path.join(base, "base"), dns_records=ZONE)
    srv.set_listeners(ALL_LISTENERS + [HTTPS])
    srv.admin("settings", "set", "smtp.remote_port", str(sink.port))
    srv.admin("settings", "set", "queue.retry_schedule", "[1]")
    srv.admin("settings", "set", "lists.sweep_interval", "1")
    srv.admin("settings", "set", "lists.bounce_limit", "2")
    with srv.running():
        for name in ("owner", "carol", "dave"):
            srv.admin("account", "add", f"{name}@example.test", "--password", f"{name}-secret")
        srv.admin(
            "list",
            "add",
            LIST,
            "--owner",
            "owner@example.test",
            "--description",
            "Dev",
            "--set",
            "subject_tag=[dev]",
            "--set",
            "digest_interval=2",
            "--set",
            "archive_folder=Archive/dev",
        )
        srv.admin("list", "subscribe", LIST, "carol@example.test")
        srv.admin("list", "subscribe", LIST, "dave@example.test", "--mode", "digest")
        yield srv


def send(server: Server, sender: str, to: str, subject: str, body: str = "hello") -> None:
    """One message over port 25 from a remote sender (not a relay: the list is ours)."""
    msg = (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@ext.test>\r\n\r\n{body}\r\n"
    )
    server.send(sender, [to], msg.encode(), helo="client.elsewhere.test")


def send_as(server: Server, user: str, to: str, subject: str) -> None:
    """One message from a local account over submission (587, STARTTLS, AUTH)."""
    server.submit(user, [to], f"From: <{user}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nok\r\n")


def at_sink(sink: Sink, rcpt: str, marker: str, count: int = 1) -> list[Received]:
    return wait_for(
        lambda: (
            (
                m := [
                    x for x in sink.messages() if rcpt in x.recipients and marker.encode() in x.data
                ]
            )
            and len(m) >= count
            and m
        ),
        90,
        f"{count} message(s) with {marker!r} for {rcpt} at the sink",
    )


def in_maildir(server: Server, account: str, marker: str, count: int = 1) -> list[bytes]:
    return server.wait_messages(account, count, 90, marker.encode())


def subscribers(server: Server) -> str:
    return server.admin("list", "subscribers", LIST).stdout


def test_subscribe_by_mail_post_and_rfc2369(server: Server, sink: Sink) -> None:
    """bob@ext.test subscribes by mail: a confirmation with a token comes back, the reply
    subscribes him. His post then reaches him (remote, one SMTP copy) and carol (local)
    with List-Id, the RFC 2369 fields, Precedence: list and the subject tag; the archive
    folder of the owner keeps a copy."""
    send(server, "bob@ext.test", "dev-on@example.test", "subscribe")
    [confirm] = at_sink(sink, "bob@ext.test", "confirm ")
    token = TOKEN.search(confirm.data.decode()).group(0)
    assert "bob@ext.test" not in subscribers(server)
    send(server, "bob@ext.test", "dev-request@example.test", f"Re: confirm {token}")
    wait_for(lambda: "bob@ext.test  feed  active" in subscribers(server), 60, "bob subscribed")
    marker = uuid.uuid4().hex
    send(server, "bob@ext.test", LIST, f"post {marker}")
    [copy] = at_sink(sink, "bob@ext.test", marker)
    assert copy.sender == "dev-bounce@example.test"
    msg = email.message_from_bytes(copy.data)
    assert msg["List-Id"] == '"Dev" <dev.example.test>'
    assert msg["List-Post"] == "<mailto:dev@example.test>"
    assert msg["List-Help"] == "<mailto:dev-request@example.test?subject=help>"
    assert msg["List-Subscribe"] == "<mailto:dev-on@example.test?subject=subscribe>"
    assert msg["List-Unsubscribe"] == "<mailto:dev-off@example.test?subject=unsubscribe>"
    assert msg["Precedence"] == "list"
    assert msg["Subject"] == f"[dev] post {marker}"
    [local] = in_maildir(server, "carol", marker)
    assert b'List-Id: "Dev" <dev.example.test>' in local
    archive = os.path.join(server.maildir("owner"), ".Archive.dev", "new")
    wait_for(lambda: os.path.isdir(archive) and os.listdir(archive), 60, "the archive copy")


def test_digest_after_the_interval(server: Server) -> None:
    """dave (digest mode) gets no single copies, but a multipart/digest with the post in it
    once the list's digest interval has passed."""
    marker = uuid.uuid4().hex
    send_as(server, "carol@example.test", LIST, f"digest {marker}")
    in_maildir(server, "carol", marker)
    [digest] = in_maildir(server, "dave", marker)
    msg = email.message_from_bytes(digest)
    assert msg.get_content_type() == "multipart/digest"
    assert marker in msg.get_payload()[0].get_payload()  # the subject index comes first


def test_moderation_approve_by_reply_and_reject_by_cli(server: Server, sink: Sink) -> None:
    """On a moderated list a post is held and the owner gets approve/reject tokens; a reply
    with the approve token distributes it; a post rejected with cgtwist-admin is not
    distributed and its poster is told."""
    server.admin("list", "set", LIST, "policy=moderated")
    try:
        marker = uuid.uuid4().hex
        send(server, "bob@ext.test", LIST, f"held {marker}")
        [note] = in_maildir(server, "owner", marker)
        approve = re.search(r"approve (approve\.\S+)", note.decode()).group(1)
        send_as(server, "owner@example.test", "dev-request@example.test", f"Re: approve {approve}")
        in_maildir(server, "carol", marker)
        second = uuid.uuid4().hex
        send(server, "bob@ext.test", LIST, f"held {second}")
        in_maildir(server, "owner", second)
        [line] = server.admin("list", "held", LIST).stdout.splitlines()
        server.admin("list", "reject", LIST, line.split()[0], "--reason", "off topic")
        at_sink(sink, "bob@ext.test", "off topic")
        assert server.admin("list", "held", LIST).stdout == ""
        assert not [m for m in server.messages("carol") if second.encode() in m]
    finally:
        server.admin("list", "set", LIST, "policy=subscribers")


def test_bounces_count_to_suspension(server: Server, sink: Sink) -> None:
    """A subscriber whose MX refuses it: the server's DSN to dev-bounce@ counts one bounce,
    a VERP bounce a second: at lists.bounce_limit (2) it is suspended, gets nothing, and the
    owner is told."""
    server.admin("list", "subscribe", LIST, "gone@dead.test")
    marker = uuid.uuid4().hex
    send(server, "bob@ext.test", LIST, f"bounce {marker}")
    wait_for(
        lambda: "gone@dead.test  feed  active  bounces=1" in subscribers(server), 90, "1 bounce"
    )
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=60) as s:
        s.ehlo("client.elsewhere.test")
        s.sendmail("", ["dev-bounce+gone=dead.test@example.test"], b"Subject: failed\r\n\r\nx\r\n")
    wait_for(lambda: "gone@dead.test  feed  suspended" in subscribers(server), 90, "suspended")
    in_maildir(server, "owner", "gone@dead.test suspended")
    before = len([r for r in sink.rcpts() if r[1] == "gone@dead.test"])
    marker = uuid.uuid4().hex
    send(server, "bob@ext.test", LIST, f"after {marker}")
    at_sink(sink, "bob@ext.test", marker)
    assert len([r for r in sink.rcpts() if r[1] == "gone@dead.test"]) == before


def test_unsubscribe_by_mail_and_by_personal_mailto(server: Server, sink: Sink) -> None:
    """-off with a confirmation removes a subscriber; on a personalised list each copy has
    its VERP sender, an RFC 8058 one-click URL and a mailto: whose token unsubscribes at once."""
    send(server, "bob@ext.test", "dev-off@example.test", "unsubscribe")
    confirms = at_sink(sink, "bob@ext.test", "unsubscribe bob@ext.test")
    token = TOKEN.search(confirms[-1].data.decode()).group(0)
    send(server, "bob@ext.test", "dev-request@example.test", f"Re: confirm {token}")
    wait_for(lambda: "bob@ext.test" not in subscribers(server), 60, "bob unsubscribed")

    server.admin("list", "subscribe", LIST, "erin@ext.test")
    server.admin("list", "set", LIST, "personalize=true")
    server.admin("settings", "set", "lists.unsubscribe_url", "https://mail.example.test/")
    marker = uuid.uuid4().hex
    send_as(server, "carol@example.test", LIST, f"personal {marker}")
    [copy] = at_sink(sink, "erin@ext.test", marker)
    assert copy.sender == "dev-bounce+erin=ext.test@example.test"
    msg = email.message_from_bytes(copy.data)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<https://mail.example.test/lists/unsubscribe?list=" in msg["List-Unsubscribe"]
    mailto = re.search(r"<mailto:([^?>]+)\?subject=([^>]+)>", msg["List-Unsubscribe"])
    send(server, "erin@ext.test", mailto.group(1), mailto.group(2).replace("%20", " "))
    wait_for(lambda: "erin@ext.test" not in subscribers(server), 60, "erin unsubscribed")


def test_one_click_unsubscribe_on_the_servers_own_web_listener(server: Server, sink: Sink) -> None:
    """With lists.unsubscribe_url naming the server's own HTTPS listener, the RFC 8058
    one-click POST a mail provider sends removes the subscriber at once; a GET (a link
    checker) only shows a button, and a token altered or of another list is refused."""
    port = server.port("http", tls="implicit")
    server.admin("list", "subscribe", LIST, "frank@ext.test")
    server.admin("list", "set", LIST, "personalize=true")
    server.admin("settings", "set", "lists.unsubscribe_url", f"https://127.0.0.1:{port}/")
    marker = uuid.uuid4().hex
    send_as(server, "carol@example.test", LIST, f"one-click {marker}")
    [copy] = at_sink(sink, "frank@ext.test", marker)
    url = re.search(r"<(https://[^>]+)>", email.message_from_bytes(copy.data)["List-Unsubscribe"])
    path = url.group(1).split(str(port), 1)[1]
    web = WebClient(port)
    page = web.get(path)
    assert page.status == 200 and 'method="post"' in page.body, page.body
    assert "frank@ext.test" in subscribers(server)
    one_click = b"List-Unsubscribe=One-Click"
    forged = re.sub(r"token=[^.&]+", "token=subscribe", path)
    assert web.request("POST", forged, body=one_click).status == 400
    assert web.request("POST", path.replace("dev%40", "other%40"), body=one_click).status == 400
    assert "frank@ext.test" in subscribers(server)
    done = web.request("POST", path, body=one_click)
    assert done.status == 200, done.body
    assert "frank@ext.test" not in subscribers(server)
