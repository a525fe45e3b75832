"""POP3 at SIGTERM, end to end: a logged-in poplib client is told why, not reset, and keeps its mail.

Its own server (the shared one must keep running for the other modules): SMTP to deliver, and
POP3 over implicit TLS, as a mail client would use it.
"""

from __future__ import annotations

import poplib
import signal
import smtplib
from typing import Iterator

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server

pytestmark = pytest.mark.e2e

HOST = "localhost"  # the generated certificate names "localhost"


@pytest.fixture
def server(tmp_path):  # type: ignore[no-untyped-def]
    srv = Server(str(tmp_path / "base"))
    srv.set_listeners(
        [ALL_LISTENERS[0]]
        + [lst for lst in ALL_LISTENERS if lst["protocol"] == "pop3" and lst["tls"] == "implicit"]
    )
    with srv.running():
        srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
        yield srv


@pytest.fixture
def pop(server: Server) -> Iterator[poplib.POP3_SSL]:
    ctx = server.tls_context()
    p = poplib.POP3_SSL(HOST, server.port("pop3", tls="implicit"), context=ctx, timeout=30)
    try:
        yield p
    finally:
        p.close()


def test_sigterm_says_err_sys_temp_and_keeps_deleted_mail(
    server: Server, pop: poplib.POP3_SSL
) -> None:
    """SIGTERM with a POP3 session open: the client's next read is '-ERR [SYS/TEMP] ...' and then
    a clean end of stream, the message it marked with DELE is still there (no UPDATE without
    QUIT, RFC 1939 §6), and the server stops as soon as the client has gone."""
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.sendmail(
            "someone@elsewhere.test",
            ["alice@example.test"],
            b"From: someone@elsewhere.test\r\nSubject: keep me\r\n\r\nHello.\r\n",
        )
    server.wait_messages("alice", 1)
    pop.user("alice")
    pop.pass_("alice-secret")
    pop.dele(1)
    proc = server.proc
    assert proc is not None
    proc.terminate()  # SIGTERM, without waiting yet: the client reads first
    assert pop.file.readline() == b"-ERR [SYS/TEMP] server shutting down\r\n"
    assert pop.file.readline() == b""  # closed by the server (TLS close_notify), not reset
    pop.close()  # what a client does at end of stream; TLS waits for it before the TCP close
    rc = proc.wait(60)
    server.proc = None
    assert rc in (0, -signal.SIGTERM)  # twistd re-raises the signal it stopped on
    log = server.log_text()
    assert "cgtwist stopped" in log
    assert "still open after" not in log  # drained, not aborted at the grace deadline
    assert len(server.messages("alice")) == 1
