"""Test-run wiring for pytest (no tests here): trial's ``mktemp()`` writes outside the checkout.

Trial runs its tests in ``_trial_temp`` and ``TestCase.mktemp()`` returns a path relative to
the working directory; pytest runs from the checkout root, so every trial TestCase that called
``mktemp()`` left a ``tests.<module>`` directory there. Here each call gets a fresh directory
below pytest's own temporary directory (kept for the last few runs, then removed), with
trial's contract: the parent exists, the path itself does not.
"""

from __future__ import annotations

import os

import pytest
from twisted.trial.unittest import SynchronousTestCase


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
