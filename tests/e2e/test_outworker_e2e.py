"""Outbound SMTP sessions in worker processes (``smtp.delivery_workers``), end to end.

A real twistd with two outbound workers delivering to the loopback sink of
tests/e2e/test_outbound_e2e.py (its loopback DNS and submission client too). Covered: messages
delivered through the workers (the workers' log lines in the server's log), a remote 5xx -> a
DSN, a remote 4xx -> queued with its attempt history, a worker SIGKILLed in the middle of an
attempt (the message is retried and delivered once, no DSN, the worker restarted), fewer
workers and none at a reload, and a clean stop with no worker left behind.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Iterator, Optional

import pytest

from tests.e2e.harness import Server, wait_for
from tests.e2e.test_outbound_e2e import (
    ID_RE,
    Sink,
    delivery_status,
    dsns,
    make_message,
    make_server,
    queue_files,
    queued_ids,
    send,
)

pytestmark = pytest.mark.e2e


def outbound_server(base: str, sink: Sink, workers: int = 2) -> Server:
    srv = make_server(base, sink, accounts=("alice",))
    srv.admin("settings", "set", "smtp.delivery_workers", str(workers))
    return srv


def relayed(server: Server, marker: str) -> bool:
    """A worker's delivery line for ``marker`` reached the server's log, named by worker."""
    return any(
        "outbound-worker-" in line and marker in line for line in server.log_text().splitlines()
    )


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Server]:
    base = str(tmp_path_factory.mktemp("outworker") / "base")
    with outbound_server(base, sink).running() as srv:
        wait_for(lambda: len(srv.worker_pids(ready=True, kind="outbound")) == 2, 60, "2 workers")
        yield srv


def test_messages_are_delivered_by_the_workers(server: Server, sink: Sink) -> None:
    """Messages to several domains reach the sink; the per-recipient delivery lines come
    from the workers (relayed into the server's log) and the queue empties."""
    markers = []
    for domain in ("ok.test", "other.test", "fast.test"):
        msg, marker = make_message([f"u@{domain}"])
        send(server, [f"u@{domain}"], msg)
        markers.append(marker)
    for marker in markers:
        (got,) = sink.wait(marker)
        assert marker in got.data
    wait_for(
        lambda: relayed(server, "to=<u@ok.test>") and relayed(server, "to=<u@fast.test>"),
        60,
        "the workers' delivery lines in the server's log",
    )
    wait_for(lambda: not queued_ids(server, "--recipient", "u@"), 60, "an empty queue")


def test_5xx_from_a_worker_gives_the_sender_a_dsn(server: Server, sink: Sink) -> None:
    sink.modes["reject.test"] = "rcpt-5xx"
    msg, marker = make_message(["nobody@reject.test"])
    send(server, ["nobody@reject.test"], msg)
    (report,) = wait_for(lambda: dsns(server, marker) or None, 60, "a DSN")
    per_rcpt = delivery_status(report)[1:]
    assert per_rcpt[0]["Action"] == "failed"
    assert "550" in per_rcpt[0]["Diagnostic-Code"]
    assert "sink.test" in per_rcpt[0]["Remote-MTA"]
    wait_for(lambda: not queued_ids(server, "--recipient", "reject.test"), 60, "an empty queue")


def test_4xx_from_a_worker_stays_queued_with_its_history(server: Server, sink: Sink) -> None:
    sink.modes["defer.test"] = "data-4xx"
    msg, marker = make_message(["frank@defer.test"])
    send(server, ["frank@defer.test"], msg)

    def listed() -> Optional[str]:
        out = server.admin("queue", "list", "--recipient", "frank@defer.test").stdout
        return out if "attempts 1" in out else None

    out = wait_for(listed, 60, "the deferred message in queue list")
    (msg_id,) = ID_RE.findall(out)
    assert "451 4.3.0 sink: queue full" in out
    show = server.admin("queue", "show", msg_id).stdout
    assert re.search(r"sink\.test \[127\.0\.0\.1\]  (no TLS|TLSv1\.[23])  \"451 4\.3\.0", show), (
        show
    )
    sink.modes["defer.test"] = "accept"
    server.admin("queue", "retry", msg_id)
    sink.wait(marker)
    wait_for(lambda: msg_id not in queued_ids(server), 60, "the message to leave the queue")
    assert not dsns(server, marker)


def test_a_worker_killed_mid_attempt_is_retried_not_lost(tmp_path: str) -> None:
    """SIGKILL to the worker holding an attempt (the remote has not answered RCPT yet): the
    recipient is pending, not failed and not delivered; the worker is restarted; a retry
    delivers the message exactly once and no DSN is sent."""
    sink = Sink()
    srv = outbound_server(os.path.join(str(tmp_path), "base"), sink)
    try:
        srv.start()
        wait_for(lambda: len(srv.worker_pids(ready=True, kind="outbound")) == 2, 60, "2 workers")
        before = set(srv.worker_pids(kind="outbound"))
        sink.modes["slow.test"] = "stall"
        msg, marker = make_message(["ivy@slow.test"])
        send(srv, ["ivy@slow.test"], msg)
        wait_for(sink.stalled.is_set, 60, "the attempt to be mid-delivery")
        (msg_id,) = queued_ids(srv)
        for pid in before:  # the one holding it among them; the other is restarted too
            os.kill(pid, signal.SIGKILL)

        def pending() -> Optional[str]:
            out = srv.admin("queue", "list", "--recipient", "ivy@slow.test").stdout
            return out if "worker ended during the attempt" in out else None

        out = wait_for(pending, 60, "the attempt to come back pending")
        assert "ivy@slow.test  pending  SMTP(slow.test)" in out
        wait_for(
            lambda: len(set(srv.worker_pids(ready=True, kind="outbound")) - before) == 2,
            60,
            "the workers restarted",
        )
        assert "outbound worker" in srv.log_text() and "ended with 1 attempt(s) in flight" in (
            srv.log_text()
        )

        sink.modes["slow.test"] = "accept"
        sink.unstalled.set()
        srv.admin("queue", "retry", msg_id)
        sink.wait(marker)
        wait_for(
            lambda: msg_id + ".msg" not in queue_files(srv), 60, "the message to leave the queue"
        )
        assert [r.recipients for r in sink.messages(marker)] == [["ivy@slow.test"]]
        assert not dsns(srv, marker)
    finally:
        srv.stop()
        srv.close()
        sink.close()


def test_reload_to_fewer_and_none_then_stop_leaves_no_worker(tmp_path: str) -> None:
    """``smtp.delivery_workers`` 2 -> 1 -> 0 applies at the reload (the server delivers
    itself at 0), and stopping the server leaves no worker process behind."""
    sink = Sink()
    srv = outbound_server(os.path.join(str(tmp_path), "base"), sink)
    try:
        srv.start()
        wait_for(lambda: len(srv.worker_pids(ready=True, kind="outbound")) == 2, 60, "2 workers")
        pids = srv.worker_pids(kind="outbound")
        srv.admin("settings", "set", "smtp.delivery_workers", "1")
        wait_for(lambda: len(srv.worker_pids(kind="outbound")) == 1, 60, "one worker left")
        msg, marker = make_message(["a@ok.test"])
        send(srv, ["a@ok.test"], msg)
        sink.wait(marker)
        srv.admin("settings", "set", "smtp.delivery_workers", "0")
        wait_for(lambda: not srv.worker_pids(kind="outbound"), 60, "no worker left")
        msg, marker = make_message(["b@ok.test"])
        send(srv, ["b@ok.test"], msg)
        sink.wait(marker)
        wait_for(lambda: not queued_ids(srv), 60, "an empty queue")
        srv.admin("settings", "set", "smtp.delivery_workers", "2")
        wait_for(lambda: len(srv.worker_pids(ready=True, kind="outbound")) == 2, 60, "2 again")
        pids += srv.worker_pids(kind="outbound")
        assert srv.stop() in (0, -signal.SIGTERM)  # twistd re-raises the signal it stopped on
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), pid
        log = srv.log_text()
        assert "Traceback" not in log
        assert re.search(r"outbound worker 2 \(pid \d+\) exited", log), log[-3000:]
    finally:
        srv.stop()
        srv.close()
        sink.close()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_stop_with_an_attempt_in_a_worker_keeps_the_message(tmp_path: str) -> None:
    """SIGTERM to the server while a worker's attempt waits for the remote side: the stop
    ends in bounded time (the worker aborts and answers pending), the message stays queued,
    and after the restart it is delivered once, without a DSN."""
    sink = Sink()
    srv = outbound_server(os.path.join(str(tmp_path), "base"), sink)
    try:
        srv.start()
        sink.modes["hold.test"] = "stall"
        msg, marker = make_message(["joe@hold.test"])
        send(srv, ["joe@hold.test"], msg)
        wait_for(sink.stalled.is_set, 60, "the attempt to be mid-delivery")
        (msg_id,) = queued_ids(srv)
        assert srv.stop() in (0, -signal.SIGTERM)
        assert msg_id + ".msg" in queue_files(srv)
        assert "Traceback" not in srv.log_text()

        sink.modes["hold.test"] = "accept"
        sink.unstalled.set()
        srv.start()  # the recovered queue is tried at start
        sink.wait(marker)
        wait_for(
            lambda: msg_id + ".msg" not in queue_files(srv), 60, "the message to leave the queue"
        )
        assert [r.recipients for r in sink.messages(marker)] == [["joe@hold.test"]]
        assert not dsns(srv, marker)
    finally:
        srv.stop()
        srv.close()
        sink.close()
