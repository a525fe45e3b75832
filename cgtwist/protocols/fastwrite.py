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
from typing import Any

from twisted.internet.process import ProcessWriter
from twisted.internet.tcp import Connection


def write_now(transport: Any, data: bytes) -> None:
    # Only Twisted's own TCP connection: a wrapper (TLSMemoryBIOProtocol for implicit TLS)
    # forwards attribute lookups to the connection below it, so ``transport.socket`` alone
    # would be the raw socket under the TLS layer.
    if (isinstance(transport, Connection) and not transport.TLS
            and getattr(transport, "connected", False)
            and not getattr(transport, "disconnecting", True)
            and not getattr(transport, "_writeDisconnected", True)
            and not getattr(transport, "_tempDataBuffer", True)
            and not getattr(transport, "dataBuffer", True)):
        try:
            sent = transport.socket.send(data)
        except OSError:  # EAGAIN, or an error the transport reports on its own terms
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def write_pipe_now(transport: Any, data: bytes) -> None:
    """``write_now`` for a ``twisted.internet.stdio.StandardIO`` over a pipe (an SMTP worker's
    link to the server): ``os.write`` to the pipe when nothing is buffered before it, the
    rest (or everything, on any doubt) through the transport. Saves the writer's four
    ``epoll_ctl`` calls and a reactor turn per line."""
    writer = getattr(transport, "_writer", None)
    if (isinstance(writer, ProcessWriter) and getattr(writer, "connected", False)
            and not getattr(writer, "disconnecting", True)
            and not getattr(writer, "_tempDataBuffer", True)
            and not getattr(writer, "dataBuffer", True)):
        try:
            sent = os.write(writer.fd, data)  # the pipe is non-blocking (ProcessWriter)
        except OSError:  # EAGAIN, or an error the transport reports on its own terms
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
