"""A Python child process armed to die at a crash point (helpers only; no tests here).

The crash-point tests of the spool and of LOCAL delivery run a small script in a fresh
interpreter with ``CGTWIST_CRASHPOINT`` set, so the SIGKILL at that step takes the child, not
the test run, and then look at what it left on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys

from cgtwist import crashpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script: str, base: str, point: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``base`` as its argument and ``point`` armed (none when empty)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    if point:
        env[crashpoint.ENV] = point
    else:
        env.pop(crashpoint.ENV, None)
    return subprocess.run(
        [sys.executable, "-c", script, base],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
