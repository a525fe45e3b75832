"""Tests for cgtwist.pictures: the one ``*`` matcher of Rules and the sender rule."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.pictures import matches, matches_any, split_list


def _reference(picture: str, value: str) -> bool:
    """The meaning of a picture, spelled as a regular expression (fine for short inputs)."""
    pattern = ".*".join(re.escape(piece) for piece in picture.casefold().split("*"))
    return re.fullmatch(pattern, value.casefold(), re.DOTALL) is not None


class PictureTests(unittest.TestCase):
    def test_wildcards_and_case(self) -> None:
        """``*`` matches any run of characters, and case does not matter, as in CommuniGate."""
        self.assertTrue(matches("*@Example.COM", "alice@example.com"))
        self.assertTrue(matches("a*b*c", "aXXbYYc"))
        self.assertTrue(matches("*", ""))
        self.assertTrue(matches("ab*ab", "abab"))
        self.assertFalse(matches("ab*ab", "aba"))
        self.assertFalse(matches("a*b*c", "acb"))
        self.assertFalse(matches("alice", "alice2"))

    def test_address_patterns(self) -> None:
        """The ``smtp.send_as`` patterns: a whole domain, a prefix, an exact address."""
        self.assertTrue(matches("*@x.example", "a@x.example"))
        self.assertTrue(matches("news-*@x.example", "news-weekly@x.example"))
        self.assertFalse(matches("news-*@x.example", "news-weekly@y.example"))
        self.assertTrue(matches("a@b", "A@B"))
        self.assertFalse(matches("a@b", "a@bc"))
        self.assertTrue(matches_any(["team@p.example", "*@X.example"], "Bob@x.example"))
        self.assertFalse(matches_any([], "bob@x.example"))

    def test_linear_on_hostile_input(self) -> None:
        """A picture built to make a backtracking matcher explode answers at once (a
        backtracking matcher would not finish within the test run's timeout)."""
        self.assertFalse(matches("*a*a*a*a*a*a*a*a*a*a*b", "a" * 200_000))
        self.assertTrue(matches("*a*a*a*a*a*a*a*a*a*a*b", "a" * 200_000 + "b"))

    def test_split_list(self) -> None:
        """Items separated by commas or line ends, or a list of such texts; blanks dropped."""
        self.assertEqual(split_list("A@B, c@d\n\n*@E"), ["A@B", "c@d", "*@E"])
        self.assertEqual(split_list(["a@b, c@d", " e@f "]), ["a@b", "c@d", "e@f"])
        self.assertEqual(split_list(None), [])
        self.assertEqual(split_list(" , "), [])

    @given(
        st.text(alphabet="ab*@.", max_size=12),
        st.text(alphabet="abAB@.", max_size=16),
    )
    def test_same_answer_as_the_reference(self, picture: str, value: str) -> None:
        """Leftmost placement of the pieces gives the regular expression's answer."""
        self.assertEqual(matches(picture, value), _reference(picture, value))
