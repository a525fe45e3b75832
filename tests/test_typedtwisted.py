"""cgtwist.typedtwisted only declares signatures: each name is Twisted's own callable, so a
call through it behaves exactly as the direct call did."""

from __future__ import annotations

from twisted.application import service
from twisted.internet import protocol
from twisted.python import log
from twisted.python.failure import Failure
from twisted.python.logfile import BaseLogFile
from twisted.trial import unittest

from cgtwist import typedtwisted


class TypedTwistedTests(unittest.TestCase):
    def test_names_are_twisteds_callables(self) -> None:
        self.assertIs(typedtwisted.current_failure, Failure)
        self.assertIs(typedtwisted.failure_of, Failure)
        self.assertIs(typedtwisted.log_err, log.err)
        self.assertIs(typedtwisted.close_log_file, BaseLogFile.close)

    def test_classes_are_twisteds_classes(self) -> None:
        """The typed base classes exist for the type checker alone: at run time a subclass of
        typedtwisted.MultiService is a subclass of Twisted's, with nothing in between."""
        self.assertIs(typedtwisted.Service, service.Service)
        self.assertIs(typedtwisted.MultiService, service.MultiService)
        self.assertIs(typedtwisted.Factory, protocol.Factory)

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
