"""The fsync tracer stops a process after the fsync it was asked to cut at, with that fsync
completed, and numbers fsyncs across threads: the ground the power-loss harness stands on."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

import pytest

from tests.crash.tracer import FsyncTracer
from tests.e2e.harness import wait_for

pytestmark = pytest.mark.crash

PROGRAM = textwrap.dedent("""
    import os, sys, threading
    out = sys.argv[1]
    def sync(i):
        fd = os.open(os.path.join(out, f"f{i}"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.fsync(fd)
        os.close(fd)
        with open(os.path.join(out, "log"), "a") as f:
            f.write(f"synced {i}\\n")
    sync(0)
    t = threading.Thread(target=sync, args=(1,))
    t.start(); t.join()
    sync(2)
""")


def _log(path: str) -> list[str]:
    try:
        with open(os.path.join(path, "log")) as f:
            return f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("strace") is None, reason="needs root and strace"
)
def test_cut_stops_after_the_fsync_and_resume_goes_on(tmp_path: str) -> None:
    """Armed from the start, the program stops after fsync 1; cut at fsync 2 (made in another
    thread): the program has done fsync 2 but not what follows it; each resume brings it to
    the next cut; three fsyncs are numbered in all."""
    work = str(tmp_path)
    prog = os.path.join(work, "prog.py")
    with open(prog, "w") as f:
        f.write(PROGRAM)
    tracer = FsyncTracer(
        [sys.executable, prog, work], dict(os.environ), work, os.path.join(work, "out"), armed=True
    )
    try:
        assert tracer.wait_cut(1, timeout=60)  # armed: it stops at the first fsync anyway
        assert _log(work) == [] and [s.n for s in tracer.syncs] == [1]
        assert tracer.wait_cut(2, timeout=60)  # resumes from the first cut
        assert [s.n for s in tracer.syncs] == [1, 2]
        assert tracer.syncs[1].target.endswith("/f1") and tracer.syncs[1].result == 0
        assert tracer.syncs[1].pid == tracer.syncs[0].pid != tracer.syncs[1].tid
        assert os.path.exists(os.path.join(work, "f1"))
        assert _log(work) == ["synced 0"]  # stopped after fsync 2, before its log line
        tracer.resume()
        assert tracer.wait_cut(3, timeout=60)
        assert _log(work) == ["synced 0", "synced 1"]
        tracer.resume()
        wait_for(lambda: not tracer.alive(), 60, "the program to finish")
        assert _log(work) == ["synced 0", "synced 1", "synced 2"]
        assert len(tracer.syncs) == 3
    finally:
        tracer.kill()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("strace") is None, reason="needs root and strace"
)
def test_unarmed_tracer_continues_every_fsync(tmp_path: str) -> None:
    """Unarmed (a server starting up), no fsync is counted and none leaves the program stopped."""
    work = str(tmp_path)
    prog = os.path.join(work, "prog.py")
    with open(prog, "w") as f:
        f.write(PROGRAM)
    tracer = FsyncTracer(
        [sys.executable, prog, work], dict(os.environ), work, os.path.join(work, "out")
    )
    try:
        wait_for(lambda: not tracer.alive(), 60, "the program to finish")
        assert len(_log(work)) == 3 and tracer.syncs == []
    finally:
        tracer.kill()
