"""The typing debt in cgtwist/ (Any, type: ignore) may fall but never grow (tests/typing_debt.py)."""

from __future__ import annotations

from twisted.trial import unittest

from tests import typing_debt


class TypingDebtTests(unittest.TestCase):
    def test_no_package_has_more_than_recorded(self) -> None:
        """CI fails when a package uses Any or type: ignore more often than
        tests/typing_debt.txt records; the message says how to record a lower count."""
        grown = typing_debt.growth(typing_debt.read_record(), typing_debt.measure())
        self.assertEqual(
            grown,
            [],
            "typing debt grew (type the new code instead; after lowering a count run "
            ".venv/bin/python tests/typing_debt.py --write)",
        )

    def test_counts_names_in_code_and_ignores_in_comments(self) -> None:
        """The import that brings Any in, strings and comments do not count; a type: ignore
        comment does, with or without codes."""
        text = (
            "from typing import Any, Optional\n"
            "import typing\n"
            "x: Any = 1  # Any here is a comment\n"
            "y: typing.Any = 'Any'\n"
            "z = f()  # type: ignore[no-untyped-call]\n"
            "w = g()  # type: ignore\n"
        )
        self.assertEqual(typing_debt.count_source(text), typing_debt.Debt(2, 2))

    def test_growth_names_the_package_and_a_new_package_starts_at_zero(self) -> None:
        Debt = typing_debt.Debt
        recorded = {"cgtwist": Debt(5, 1)}
        now = {"cgtwist": Debt(4, 2), "cgtwist.rules": Debt(1, 0)}
        self.assertEqual(
            typing_debt.growth(recorded, now),
            [
                "cgtwist: 2 uses of type: ignore, recorded 1",
                "cgtwist.rules: 1 uses of Any, recorded 0",
            ],
        )
