"""A loopback SMTP sink for end-to-end tests: the "remote MX" that cgtwist relays to and probes.

Owns nothing of the product. Runs in the test process on 127.0.0.1 port 0 with a thread per
connection (the test process has no running reactor of its own: trial tests share it), keeps
every received message and every RCPT it was asked, and answers RCPT per the recipient's
domain so one sink plays three MX hosts for Reverse Connect: ``rules`` maps a domain to
``"accept"`` (250), ``"reject"`` (550 5.1.1) or ``"stall"`` (never answers). Point the server's
``smtp.remote_port`` setting at ``sink.port`` and the test domains' MX at 127.0.0.1.
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence


@dataclass
class Received:
    """One message as the sink got it."""

    sender: str
    recipients: list[str]
    data: bytes
    helo: str = ""


@dataclass
class _State:
    messages: list[Received] = field(default_factory=list)
    rcpts: list[tuple[str, str]] = field(default_factory=list)  # (sender, recipient) asked
    rules: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)


def _path(arg: str) -> str:
    """The address inside ``<...>`` of a MAIL/RCPT argument, parameters dropped."""
    start, end = arg.find("<"), arg.find(">")
    return arg[start + 1 : end] if 0 <= start < end else arg.split()[0] if arg.split() else ""


class _Handler(socketserver.StreamRequestHandler):
    state: _State
    timeout = 60

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        st = self.server.state  # type: ignore[attr-defined]
        sender: Optional[str] = None
        rcpts: list[str] = []
        helo = ""
        self._send("220 sink.test ESMTP test sink")
        try:
            while True:
                raw = self.rfile.readline(10000)
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                if verb in ("EHLO", "HELO"):
                    helo = arg.strip()
                    self._send(
                        "250-sink.test\r\n250-8BITMIME\r\n250 PIPELINING"
                        if verb == "EHLO"
                        else "250 sink.test"
                    )
                elif verb == "MAIL":
                    sender, rcpts = _path(arg.partition(":")[2]), []
                    self._send("250 2.1.0 OK")
                elif verb == "RCPT":
                    rcpt = _path(arg.partition(":")[2])
                    with st.lock:
                        st.rcpts.append((sender or "", rcpt))
                    rule = st.rules.get(rcpt.rpartition("@")[2].lower(), "accept")
                    if rule == "stall":
                        st.release.wait(120)  # hold the connection silently
                        return
                    if rule == "reject":
                        self._send("550 5.1.1 No such user here")
                    else:
                        rcpts.append(rcpt)
                        self._send("250 2.1.5 OK")
                elif verb == "DATA":
                    if not rcpts:
                        self._send("503 5.5.1 No valid recipients")
                        continue
                    self._send("354 Go ahead")
                    data = bytearray()
                    while True:
                        chunk = self.rfile.readline(1 << 20)
                        if not chunk or chunk in (b".\r\n", b".\n"):
                            break
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    with st.lock:
                        st.messages.append(Received(sender or "", list(rcpts), bytes(data), helo))
                    self._send("250 2.0.0 Queued")
                    sender, rcpts = None, []
                elif verb == "RSET":
                    sender, rcpts = None, []
                    self._send("250 2.0.0 OK")
                elif verb == "NOOP":
                    self._send("250 2.0.0 OK")
                elif verb == "QUIT":
                    self._send("221 2.0.0 Bye")
                    return
                else:
                    self._send("502 5.5.1 Not implemented")
        except OSError:  # timeouts included
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Sink:
    """``Sink()`` listens at once; ``close()`` stops it. Thread-safe accessors below."""

    def __init__(self, also: Sequence[str] = ()) -> None:
        """``also``: more loopback addresses served on the same port (for address literals)."""
        self.state = _State()
        first = _Server(("127.0.0.1", 0), _Handler)
        self.port: int = first.server_address[1]
        self._servers = [first] + [_Server((ip, self.port), _Handler) for ip in also]
        for srv in self._servers:
            srv.state = self.state  # type: ignore[attr-defined]
            threading.Thread(target=srv.serve_forever, name="smtp-sink", daemon=True).start()

    def set_rule(self, domain: str, rule: str) -> None:
        with self.state.lock:
            self.state.rules[domain.lower()] = rule

    def messages(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.messages)

    def rcpts(self) -> list[tuple[str, str]]:
        with self.state.lock:
            return list(self.state.rcpts)

    def find(self, marker: bytes) -> list[Received]:
        return [m for m in self.messages() if marker in m.data]

    def close(self) -> None:
        self.state.release.set()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
