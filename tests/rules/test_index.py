"""Tests for the rule index: only rules a message can fire are tried, with the same outcome."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.rules.evaluate import _seen, evaluate
from cgtwist.rules.facts import MessageFacts
from cgtwist.rules.index import RuleIndex
from cgtwist.rules.model import Action, Condition, Rule, RuleSet
from cgtwist.rules.text import parse_rules
from tests.rules.test_evaluate import facts
from tests.rules.test_text import rule_sets

_BENCH = Path(__file__).parents[2] / "bench" / "server_rules.py"


def bench_rules(n: int) -> str:
    """The Server Rules bench/server_rules.py writes for the benchmarks."""
    out = subprocess.run(
        [sys.executable, str(_BENCH), str(n)], capture_output=True, text=True, check=True
    )
    return out.stdout


# Header fields the random messages carry, and the texts their values are made of: the
# pictures rule_sets draws (and pieces of them), so that rules fire as well as fail.
_FIELDS = ["From", "To", "Cc", "Sender", "Reply-To", "Subject", "Message-ID", "List-Id", "X-Spam"]
_WORDS = [
    "alice@example.com",
    "bob@example.org",
    "x@example.net",
    "xzy",
    "xy",
    "a",
    "b",
    "bz",
    "yes",
    "yes please",
    "Bob <alice@example.com>",
    "a, b",
    "",
    "ALICE@EXAMPLE.COM",
    "=?utf-8?q?Caf=C3=A9?=",
]


def _fits_of(rs: RuleSet) -> list[str]:
    """Texts that fit the rule set's own pictures (each '*' filled in), so that the random
    messages meet its conditions often, not only by chance."""
    out = []
    for rule in rs.rules:
        for c in rule.conditions:
            for item in c.param.replace(":", ",").split(","):
                out += [item.strip().replace("*", ""), item.strip().replace("*", "qq")]
    return [t for t in out if "\n" not in t and "\r" not in t]


@st.composite
def messages(draw: st.DrawFn, rs: RuleSet) -> MessageFacts:
    words = st.sampled_from(_WORDS + _fits_of(rs))
    fields = st.sampled_from(
        _FIELDS + [c.plan[2] for r in rs.rules for c in r.conditions if c.plan[2]]
    )
    lines = [f"{name}: {draw(words)}" for name in draw(st.lists(fields, max_size=6))]
    data = ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()
    submit = {
        "peer": draw(st.sampled_from(["192.0.2.7", "203.0.113.9"])),
        "protocol": draw(st.sampled_from(["ESMTP", "ESMTPSA", "PIPE"])),
        "tls": draw(st.sampled_from(["", "TLSv1.3"])),
        "spf": draw(st.sampled_from(["pass", "fail", "softfail", "none"])),
        "rbl": draw(st.sampled_from(["", "zen.example", "bl.example,zen.example"])),
    }
    return facts(  # type: ignore[no-any-return]
        data,
        sender=draw(st.sampled_from(["", "alice@example.com", "x@example.net", "xzy"]) | words),
        submit=submit,
        recipients=draw(st.lists(words, min_size=1, max_size=3)),
        routes=draw(st.lists(st.sampled_from(["LOCAL(alice)", "SMTP(b.example)x"]), max_size=2)),
        mailboxes=["Lists"],
    )


# Rule sets the index files nearly whole: positive picture conditions of every shape (whole
# value, start, end, inside, several pieces, lists), one or two per rule, few subjects.
_SUBJECTS = ["From", "To", "Any To or Cc", "Subject", "Return-Path", "Any Recipient"]
_SHAPES = [
    "alice@example.com",
    "*@example.org",
    "*.net",
    "bob@*",
    "x*y",
    "*example*",
    "*z*y",
    "a*b*c",
    "b",
    "*",
    "xy, *@example.org",
    "yes*, *please",
]


@st.composite
def indexed_rule_sets(draw: st.DrawFn) -> RuleSet:
    def condition() -> Condition:
        subject = draw(st.sampled_from(_SUBJECTS + ["Header Field"]))
        op = draw(st.sampled_from(["is", "in", "is", "in", "is not"]))
        picture = draw(st.sampled_from(_SHAPES))
        if op == "is":
            picture = picture.split(",")[0]
        if subject == "Header Field":
            picture = f"{draw(st.sampled_from(['List-Id', 'X-Spam']))}: {picture}"
        return Condition(subject, op, picture)

    rules = [
        Rule(
            f"r{i}",
            draw(st.integers(1, 3)),
            tuple(condition() for _ in range(draw(st.integers(1, 2)))),
            (Action("Add Header", f"X-R{i}: 1"),)
            + ((Action("Stop Processing"),) if draw(st.booleans()) and i % 5 == 0 else ()),
        )
        for i in range(draw(st.integers(1, 12)))
    ]
    return RuleSet(tuple(rules))


class AgreementTests(unittest.TestCase):
    """The index is a pre-filter: with and without it a rule set decides every message alike."""

    def assertAgree(self, rs: RuleSet, f: MessageFacts) -> None:
        fast = evaluate(rs, f, server=False, allowed="Any", execute=True)
        full = evaluate(rs, f, server=False, allowed="Any", execute=True, indexed=False)
        self.assertEqual(fast.actions, full.actions)
        self.assertEqual([t.rule for t in fast.trace], [t.rule for t in full.trace])
        tried = [r.name for r in rs.index.candidates(lambda c: _seen(c, f)[1])]
        # every rule that fires was a candidate, and candidates keep the run order
        self.assertTrue({t.rule.name for t in full.trace} <= set(tried))
        self.assertEqual(tried, [r.name for r in rs.ordered() if r.name in tried])

    @settings(max_examples=300, deadline=None)
    @given(rule_sets(), st.data())
    def test_indexed_and_unindexed_agree(self, rs: RuleSet, data: st.DataObject) -> None:
        """Any rule set the text form can hold, on messages made of its own pictures."""
        self.assertAgree(rs, data.draw(messages(rs)))

    @settings(max_examples=500, deadline=None)
    @given(indexed_rule_sets(), st.data())
    def test_agree_on_rule_sets_made_of_pictures(self, rs: RuleSet, data: st.DataObject) -> None:
        """Rule sets whose every rule the index files, pictures of every shape: most
        examples fire some rules and rule others out."""
        self.assertAgree(rs, data.draw(messages(rs)))


class IndexTests(unittest.TestCase):
    def test_bench_rules_try_only_what_can_fire(self) -> None:
        """Of the benchmark's 50 Server Rules, an ordinary message is tried against the five
        whose only condition is the message size; a message from a refused sender against
        the one rule of that sender too, and it fires."""
        rs = parse_rules(bench_rules(50))
        f = facts(
            b"From: bob@example.net\r\nSubject: figures\r\n\r\nhi\r\n", sender="bob@example.net"
        )
        tried = rs.index.candidates(lambda c: _seen(c, f)[1])
        self.assertEqual(len(tried), 5)
        self.assertTrue(all(r.conditions[0].subject == "Message Size" for r in tried))
        # From a trusted client too: 'Source is "trusted"' is a word most mail shares, so
        # the partner rules are filed by their sender.
        trusted = facts(
            b"From: bob@example.net\r\n\r\nhi\r\n",
            sender="bob@example.net",
            submit={"peer": "127.0.0.1", "protocol": "ESMTPA", "account": "bob"},
        )
        self.assertEqual(len(rs.index.candidates(lambda c: _seen(c, trusted)[1])), 5)
        spam = facts(b"From: Eve <eve@SPAM10.example>\r\n\r\nhi\r\n", sender="eve@spam10.example")
        tried = rs.index.candidates(lambda c: _seen(c, spam)[1])
        self.assertIn("server rule 10", [r.name for r in tried])
        out = evaluate(rs, spam, server=True)
        self.assertEqual([t.rule.name for t in out.trace], ["server rule 10"])

    def test_order_of_equal_priorities_is_kept(self) -> None:
        """Rules of one priority found through different tables still run as written."""
        rs = parse_rules(
            "version 1\n"
            'rule "c"\n if Subject is "*offer*"\n do Add Header "X-C: 1"\n'
            'rule "a"\n if From is "*@spam.example"\n do Add Header "X-A: 1"\n'
            'rule "b"\n if Subject is "cheap*"\n do Add Header "X-B: 1"\n'
            'rule "d"\n if Subject is "cheap offer"\n do Add Header "X-D: 1"\n'
        )
        f = facts(b"From: e@spam.example\r\nSubject: Cheap Offer\r\n\r\n", sender="e@spam.example")
        out = evaluate(rs, f, server=True)
        self.assertEqual([t.rule.name for t in out.trace], ["c", "a", "b", "d"])

    def test_which_conditions_file_a_rule(self) -> None:
        """A negation, an Each condition, a remembered list or a bare '*' cannot rule a
        message out: such rules are always tried; a rule is filed by its most telling
        condition, whichever comes first."""
        rs = parse_rules(
            "version 1\n"
            'rule "neg"\n if From is not "*@a.example"\n do Discard\n'
            'rule "each"\n if Each Recipient is "*@a.example"\n do Discard\n'
            'rule "list"\n if From in "#Friends, x@a.example"\n do Discard\n'
            'rule "star"\n if Subject is "*"\n do Discard\n'
            'rule "size"\n if Message Size greater than "1M"\n do Discard\n'
            'rule "second"\n if Subject is "*"\n if From is "boss@a.example"\n do Discard\n'
            'rule "route"\n if Any Route is "SMTP(*)"\n do Discard\n'
        )
        index: RuleIndex = rs.index
        self.assertEqual(index.always, frozenset({0, 1, 2, 3, 4, 6}))  # routes: never filed
        (subject,) = index.subjects
        self.assertEqual(subject.condition.subject, "From")
        self.assertEqual(subject.exact, {"boss@a.example": [5]})
