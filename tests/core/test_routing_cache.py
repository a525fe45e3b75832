"""The Router's store-fact cache: fewer store round trips, never stale after an admin change."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from cgtwist.core.routing import Routing
from cgtwist.settings import Settings, SettingsHolder
from tests.core.test_routing import FakeStore


class CountingStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def get_account(self, name, domain):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().get_account(name, domain)


class RoutingCacheTests(unittest.TestCase):
    def setUp(self) -> None:
        self.store = CountingStore()
        self.now = 100.0
        self.holder = SettingsHolder()
        self.routing = Routing(self.store, self.holder, "company.com", now=lambda: self.now)

    @defer.inlineCallbacks
    def test_repeated_lookups_hit_the_store_once(self):  # type: ignore[no-untyped-def]
        """RCPT and queueing ask the same question; the store is asked once within the TTL."""
        first = yield self.routing.route("alice@company.com")
        second = yield self.routing.route("alice@company.com")
        self.assertEqual(first, second)
        self.assertEqual(first.module, "LOCAL")
        self.assertEqual(self.store.calls, 1)
        self.now += Routing.FACT_TTL + 1
        yield self.routing.route("alice@company.com")
        self.assertEqual(self.store.calls, 2)

    @defer.inlineCallbacks
    def test_settings_reload_forgets_facts(self):  # type: ignore[no-untyped-def]
        """An account added with cgtwist-admin (which reloads settings) is routable at once."""
        route = yield self.routing.route("newbie@company.com")
        self.assertEqual(route.module, "ERROR")
        self.store.accounts.add("newbie@company.com")
        self.holder.replace(Settings())
        route = yield self.routing.route("newbie@company.com")
        self.assertEqual(route.module, "LOCAL")

    @defer.inlineCallbacks
    def test_is_local_domain(self):  # type: ignore[no-untyped-def]
        """The protection checks ask whether a sender's domain is ours without DNS."""
        self.assertTrue((yield self.routing.is_local_domain("company.com")))
        self.assertTrue((yield self.routing.is_local_domain("Other.Dom.")))
        self.assertFalse((yield self.routing.is_local_domain("elsewhere.test")))
