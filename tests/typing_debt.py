"""Count the typing debt in cgtwist/ per package: uses of ``Any`` and ``# type: ignore``.

Each is a place the type checker was told to look away. The counts may fall, never rise: CI
(tests/test_typing_debt.py) compares them with tests/typing_debt.txt and fails when a package's
count grew. After removing some, record the lower numbers::

    .venv/bin/python tests/typing_debt.py --write

Run without arguments to print the counts beside the recorded ones.

``Any`` is counted as a name in code (``Any``, ``typing.Any``), not in the import that
brings it in, nor in comments or strings; ``type: ignore`` is counted in comments. A package is
``cgtwist`` for the top-level modules and ``cgtwist.<name>`` for each subpackage (its own
subpackages included).
"""

from __future__ import annotations

import io
import os
import sys
import tokenize
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "cgtwist")
RECORD = os.path.join(ROOT, "tests", "typing_debt.txt")

HEADER = """\
# Typing debt in cgtwist/, per package: uses of Any and of "# type: ignore" (tests/typing_debt.py).
# A count may fall, never rise: tests/test_typing_debt.py fails when one grows.
# After lowering a count, record it: .venv/bin/python tests/typing_debt.py --write
# package  any  type-ignore
"""


class Debt(NamedTuple):
    any: int
    ignore: int


def count_source(text: str) -> Debt:
    """The debt of one module's text."""
    any_count = ignore_count = 0
    in_import = False
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME and tok.string in ("import", "from") and tok.start[1] == 0:
            in_import = True
        elif tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            in_import = False
        elif tok.type == tokenize.NAME and tok.string == "Any" and not in_import:
            any_count += 1
        elif tok.type == tokenize.COMMENT and "type: ignore" in tok.string:
            ignore_count += 1
    return Debt(any_count, ignore_count)


def package_of(path: str, source: str = SOURCE) -> str:
    rel = os.path.relpath(path, source).split(os.sep)
    return "cgtwist" if len(rel) == 1 else f"cgtwist.{rel[0]}"


def measure(source: str = SOURCE) -> dict[str, Debt]:
    """Debt per package under ``source``."""
    totals: dict[str, Debt] = {}
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                debt = count_source(f.read())
            pkg = package_of(path, source)
            old = totals.get(pkg, Debt(0, 0))
            totals[pkg] = Debt(old.any + debt.any, old.ignore + debt.ignore)
    return totals


def read_record(path: str = RECORD) -> dict[str, Debt]:
    out: dict[str, Debt] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                pkg, any_count, ignore_count = line.split()
                out[pkg] = Debt(int(any_count), int(ignore_count))
    return out


def render(debts: dict[str, Debt]) -> str:
    width = max(len(p) for p in debts)
    rows = [f"{p:<{width}}  {d.any:4d}  {d.ignore:4d}" for p, d in sorted(debts.items())]
    return HEADER + "\n".join(rows) + "\n"


def growth(recorded: dict[str, Debt], now: dict[str, Debt]) -> list[str]:
    """One line per package and kind whose count is above the record (a new package's
    record is zero)."""
    out = []
    for pkg, debt in sorted(now.items()):
        was = recorded.get(pkg, Debt(0, 0))
        for kind, n, limit in (
            ("Any", debt.any, was.any),
            ("type: ignore", debt.ignore, was.ignore),
        ):
            if n > limit:
                out.append(f"{pkg}: {n} uses of {kind}, recorded {limit}")
    return out


def main(argv: list[str]) -> int:
    now = measure()
    if argv[1:] == ["--write"]:
        with open(RECORD, "w", encoding="utf-8") as f:
            f.write(render(now))
        return 0
    recorded = read_record()
    for pkg, debt in sorted(now.items()):
        was = recorded.get(pkg, Debt(0, 0))
        print(
            f"{pkg:<20} Any {debt.any:4d} (recorded {was.any:4d})  "
            f"type: ignore {debt.ignore:4d} (recorded {was.ignore:4d})"
        )
    grown = growth(recorded, now)
    for line in grown:
        print(f"grew: {line}", file=sys.stderr)
    return 1 if grown else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
