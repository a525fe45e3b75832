"""Tests for Sieve import: scripts with an exact rule equivalent compile, others are refused."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.rules.evaluate import evaluate
from cgtwist.rules.facts import message_facts
from cgtwist.rules.model import Action, Condition
from cgtwist.rules.sieve import SieveError, compile_sieve
from cgtwist.rules.text import format_rules, parse_rules

SCRIPT = """require ["fileinto", "vacation", "reject"];
# mailing lists first
if header :contains "List-Id" "dev.lists" {
  fileinto "Lists/Dev";
  stop;
} elsif address :domain :is "from" ["spam.example", "junk.example"] {
  fileinto "Junk";
} elsif size :over 1M {
  reject "too big";
} else {
  if not exists "Precedence" {
    vacation :days 7 text:
I am away.
..a dot line
.
;
  }
}
"""


def run(script: str, data: bytes, sender: str = "bob@elsewhere.example") -> list[str]:
    rules, _ = compile_sieve(script)
    f = message_facts(
        sender, ["alice@example.com"], {}, data, authserv_id="mx", now=datetime(2026, 1, 1)
    )
    return [f"{a.name} {a.param}".strip() for a in evaluate(rules, f, server=False).actions]


class SieveTests(unittest.TestCase):
    def test_if_elsif_else_become_ordered_rules(self) -> None:
        """Each branch is a rule; later branches carry the negation of earlier tests."""
        rules, warnings = compile_sieve(SCRIPT)
        self.assertEqual(len(rules.rules), 4)
        second = rules.rules[1]
        self.assertEqual(
            second.conditions,
            (
                Condition("Header Field", "is not", "List-Id: *dev.lists*"),
                Condition("From", "in", "*@spam.example, *@junk.example"),
            ),
        )
        self.assertEqual(rules.rules[3].actions, (Action("Reply with", "I am away.\n.a dot line"),))
        self.assertIn("vacation :days ignored", warnings[0])
        self.assertEqual(parse_rules(format_rules(rules)), rules)

    def test_decisions_match_sieve(self) -> None:
        """Messages take the branch Sieve would take."""
        head = b"From: x@spam.example\r\nSubject: s\r\n"
        self.assertEqual(
            run(SCRIPT, b"List-Id: <dev.lists.example>\r\n" + head + b"\r\nx"),
            ["Store in Lists/Dev", "Stop Processing"],
        )
        self.assertEqual(run(SCRIPT, head + b"\r\nx"), ["Store in Junk"])
        big = b"From: a@ok.example\r\n\r\n" + b"x" * (1024 * 1024 + 1)
        self.assertEqual(run(SCRIPT, big), ["Reject with too big"])
        self.assertEqual(
            run(SCRIPT, b"From: a@ok.example\r\n\r\nx"), ["Reply with I am away.\n.a dot line"]
        )
        self.assertEqual(run(SCRIPT, b"From: a@ok.example\r\nPrecedence: bulk\r\n\r\nx"), [])

    def test_redirect_cancels_the_implicit_keep(self) -> None:
        """redirect becomes Redirect to plus Discard (RFC 5228 §4.2)."""
        self.assertEqual(
            run(
                'if header :is "subject" "fwd" { redirect "x@y.example"; }', b"Subject: FWD\r\n\r\n"
            ),
            ["Redirect to x@y.example", "Discard"],
        )

    def test_refusals_name_line_and_reason(self) -> None:
        """What has no exact equivalent is refused, not approximated."""
        cases = {
            'require "imap4flags";': (1, "extension 'imap4flags'"),
            "if anyof (true, false) {\n keep;\n}": (1, "anyof with several tests"),
            'if header :regex "subject" "x" {\n discard;\n}': (1, ":regex is not supported"),
            'if header :matches "subject" "a?b" {\n discard;\n}': (1, "only '*' wildcards"),
            '\n\nif body :contains "x" {\n discard;\n}': (3, "test 'body'"),
            "if true { discard; }\nkeep;": (1, "discard or redirect together with keep"),
            'fileinto "A";\nkeep;': (1, "keep together with fileinto"),
            'if true {\n addflag "\\\\Seen";\n}': (2, "action 'addflag'"),
            'if header :is "subject" "x" { keep; }\nelse { discard; }\nelse { keep; }': (
                3,
                "else without if",
            ),
            'if "x" { keep; }': (1, "if takes one test"),
            "if true {": (1, "expected '}'"),
            "discard": (1, "expected ';'"),
            'vacation :mime "x";': (1, ":mime"),
            'if header :comparator "i;octet" :is "subject" "x" { discard; }': (1, "comparator"),
            'if allof(header :is "a" "1", header :is "b" "2") { keep; }\nelsif true { discard; }': (
                2,
                "after a test of 2 conditions",
            ),
        }
        for script, (line, words) in cases.items():
            with self.assertRaises(SieveError, msg=script) as cm:
                compile_sieve(script)
            self.assertIn(words, cm.exception.problem, script)
            self.assertEqual(cm.exception.line, line, script)

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=200))
    def test_garbage_never_crashes(self, script: str) -> None:
        """Any text compiles or raises SieveError with a line number."""
        try:
            compile_sieve(script)
        except SieveError as e:
            self.assertGreaterEqual(e.line, 1)
