"""Tests for cgtwist.storage.credcache and the hasher and store behind it: a repeat login with
the same password skips argon2, a changed password or a disabled account is refused at once,
and wrong passwords never reach the cache."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task
from twisted.trial import unittest

from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.credcache import CredentialCache
from cgtwist.storage.passwords import PasswordHasher
from tests.storage.dbcase import DatabaseCase, SpyArgon2

STORED = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def holder(**values: Any) -> SettingsHolder:
    return SettingsHolder(Settings({f"auth.{k}": v for k, v in values.items()}))


class CredentialCacheTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.settings = holder(credential_cache_ttl=60, credential_cache_size=3)
        self.cache = CredentialCache(self.settings, self.clock)

    def test_remembers_what_was_added(self) -> None:
        """A pair added is found again; another password or another stored hash is not."""
        self.cache.add(STORED, "right")
        self.assertTrue(self.cache.verified(STORED, "right"))
        self.assertTrue(self.cache.verified(STORED, b"right"))
        self.assertFalse(self.cache.verified(STORED, "Right"))
        self.assertFalse(self.cache.verified(STORED + "x", "right"))
        self.assertFalse(self.cache.verified(None, "right"))

    def test_expires_after_the_ttl_from_the_verification(self) -> None:
        """An entry lasts the TTL from when it was added; hits do not extend it."""
        self.cache.add(STORED, "pw")
        self.clock.advance(59)
        self.assertTrue(self.cache.verified(STORED, "pw"))
        self.clock.advance(1)
        self.assertFalse(self.cache.verified(STORED, "pw"))
        self.assertEqual(len(self.cache), 0)

    def test_bounded_least_recently_used_first(self) -> None:
        """At most credential_cache_size entries; the one used least recently goes first."""
        for i in range(3):
            self.cache.add(STORED, f"pw{i}")
        self.assertTrue(self.cache.verified(STORED, "pw0"))  # now the most recent
        self.cache.add(STORED, "pw3")
        self.assertEqual(len(self.cache), 3)
        self.assertFalse(self.cache.verified(STORED, "pw1"))
        for pw in ("pw0", "pw2", "pw3"):
            self.assertTrue(self.cache.verified(STORED, pw), pw)

    def test_off_when_ttl_or_size_is_zero(self) -> None:
        """A TTL or a size of 0 turns the cache off: nothing is remembered."""
        for values in ({"credential_cache_ttl": 0}, {"credential_cache_size": 0}):
            cache = CredentialCache(holder(**values), self.clock)
            cache.add(STORED, "pw")
            self.assertFalse(cache.verified(STORED, "pw"), values)

    def test_clear(self) -> None:
        self.cache.add(STORED, "pw")
        self.cache.clear()
        self.assertFalse(self.cache.verified(STORED, "pw"))

    def test_keeps_no_password(self) -> None:
        """Entries are keyed digests: neither the password nor the stored hash is kept."""
        self.cache.add(STORED, "hunter2-secret")
        for digest in self.cache._entries:
            self.assertEqual(len(digest), 32)
            self.assertNotIn(b"hunter2", digest)

    def test_key_differs_per_process(self) -> None:
        """Another cache (another process) has its own key: its digests are not ours."""
        other = CredentialCache(self.settings, self.clock)
        self.cache.add(STORED, "pw")
        other.add(STORED, "pw")
        self.assertNotEqual(set(self.cache._entries), set(other._entries))


class CachedLoginTests(DatabaseCase):
    """The store's verify_password with a cached hasher, on a real database."""

    async def open_cached(self) -> tuple[Any, SpyArgon2, task.Clock]:
        clock = task.Clock()
        cache = CredentialCache(holder(credential_cache_ttl=300), clock)
        hasher = PasswordHasher(reactor, memory_kib=64, time_cost=1, cache=cache)
        store = await self.open_store(hasher=hasher)
        await store.add_domain("example.com")
        await store.add_account("alice", "example.com", "right")
        return store, SpyArgon2(hasher), clock

    async def test_cached_login_accepted_without_argon2(self) -> None:
        """The second login with the same password is accepted without a hash verification,
        with the same account; after the TTL it is verified again."""
        store, spy, clock = await self.open_cached()
        first = await store.verify_password("alice", "example.com", "right")
        self.assertEqual(len(spy.verified), 1)
        second = await store.verify_password("alice", "example.com", "right")
        self.assertEqual(second.address, first.address)
        self.assertEqual(len(spy.verified), 1)
        clock.advance(300)
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "right"))
        self.assertEqual(len(spy.verified), 2)

    async def test_changed_password_refused_at_once(self) -> None:
        """After a password change the cached old password is refused on the next login, and
        the new one works; no reload or invalidation is needed."""
        store, _spy, _clock = await self.open_cached()
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "right"))
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "right"))
        await store.set_password("alice", "example.com", "new")
        self.assertIsNone(await store.verify_password("alice", "example.com", "right"))
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "new"))

    async def test_disabled_account_refused_at_once(self) -> None:
        """A cached password does not let a disabled account (or domain) in."""
        store, _spy, _clock = await self.open_cached()
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "right"))
        await store.update_account("alice", "example.com", enabled=False)
        self.assertIsNone(await store.verify_password("alice", "example.com", "right"))
        await store.update_account("alice", "example.com", enabled=True)
        await store.update_domain("example.com", enabled=False)
        self.assertIsNone(await store.verify_password("alice", "example.com", "right"))

    async def test_wrong_passwords_never_hit_the_cache(self) -> None:
        """Each wrong password costs a full verification, before and after a right one, and
        is never remembered as right."""
        store, spy, _clock = await self.open_cached()
        for _ in range(2):
            self.assertIsNone(await store.verify_password("alice", "example.com", "wrong"))
        self.assertIsNotNone(await store.verify_password("alice", "example.com", "right"))
        before = len(spy.verified)
        for _ in range(2):
            self.assertIsNone(await store.verify_password("alice", "example.com", "wrong"))
        self.assertEqual(len(spy.verified) - before, 2)
