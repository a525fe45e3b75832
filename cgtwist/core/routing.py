"""The routing service: runs the pure Router (cgtwist.router) with facts from the account store.

Owns answering the Router's questions (is the domain ours, does the account, list or alias
exist) from an IAccountStore and the list store, and reading the table from the live settings at each call, so a table stored
with ``cgtwist-admin router set`` applies to the next address. It decides nothing itself.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from twisted.internet import defer
from zope.interface import implementer

from cgtwist import router
from cgtwist.core.expiring import Expiring
from cgtwist.errors import InvalidName, MailError, NotFound, StoreUnavailable, temporary
from cgtwist.interfaces import IAccountStore, IRouter
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder
from cgtwist.types import Route

# RFC 5321 §4.2.2/§4.2.3: 550 mailbox unavailable, 554 transaction failed (the loop).
_REPLY_CODES = {"5.4.6": 554}


def route_error(route: Route) -> MailError:
    """The MailError a protocol should reply for an ERROR route (550/554, or 451 for 4.x.x)."""
    status, _sep, text = route.error.partition(" ")
    if status[:1] not in ("4", "5"):
        status, text = "5.1.1", route.error or "address rejected"
    code = _REPLY_CODES.get(status, 451 if status.startswith("4") else 550)
    return MailError(code, status, text or "address rejected")


@implementer(IRouter)
class Routing:
    """IRouter over the store: ``route(address, kind)`` fires with a Route.

    The table text is the dynamic setting ``router.table``; ``router.max_hops`` (when an
    administrator set it) overrides ``max_hops``. A stored table that does not parse is logged
    and fails every route with 451 4.3.5 rather than routing without it.
    """

    log = Logger()

    # Store facts (domain is local, account exists, alias target) are cached briefly: every
    # message asks the same questions at RCPT and again when it is queued. The cache is
    # dropped whenever the settings are reloaded, which cgtwist-admin triggers after every
    # change, so an account added or removed with the CLI is seen at once; the TTL bounds
    # staleness for changes made behind the server's back (another node on PostgreSQL).
    FACT_TTL = 5.0
    FACT_CACHE_MAX = 10000

    def __init__(
        self,
        store: IAccountStore,
        settings: SettingsHolder,
        main_domain: str,
        max_hops: int = router.DEFAULT_MAX_HOPS,
        now: Callable[[], float] = time.monotonic,
        lists: Any = None,
    ) -> None:
        self.store: Any = store  # Any: it also has resolve_group, which IAccountStore lacks
        self.lists: Any = lists  # cgtwist.storage.lists.ListStore; None: no lists
        self.settings = settings
        self.main_domain = main_domain
        self.max_hops = max_hops
        self._parsed: tuple[str, Optional[router.Table], str] = ("", router.Table(), "")
        self._now = now
        self._facts: Expiring[router.Query, Any] = Expiring(now, self.FACT_TTL, self.FACT_CACHE_MAX)
        # Whole routes, valid while every fact they were computed from is: each message is
        # routed at RCPT and again when queued, and a burst goes to the same few addresses.
        self._routes: dict[tuple[str, str], tuple[float, Any, int, Route]] = {}
        self._generation = 0  # bumped by forget(): a resolution begun before is not kept
        settings.subscribe(lambda _s: self.forget())

    def forget(self) -> None:
        """Drop every cached store fact and route (called on each settings reload)."""
        self._facts.clear()
        self._routes.clear()
        self._generation += 1

    def table(self) -> router.Table:
        """The current table, parsed once per distinct text; raises MailError 451 if bad."""
        current = self.settings.current
        problem = current.problems.get("router.table")
        if problem is not None:
            # The stored table does not parse: routing without it could send mail wrongly.
            raise MailError(451, "4.3.5", "Routing temporarily unavailable", problem)
        text = current.router.table
        if text != self._parsed[0]:
            try:
                self._parsed = (text, router.parse_table(text), "")
            except router.RouterParseError as e:
                self.log.error("router table in the store is invalid: {error}", error=str(e))
                self._parsed = (text, None, str(e))
        table = self._parsed[1]
        if table is None:
            raise MailError(451, "4.3.5", "Routing temporarily unavailable", self._parsed[2])
        return table

    def _max_hops(self) -> int:
        current = self.settings.current
        return current.router.max_hops if "router.max_hops" in current.overrides else self.max_hops

    def is_local_domain(self, domain: str) -> defer.Deferred[bool]:
        """Is ``domain`` one of ours (or the main domain)? Answered from the fact cache."""

        async def ask() -> bool:
            if domain.lower().rstrip(".") == self.main_domain:
                return True
            return bool(await self._answer(router.DomainQuery(domain.lower().rstrip("."))))

        return defer.ensureDeferred(ask())

    def explain(self, address: str, kind: str = "mail") -> defer.Deferred[router.Resolution]:
        """Fire with the full Resolution (route plus every step) for ``router test``."""
        return defer.ensureDeferred(self._resolve(address, kind))

    def route(self, address: str, kind: str = "mail") -> defer.Deferred[Route]:
        """IRouter.route: fire with the Route; errback MailError (451) on store trouble."""
        key = (address, kind)
        hit = self._routes.get(key)
        if (
            hit is not None
            and hit[0] > self._now()
            and hit[1] is self.settings.current.router.table
            and hit[2] == self._max_hops()
        ):
            return defer.succeed(hit[3])
        route = self._route_now(address, kind)
        if route is not None:
            return defer.succeed(route)
        return defer.ensureDeferred(self._route(address, kind))

    def _route_now(self, address: str, kind: str) -> Optional[Route]:
        """The route at once when every store fact it needs is kept, else None (and the
        coroutine asks the store). A list's 10,000 subscribers in 100 domains ask the same
        100 facts: driving the Router without a coroutine, a Deferred and a fact fetch per
        address made routing them a fraction of its cost. Anything unusual (the table does
        not parse, a bad ``kind``) also goes the coroutine's way, which reports it."""
        text = self.settings.current.router.table
        hops, generation = self._max_hops(), self._generation
        expires = self._now() + self.FACT_TTL
        try:
            gen = router.resolve(self.table(), address, self.main_domain, kind, hops)
            answer: object = None
            while True:
                query = gen.send(answer)
                kept, answer = self._facts.fresh(query)
                if not kept:
                    gen.close()
                    return None
                expires = min(expires, self._facts.expires(query) or expires)
        except StopIteration as stop:
            result: router.Resolution = stop.value
        except Exception:
            return None
        self.log.debug(
            "routed {address} ({kind}) to {route}",
            address=address,
            kind=kind,
            route=str(result.route),
        )
        self._keep(address, kind, generation, expires, text, hops, result.route)
        return result.route

    async def _route(self, address: str, kind: str) -> Route:
        text = self.settings.current.router.table
        hops, generation = self._max_hops(), self._generation
        expiries: list[float] = [self._now() + self.FACT_TTL]
        route = (await self._resolve(address, kind, expiries)).route
        self._keep(address, kind, generation, min(expiries), text, hops, route)
        return route

    def _keep(
        self,
        address: str,
        kind: str,
        generation: int,
        expires: float,
        text: str,
        hops: int,
        route: Route,
    ) -> None:
        """Keep a route until its first fact expires, unless the facts were dropped since
        its resolution began (``forget``)."""
        if generation == self._generation:
            if len(self._routes) >= self.FACT_CACHE_MAX:
                self._routes.clear()
            self._routes[(address, kind)] = (expires, text, hops, route)

    async def _resolve(
        self, address: str, kind: str, expiries: Optional[list[float]] = None
    ) -> router.Resolution:
        """Run the Router; the expiry of every fact it used is appended to ``expiries``."""
        gen = router.resolve(self.table(), address, self.main_domain, kind, self._max_hops())
        answer: Any = None
        while True:
            try:
                query = gen.send(answer)
            except StopIteration as stop:
                result: router.Resolution = stop.value
                break
            try:
                answer = await self._answer(query, expiries)
            except MailError:
                raise
            except StoreUnavailable as e:  # the store logged why; one line per refusal here
                self.log.warn("routing {address}: {err}", address=address, err=str(e))
                raise temporary(detail=f"routing {address!r}") from None
            except Exception:
                self.log.failure(
                    "routing {address}: store lookup {query} failed",
                    address=address,
                    query=repr(query),
                )
                raise temporary(detail=f"routing {address!r}") from None
        self.log.debug(
            "routed {address} ({kind}) to {route}",
            address=address,
            kind=kind,
            route=str(result.route),
        )
        return result

    async def _answer(self, query: router.Query, expiries: Optional[list[float]] = None) -> Any:
        """The store's answer to ``query``, kept FACT_TTL seconds. One store question at a
        time per fact: a list's 10,000 recipients in 100 domains, routed together, would ask
        "is d001.bench ours" 100 times each before the first answer could be kept; they wait
        for the one question in flight (cgtwist.core.expiring)."""
        answer = await self._facts.fetch(query, lambda: self._ask_store(query))
        expires = self._facts.expires(query)
        if expiries is not None and expires is not None:
            expiries.append(expires)
        return answer

    async def _ask_store(self, query: router.Query) -> Any:
        if isinstance(query, router.DomainQuery):
            return bool(await self.store.is_local_domain(query.domain))
        try:
            if isinstance(query, router.AccountQuery):
                account = await self.store.get_account(query.local, query.domain)
                return account.address if account is not None else None
            if isinstance(query, router.ListQuery):
                if self.lists is None:
                    return None
                return await self.lists.find_list(query.local, query.domain)
            if isinstance(query, router.GroupQuery):
                return await self.store.resolve_group(query.local, query.domain)
            target = await self.store.resolve_alias(query.local, query.domain)
            return target or None
        except (InvalidName, NotFound):  # a name the store cannot hold is no account
            return None
