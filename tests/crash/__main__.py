"""On-demand driver: ``python -m tests.crash [--full] [--scenario NAME ...] [--fs nojournal|journal ...]``.

Runs the chosen scenarios (all by default) on the chosen file systems (both by default), prints
each run's report, and exits 1 when any crash state broke a promise. Needs root (see README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from tests.crash.engine import run_scenario
from tests.crash.loopfs import cleanup_all, unavailable
from tests.crash.plan import FILESYSTEMS, plan


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.crash", description=__doc__)
    p.add_argument("--full", action="store_true", help="the larger run (as CGTWIST_CRASH_FULL=1)")
    p.add_argument("--scenario", action="append", help="scenario name (repeatable)")
    p.add_argument(
        "--fs", action="append", choices=sorted(FILESYSTEMS), help="file system (repeatable)"
    )
    p.add_argument(
        "--workdir", default=None, help="where images go (default: a temporary directory)"
    )
    args = p.parse_args(argv)
    why = unavailable()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    failed = False
    total = 0
    with tempfile.TemporaryDirectory(prefix="cgtwist-crash-", dir=args.workdir) as tmp:
        try:
            for item in plan(
                args.full or bool(os.environ.get("CGTWIST_CRASH_FULL")), args.scenario, args.fs
            ):
                work = os.path.join(tmp, item.id)
                os.makedirs(work)
                run = run_scenario(item.scenario(), work, item.journal, item.max_states)
                total += len(run.states)
                print(run.report(), flush=True)
                failed = failed or bool(run.violations)
        finally:
            cleanup_all()
    print(f"crash states executed: {total}; {'VIOLATIONS FOUND' if failed else 'no violations'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
