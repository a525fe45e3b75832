"""CPU of the SMTP workers' log lines on their way into the server's log, per line.

    PYTHONPATH=TREE python bench/smtp_log_relay_cost.py [LINES] [--side worker|server|both]

At the default log level each accepted message costs one line in its SMTP worker (the
``accepted`` line: formatted, encoded for standard error) and the same line again in the
server, which reads it from the worker's pipe and writes it into its log (cgtwist.workers'
``relay_log``). This runs LINES of them through the real code of each side, with the
observers twistd and ``[server] runtime = tuned`` set up (LevelFilter, FileLogObserver
with ``fast_text_format``, TurnBufferedFile onto /dev/null), without a reactor turn
between lines, and prints the CPU time per line. For a count that does not move with the
machine's load, run it under ``perf stat -e instructions:u`` at two sizes and take the
difference (``bench/smtp-log-relay-instructions.sh``).
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import sys
import time
from typing import Any

from twisted.logger import FileLogObserver, LogLevel, LogPublisher

from cgtwist.logs import LevelFilter, Logger, TurnBufferedFile, fast_text_format, set_level
from cgtwist.smtpworker import child
from cgtwist.workers import supervisor

FIELDS = dict(
    msg_id="1796704254403486-15195-1",
    peer="127.0.0.1",
    sender="loadgen@example.test",
    recipients=["smtpbench@example.test"],
    size=5280,
    session="0a1b2c3d.1",
)
ACCEPTED = (
    "accepted msg_id={msg_id} peer={peer} sender={sender} recipients={recipients} size={size}"
)


class NoTurns:
    """A reactor whose turn never comes: TurnBufferedFile's lines are flushed by hand."""

    def callLater(self, delay: float, f: Any, *a: Any) -> None:
        pass

    def addSystemEventTrigger(self, *a: Any) -> None:
        pass


def publisher_to(out: Any, reactor: Any) -> LogPublisher:
    sink = TurnBufferedFile(out, reactor)
    observer = FileLogObserver(sink, fast_text_format)
    return LogPublisher(LevelFilter(observer, LogLevel.info))


def worker_side(n: int) -> bytes:
    """``n`` accepted lines through the worker's stderr observer; what it wrote."""
    buf = io.StringIO()
    reactor = NoTurns()
    observer = child.StderrObserver(buf, reactor, batched=True)
    log = Logger(namespace="cgtwist.protocols.smtp.server.SMTPServer", observer=observer)
    for _ in range(n):
        log.info(ACCEPTED, **FIELDS)
    observer.flush()
    return buf.getvalue().encode()


def server_side(lines: list[bytes]) -> None:
    with open(os.devnull, "w") as out:
        publisher = publisher_to(out, NoTurns())

        class Relay(supervisor.Supervisor):
            kind = "smtp worker"
            log = Logger(namespace="cgtwist.workers", observer=publisher)

        relay = Relay(NoTurns())  # type: ignore[arg-type]
        for line in lines:
            relay.relay_log(1, line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("lines", type=int, nargs="?", default=20000)
    parser.add_argument("--side", choices=("worker", "server", "both"), default="both")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run only --side's part inside functools.reduce (callgrind's toggle)",
    )
    args = parser.parse_args()
    set_level(LogLevel.info)
    if args.callgrind:
        data = worker_side(args.lines) if args.side == "server" else b""
        lines = [line for line in data.split(b"\n") if line]
        part = (lambda: server_side(lines)) if lines else (lambda: worker_side(args.lines))
        functools.reduce(lambda _a, _b: part(), [0], None)
        return
    t0 = time.process_time()
    data = worker_side(args.lines)
    t1 = time.process_time()
    lines = [line for line in data.split(b"\n") if line]
    assert len(lines) == args.lines, len(lines)
    if args.side == "worker":
        lines = []
    t2 = time.process_time()
    server_side(lines)
    t3 = time.process_time()
    print(
        f"worker {(t1 - t0) / args.lines * 1e6:.2f} us/line, "
        f"server {(t3 - t2) / max(len(lines), 1) * 1e6:.2f} us/line; {lines[:1]!r}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
