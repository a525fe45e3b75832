"""The control channel between ``cgtwist-admin`` and the running server.

A UNIX socket (``<base>/cgtwist.ctl``, mode 0600) speaking one JSON object per line each way:
``{"cmd": "reload"}`` -> ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The CLI
changes the store directly and then tells the server, which re-reads what changed, so a change
takes effect at once. Owns the wire format only; handlers are registered by the service. A
handler refuses a request (an unknown id) by raising a ``StoreError``: that is answered and
logged as one line; anything else is a failure, logged with its traceback.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Awaitable, Callable, Mapping, Union

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from cgtwist.logs import Logger

Handler = Callable[[Mapping[str, Any]], Union[Any, "defer.Deferred[Any]", Awaitable[Any]]]

_MAX_LINE = 1 << 20


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = _MAX_LINE
    log = Logger()

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self.handlers = handlers

    def lineReceived(self, line: bytes) -> None:
        try:
            req = json.loads(line)
            cmd = req["cmd"]
            handler = self.handlers[cmd]
        except (ValueError, KeyError, TypeError):
            self._send({"ok": False, "error": "unknown or malformed command"})
            return

        d = defer.ensureDeferred(_call(handler, req))

        def ok(result: Any) -> None:
            out = {"ok": True}
            if isinstance(result, dict):
                out.update(result)
            self._send(out)

        def fail(f: Any) -> None:
            self._send({"ok": False, "error": self._refusal(cmd, f)})

        d.addCallbacks(ok, fail)

    def _refusal(self, cmd: str, f: Any) -> str:
        """The error text for the client. KeyError ("no such message") and ValueError ("no
        such list") are how handlers refuse bad input: one log line, no traceback, and the
        KeyError's text without the quotes ``str(KeyError)`` adds."""
        e = f.value
        if isinstance(e, (KeyError, ValueError)):
            text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            self.log.warn("control command {cmd} refused: {why}", cmd=cmd, why=text)
            return text or type(e).__name__
        self.log.failure("control command {cmd} failed", f, cmd=cmd)
        return str(e) or f.type.__name__

    def _send(self, obj: Mapping[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(json.dumps(obj).encode() + self.delimiter)


async def _call(handler: Handler, req: Mapping[str, Any]) -> Any:
    result = handler(req)
    if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
        return await result
    return result


class ControlFactory(Factory):
    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self.handlers = handlers

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        p = ControlProtocol(self.handlers)
        p.factory = self
        return p


class ServerNotRunning(Exception):
    """No server listens on the control socket."""


def call(socket_path: str, cmd: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
    """Blocking client for the CLI: send one command, return the decoded reply.

    Raises ServerNotRunning when nothing listens there (the CLI then says the change applies at
    the next start).
    """
    if not os.path.exists(socket_path):
        raise ServerNotRunning(socket_path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ServerNotRunning(socket_path) from e
        s.sendall(json.dumps(dict(args, cmd=cmd)).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    if not buf:
        raise ServerNotRunning(socket_path)
    result: dict[str, Any] = json.loads(buf)
    return result
