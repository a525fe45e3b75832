"""Password hashing: argon2id PHC strings, computed off the reactor behind a concurrency limit.

Owns the hash parameters (OWASP: m=19 MiB, t=2, p=1), hashing, verification (also of imported
SHA512-CRYPT hashes, cgtwist.storage.shacrypt) and the decision that a stored hash must be
upgraded. Never logs or returns a plaintext password. Each hash costs
~19 MiB and tens of milliseconds of CPU, so at most ``concurrency`` run at once (memory bounded
at concurrency x 19 MiB), on a thread pool that is passed in. With a ``CredentialCache``
(cgtwist.storage.credcache) a password that verified against the same stored hash a moment ago
is accepted without running argon2 again; only successes are remembered.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Callable, Optional, TypeVar, Union

from argon2 import PasswordHasher as _Argon2
from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet.defer import Deferred, DeferredSemaphore, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from cgtwist.storage import shacrypt
from cgtwist.storage.credcache import CredentialCache

T = TypeVar("T")

# RELIABILITY.md a-table "Passwords": OWASP minimum for argon2id.
MEMORY_KIB = 19456
TIME_COST = 2
PARALLELISM = 1

# Characters of generated passwords: no look-alikes (0/O, 1/l/I).
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def generate_password(length: int = 16) -> str:
    """A random password for generated accounts (about 94 bits at the default length)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


class PasswordHasher:
    """Hash and verify passwords in threads; every method returns a Deferred.

    ``reactor`` and ``threadpool`` are the reactor and the pool to run on (the reactor's own
    pool by default); ``concurrency`` caps the hashes running at once (size it to the cores:
    more only queue up in the kernel). ``cache`` remembers recent successful verifications.
    ``memory_kib``/``time_cost`` exist for tests only; production uses the OWASP values, and
    hashes weaker than those are reported by ``needs_rehash``.
    """

    def __init__(
        self,
        reactor: Any,
        threadpool: Optional[ThreadPool] = None,
        concurrency: Optional[int] = None,
        memory_kib: int = MEMORY_KIB,
        time_cost: int = TIME_COST,
        cache: Optional[CredentialCache] = None,
    ) -> None:
        self._reactor = reactor
        self._cache = cache
        self._threadpool = threadpool
        self._sem = DeferredSemaphore(concurrency or 2 * (os.cpu_count() or 1))
        self._hasher = _Argon2(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=PARALLELISM,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._dummy: Optional[str] = None

    # The synchronous core; each runs on a pool thread.

    def hash_sync(self, password: Union[str, bytes]) -> str:
        """The PHC string ``$argon2id$v=19$m=19456,t=2,p=1$salt$hash`` for ``password``."""
        return self._hasher.hash(password)

    def verify_sync(self, stored: Optional[str], password: Union[str, bytes]) -> bool:
        """True when ``password`` matches ``stored``; a missing or alien hash never matches.

        Without a stored hash (unknown user, service account) a dummy hash is verified, so the
        cost is the same as for a wrong password (RELIABILITY.md b-G 40: no user enumeration).
        """
        if stored and shacrypt.is_sha512_crypt(stored):
            ok = shacrypt.verify(stored, password)
            self._verify_dummy(password)  # never cheaper than argon2: no enumeration by time
            return ok
        if not stored or not stored.startswith("$argon2"):
            self._verify_dummy(password)
            return False
        try:
            return bool(self._hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _verify_dummy(self, password: Union[str, bytes]) -> None:
        if self._dummy is None:
            self._dummy = self._hasher.hash(generate_password(24))
        try:
            self._hasher.verify(self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            pass

    @staticmethod
    def is_supported_hash(stored: str) -> bool:
        """True for hashes that can be stored as they are (an import from another server):
        argon2id PHC strings and SHA512-CRYPT (``$6$``, optionally ``{SHA512-CRYPT}``)."""
        if shacrypt.is_sha512_crypt(stored):
            return True
        if not stored.startswith("$argon2id$"):
            return False
        try:
            extract_parameters(stored)
        except (InvalidHashError, ValueError):
            return False
        return True

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with other (older, weaker) parameters or scheme."""
        if not stored.startswith("$argon2"):
            return True
        try:
            return bool(self._hasher.check_needs_rehash(stored))
        except (InvalidHashError, ValueError):
            return True

    # The asynchronous API used by the store.

    def _run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        pool = self._threadpool or self._reactor.getThreadPool()
        return self._sem.run(deferToThreadPool, self._reactor, pool, fn, *args)

    def hash(self, password: Union[str, bytes]) -> Deferred[str]:
        """Fire with the PHC string for ``password``, computed off the reactor."""
        return self._run(self.hash_sync, password)

    def verify(self, stored: Optional[str], password: Union[str, bytes]) -> Deferred[bool]:
        """Fire with True when ``password`` matches ``stored`` (None: dummy work, False); from
        the cache, without a thread, when it verified against ``stored`` within the TTL."""
        cache = self._cache
        if cache is None:
            return self._run(self.verify_sync, stored, password)
        if cache.verified(stored, password):
            return succeed(True)

        def remember(ok: bool) -> bool:
            if ok:
                cache.add(stored, password)
            return ok

        return self._run(self.verify_sync, stored, password).addCallback(remember)
