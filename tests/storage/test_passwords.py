"""Tests for cgtwist.storage.passwords: argon2id hashing off the reactor, bounded."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cgtwist.storage.passwords import PasswordHasher, generate_password
from tests.storage.dbcase import SpyArgon2


class FakeThreadPool:
    """Records jobs instead of running them, so the test decides when each one runs."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], Callable[..., Any], tuple[Any, ...]]] = []

    def callInThreadWithCallback(
        self, on_result: Callable[..., Any], fn: Callable[..., Any], *args: Any
    ) -> None:
        self.jobs.append((on_result, fn, args))

    def callFromThread(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)  # stands in for the reactor: results are delivered at once

    def run_one(self) -> None:
        on_result, fn, args = self.jobs.pop(0)
        on_result(True, fn(*args))


class PasswordHasherTests(unittest.TestCase):
    def setUp(self) -> None:
        self.hasher = PasswordHasher(reactor)

    async def test_owasp_parameters(self) -> None:
        """New hashes are argon2id PHC strings with m=19 MiB, t=2, p=1 (OWASP minimum)."""
        phc = await self.hasher.hash("correct horse")
        self.assertTrue(phc.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), phc)

    async def test_hash_is_not_the_password(self) -> None:
        """The stored hash never contains the password, and equal passwords hash differently."""
        a = await self.hasher.hash("SamePassword")
        b = await self.hasher.hash("SamePassword")
        self.assertNotEqual(a, b)
        self.assertNotIn("SamePassword", a)

    async def test_verify(self) -> None:
        """The right password verifies (str or UTF-8 bytes); a wrong one does not."""
        phc = await self.hasher.hash("pässword")
        self.assertTrue(await self.hasher.verify(phc, "pässword"))
        self.assertTrue(await self.hasher.verify(phc, "pässword".encode()))
        self.assertFalse(await self.hasher.verify(phc, "password"))
        self.assertFalse(await self.hasher.verify(phc, ""))

    async def test_missing_or_alien_hash_costs_a_verification(self) -> None:
        """No hash (unknown user) or an unknown scheme fails, after the same argon2 work."""
        spy = SpyArgon2(self.hasher)
        calls = spy.verified
        self.assertFalse(await self.hasher.verify(None, "x"))
        self.assertFalse(await self.hasher.verify("{SHA512-CRYPT}$6$abc$def", "x"))
        self.assertFalse(await self.hasher.verify("$argon2id$garbage", "x"))
        self.assertEqual(len(calls), 3)
        self.assertTrue(all(c.startswith("$argon2id$") for c in calls))

    async def test_sha512_crypt_costs_an_argon2_verification(self) -> None:
        """Imported SHA512-CRYPT hashes verify, are flagged for upgrade, and cost argon2 work."""
        stored = (
            "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIF"
            "NjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        )
        spy = SpyArgon2(self.hasher)
        self.assertTrue(await self.hasher.verify(stored, "Hello world!"))
        self.assertFalse(await self.hasher.verify(stored, "hello world!"))
        self.assertEqual(len(spy.verified), 2)
        self.assertTrue(self.hasher.needs_rehash(stored))
        self.assertTrue(self.hasher.is_supported_hash(stored))
        self.assertTrue(self.hasher.is_supported_hash(await self.hasher.hash("x")))
        self.assertFalse(self.hasher.is_supported_hash("$argon2id$v=19$junk"))
        self.assertFalse(self.hasher.is_supported_hash("secret"))

    async def test_needs_rehash(self) -> None:
        """Hashes made with weaker parameters or another scheme are flagged for upgrade."""
        weak = PasswordHasher(reactor, memory_kib=1024, time_cost=1)
        old = await weak.hash("pw")
        self.assertTrue(self.hasher.needs_rehash(old))
        self.assertTrue(await self.hasher.verify(old, "pw"))
        self.assertFalse(self.hasher.needs_rehash(await self.hasher.hash("pw")))
        self.assertTrue(self.hasher.needs_rehash("{SHA512-CRYPT}$6$x$y"))

    async def test_hashing_leaves_the_reactor_free(self) -> None:
        """50 concurrent verifications at full argon2id cost never stall the reactor
        (RELIABILITY b-G 42): a call scheduled after them runs while they are still running."""
        phc = await self.hasher.hash("right")
        done: list[bool] = []
        checks = [
            self.hasher.verify(phc, "right" if i % 2 else "wrong").addCallback(done.append)
            for i in range(50)
        ]
        seen: list[int] = []
        await task.deferLater(reactor, 0, lambda: seen.append(len(done)))
        await defer.gatherResults(checks)
        self.assertLess(seen[0], 50)
        self.assertEqual(done.count(True), 25)

    def test_runs_in_pool_with_a_limit(self) -> None:
        """Hashing is handed to the thread pool, at most ``concurrency`` jobs at a time."""
        pool = FakeThreadPool()
        hasher = PasswordHasher(
            pool,
            threadpool=pool,
            concurrency=2,  # type: ignore[arg-type]
            memory_kib=1024,
            time_cost=1,
        )
        ds = [hasher.hash(f"pw{i}") for i in range(5)]
        self.assertEqual(len(pool.jobs), 2)
        pool.run_one()
        self.assertEqual(len(pool.jobs), 2)  # the third started when the first finished
        while pool.jobs:
            pool.run_one()
        results = [self.successResultOf(d) for d in ds]
        self.assertEqual(len(set(results)), 5)
        self.assertTrue(all(r.startswith("$argon2id$") for r in results))

    def test_generated_passwords(self) -> None:
        """Generated passwords are long, random and free of look-alike characters."""
        pws = {generate_password() for _ in range(50)}
        self.assertEqual(len(pws), 50)
        for pw in pws:
            self.assertEqual(len(pw), 16)
            self.assertFalse(set(pw) & set("0O1lI"))
