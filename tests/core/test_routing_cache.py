"""The Router's store-fact cache: fewer store round trips, never stale after an admin change."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from cgtwist.core.routing import Routing
from cgtwist.errors import MailError
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
    def test_concurrent_lookups_share_one_store_question(self):  # type: ignore[no-untyped-def]
        """Many recipients routed at once (a list's distribution) ask the store each fact
        once, not once per recipient before the first answer is cached; a failed question
        fails every waiter with it (and is asked again next time)."""
        slow: defer.Deferred[object] = defer.Deferred()
        real = self.store.get_account
        asked: list[str] = []

        def get_account(n, d):  # type: ignore[no-untyped-def]
            asked.append(n)
            return slow

        self.store.get_account = get_account  # type: ignore[method-assign]
        ds = [self.routing.route("alice@company.com", kind) for kind in ("mail",) * 50]
        self.assertEqual(asked, ["alice"])
        slow.callback(real("alice", "company.com").result)
        routes = yield defer.gatherResults(ds)
        self.assertEqual({str(r) for r in routes}, {"LOCAL(alice@company.com)alice@company.com"})
        failing: defer.Deferred[object] = defer.Deferred()
        self.store.get_account = lambda n, d: failing  # type: ignore[method-assign]
        ds = [self.routing.route("bob@company.com") for _ in range(3)]
        failing.errback(RuntimeError("store down"))
        for d in ds:
            self.failureResultOf(d, MailError)  # 451, as for one lookup
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

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

    @defer.inlineCallbacks
    def test_cached_route_never_outlives_its_facts(self):  # type: ignore[no-untyped-def]
        """A route computed late from an older cached fact expires with that fact: an account
        deleted behind the server's back stops receiving within one TTL, not two."""
        yield self.routing.route("alice@company.com")  # the account fact, cached at t=100
        self.now += Routing.FACT_TTL - 1
        route = yield self.routing.route("al@company.com")  # an alias of alice: same fact
        self.assertEqual(str(route), "LOCAL(alice@company.com)alice@company.com")
        self.store.accounts.discard("alice@company.com")
        self.now += 2  # past the fact's expiry, well within a TTL of the alias's route
        route = yield self.routing.route("al@company.com")
        self.assertEqual(route.module, "ERROR")

    @defer.inlineCallbacks
    def test_route_resolved_across_a_reload_is_not_kept(self):  # type: ignore[no-untyped-def]
        """A lookup that was in flight when cgtwist-admin changed the accounts does not leave
        its (old) answer behind for the next message."""
        slow: defer.Deferred[object] = defer.Deferred()
        real = self.store.get_account
        self.store.get_account = lambda n, d: slow  # type: ignore[method-assign]
        d = self.routing.route("carol@company.com")
        self.holder.replace(Settings())  # reload while the store is being asked
        self.store.get_account = real  # type: ignore[method-assign]
        slow.callback(None)
        self.assertEqual((yield d).module, "ERROR")
        self.store.accounts.add("carol@company.com")
        route = yield self.routing.route("carol@company.com")
        self.assertEqual(route.module, "LOCAL")
