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

``close_now`` is the same for the end of a session: Twisted's ``loseConnection`` registers
the socket for writability to flush a buffer that is empty, and closes it on the next turn
(``epoll_ctl`` twice, an empty ``send`` and a reactor turn per connection); with nothing
buffered it closes at once, as ``loseConnection`` itself does when writing has already
stopped, and otherwise is ``loseConnection``.

Direct writes are off until the process's composition root turns them on (``enable``,
``enable_pipe``, from ``[server] runtime``): a process-wide switch, like the reactor it is
about, set once at start. Turning them on first checks that Twisted's descriptors still
have the buffers ``_idle`` reads (``missing``): if a Twisted upgrade renamed them, a direct
write could overtake queued output, so writes stay the transport's own.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Protocol, cast

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IProcessTransport, ITransport
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.process import ProcessWriter
from twisted.internet.tcp import Connection
from twisted.python.failure import Failure

from cgtwist.typedtwisted import failure_of

# Whether write_now / write_pipe_now may write directly: off (Twisted's own write) until the
# composition root enables them; one process-wide switch each, set once at start.
_direct = {"socket": False, "pipe": False}

# The attributes of a Twisted descriptor that _idle reads, with the type each must have.
_BUFFERS = {
    "connected": int,
    "disconnecting": int,
    "_writeDisconnected": bool,
    "_tempDataBuffer": list,
    "dataBuffer": bytes,
}


def missing(probe: Any = None) -> Optional[str]:
    """What a direct write relies on that this Twisted lacks (a sentence for the log), or
    None. ``probe`` is a descriptor to look at (default: a new, unconnected one)."""
    if probe is None:
        probe = FileDescriptor(reactor=cast(Any, object()))  # stored, never used
    for name, kind in _BUFFERS.items():
        if not isinstance(getattr(probe, name, None), kind):
            return f"Twisted's FileDescriptor.{name} is gone or no longer a {kind.__name__}"
    if "_tempDataBuffer" not in FileDescriptor.write.__code__.co_names:
        return "FileDescriptor.write no longer queues into _tempDataBuffer"
    if not isinstance(getattr(Connection, "TLS", None), bool):
        return "tcp.Connection.TLS is gone"
    # close_now does what loseConnection does once writing stopped: stop reading and
    # writing, then connectionLost (which closes the socket) at once.
    if not {"stopReading", "stopWriting", "connectionLost"} <= set(
        FileDescriptor.loseConnection.__code__.co_names
    ):
        return "FileDescriptor.loseConnection no longer closes at once through connectionLost"
    return None


def enable(on: bool, probe: Any = None) -> Optional[str]:
    """Turn direct socket writes on (if ``missing`` finds nothing) or off. Returns why they
    stay off although asked for, else None."""
    why = missing(probe) if on else None
    _direct["socket"] = on and why is None
    return why


def pipe_missing(transport: Any) -> Optional[str]:
    """What ``write_pipe_now`` relies on that ``transport`` (a StandardIO) lacks, or None."""
    writer = getattr(transport, "_writer", None)
    if not isinstance(writer, ProcessWriter):
        return "StandardIO._writer is gone or no longer a ProcessWriter"
    if not isinstance(getattr(writer, "fd", None), int):
        return "ProcessWriter.fd is gone"
    return missing(writer)


def enable_pipe(on: bool, transport: Any = None) -> Optional[str]:
    """Turn direct pipe writes to ``transport`` (the worker's StandardIO) on or off, as
    ``enable``."""
    why = pipe_missing(transport) if on else None
    _direct["pipe"] = on and why is None
    return why


def write_now(transport: Any, data: bytes) -> None:
    # Only Twisted's own TCP connection: a wrapper (TLSMemoryBIOProtocol for implicit TLS)
    # forwards attribute lookups to the connection below it, so ``transport.socket`` alone
    # would be the raw socket under the TLS layer.
    if (
        _direct["socket"]
        and isinstance(transport, Connection)
        and not transport.TLS
        and _idle(transport)
    ):
        data = _send_some(transport.socket.send, data)
        if not data:
            return
    transport.write(data)


class _Closing(Protocol):
    """What ``close_now`` calls on a connection (Twisted leaves them unannotated)."""

    def stopReading(self) -> None: ...
    def stopWriting(self) -> None: ...
    def connectionLost(self, reason: Failure) -> None: ...


def close_now(transport: ITransport) -> None:
    """``transport.loseConnection()``, at once when nothing is buffered (the reply before it
    went out whole through ``write_now``): the socket is shut down and closed and the
    protocol's ``connectionLost`` (``ConnectionDone``) runs before this returns, instead of
    on a later turn after a writability wake-up with nothing to write. A caller must expect
    ``connectionLost`` inside this call, as after ``abortConnection``. Anything else (TLS,
    output still queued, a registered producer, which Twisted waits for, direct writes off,
    a test transport) closes as Twisted does."""
    if (
        _direct["socket"]
        and isinstance(transport, Connection)
        and not transport.TLS
        and transport.producer is None
        and _idle(transport)
    ):
        conn = cast(_Closing, transport)
        conn.stopReading()
        conn.stopWriting()
        conn.connectionLost(failure_of(CONNECTION_DONE))
        return
    transport.loseConnection()


def write_pipe_now(transport: Any, data: bytes) -> None:
    """``write_now`` for a ``twisted.internet.stdio.StandardIO`` over a pipe (an SMTP worker's
    link to the server): ``os.write`` to the pipe when nothing is buffered before it, the
    rest (or everything, on any doubt) through the transport. Saves the writer's four
    ``epoll_ctl`` calls and a reactor turn per line."""
    writer = getattr(transport, "_writer", None) if _direct["pipe"] else None
    if isinstance(writer, ProcessWriter) and _idle(writer):
        fd = writer.fd  # the pipe is non-blocking (ProcessWriter)
        data = _send_some(lambda d: os.write(fd, d), data)
        if not data:
            return
    transport.write(data)


def write_child_now(transport: IProcessTransport, data: bytes) -> None:
    """``write_now`` for a child process's standard input (the server's link to an outbound
    delivery worker: ``transport`` is the ``IProcessTransport``): ``os.write`` to the pipe
    when nothing is buffered before it, else (or on any doubt) the transport's own write.
    Under direct socket writes only (``enable``: its check covers the pipe's writer, a
    FileDescriptor too). Twisted's buffered write would send the attempt only at the next
    turn of the server's reactor, after all the rest of this one (a turn of the queue
    manager at full load is many attempts and answers long)."""
    pipes = getattr(transport, "pipes", None) if _direct["socket"] else None
    writer = pipes.get(0) if isinstance(pipes, dict) else None
    if isinstance(writer, ProcessWriter) and isinstance(writer.fd, int) and _idle(writer):
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
