#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this after installing the Debian
# packages the end-to-end tests drive; README.md's test command does the same):
#   a virtual environment in .venv with cgtwist and its test and PostgreSQL extras, the static
#   checks (ruff check, ruff format --check, mypy with the zope plugin, the import-linter
#   layering contracts), a throw-away PostgreSQL cluster on a Unix socket so the store tests run
#   on both databases, then pytest in two worker processes (pytest-xdist; CI has two cores),
#   each test file whole on one worker, so a module's server starts once.
# Arguments go to pytest (tests/run.sh tests/test_cli.py -x). CGTWIST_TEST_WORKERS sets the
# number of workers (0: no workers, every test in the one pytest process). Exits non-zero on
# any failure; pytest's closing line is the last line it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q '.[test,postgres]'
.venv/bin/ruff check cgtwist tests
.venv/bin/ruff format --check cgtwist tests bench
.venv/bin/mypy
.venv/bin/lint-imports
eval "$(sh tests/storage/pg_throwaway.sh start)"
if [ -z "${CGTWIST_TEST_PG_URL:-}" ]; then
    echo "tests/run.sh: PostgreSQL server binaries not found (Debian: apt-get install postgresql);" \
         "the PostgreSQL store tests will be skipped" >&2
fi
trap 'sh tests/storage/pg_throwaway.sh stop "${PG_THROWAWAY:-}" >/dev/null 2>&1 || true' EXIT
.venv/bin/python -m pytest -n "${CGTWIST_TEST_WORKERS:-2}" --dist loadfile "$@"
