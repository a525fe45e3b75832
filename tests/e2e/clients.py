"""Driving real third-party mail clients (mutt, fetchmail, ...) from tests.

mutt needs a terminal: it runs under a pseudo-terminal with keystrokes given by ``push``, and
the test reads what it piped to a file. Nothing here sleeps for timing: the client runs until it
exits or a deadline passes.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import time
from typing import Sequence

import pytest


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI"):
            raise AssertionError(f"{program} must be installed in CI (see .ci/run)")
        pytest.skip(f"{program} is not installed")
    return path


def run_in_pty(
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    stuck: Sequence[bytes] = (),
) -> tuple[int, bytes]:
    """Run ``argv`` under a pseudo-terminal until it exits; return (status, screen bytes).

    ``stuck``: screen texts after which the program only waits for a person (an error that
    discarded the keys it was given): fail at once with the screen instead of at the deadline.
    """
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.environ.update(env or {})
        os.environ["TERM"] = "vt100"
        os.execvp(argv[0], list(argv))
    screen = b""
    deadline = time.monotonic() + timeout
    status = None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                screen += data
                for text in stuck:
                    if text in screen:
                        raise AssertionError(
                            f"{argv[0]} is stuck at {text!r}; screen: {screen[-2000:]!r}"
                        )
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(st)
                break
    finally:
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    if status is None:
        raise AssertionError(f"{argv[0]} did not finish in {timeout}s; screen: {screen[-2000:]!r}")
    return status, screen


def mutt_pipe_first_message(
    folder: str, out: str, extra: Sequence[str] = (), env: dict[str, str] | None = None
) -> bytes:
    """Open ``folder`` in mutt, pipe the first message to ``out``, quit; return what was piped."""
    mutt = require("mutt")
    argv = [
        mutt,
        "-n",
        "-F",
        "/dev/null",
        "-R",
        "-f",
        folder,
        "-e",
        "set wait_key=no",
        *extra,
        "-e",
        f'push "<pipe-message>cat > {out}<enter><quit>"',
    ]
    # An error such as "There are no messages." makes mutt discard the keys still pushed (the
    # <quit> too), and it would wait for a person until the deadline.
    status, screen = run_in_pty(
        argv,
        env=env,
        stuck=(b"There are no messages.", b"is not a mailbox", b"No visible messages"),
    )
    if not os.path.exists(out):
        raise AssertionError(f"mutt piped nothing (exit {status}); screen: {screen[-2000:]!r}")
    with open(out, "rb") as f:
        return f.read()
