"""Test-run wiring for pytest (no tests here): trial's ``mktemp()`` writes outside the checkout,
and the processes the tests start find the checkout's modules compiled.

Trial runs its tests in ``_trial_temp`` and ``TestCase.mktemp()`` returns a path relative to
the working directory; pytest runs from the checkout root, so every trial TestCase that called
``mktemp()`` left a ``tests.<module>`` directory there. Here each call gets a fresh directory
below pytest's own temporary directory (kept for the last few runs, then removed), with
trial's contract: the parent exists, the path itself does not.

The end-to-end tests start several hundred Python processes (``twistd cgtwist``, its SMTP
workers, ``cgtwist-admin``, the test DNS server) with the checkout first on PYTHONPATH. With
``PYTHONDONTWRITEBYTECODE`` set (as in many container images, and on this project's machines)
none of them could cache the bytecode, so every one compiled all of cgtwist again: about a
fifth of those tests' CPU time. The variable is dropped for the processes the tests start;
the ``__pycache__`` folders it lets them write are ignored by git.
"""

from __future__ import annotations

import os

import pytest
from twisted.trial.unittest import SynchronousTestCase

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture(autouse=True)
def _trial_mktemp_outside_checkout(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    case = request.instance
    if not isinstance(case, SynchronousTestCase):
        return
    # pytest's numbered directory names, like trial's, are cut short for file-name limits.
    name = f"{type(case).__name__[:32]}.{case._testMethodName[:32]}"

    def mktemp() -> str:
        return os.path.join(tmp_path_factory.mktemp(name), "temp")

    case.mktemp = mktemp  # type: ignore[method-assign]
