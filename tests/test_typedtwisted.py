"""cgtwist.typedtwisted only declares signatures: each name is Twisted's own callable, so a
call through it behaves exactly as the direct call did."""

from __future__ import annotations

from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial import unittest

from cgtwist import typedtwisted


class TypedTwistedTests(unittest.TestCase):
    def test_names_are_twisteds_callables(self) -> None:
        self.assertIs(typedtwisted.current_failure, Failure)
        self.assertIs(typedtwisted.failure_of, Failure)
        self.assertIs(typedtwisted.log_err, log.err)

    def test_current_failure_captures_the_exception_being_handled(self) -> None:
        try:
            raise KeyError("gone")
        except KeyError:
            f = typedtwisted.current_failure()
        self.assertIsInstance(f.value, KeyError)
        self.assertIsNotNone(f.getTracebackObject())

    def test_failure_of_wraps_an_exception_that_was_not_raised(self) -> None:
        f = typedtwisted.failure_of(Exception("closed"))
        self.assertEqual(f.getErrorMessage(), "closed")
