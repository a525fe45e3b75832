"""EIO from the disk during LOCAL delivery, injected into a real server with strace.

``strace -e inject=fsync:error=EIO -P <Maildir>/new`` makes every fsync of the account's new/
fail, as a failing disk would, without any crash (issue 21 item 4): the message must stay
queued with no copy left in the Maildir, and once the disk is well again the retry must store
it exactly once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path) -> Server:  # type: ignore[no-untyped-def]
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    srv = Server(str(tmp_path / "base"))
    srv.set_listeners(ALL_LISTENERS[:1])
    srv.admin("domain", "list")  # creates the store
    srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
    with srv.running():
        yield srv


def message(tag: str) -> bytes:
    return f"From: a@elsewhere.test\r\nTo: alice@example.test\r\nSubject: {tag}\r\n\r\nbody {tag}\r\n".encode()


def count(server: Server, tag: str) -> int:
    return sum(1 for m in server.messages("alice") if f"Subject: {tag}".encode() in m)


def send(server: Server, tag: str) -> None:
    server.send("a@elsewhere.test", ["alice@example.test"], message(tag))


def traced(pid: int) -> bool:
    """Every thread of ``pid`` has a tracer (strace attached to all of them)."""
    tasks = os.listdir(f"/proc/{pid}/task")
    for t in tasks:
        with open(f"/proc/{pid}/task/{t}/status") as f:
            if "TracerPid:\t0\n" in f.read():
                return False
    return bool(tasks)


def test_eio_on_fsync_of_new_delivers_once_after_retry(server: Server) -> None:
    """Every fsync of new/ fails with EIO: the accepted message stays queued and no copy is
    left in new/ or cur/ (the log says it was withdrawn); once the fsyncs work again, the
    retry delivers it once, not twice."""
    first = uuid.uuid4().hex
    send(server, first)  # makes the Maildir; its new/ is what the fault is aimed at
    wait_for(lambda: count(server, first) == 1, 30, "the first message")
    assert server.proc is not None
    new_dir = os.path.join(server.maildir("alice"), "new")
    strace = subprocess.Popen(
        [
            "strace",
            "-f",
            "-qq",
            "-o",
            os.devnull,
            "-p",
            str(server.proc.pid),
            "-P",
            new_dir,
            "-e",
            "trace=fsync",
            "-e",
            "inject=fsync:error=EIO",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: traced(server.proc.pid) or strace.poll() is not None,
            30,  # type: ignore[union-attr]
            "strace attached to every thread",
        )
        if strace.poll() is not None:
            pytest.skip(f"strace cannot attach here: {strace.stderr.read().decode()[:200]}")  # type: ignore[union-attr]
        tag = uuid.uuid4().hex
        send(server, tag)  # 250: it is in the spool
        wait_for(
            lambda: any(
                "deferred:" in line and "Input/output error" in line
                for line in server.log_text().splitlines()
            ),
            60,
            "the failed delivery",
        )
        assert count(server, tag) == 0  # no copy left behind to become a duplicate
        assert "withdrawn, will retry" in server.log_text()
    finally:
        strace.terminate()
        strace.wait(30)
    wait_for(lambda: not traced(server.proc.pid), 30, "strace detached")  # type: ignore[union-attr]
    server.admin("queue", "retry", "--all")
    wait_for(lambda: count(server, tag) == 1, 60, "delivery after the retry")
    queue = os.path.join(server.base, "Queue")
    wait_for(lambda: not [n for n in os.listdir(queue) if n.endswith(".msg")], 30, "an empty spool")
    assert count(server, tag) == 1
    assert count(server, first) == 1
