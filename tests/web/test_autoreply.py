"""Vacation and forwarding as Account Rules: written, read back, other rules untouched."""

from __future__ import annotations

import datetime

from twisted.trial import unittest

from cgtwist.rules.model import Action, Rule, RuleError, RuleSet
from cgtwist.rules.text import format_rules, parse_rules
from cgtwist.web import autoreply
from cgtwist.web.autoreply import Forwarding, Vacation

OTHER = Rule("Lists", 5, (), (Action("Store in", "Lists"),))


class AutoreplyTests(unittest.TestCase):
    def round_trip(self, rules: RuleSet) -> RuleSet:
        return parse_rules(format_rules(rules))

    def test_vacation_and_forwarding_round_trip(self) -> None:
        """What the page writes it reads back, through the text form the store keeps."""
        v = Vacation(True, "Away.\nBack on Monday.", datetime.date(2026, 12, 20), None)
        f = Forwarding(True, "a@other.test, b@other.test", keep=False)
        stored = self.round_trip(autoreply.apply(RuleSet((OTHER,)), v, f))
        self.assertEqual(autoreply.read(stored), (v, f))
        names = [r.name for r in stored.rules]
        self.assertEqual(names, ["Lists", "#Vacation", "#Redirect"])
        forward = stored.rules[2]
        self.assertEqual([a.name for a in forward.actions], ["Redirect to", "Discard"])

    def test_period_is_inclusive(self) -> None:
        """The first and last day reply: the rules compare strictly, so the conditions name
        the day before and the day after."""
        v = Vacation(True, "x", datetime.date(2026, 12, 20), datetime.date(2026, 12, 31))
        rule = autoreply.vacation_rule(v)
        assert rule is not None
        self.assertEqual(
            [(c.op, c.param) for c in rule.conditions],
            [("greater than", "2026-12-19"), ("less than", "2027-01-01")],
        )

    def test_off_keeps_the_text_and_empty_removes(self) -> None:
        """Off is priority 0 (kept, never run); an empty text or address removes the rule;
        other rules stay in their place."""
        on = autoreply.apply(
            RuleSet((OTHER,)), Vacation(True, "away"), Forwarding(True, "a@b.test")
        )
        off = autoreply.apply(on, Vacation(False, "away"), Forwarding(False, "a@b.test", True))
        self.assertEqual([r.priority for r in off.rules], [5, 0, 0])
        self.assertEqual(autoreply.read(off)[0], Vacation(False, "away"))
        gone = autoreply.apply(off, Vacation(False, ""), Forwarding(True, ""))
        self.assertEqual(gone.rules, (OTHER,))
        self.assertEqual(autoreply.read(gone), (Vacation(), Forwarding()))

    def test_a_bad_address_is_refused(self) -> None:
        with self.assertRaises(RuleError):
            autoreply.forwarding_rule(Forwarding(True, "not an address"))
