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

Run in parallel (``pytest -n 2``, pytest-xdist: tests/run.sh does), the worker processes share
nothing but what one test run could share with another: ports come from the kernel, files go
below each worker's own temporary directory. The PostgreSQL store tests drop and recreate the
throw-away database's schema and some freeze the whole cluster (SIGSTOP), so every worker
after the first starts a throw-away cluster of its own (tests/storage/pg_throwaway.sh) and
points ``CGTWIST_TEST_PG_URL`` at it before any test module reads it.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from twisted.trial.unittest import SynchronousTestCase

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

PG_THROWAWAY = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "storage", "pg_throwaway.sh"
)
_own_clusters: list[str] = []  # throw-away PostgreSQL clusters this worker started


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker in ("", "gw0") or not os.environ.get("CGTWIST_TEST_PG_URL"):
        return  # not in parallel, the first worker, or no PostgreSQL: the cluster given
    started = subprocess.run(
        ["sh", PG_THROWAWAY, "start"], capture_output=True, text=True, timeout=300
    )
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in started.stdout.splitlines()
        if line.startswith("export ")
    )
    url = exports.get("CGTWIST_TEST_PG_URL", "").strip("'")
    if started.returncode != 0 or not url:
        raise pytest.UsageError(
            f"worker {worker}: no throw-away PostgreSQL cluster of its own "
            f"({started.stderr.strip() or 'pg_throwaway.sh printed no URL'}); the workers "
            "would share one (run without -n, or install the PostgreSQL server binaries)"
        )
    _own_clusters.append(exports.get("PG_THROWAWAY", "").strip("'"))
    os.environ["CGTWIST_TEST_PG_URL"] = url


def pytest_unconfigure(config: pytest.Config) -> None:
    while _own_clusters:
        subprocess.run(
            ["sh", PG_THROWAWAY, "stop", _own_clusters.pop()], capture_output=True, timeout=300
        )


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
