"""Tests for the end-of-DATA mark: the enqueuer's shortcut decides as a full evaluation would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.rules.evaluate import evaluate, holds
from cgtwist.rules.mark import Unsettled, unsettled_condition
from cgtwist.rules.model import Action, Condition, Rule, RuleSet
from tests.rules.test_evaluate import NOW, facts

_SIZES = ["100", "1K", "2K"]


@st.composite
def sized_rule_sets(draw: st.DrawFn) -> RuleSet:
    """Rules whose unsettled conditions are sizes (greater and less than, one or several),
    sometimes with a trace-field or clock condition, beside a settled one."""

    mixed = draw(st.booleans())  # else sizes alone: the enqueuer compares intervals

    def unsettled() -> Condition:
        kind = draw(st.sampled_from(["size", "size", "trace", "time"] if mixed else ["size"]))
        if kind == "size":
            op = draw(st.sampled_from(["greater than", "less than"]))
            return Condition("Message Size", op, draw(st.sampled_from(_SIZES)))
        if kind == "trace":
            return Condition("Header Field", "is", "Received: from *")
        return Condition(
            "Current Time", draw(st.sampled_from(["greater than", "less than"])), "12:00"
        )

    rules = []
    for i in range(draw(st.integers(1, 8))):
        conds = [unsettled() for _ in range(draw(st.integers(0, 3)))]
        if draw(st.booleans()):
            conds.append(Condition("Subject", "is", draw(st.sampled_from(["hi*", "*offer*"]))))
        rules.append(Rule(f"r{i}", draw(st.integers(1, 10)), tuple(conds), (Action("Discard"),)))
    return RuleSet(tuple(rules))


def message(size: int) -> bytes:
    """A message of ``size`` octets (at least its header), with our trace field."""
    head = b"Received: from client\r\nSubject: hi there\r\n\r\n"
    return head + b"x" * max(size - len(head), 0)


# Totals on and beside the limits the rules draw.
_TOTALS = [0, 99, 100, 101, 1023, 1024, 1025, 2047, 2048, 2049]


class ReopenedTests(unittest.TestCase):
    """``Unsettled.reopened`` (plans kept per mark list, sizes compared as intervals) keeps
    exactly the listed rules whose unsettled conditions hold, as ``holds`` says one by one."""

    @settings(max_examples=300, deadline=None)
    @given(sized_rule_sets(), st.data())
    def test_reopened_is_the_listed_rules_whose_unsettled_conditions_hold(
        self, rs: RuleSet, data: st.DataObject
    ) -> None:
        u = Unsettled(rs)
        listed = data.draw(st.lists(st.integers(0, max(len(u.ordered) - 1, 0)), unique=True))
        listed = [i for i in listed if i < len(u.ordered)]
        body = message(data.draw(st.sampled_from(_TOTALS)))
        f = facts(body)
        want = [
            u.ordered[i]
            for i in listed
            if all(holds(c, f) for c in u.ordered[i].conditions if unsettled_condition(c))
        ]
        mark = ",".join(map(str, listed))
        for _twice in range(2):  # the second time from the plan kept for this list
            got = u.reopened(mark, "", body, lambda: NOW)
            self.assertEqual(list(got.rules), want)

    def test_an_unreadable_list_reopens_every_unsettled_rule(self) -> None:
        rs = RuleSet(
            (
                Rule(
                    "a", 5, (Condition("Message Size", "greater than", "1K"),), (Action("Discard"),)
                ),
                Rule("b", 5, (Condition("Subject", "is", "x"),), (Action("Discard"),)),
            )
        )
        u = Unsettled(rs)
        for listed in ("x", "7", "-1", "0,,9"):
            self.assertEqual(
                [r.name for r in u.reopened(listed, "", b"", lambda: NOW).rules], ["a"]
            )
        self.assertEqual(u.reopened("", "", b"x" * 5000, lambda: NOW).rules, ())

    @settings(max_examples=200, deadline=None)
    @given(sized_rule_sets(), st.sampled_from(_TOTALS))
    def test_still_open_then_reopened_agrees_with_a_full_evaluation(
        self, rs: RuleSet, size: int
    ) -> None:
        """What the end-of-DATA check names and the enqueuer reopens fires exactly what
        evaluating every rule at the enqueuer would, when nothing fired at the end of DATA
        (the message grew by our trace field in between)."""
        before = message(size).replace(b"Received: from client\r\n", b"")
        f0 = facts(before)
        if evaluate(rs, f0, server=True).trace:
            return  # a rule fired at the end of DATA: no mark
        u = Unsettled(rs)
        mark = ",".join(map(str, u.still_open(f0)))
        after = message(size)
        reopened = u.reopened(mark, "", after, lambda: NOW)
        full = evaluate(rs, facts(after), server=True)
        short = evaluate(reopened, facts(after), server=True)
        self.assertEqual(short.actions, full.actions)
        self.assertEqual([t.rule for t in short.trace], [t.rule for t in full.trace])
