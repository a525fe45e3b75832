"""Writing a reply straight to the socket when nothing is queued before it.

Twisted's ``transport.write`` always buffers: it registers the socket for writability
(``epoll_ctl``), sends on the next turn of the reactor and unregisters it (``epoll_ctl``
again). For a request/reply protocol whose replies are small and whose socket buffer is
almost always empty, that is two system calls and a reactor turn per reply for nothing:
about a fifth of an SMTP worker's time under load. ``write_now`` tries ``send`` first on a
plain TCP connection with an empty buffer and hands whatever was not sent (or any error) to
the transport, which then behaves exactly as before (ordering, back-pressure, error
handling and close). Anything that is not a plain TCP connection (TLS, implicit or
after STARTTLS, a test transport) always goes through ``transport.write``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.process import ProcessWriter
from twisted.internet.tcp import Connection


def write_now(transport: Any, data: bytes) -> None:
    # Only Twisted's own TCP connection: a wrapper (TLSMemoryBIOProtocol for implicit TLS)
    # forwards attribute lookups to the connection below it, so ``transport.socket`` alone
    # would be the raw socket under the TLS layer.
    if isinstance(transport, Connection) and not transport.TLS and _idle(transport):
        data = _send_some(transport.socket.send, data)
        if not data:
            return
    transport.write(data)


def write_pipe_now(transport: Any, data: bytes) -> None:
    """``write_now`` for a ``twisted.internet.stdio.StandardIO`` over a pipe (an SMTP worker's
    link to the server): ``os.write`` to the pipe when nothing is buffered before it, the
    rest (or everything, on any doubt) through the transport. Saves the writer's four
    ``epoll_ctl`` calls and a reactor turn per line."""
    writer = getattr(transport, "_writer", None)
    if isinstance(writer, ProcessWriter) and _idle(writer):
        fd = writer.fd  # the pipe is non-blocking (ProcessWriter)
        data = _send_some(lambda d: os.write(fd, d), data)
        if not data:
            return
    transport.write(data)


def _idle(descriptor: Any) -> bool:
    """Connected, not closing, and nothing queued in Twisted's buffers: a direct write now
    cannot overtake earlier output."""
    return (
        getattr(descriptor, "connected", False)
        and not getattr(descriptor, "disconnecting", True)
        and not getattr(descriptor, "_writeDisconnected", True)
        and not getattr(descriptor, "_tempDataBuffer", True)
        and not getattr(descriptor, "dataBuffer", True)
    )


def _send_some(send: Callable[[bytes], int], data: bytes) -> bytes:
    """What ``send`` did not take (all of it on EAGAIN or an error, which the transport then
    reports on its own terms)."""
    try:
        sent = send(data)
    except OSError:
        sent = 0
    return data[sent:]
