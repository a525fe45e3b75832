"""Answers kept a few seconds in front of the store: one question per key at a time.

Owns the short cache the receiving and delivery paths keep so that a burst of mail to one
account asks the store once (the Router's facts, the account limits, RulesAllowed, stored
rule sets): an answer lives ``ttl`` seconds on the clock it is given (``now``, e.g. the
reactor's ``seconds``); at ``size`` keys the cache starts afresh;
``clear()`` (a settings reload) drops every answer. Concurrent askers of a key that is not
cached wait for the one question in flight instead of each asking the store; a question begun
before a ``clear()`` answers its askers but is not kept. A failed question is not kept either.
It knows nothing about what it keeps and does no I/O of its own.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Generic, Hashable, Optional, TypeVar

from twisted.internet.defer import Deferred

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Expiring(Generic[K, V]):
    """``await cache.fetch(key, ask)``: the kept answer for ``key``, else ``await ask()``."""

    def __init__(self, now: Callable[[], float], ttl: float, size: int = 10000) -> None:
        self._now = now
        self.ttl = ttl
        self.size = size
        self._entries: dict[K, tuple[float, V]] = {}
        self._flights: dict[K, list[Deferred[V]]] = {}
        self._generation = 0

    def clear(self) -> None:
        """Forget every answer; questions now in flight will not be kept."""
        self._entries.clear()
        self._flights.clear()
        self._generation += 1

    def stale(self, key: K) -> Optional[V]:
        """The last answer kept for ``key`` even if it expired (None: none kept), for an
        ``ask`` that can reuse work when the store's answer did not change."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def expires(self, key: K) -> Optional[float]:
        """When the answer kept for ``key`` expires (None: none kept), for a caller whose own
        derived answer must not outlive it."""
        entry = self._entries.get(key)
        return entry[0] if entry is not None else None

    def fresh(self, key: K) -> tuple[bool, Optional[V]]:
        """``(True, answer)`` when an answer for ``key`` is kept and not expired, else
        ``(False, None)``: for a caller that can go on at once, without a Deferred, only
        when every answer it needs is kept (the Router's facts in a burst of mail)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._now():
            return True, entry[1]
        return False, None

    async def fetch(self, key: K, ask: Callable[[], Awaitable[V]]) -> V:
        now = self._now()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        waiters = self._flights.get(key)
        if waiters is not None:
            waiter: Deferred[V] = Deferred()
            waiters.append(waiter)
            return await waiter
        generation = self._generation
        waiters = self._flights[key] = []
        try:
            value = await ask()
        except BaseException as e:
            self._land(key, waiters)
            for w in waiters:
                w.errback(e)
            raise
        self._land(key, waiters)
        if generation == self._generation:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key] = (now + self.ttl, value)
        for w in waiters:
            w.callback(value)
        return value

    def _land(self, key: K, waiters: list[Deferred[V]]) -> None:
        if self._flights.get(key) is waiters:
            del self._flights[key]

    def __len__(self) -> int:
        return len(self._entries)
