"""Record a scenario's crash states at every fsync boundary, then replay each one.

Owns the two phases of a power-loss run:

1. ``record``: a fresh ext4 image (with or without a journal) is loop-mounted; the server runs
   on it under the fsync tracer; the state before the operations under test is synced to the
   image; then, for n = 1, 2, ...: the whole process tree stops after fsync n, the client's
   acknowledgements so far are taken, the image's backing file is copied (what reached the
   disk), and the tree continues. A last state is taken when the scenario is done.
2. ``replay``: each copy gets ``e2fsck -fy`` and is mounted; a server (not traced) starts on
   it, recovers its spool and delivers; the scenario checks what the client was told against
   what the server now has. ``Queue/corrupt/`` must stay empty: a spool file is quarantined
   only when it is damaged, and a damaged spool file means its write was not durable.

Two consecutive states whose images are identical lead to the same server state; the later
one has at least the earlier one's acknowledgements, so it checks a superset of what the
earlier one would: only the later one is replayed, and the earlier one counts as covered.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

from tests.crash.loopfs import LoopImage, MountedCopy
from tests.crash.scenarios import Ack, Ledger, Scenario, Verdict, quarantined, spool_files
from tests.crash.server import TracedServer
from tests.crash.tracer import Sync
from tests.e2e.harness import Server, wait_for

# Crash states later than this after the operations began may include pages the kernel wrote
# back on its own (vm.dirty_expire_centisecs, 30 s by default); they are marked.
WRITEBACK_HORIZON = 25.0
# The queue manager's line for an attempt that left a recipient pending (it is retried
# minutes later), or for routing it deferred (cgtwist/queue/manager.py).
_DEFERRED = re.compile(r"queue: (\S+) (?:<[^>]*> \S+ pending|routing deferred)")


@dataclass
class CrashState:
    """The disk after fsync number ``n`` (0: at the end of the scenario)."""

    n: int
    label: str
    image: str
    acks: tuple[Ack, ...]
    elapsed: float
    digest: str = ""


@dataclass
class Outcome:
    state: CrashState
    verdict: Verdict
    fsck_status: int = 0
    fsck_repairs: tuple[str, ...] = ()
    covered: list[int] = field(default_factory=list)  # identical earlier states


@dataclass
class Run:
    scenario: str
    journal: bool
    syncs: list[Sync] = field(default_factory=list)
    states: list[CrashState] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    client_error: Optional[str] = None
    truncated: bool = False  # stopped at max_states before the scenario ended

    @property
    def violations(self) -> list[str]:
        return [f"{o.state.label}: {v}" for o in self.outcomes for v in o.verdict.violations]

    def report(self) -> str:
        fs = "ext4 with journal" if self.journal else "ext4 without journal"
        lines = [
            f"== {self.scenario} on {fs}: {len(self.syncs)} fsyncs recorded, "
            f"{len(self.states)} crash states, {len(self.outcomes)} replayed "
            f"({len(self.states) - len(self.outcomes)} identical to a later one), "
            f"{sum(1 for o in self.outcomes if o.verdict.violations)} with violations"
            + (" [stopped at the state limit]" if self.truncated else "")
        ]
        if self.client_error:
            lines.append(f"   client: {self.client_error}")
        for o in self.outcomes:
            s = o.state
            flag = "FAIL" if o.verdict.violations else "ok  "
            late = " (after the writeback horizon)" if s.elapsed > WRITEBACK_HORIZON else ""
            fsck = "" if o.fsck_status == 0 else f" fsck={o.fsck_status}"
            lines.append(
                f"   {flag} {s.label}{late}{fsck} acks={sum(1 for a in s.acks if not a.kind.startswith('begin'))}"
            )
            for v in o.verdict.violations:
                lines.append(f"        ! {v}")
            for note in o.verdict.notes:
                lines.append(f"        . {note}")
            for r in o.fsck_repairs[:6]:
                lines.append(f"        fsck: {r}")
        return "\n".join(lines)


def _label(sync: Optional[Sync], root: str) -> str:
    if sync is None:
        return "end of scenario"
    target = os.path.relpath(sync.target, root) if sync.target.startswith(root) else sync.target
    return f"after fsync #{sync.n} {sync.call}({target}) pid {sync.pid}"


def record(
    scenario: Scenario, workdir: str, journal: bool, max_states: int, deadline: float = 900.0
) -> Run:
    """Phase 1 (see the module doc); the copies are left in ``workdir`` for ``replay``."""
    run = Run(scenario.name, journal)
    ledger = Ledger()
    image = LoopImage(os.path.join(workdir, "disk"), journal)
    server: Optional[TracedServer] = None
    client: Optional[threading.Thread] = None
    try:
        server = TracedServer(os.path.join(image.mountpoint, "base"))
        scenario.prepare(server)
        scenario.before_start(server, ledger)
        image.syncfs()
        tracer = server.start_traced(armed=scenario.arm_at_start, workers=scenario.workers)
        scenario.setup(server, ledger)
        if not scenario.arm_at_start:
            image.syncfs()
            tracer.arm()
        began = time.monotonic()

        def drive() -> None:
            try:
                scenario.drive(server, ledger)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - reported with the run
                ledger.error = traceback.format_exc(limit=3)

        client = threading.Thread(target=drive, name=f"client-{scenario.name}", daemon=True)
        client.start()

        def take(sync: Optional[Sync]) -> None:
            path = os.path.join(workdir, f"state-{len(run.states):04d}.img")
            acks = ledger.snapshot()  # the tree is stopped: every ack here was made before
            image.copy(path)
            run.states.append(
                CrashState(
                    sync.n if sync else 0,
                    _label(sync, image.mountpoint),
                    path,
                    acks,
                    time.monotonic() - began,
                )
            )

        target = 1
        while len(run.states) < max_states:
            if time.monotonic() - began > deadline:
                raise AssertionError(f"{scenario.name}: not done after {deadline}s")
            if not tracer.wait_cut(target, timeout=1.0):
                # No fsync for a second: done if the client is and the server has settled,
                # and no fsync comes in one more second (a removal may still be under way).
                if client.is_alive() or not scenario.settled(server, ledger):
                    continue
                if not tracer.wait_cut(target, timeout=1.0):
                    break
            sync = tracer.syncs[-1]  # fsyncs that were in flight with ``target`` included
            take(sync)
            tracer.resume()
            target = sync.n + 1
        run.truncated = len(run.states) >= max_states
        if not run.truncated:
            tracer.wait_cut(1, timeout=0)  # everything done: stop the tree for the last copy
            take(None)
        run.syncs = list(tracer.syncs)
        run.client_error = ledger.error
    finally:
        if server is not None:
            server.close()
        if client is not None:
            client.join(60)
        image.close()
    return run


def replay(scenario: Scenario, state: CrashState, workdir: str) -> Outcome:
    """Phase 2 for one state: fsck, mount, restart, let it recover, check."""
    verdict = Verdict()
    try:
        copy = MountedCopy(state.image, os.path.join(workdir, f"replay-{state.n:04d}"))
    except Exception as e:  # noqa: BLE001 - e2fsck could not make it mountable: a finding
        verdict.violations.append(f"NOT MOUNTABLE after e2fsck -fy: {e}"[:600])
        os.unlink(state.image)
        return Outcome(state, verdict)
    outcome = Outcome(state, verdict, copy.fsck.status, copy.fsck.repairs)
    try:
        found = copy.lost_and_found()
        if found:
            verdict.notes.append(f"lost+found after fsck: {len(found)} entr(ies)")
        base = os.path.join(copy.point, "base")
        verdict.notes += _clear_run_files(base)
        server = Server(base)
        try:
            logged = len(server.log_text())
            crashed = {os.path.basename(f) for f in spool_files(base)}  # in the crash state
            server.start(ready_timeout=120)

            def done() -> bool:
                # Delivered everything, or every message still queued was deferred (it
                # waits for a retry minutes away: it stays queued).
                if scenario.settled(server, Ledger()):
                    return True
                queued = {os.path.basename(f)[:-4] for f in spool_files(base)}
                deferred = {m.group(1) for m in _DEFERRED.finditer(server.log_text()[logged:])}
                return bool(queued) and queued <= deferred

            try:
                wait_for(done, 60, "the restarted server to empty its spool")
            except AssertionError:
                pass
            left = {os.path.basename(f) for f in spool_files(base)}
            stuck = sorted(left & crashed)
            if stuck:
                verdict.violations.append(f"NOT DELIVERED after restart: still queued {stuck}")
            if left - crashed:
                verdict.notes.append(
                    f"queued by the restarted server, pending: {sorted(left - crashed)}"
                )
            bad = quarantined(base)
            if bad:
                verdict.violations.append(f"QUARANTINED in Queue/corrupt/: {bad}")
            checked = scenario.check(server, state.acks)
            verdict.violations += checked.violations
            verdict.notes += checked.notes
        except Exception as e:  # noqa: BLE001 - a server that cannot start is a finding
            verdict.violations.append(f"RESTART FAILED: {e}"[:600])
        finally:
            server.close()  # SIGKILL: nothing of this state is kept
    finally:
        copy.close()
    return outcome


def _clear_run_files(base: str) -> list[str]:
    """Remove what belongs to the dead process, not to the mail (its pid file and control
    socket), as a boot with /run on tmpfs would. An empty or torn pid file is reported: twistd
    refuses to start with one ("contains non-numeric value"); so is a pid file name that e2fsck
    left leading to another kind of file (on ext4 without a journal the freed inode of an old
    pid file can be reused by the control socket before the name's removal reached the disk:
    opening it gave ENXIO)."""
    notes = []
    for name in ("twistd.pid", "cgtwist.ctl"):
        path = os.path.join(base, name)
        try:
            if name.endswith(".pid"):
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    notes.append(
                        f"{name} is not a regular file on the disk (twistd would not start)"
                    )
                else:
                    with open(path, "rb") as f:
                        if not f.read().strip().isdigit():
                            notes.append(
                                f"{name} is empty or torn on the disk (twistd would not start)"
                            )
            os.unlink(path)
        except FileNotFoundError:
            pass
    return notes


def _digest(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run_scenario(scenario: Scenario, workdir: str, journal: bool, max_states: int) -> Run:
    """Record, then replay every distinct crash state."""
    run = record(scenario, workdir, journal, max_states)
    for state in run.states:
        state.digest = _digest(state.image)
    covered: list[int] = []
    for i, state in enumerate(run.states):
        later = run.states[i + 1] if i + 1 < len(run.states) else None
        if later is not None and later.digest == state.digest:
            covered.append(state.n)
            os.unlink(state.image)
            continue
        outcome = replay(scenario, state, workdir)
        outcome.covered, covered = covered, []
        run.outcomes.append(outcome)
    return run
