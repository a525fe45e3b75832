"""Power loss at every fsync boundary: nothing acknowledged is lost, nothing is half-delivered.

The crash-state harness of issue 21 (see README.md in this directory): each scenario runs on
a loop-mounted ext4 image, without a journal (like this project's own servers' root file
system) and with one (the control), is cut after each fsync, and a server restarted on each
crash state must still have every message a client was told is safe. The CI-sized plan runs
by default; ``CGTWIST_CRASH_FULL=1`` runs the larger one. Needs root, loop devices, strace
and e2fsprogs; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.crash.engine import run_scenario
from tests.crash.loopfs import cleanup_all, unavailable
from tests.crash.plan import Item, plan

pytestmark = [pytest.mark.crash, pytest.mark.e2e]

FULL = bool(os.environ.get("CGTWIST_CRASH_FULL"))
WHY = unavailable()


@pytest.fixture(autouse=True)
def _no_leftover_mounts() -> Iterator[None]:
    yield
    cleanup_all()


@pytest.mark.skipif(WHY is not None, reason=WHY or "")
@pytest.mark.parametrize("item", list(plan(FULL)), ids=lambda item: item.id)
def test_power_loss_at_each_fsync_loses_no_acknowledged_mail(item: Item, tmp_path: str) -> None:
    """At every fsync boundary of the scenario, the disk as a power cut leaves it, after
    e2fsck and a restart, still holds every message whose 250 (or tagged OK) the client got,
    none truncated, nothing valid quarantined, nothing moved or expunged brought back."""
    run = run_scenario(item.scenario(), str(tmp_path), item.journal, item.max_states)
    report = run.report()
    print(report)
    out = os.environ.get("CGTWIST_CRASH_REPORT")
    if out:
        with open(out, "a") as f:
            f.write(report + "\n")
    assert run.states, "no crash state was recorded"
    assert not run.truncated, "the state limit stopped the run before the scenario's end"
    assert not run.violations, report
