"""One SMTP session at a time, timing each command's round trip (median over N messages).

    python bench/smtp_latency.py HOST PORT N [LABEL]

Prints one line: label, then banner/EHLO/MAIL/RCPT/DATA/end-of-data/QUIT/total in ms. The
end-of-data figure is the server's durable-write latency (its 250 waits for the fsyncs);
the others are its per-command overhead. smtp-vs-postfix.sh measures throughput; this says
where one message's time goes, for a server and its peer side by side.
"""

from __future__ import annotations

import socket
import statistics
import sys
import time

BODY = b"Subject: latency\r\n\r\n" + (b"x" * 76 + b"\r\n") * 65  # ~5 KB, as smtp-load.sh


def _reply(s: socket.socket) -> bytes:
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
        lines = buf.split(b"\r\n")
        if len(lines) >= 2 and lines[-2][3:4] == b" ":  # the last line of a (multi-line) reply
            return buf


def main() -> None:
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    label = sys.argv[4] if len(sys.argv) > 4 else f"{host}:{port}"
    steps = (
        ("ehlo", b"EHLO loadgen.example.test\r\n"),
        ("mail", b"MAIL FROM:<loadgen@example.test>\r\n"),
        ("rcpt", b"RCPT TO:<smtpbench@example.test>\r\n"),
        ("data", b"DATA\r\n"),
        ("eod", BODY + b".\r\n"),
        ("quit", b"QUIT\r\n"),
    )
    times: dict[str, list[float]] = {k: [] for k in ("banner", *(s for s, _ in steps), "total")}
    for _ in range(n):
        t0 = time.perf_counter()
        with socket.create_connection((host, port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _reply(s)
            times["banner"].append(time.perf_counter() - t0)
            for name, command in steps:
                t = time.perf_counter()
                s.sendall(command)
                reply = _reply(s)
                times[name].append(time.perf_counter() - t)
                if name == "eod" and not reply.startswith(b"250"):
                    raise SystemExit(f"{label}: message refused: {reply!r}")
        times["total"].append(time.perf_counter() - t0)
    print(
        f"{label:>8} "
        + " ".join(f"{k}={statistics.median(v) * 1000:.2f}ms" for k, v in times.items())
    )


if __name__ == "__main__":
    main()
