"""``cgtwist-admin queue`` against a real running server with messages deferred by a loopback
sink: list filters, show, hold/release, drop and bounce do what they say."""

from __future__ import annotations

import os
import re
from typing import Iterator

import pytest

from tests.e2e.harness import Server, wait_for
from tests.e2e.test_outbound_e2e import (
    ID_RE,
    Sink,
    delivery_status,
    dsns,
    make_message,
    make_server,
    send,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Server]:
    with make_server(str(tmp_path_factory.mktemp("queueadmin") / "base"), sink).running() as srv:
        yield srv


def deferred(
    server: Server, sink: Sink, domain: str, rcpt: str, sender: str = "alice@example.test"
) -> tuple[str, bytes]:
    """Send to ``rcpt`` at a domain the sink answers 451; return (queue id, marker) once the
    first attempt has failed."""
    sink.modes[domain] = "data-4xx"
    msg, marker = make_message([rcpt], sender=sender)
    send(server, [rcpt], msg, sender=sender)

    def tried() -> list[str]:
        out = server.admin("queue", "list", "--recipient", rcpt).stdout
        return ID_RE.findall(out) if "attempts 1" in out else []

    (msg_id,) = wait_for(tried, 60, f"a failed attempt to {rcpt}")
    return msg_id, marker


def spooled(server: Server, msg_id: str) -> bool:
    return os.path.exists(os.path.join(server.base, "Queue", msg_id + ".msg"))


def test_hold_stops_retries_release_delivers(server: Server, sink: Sink) -> None:
    """A held message is marked HELD, is not tried by queue retry even when the destination
    works again, and goes out as soon as it is released."""
    msg_id, marker = deferred(server, sink, "hold.test", "jack@hold.test")
    assert "held" in server.admin("queue", "hold", msg_id).stdout
    out = server.admin("queue", "list", "--held").stdout
    assert re.search(rf"^{msg_id} .*  HELD$", out, re.M), out
    assert "HELD" in server.admin("queue", "show", msg_id).stdout.splitlines()[0]
    sink.modes["hold.test"] = "accept"
    assert server.admin("queue", "retry", msg_id).stdout.startswith("0 delivery(ies)")
    assert spooled(server, msg_id) and not sink.messages(marker)
    assert "released" in server.admin("queue", "release", msg_id).stdout
    sink.wait(marker)
    wait_for(lambda: not spooled(server, msg_id), 60, "the message to leave the queue")


def test_drop_deletes_without_notification(server: Server, sink: Sink) -> None:
    """drop removes a queued message from the spool and tells nobody."""
    msg_id, marker = deferred(server, sink, "drop.test", "kim@drop.test")
    assert "dropped" in server.admin("queue", "drop", msg_id).stdout
    wait_for(lambda: not spooled(server, msg_id), 60, "the dropped message to leave the spool")
    assert msg_id not in server.admin("queue", "list").stdout
    # A report would have been spooled before the message was removed: none is queued or here.
    assert not any(ID_RE.findall(server.admin("queue", "list", "--recipient", "alice").stdout))
    assert not dsns(server, marker)
    r = server.admin("queue", "show", msg_id, check=False)
    assert r.returncode == 1 and "no such message" in r.stderr


def test_bounce_returns_the_message_with_a_dsn(server: Server, sink: Sink) -> None:
    """bounce fails the undelivered recipients at once and sends the sender an RFC 3464 report
    saying the administrator returned it."""
    msg_id, marker = deferred(server, sink, "bounce.test", "lee@bounce.test")
    assert "1 recipient(s) failed" in server.admin("queue", "bounce", msg_id).stdout
    (report,) = wait_for(lambda: dsns(server, marker), 60, "the DSN in alice's INBOX")
    _, rcpt = delivery_status(report)
    assert "lee@bounce.test" in rcpt["Final-Recipient"]
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.0.0"
    assert "administrator" in report.as_string()
    wait_for(lambda: not spooled(server, msg_id), 60, "the bounced message to leave the spool")


def test_list_filters_queues_and_errors(server: Server, sink: Sink) -> None:
    """Filters by sender, recipient, queue and age select the right messages; queue queues
    shows the destination; a bad or unknown id is one line and exit status 1."""
    a, _ = deferred(server, sink, "other.test", "max@other.test")
    b, _ = deferred(server, sink, "other.test", "nia@other.test", sender="bob@example.test")
    ids = lambda *f: ID_RE.findall(server.admin("queue", "list", *f).stdout)  # noqa: E731
    assert set(ids("--queue", "SMTP(other.test)")) == {a, b}
    assert ids("--sender", "bob@") == [b]
    assert ids("--recipient", "max@other") == [a]
    assert ids("--older-than", "3600") == []
    assert set(ids("--newer-than", "3600", "--queue", "other.test")) == {a, b}
    queues = server.admin("queue", "queues").stdout
    assert re.search(r"^SMTP\(other\.test\)  \w+", queues, re.M), queues
    for bad in ("../../etc/passwd", "0000000000000001-1-1"):
        r = server.admin("queue", "show", bad, check=False)
        assert r.returncode == 1
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    for msg_id in (a, b):
        server.admin("queue", "drop", msg_id)
    wait_for(lambda: not (spooled(server, a) or spooled(server, b)), 60, "an empty queue")
