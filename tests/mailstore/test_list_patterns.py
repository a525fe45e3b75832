"""LIST/LSUB pattern matching (RFC 3501 §6.3.8, §6.3.9): right answers, in linear time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, provision
from cgtwist.mailstore.listing import WildcardPattern

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _reference(pattern: str, name: str) -> bool:
    """The RFC's meaning written the obvious (exponential) way, for short inputs only."""
    rx = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.DOTALL) is not None


class WildcardPatternTests(unittest.TestCase):
    @settings(max_examples=3000, deadline=None)
    @given(st.text("ab/*%", max_size=10), st.text("ab/", max_size=10))
    def test_same_answers_as_the_rfc_definition(self, pattern: str, name: str) -> None:
        """``*`` matches anything, ``%`` anything but ``/``, everything else itself."""
        self.assertEqual(WildcardPattern(pattern).matches(name), _reference(pattern, name))

    def test_examples(self) -> None:
        """The everyday patterns clients send."""
        self.assertTrue(WildcardPattern("*").matches("A/B/C"))
        self.assertTrue(WildcardPattern("A/%").matches("A/B"))
        self.assertFalse(WildcardPattern("A/%").matches("A/B/C"))
        self.assertTrue(WildcardPattern("%").matches("Sent"))
        self.assertFalse(WildcardPattern("%").matches("A/B"))
        self.assertTrue(WildcardPattern("Sent").matches("Sent"))
        self.assertFalse(WildcardPattern("Sent").matches("sent"))
        self.assertTrue(WildcardPattern("*x").matches("a/b/x"))

    def test_many_wildcards_answer_at_once(self) -> None:
        """LIST "" "****...x" (121 stars) against long folder names answers at once: the
        regular expression it used to become backtracked for ever and froze the reactor,
        every protocol with it. Run in a child process so the old code fails, not hangs."""
        script = textwrap.dedent(f"""
            import sys, tempfile, os
            sys.path.insert(0, {REPO!r})
            from cgtwist.mailstore import MailboxNotifier, MaildirAccount, provision
            md = os.path.join(tempfile.mkdtemp(), "Maildir")
            provision(md)
            acct = MaildirAccount(md, "a@example.com", MailboxNotifier())
            acct.create("a" * 60 + "/" + "b" * 60)
            for pattern in ("*" * 121 + "x", "%" * 121 + "x", "*a" * 300 + "x"):
                assert acct.listMailboxes("", pattern) == [], pattern
            print("done")
        """)
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        self.assertEqual(out.stdout.strip(), "done", out.stderr)


class ListSubscribedTests(unittest.TestCase):
    def setUp(self) -> None:
        md = os.path.join(os.path.abspath(self.mktemp()), "Maildir")
        provision(md)
        self.account = MaildirAccount(md, "a@example.com", MailboxNotifier())
        for name in ("T", "T/a", "T/b", "T/b/c", "T/d/e"):
            self.account.create(name)

    def lsub(self, pattern: str) -> dict[str, list[str]]:
        return {n: info.getFlags() for n, info in self.account.listSubscribed("", pattern)}

    def test_unsubscribed_parent_of_subscribed_child_is_noselect(self) -> None:
        """RFC 3501 §6.3.9: LSUB "" T/% names an unsubscribed T/b (which has the subscribed
        T/b/c) with \\Noselect, whether T/b exists or not, and never T/b/c itself."""
        self.account.subscribe("T/a")
        self.account.subscribe("T/b/c")
        self.account.subscribe("T/d/e")
        self.assertEqual(
            self.lsub("T/%"), {"T/a": [], "T/b": ["\\Noselect"], "T/d": ["\\Noselect"]}
        )
        self.assertEqual(
            self.lsub("*"),
            {n: [] for n in ("INBOX", "Sent", "Drafts", "Trash", "Junk", "T/a", "T/b/c", "T/d/e")},
        )

    def test_subscribed_parent_is_plain_and_gone_folders_stay(self) -> None:
        """A subscribed parent is listed as itself; a subscription outlives its folder."""
        self.account.subscribe("T/b")
        self.account.subscribe("T/b/c")
        self.account.subscribe("Gone")
        self.assertEqual(self.lsub("T/%"), {"T/b": []})
        self.assertEqual(self.lsub("Gone"), {"Gone": []})
        self.account.unsubscribe("T/b")
        self.assertEqual(self.lsub("T/%"), {"T/b": ["\\Noselect"]})
