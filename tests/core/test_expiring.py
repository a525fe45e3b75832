"""Tests for cgtwist.core.expiring: answers kept a few seconds, one question in flight."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.core.expiring import Expiring


class Store:
    """Questions are answered when the test says so; counts them."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[str]] = []

    def ask(self) -> defer.Deferred[str]:
        d: defer.Deferred[str] = defer.Deferred()
        self.pending.append(d)
        return d


class ExpiringTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = Store()
        self.cache: Expiring[str, str] = Expiring(self.clock.seconds, ttl=5.0, size=2)

    def fetch(self, key: str) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self.cache.fetch(key, self.store.ask))

    def test_answer_kept_for_the_ttl(self) -> None:
        """A second asker within the TTL gets the kept answer; after it the store is asked."""
        d = self.fetch("a")
        self.store.pending[0].callback("one")
        self.assertEqual(self.successResultOf(d), "one")
        self.assertEqual(self.successResultOf(self.fetch("a")), "one")
        self.assertEqual(len(self.store.pending), 1)
        self.clock.advance(5)
        self.fetch("a")
        self.assertEqual(len(self.store.pending), 2)
        self.assertEqual(self.cache.stale("a"), "one")

    def test_concurrent_askers_share_one_question(self) -> None:
        """A burst of askers of one key asks the store once; all get its answer."""
        first, second = self.fetch("a"), self.fetch("a")
        self.assertEqual(len(self.store.pending), 1)
        self.store.pending[0].callback("one")
        self.assertEqual([self.successResultOf(first), self.successResultOf(second)], ["one"] * 2)

    def test_a_failure_reaches_every_asker_and_is_not_kept(self) -> None:
        first, second = self.fetch("a"), self.fetch("a")
        self.store.pending[0].errback(RuntimeError("db down"))
        self.failureResultOf(first, RuntimeError)
        self.failureResultOf(second, RuntimeError)
        self.fetch("a")
        self.assertEqual(len(self.store.pending), 2)

    def test_clear_drops_answers_and_questions_in_flight(self) -> None:
        """After clear() (a reload) the store is asked again, and an answer to a question
        asked before it goes to its askers but is not kept."""
        old = self.fetch("a")
        self.cache.clear()
        new = self.fetch("a")
        self.assertEqual(len(self.store.pending), 2)
        self.store.pending[0].callback("before")
        self.assertEqual(self.successResultOf(old), "before")
        self.assertIsNone(self.cache.stale("a"))
        self.store.pending[1].callback("after")
        self.assertEqual(self.successResultOf(new), "after")
        self.assertEqual(self.successResultOf(self.fetch("a")), "after")

    def test_bounded(self) -> None:
        """At ``size`` keys the cache starts afresh rather than growing."""
        for key in "abc":
            d = self.fetch(key)
            self.store.pending[-1].callback(key)
            self.successResultOf(d)
        self.assertEqual(len(self.cache), 1)
