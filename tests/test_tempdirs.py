"""Where tests write their temporary files: never into the checkout.

Trial's ``TestCase.mktemp()`` makes a path relative to the working directory, which is
``_trial_temp`` under trial but the checkout root under pytest: every such test left a
``tests.<module>`` directory beside ``cgtwist/`` (and stale Maildirs for the next run to
trip over). ``tests/conftest.py`` sends them to pytest's temporary directory.
"""

from __future__ import annotations

import os

from twisted.trial import unittest

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MktempTests(unittest.TestCase):
    def test_mktemp_is_outside_the_checkout(self) -> None:
        """A path from mktemp() lies outside the checkout, its parent exists and it does not
        (trial's contract), and two calls give two paths."""
        path = os.path.abspath(self.mktemp())
        self.assertFalse(os.path.relpath(path, CHECKOUT).startswith("tests."), path)
        self.assertTrue(os.path.isdir(os.path.dirname(path)))
        self.assertFalse(os.path.exists(path))
        self.assertNotEqual(path, os.path.abspath(self.mktemp()))
