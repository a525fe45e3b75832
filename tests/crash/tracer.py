"""Run a process tree under strace and stop it after any chosen fsync: the fsync boundaries.

Owns the strace process and the control of its tracees. strace injects SIGSTOP on every
``fsync``/``fdatasync``/``syncfs`` (``-e inject=...:signal=SIGSTOP``). The signal is taken on
the way out of the system call, so the fsync has completed when its process stops (verified
with strace 6.1: the ``= 0`` line comes before ``stopped by SIGSTOP``). strace counts
injections per thread, not globally, so the count is kept here: every fsync that completes
is numbered in the order strace reports it, and its process is continued (SIGCONT) at once
unless the count reached the cut the caller asked for. At a cut the tracer stops every other
process of the tree too and waits until every thread is stopped; the caller copies the disk
and resumes. ``--seccomp-bpf`` is not used: with it strace 6.1 did not inject the signal.

The numbered fsyncs (thread, process, file) are the record of the durable operations.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Optional

SYNC_CALLS = "fsync,fdatasync,syncfs"
_DONE = re.compile(r"^(\d+) +(?:<\.\.\. (\w+) resumed>(.*)|(\w+)\((.*))= (-?\d+)")
_UNFINISHED = re.compile(r"^(\d+) +(\w+)\((.*) <unfinished \.\.\.>")
_STOPPED = re.compile(r"^(\d+) +--- stopped by SIG")


@dataclass(frozen=True)
class Sync:
    """One completed fsync: its number since arming, who made it and on what."""

    n: int
    tid: int
    pid: int
    call: str
    target: str  # the file or directory (strace -y), e.g. "/mnt/base/Queue"
    result: int
    at: float  # time.monotonic()


def _tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return tid


def _descendants(root: int) -> list[int]:
    """Process ids under ``root`` (not ``root`` itself), from /proc."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _threads(pid: int) -> set[int]:
    try:
        return {int(t) for t in os.listdir(f"/proc/{pid}/task")}
    except (FileNotFoundError, ProcessLookupError):
        return set()


class FsyncTracer:
    """``FsyncTracer(argv, env, cwd, log)``: ``argv`` under strace. Unarmed, every fsync is
    continued and not counted; ``arm()`` starts the numbering at 1. ``armed`` numbers from
    the start, and then the tree stops after the first fsync (``resume``, then ``wait_cut``
    for the next), so that not even a program's start-up runs past a cut."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: str, log_path: str, armed: bool = False
    ) -> None:
        read_end, write_end = os.pipe()
        self._out = open(log_path, "ab")  # the traced program's own stdout/stderr
        self.proc = subprocess.Popen(
            [
                "strace",
                "-f",
                "-qq",
                "-y",
                "-e",
                f"trace={SYNC_CALLS}",
                "-e",
                "signal=SIGSTOP",
                "-e",
                f"inject={SYNC_CALLS}:signal=SIGSTOP",
                "-o",
                f"/dev/fd/{write_end}",
                *argv,
            ],
            env=env,
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            pass_fds=(write_end,),
        )
        os.close(write_end)
        self._lines = os.fdopen(read_end, "r", errors="replace")
        self._cond = threading.Condition()
        self.armed = armed
        self.count = 0
        self.syncs: list[Sync] = []
        self._cut_at: Optional[int] = 1 if armed else None  # stop the tree once count reaches this
        self._cutting = False
        self._stopped: set[int] = set()  # threads seen stopped since the last resume
        self._pending: dict[int, tuple[str, str]] = {}
        self._reader = threading.Thread(target=self._read, name="strace-reader", daemon=True)
        self._reader.start()

    # -- the strace output, one line at a time ----------------------------------------------
    def _read(self) -> None:
        for line in self._lines:
            self._line(line.rstrip("\n"))
        with self._cond:
            self._cond.notify_all()

    def _line(self, line: str) -> None:
        m = _UNFINISHED.match(line)
        if m:
            self._pending[int(m.group(1))] = (m.group(2), m.group(3))
            return
        m = _DONE.match(line)
        if m:
            tid = int(m.group(1))
            if m.group(2):
                call, args = self._pending.pop(tid, (m.group(2), ""))
            else:
                call, args = m.group(4), m.group(5)
            target = args[args.find("<") + 1 : args.rfind(">")] if "<" in args else args
            with self._cond:
                if self.armed:
                    self.count += 1
                    self.syncs.append(
                        Sync(
                            self.count,
                            tid,
                            _tgid(tid),
                            call,
                            target,
                            int(m.group(6)),
                            time.monotonic(),
                        )
                    )
                    if self._cut_at is not None and self.count >= self._cut_at:
                        self._cutting = True
                    self._cond.notify_all()
            return
        m = _STOPPED.match(line)
        if m:
            tid = int(m.group(1))
            with self._cond:
                if self._cutting:
                    self._stopped.add(tid)
                    self._cond.notify_all()
                    return
            try:
                os.kill(_tgid(tid), signal.SIGCONT)
            except ProcessLookupError:
                pass

    # -- control ----------------------------------------------------------------------------
    def arm(self) -> None:
        with self._cond:
            self.armed = True
            self.count = 0

    def processes(self) -> list[int]:
        return _descendants(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_cut(self, n: int, timeout: float) -> bool:
        """Ask to stop the tree once fsync number ``n`` completed; True when it did (the
        tree is then stopped), False after ``timeout`` seconds without it (the request is
        withdrawn; the tree runs on). A tree stopped at an earlier cut is resumed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            stale = self._cutting and self.count < n
            self._cut_at = n
        if stale:
            self._continue_all()
        with self._cond:
            if self.count >= n:
                self._cutting = True
            while not self._cutting:
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive():
                    self._cut_at = None
                    return False
                self._cond.wait(min(left, 0.5))
        self._stop_all()
        return True

    def _stop_all(self, timeout: float = 30.0) -> None:
        """SIGSTOP every process and wait until each of their threads reported its stop."""
        pids = self.processes()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                want = set().union(*(_threads(p) for p in pids)) if pids else set()
                if want <= self._stopped or time.monotonic() > deadline or not self.alive():
                    return
                self._cond.wait(0.2)

    def resume(self) -> None:
        """Continue the tree after a cut."""
        with self._cond:
            self._cut_at = None
        self._continue_all()

    def _continue_all(self) -> None:
        with self._cond:
            self._cutting = False
            self._stopped.clear()
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the traced processes (stopped or not), then wait for strace."""
        with self._cond:
            self._cutting = True  # no more SIGCONT from the reader
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self._reader.join(30)
        self._out.close()
