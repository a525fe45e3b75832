"""A TLS session the server ends is closed on the wire at once, also when the client never
answers the server's TLS close_notify.

Python's ``ssl`` module, like many real clients (and a phone that went to sleep), reads the
close_notify as end-of-file and keeps the socket open without answering. Twisted then waited
for the answer for ever: the connection held a descriptor and a per-IP slot after its goodbye,
a session WebUser had ended still held up the next SIGTERM for ``server.shutdown_grace``
seconds, and only the client's own close freed it. A user sees the TCP connection closed
(FIN) right after the goodbye, as over plain TCP.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import smtplib
import socket
import ssl
from typing import Callable, Iterator

import pytest

from tests.e2e.harness import Server, wait_for

pytestmark = pytest.mark.e2e

HOST = "localhost"  # the generated certificate's name


@contextlib.contextmanager
def raw_view(tls_sock: socket.socket) -> Iterator[Callable[[], bool]]:
    """``closed()``: the server has closed the TCP connection (FIN read from the kernel's
    socket under the TLS layer, which has not answered the close_notify)."""
    raw = socket.socket(fileno=os.dup(tls_sock.fileno()))
    raw.setblocking(False)

    def closed() -> bool:
        try:
            return raw.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True

    try:
        yield closed
    finally:
        raw.close()


def test_imap_logout_closes_the_connection(server: Server, tls_context: ssl.SSLContext) -> None:
    m = imaplib.IMAP4_SSL(
        "127.0.0.1", server.port("imap", tls="implicit"), ssl_context=tls_context, timeout=30
    )
    try:
        m.login("alice@example.test", "alice-secret")
        # LOGOUT by hand: imaplib's logout() would close its own socket at once.
        tag = b"Z1"
        m.send(tag + b" LOGOUT\r\n")
        lines: list[bytes] = []
        while not lines or not lines[-1].startswith(tag):
            lines.append(m.readline())
        assert lines[0].startswith(b"* BYE") and b" OK " in lines[-1], lines
        assert m.readline() == b""  # the close_notify, read as end-of-file and not answered
        with raw_view(m.sock) as closed:
            wait_for(closed, 30, "the server to close the TCP connection after LOGOUT")
    finally:
        m.shutdown()


def test_pop3_quit_closes_the_connection(server: Server, tls_context: ssl.SSLContext) -> None:
    p = poplib.POP3_SSL(HOST, server.port("pop3", tls="implicit"), context=tls_context, timeout=30)
    try:
        p.user("alice@example.test")
        p.pass_("alice-secret")
        p.sock.sendall(b"QUIT\r\n")  # by hand: quit() would close the socket
        assert p.file.readline().startswith(b"+OK")
        assert p.file.readline() == b""
        with raw_view(p.sock) as closed:
            wait_for(closed, 30, "the server to close the TCP connection after QUIT")
    finally:
        p.close()


def test_smtps_quit_closes_the_connection(server: Server, tls_context: ssl.SSLContext) -> None:
    s = smtplib.SMTP_SSL(
        HOST, server.port("smtp", tls="implicit", submission=True), context=tls_context, timeout=30
    )
    try:
        assert s.ehlo()[0] == 250
        assert s.docmd("QUIT")[0] == 221
        assert s.sock is not None
        assert s.sock.recv(1) == b""
        with raw_view(s.sock) as closed:
            wait_for(closed, 30, "the server to close the TCP connection after QUIT")
    finally:
        s.close()
