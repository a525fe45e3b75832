"""SMTP worker processes (``smtp.workers``) with a real twistd: receiving in child processes.

What an administrator notices: mail sent to every SMTP listener (plain, STARTTLS, submission
with AUTH, implicit TLS) arrives; a worker killed with -9 right after its 250 loses nothing
and is replaced; a server killed with -9 takes its workers with it and its successor can bind
the ports and delivers what they had accepted; settings changes reach the workers; SIGTERM
stops everything.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import ssl
import threading
import time
import uuid

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server, wait_for

pytestmark = pytest.mark.e2e

SMTP_LISTENERS = ALL_LISTENERS[:3]


@pytest.fixture
def server(tmp_path) -> Server:  # type: ignore[no-untyped-def]
    srv = Server(str(tmp_path / "base"))
    srv.set_listeners(SMTP_LISTENERS)
    srv.admin("settings", "set", "smtp.workers", "2")
    srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
    yield srv
    srv.close()


def message(tag: str) -> bytes:
    return (
        f"From: a@elsewhere.test\r\nTo: alice@example.test\r\nSubject: {tag}\r\n\r\nbody {tag}\r\n"
    ).encode()


def count(server: Server, tag: str) -> int:
    return sum(1 for m in server.messages("alice") if f"Subject: {tag}".encode() in m)


def subjects(server: Server) -> set[str]:
    """The Subject of every message in alice's INBOX."""
    found = (re.search(rb"^Subject: (\S+)", m, re.M) for m in server.messages("alice"))
    return {f.group(1).decode() for f in found if f}


def wait_for_workers(server: Server, n: int) -> list[int]:
    """Wait until exactly ``n`` workers run and accept; their pids. A worker that is only
    started may still open the store: on a busy machine that outlasts a client's 30 s
    timeout, so the clients of a test wait for the workers' 'ready' instead."""

    def ready() -> bool:
        live = set(server.worker_pids())
        return len(live) == n and set(server.worker_pids(ready=True)) >= live

    wait_for(ready, 120, f"{n} worker(s) ready")
    return server.worker_pids()


def start_with_workers(server: Server, n: int = 2) -> list[int]:
    """Start the server (smtp.workers as the fixture set it) and wait for its workers."""
    server.start()
    return wait_for_workers(server, n)


def queue_files(server: Server) -> list[str]:
    out = []
    for sub in ("Queue", os.path.join("Queue", "incoming")):
        d = os.path.join(server.base, sub)
        out += (
            [n for n in os.listdir(d) if n.endswith((".msg", ".tmp"))] if os.path.isdir(d) else []
        )
    return out


def send(port: int, tag: str, **kw: object) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tag))


def test_every_smtp_listener_delivers_through_workers(server: Server) -> None:
    start_with_workers(server)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    tags = [uuid.uuid4().hex for _ in range(4)]
    send(server.port("smtp"), tags[0])
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.starttls(context=ctx)
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tags[1]))
    with smtplib.SMTP("127.0.0.1", server.port("smtp", submission=True), timeout=30) as s:
        s.starttls(context=ctx)
        s.login("alice@example.test", "alice-secret")
        s.sendmail("alice@example.test", ["alice@example.test"], message(tags[2]))
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.port("smtp", tls="implicit", submission=True), timeout=30, context=ctx
    ) as s:
        s.login("alice@example.test", "alice-secret")
        s.sendmail("alice@example.test", ["alice@example.test"], message(tags[3]))
    for tag in tags:
        wait_for(lambda t=tag: count(server, t) == 1, 30, f"message {tag}")
    log = server.log_text()
    assert "[smtp-worker-" in log and "accepted msg_id=" in log  # worker events in the server's log
    wait_for(lambda: not queue_files(server), 30, "an empty spool")


def test_worker_killed_after_250_loses_nothing_and_is_replaced(server: Server) -> None:
    before = set(start_with_workers(server))
    tags = []
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        tag = uuid.uuid4().hex
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tag))  # 250
        tags.append(tag)
        for pid in before:
            os.kill(pid, signal.SIGKILL)
    for tag in tags:
        wait_for(lambda t=tag: count(server, t) == 1, 30, "the accepted message")
    wait_for(lambda: not set(server.worker_pids()) & before, 60, "the killed workers' successors")
    wait_for_workers(server, 2)
    tag = uuid.uuid4().hex
    send(server.port("smtp"), tag)
    wait_for(lambda: count(server, tag) == 1, 30, "mail through the new workers")
    assert "smtp worker 1 (pid" in server.log_text() and "signal 9" in server.log_text()


def test_worker_crash_between_spool_and_notice_is_swept(server: Server) -> None:
    """A worker that dies after its file is durable (its 250 never sent): the server finds
    the message in Queue/incoming/ when the worker ends and delivers it."""
    server.admin("settings", "set", "smtp.workers", "1")
    server.start(extra_env={"CGTWIST_CRASHPOINT": "spool-after-rename"})
    wait_for_workers(server, 1)
    tag = uuid.uuid4().hex
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        send(server.port("smtp"), tag)
    wait_for(lambda: count(server, tag) == 1, 30, "the swept message")


def test_server_killed_takes_workers_and_successor_delivers(server: Server) -> None:
    pids = start_with_workers(server)
    tag = uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tag))
        server.kill()
    wait_for(
        lambda: not [p for p in pids if p in server.worker_pids()],
        60,
        "the workers to exit with the server",
    )
    server.start()  # binds the same ports again: the old workers released them
    wait_for(lambda: count(server, tag) == 1, 30, "the accepted message after restart")
    tag2 = uuid.uuid4().hex
    send(server.port("smtp"), tag2)
    wait_for(lambda: count(server, tag2) == 1, 30, "mail after restart")


def test_settings_reach_workers_and_workers_can_be_turned_off(server: Server) -> None:
    start_with_workers(server)
    server.admin("settings", "set", "smtp.max_recipients", "1")
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo()
        assert s.mail("a@elsewhere.test")[0] == 250
        assert s.rcpt("alice@example.test")[0] == 250
        assert s.rcpt("postmaster@example.test")[0] == 452  # the worker applies the new limit
    old = server.worker_pids()
    server.admin("settings", "set", "smtp.workers", "0")
    wait_for(lambda: not [p for p in old if p in server.worker_pids()], 90, "the workers to stop")
    tag = uuid.uuid4().hex
    send(server.port("smtp"), tag)  # the server accepts on the sockets itself again
    wait_for(lambda: count(server, tag) == 1, 30, "mail without workers")
    server.admin("settings", "set", "smtp.workers", "1")
    wait_for_workers(server, 1)
    tag = uuid.uuid4().hex
    send(server.port("smtp"), tag)
    wait_for(lambda: count(server, tag) == 1, 30, "mail through the new worker")


def test_sigterm_stops_server_and_workers(server: Server) -> None:
    pids = start_with_workers(server)
    tag = uuid.uuid4().hex
    send(server.port("smtp"), tag)
    assert server.stop() in (0, -signal.SIGTERM)  # twistd re-raises the signal it stopped on
    assert not [p for p in pids if p in server.worker_pids()]
    log = server.log_text()
    assert "cgtwist stopped" in log and "Traceback" not in log
    assert re.search(r"smtp worker 1 \(pid \d+\) exited", log)


class _Load:
    """SMTP clients sending to alice until told to stop; the tags that got their 250."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.acked: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
                    while not self.stopping.is_set():
                        tag = uuid.uuid4().hex
                        s.sendmail("a@elsewhere.test", ["alice@example.test"], message(tag))
                        self.acked.append(tag)
            except (OSError, smtplib.SMTPException):
                if self.stopping.wait(0.05):  # refused while stopping: the load is over
                    return

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)


def test_sigterm_under_load_stops_within_the_grace(server: Server) -> None:
    """SIGTERM while clients keep sending through two workers, some of them stuck in the
    middle of DATA, and repeated as an impatient init script does: the server exits once the
    grace (``server.shutdown_grace``) is over, cutting what is still open, with its workers
    ended, no traceback, and every message that got its 250 is delivered after a restart.
    (It once logged 'Received SIGTERM' and nothing more, its workers left as zombies, until
    SIGKILL: a stop signal's log line deadlocked on the log file's lock.)"""
    grace = 2
    server.admin("settings", "set", "server.shutdown_grace", str(grace))
    pids = start_with_workers(server)
    port = server.port("smtp")
    stuck = []
    for _ in range(4):  # transactions the clients never finish: only the grace ends them
        s = smtplib.SMTP("127.0.0.1", port, timeout=30)
        s.ehlo()
        s.mail("a@elsewhere.test")
        s.rcpt("alice@example.test")
        s.docmd("DATA")
        s.send(b"Subject: never finished\r\n\r\npart of a body\r\n")
        stuck.append(s)
    load = _Load(port, clients=8)
    try:
        wait_for(lambda: len(load.acked) >= 40, 120, "the load to get going")
        assert server.proc is not None
        proc = server.proc
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.005)  # a burst of signals, not a wait for anything
        # The grace, the margin a worker gets to close after it, and room for a busy machine.
        rc = proc.wait(grace + 5 + 30)
    finally:
        load.stop()
        for s in stuck:
            s.close()
    server.proc = None
    assert rc in (0, -signal.SIGTERM)
    log = server.log_text()
    assert "cgtwist stopped" in log and "Traceback" not in log
    assert not [p for p in pids if p in server.worker_pids()]
    server.start()
    acked = set(load.acked)
    wait_for(
        lambda: acked <= subjects(server),
        120,
        f"all {len(acked)} acknowledged messages after the restart",
    )


REJECTING = """version 1

rule "No offers"
  priority 5
  if Subject is "offer-*"
  do Reject with "5.7.0 offers are refused here"

rule "Drop noise"
  priority 5
  if Subject is "noise-*"
  do Discard
"""


def test_server_rules_refuse_before_250_in_workers(server: Server) -> None:
    """With receiving in worker processes a Server Rule's Reject with is still the reply to
    the DATA (each worker evaluates the rules from the shared store), Discard still a 250
    with nothing stored, and a rule set stored while they run reaches them."""
    start_with_workers(server)
    path = os.path.join(server.base, "rules.txt")
    with open(path, "w") as f:
        f.write(REJECTING)
    server.admin("rules", "set", "--server", path)
    offer, noise, plain = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("offer", "noise", "plain"))

    def refused() -> bool:
        # Each new connection may land in either worker: every one must refuse.
        try:
            send(server.port("smtp"), offer)
        except smtplib.SMTPDataError as e:
            assert (e.smtp_code, e.smtp_error) == (550, b"5.7.0 offers are refused here")
            return True
        return False

    # Every worker has the rule set once several connections in a row are refused.
    wait_for(lambda: all(refused() for _ in range(4)), 60, "the rule set in every worker")
    for _ in range(2):
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
            s.ehlo()
            s.mail("a@elsewhere.test")
            s.rcpt("alice@example.test")
            code, _text = s.data(message(noise))
        assert code == 250
    send(server.port("smtp"), plain)
    wait_for(lambda: count(server, plain) == 1, 30, "the plain message")
    wait_for(lambda: not queue_files(server), 30, "an empty spool")
    assert count(server, noise) == 0
    assert "[smtp-worker-" in server.log_text()
    assert "server rule 'No offers' Reject with before queueing" in server.log_text()
