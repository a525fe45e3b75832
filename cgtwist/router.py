"""The Router: decide each address's route from the table and the store's facts.

Pure: no I/O, no twisted.internet. Facts that live in the store (is this domain ours, is there
such an account or alias) are asked for by *yielding* a query from the ``resolve`` generator;
cgtwist.core.routing answers them from the store, tests answer them from ``StaticFacts``.
Semantics follow COMMUNIGATE.md a.1 and a.2; the points marked [D] there are our specification.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Generator, Mapping, Union

from cgtwist.router_address import (
    BAD_DOMAIN,
    BAD_PROGRAM,
    BAD_SYNTAX,
    LOOP,
    MAX_ADDRESS,
    NOT_LOCAL,
    PIPE_DOMAIN,
    REJECTED,
    UNKNOWN_USER,
    AddressError,
    _complex_inner,
    _lower,
    _unquote,
    normalize_domain,
    pipe_command,
    split_address,
)
from cgtwist.router_table import Record, RouterParseError, Table, parse_record, parse_table
from cgtwist.types import Route

KINDS = ("mail", "access", "signal")
DEFAULT_MAX_HOPS = 10
_ENHANCED_RE = re.compile(r"^[45]\.\d{1,3}\.\d{1,3}(\s|$)")
# route() calls per resolution: bounds NoRelay back-tracking, restarts and the generator depth.
_MAX_WORK = 200

# The table parser and the address analysis live in cgtwist.router_table and
# cgtwist.router_address; their names are part of this module's interface too.
__all__ = [
    "BAD_DOMAIN",
    "BAD_PROGRAM",
    "BAD_SYNTAX",
    "DEFAULT_MAX_HOPS",
    "KINDS",
    "LOOP",
    "MAX_ADDRESS",
    "NOT_LOCAL",
    "PIPE_DOMAIN",
    "REJECTED",
    "UNKNOWN_USER",
    "AccountQuery",
    "AddressError",
    "AliasQuery",
    "DomainQuery",
    "Group",
    "GroupQuery",
    "ListQuery",
    "Query",
    "Record",
    "Resolution",
    "RouteStep",
    "RouterParseError",
    "StaticFacts",
    "Table",
    "error_route",
    "normalize_domain",
    "parse_record",
    "parse_table",
    "pipe_command",
    "resolve",
    "resolve_with",
    "split_address",
]

# --- routing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainQuery:
    """Ask: is ``domain`` one of ours (or a domain alias)? Answer: bool."""

    domain: str


@dataclass(frozen=True)
class AccountQuery:
    """Ask: does account ``local@domain`` exist? Answer: its canonical address (str) or None."""

    local: str
    domain: str


@dataclass(frozen=True)
class AliasQuery:
    """Ask: is ``local@domain`` an alias? Answer: the target address (str) or None."""

    local: str
    domain: str


@dataclass(frozen=True)
class ListQuery:
    """Ask: is ``local@domain`` an address of a mailing list (the list itself or one of its
    role addresses, cgtwist.lists.addresses)? Answer: the list's ``name@domain`` or None."""

    local: str
    domain: str


@dataclass(frozen=True)
class GroupQuery:
    """Ask: is ``local@domain`` a Forwarder or a Group? Answer: its ``Group`` or None."""

    local: str
    domain: str


@dataclass(frozen=True)
class Group:
    """A Forwarder (``kind`` "forwarder": mail goes on to ``targets``, accepted from anyone)
    or a Group ("group": a copy to each member) as the store keeps it."""

    kind: str
    targets: tuple[str, ...]


Query = Union[DomainQuery, AccountQuery, AliasQuery, ListQuery, GroupQuery]


@dataclass(frozen=True)
class RouteStep:
    """One line of the routing trace, as ``cgtwist-admin router test`` prints it.

    ``action``: qualify, record, skipped (a NoRelay record whose result was not local),
    restart (main-domain restart on the local part), alias, access, route (the final route).
    """

    action: str
    address: str
    result: str
    line: int = 0
    record: str = ""
    note: str = ""

    def __str__(self) -> str:
        if self.action in ("record", "skipped"):
            text = f"line {self.line}: {self.record}: {self.address} -> {self.result}"
        else:
            text = f"{self.action}: {self.address} -> {self.result}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Resolution:
    """The outcome of routing one address: the final Route, the trace, the re-routings used."""

    route: Route
    steps: tuple[RouteStep, ...]
    hops: int = 0


RouteGen = Generator[Query, Any, Resolution]


def error_route(address: str, status: str) -> Route:
    return Route(module="ERROR", queue="", address=address, error=status)


def _error_text(right: str) -> str:
    text = right[len("error") :].lstrip(":").strip()
    if not text:
        return REJECTED
    return text if _ENHANCED_RE.match(text) else f"5.1.1 {text}"


class _Resolver:
    def __init__(self, table: Table, main_domain: str, kind: str, max_hops: int) -> None:
        self.records = table.records
        self.main = normalize_domain(main_domain)
        self.kind = kind
        self.max_hops = max_hops
        self.work = 0

    def _done(self, steps: list[RouteStep], route: Route, hops: int, address: str) -> Resolution:
        steps.append(
            RouteStep("route", address, str(route) + (f" {route.error}" if route.error else ""))
        )
        return Resolution(route, tuple(steps), hops)

    def route(self, text: str, hops: int, trusted: bool) -> RouteGen:
        """Route ``text`` after ``hops`` re-routings; ``trusted``: produced by a record or alias."""
        steps: list[RouteStep] = []
        self.work += 1
        if self.work > _MAX_WORK:
            return self._done(steps, error_route(text, LOOP), hops, text)
        try:
            local, domain = split_address(text)
        except AddressError as e:
            return self._done(steps, error_route(text, e.status), hops, text)
        if not domain:  # a name without a domain is in the main domain (a.2)
            domain = self.main
            steps.append(RouteStep("qualify", text, f"{local}@{domain}"))
        address = f"{local}@{domain}"
        for rec in self.records:
            if not rec.applies_to(self.kind):
                continue
            new = rec.match(address, self.main)
            if new is None:
                continue
            step = RouteStep("record", address, new, rec.line, rec.render())
            if rec.target == "error":
                sub = self._done([], error_route(address, _error_text(new)), hops, address)
            elif rec.target == "null":
                sub = self._done([], Route("NULL", "", address), hops, address)
            elif hops >= self.max_hops:
                sub = self._done([], error_route(address, LOOP), hops, address)
            else:
                new = local + new if rec.target == "domain" else new
                step = replace(step, result=new)
                sub = yield from self.route(new, hops + 1, trusted=True)
            if rec.norelay and sub.route.module == "SMTP":  # NoRelay: only if the result is local
                steps.append(
                    replace(
                        step,
                        action="skipped",
                        result=str(sub.route),
                        note="NoRelay: result not local",
                    )
                )
                continue
            route = replace(sub.route, relay=True) if rec.relays else sub.route
            return Resolution(route, (*steps, step, *sub.steps), sub.hops)
        return (yield from self._analyse(local, domain, hops, trusted, steps))

    def _group(self, address: str, group: Group, hops: int, steps: list[RouteStep]) -> RouteGen:
        """A Forwarder with one target is routed on to it, and that route relays whoever sent
        the message (the name is ours, like an account's); a Group, or a Forwarder with more
        than one target, is the GROUP module, which sends a copy to each."""
        if hops >= self.max_hops:
            return self._done(steps, error_route(address, LOOP), hops, address)
        if group.kind == "forwarder" and len(group.targets) == 1:
            steps.append(RouteStep("forwarder", address, group.targets[0]))
            sub = yield from self.route(group.targets[0], hops + 1, trusted=True)
            route = replace(sub.route, relay=True) if sub.route.module == "SMTP" else sub.route
            return Resolution(route, (*steps, *sub.steps), sub.hops)
        steps.append(RouteStep(group.kind, address, ", ".join(group.targets)))
        return self._done(steps, Route("GROUP", address, address), hops, address)

    def _analyse(
        self, local: str, domain: str, hops: int, trusted: bool, steps: list[RouteStep]
    ) -> RouteGen:
        """No record matched: main-domain restart, special domains, then the store's facts."""
        address = f"{local}@{domain}"
        if domain == self.main:  # main-domain restart on a complex local part (a.1)
            inner = _complex_inner(local)
            if inner is not None:
                steps.append(RouteStep("restart", address, inner, note="main domain"))
                sub = yield from self.route(inner, hops, trusted)
                return Resolution(sub.route, (*steps, *sub.steps), sub.hops)
        if domain == PIPE_DOMAIN and trusted:  # only a table record or an alias can reach PIPE [D]
            try:
                argv = pipe_command(address)
            except ValueError:
                return self._done(steps, error_route(address, BAD_PROGRAM), hops, address)
            return self._done(steps, Route("PIPE", argv[0], address), hops, address)
        if domain.startswith("["):  # user@[1.2.3.4]: SMTP to that IP, no MX lookup
            return self._done(steps, Route("SMTP", domain, address), hops, address)
        is_local = domain == self.main or (yield DomainQuery(domain))  # main: always ours
        if not is_local:
            return self._done(steps, Route("SMTP", domain, address), hops, address)
        account = yield AccountQuery(_unquote(local), domain)
        if account:
            return self._done(steps, Route("LOCAL", account, account), hops, address)
        mailing_list = yield ListQuery(_unquote(local), domain)
        if mailing_list:  # LIST(list@domain); the address keeps the role (-on, -bounce+...)
            return self._done(steps, Route("LIST", mailing_list, address), hops, address)
        target = yield AliasQuery(_unquote(local), domain)
        if not target:
            group = yield GroupQuery(_unquote(local), domain)
            if not group:
                return self._done(steps, error_route(address, UNKNOWN_USER), hops, address)
            return (yield from self._group(address, group, hops, steps))
        if hops >= self.max_hops:
            return self._done(steps, error_route(address, LOOP), hops, address)
        steps.append(RouteStep("alias", address, target))
        sub = yield from self.route(target, hops + 1, trusted=True)
        return Resolution(sub.route, (*steps, *sub.steps), sub.hops)


def resolve(
    table: Table,
    address: str,
    main_domain: str,
    kind: str = "mail",
    max_hops: int = DEFAULT_MAX_HOPS,
) -> RouteGen:
    """Route ``address``: a generator that yields Queries and returns a Resolution.

    The driver sends each query's answer back in (see ``resolve_with``). Records are tried top
    to bottom for this ``kind`` ("mail", "access" or "signal"); a rewritten address is routed
    again from the top; more than ``max_hops`` re-routings give ERROR 5.4.6. For "access" any
    result but LOCAL becomes ERROR 5.7.8, so an alias works for login but nothing else does.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    result = yield from _Resolver(table, main_domain, kind, max_hops).route(
        address, 0, trusted=False
    )
    if kind == "access" and result.route.module not in ("LOCAL", "ERROR"):
        route = error_route(result.route.address, NOT_LOCAL)
        step = RouteStep(
            "access", result.route.address, str(route), note="login names route only to accounts"
        )
        return Resolution(route, (*result.steps, step), result.hops)
    return result


@dataclass
class StaticFacts:
    """Answers routing queries from dicts: the reference for how a store must answer them."""

    domains: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()  # "name@domain", lower-case
    aliases: Mapping[str, str] = field(default_factory=dict)  # "name@domain" -> target
    lists: Mapping[str, str] = field(default_factory=dict)  # "name-on@domain" -> list address
    groups: Mapping[str, Group] = field(default_factory=dict)  # "name@domain" -> Group

    def answer(self, query: Query) -> Any:
        if isinstance(query, DomainQuery):
            return query.domain in self.domains
        key = f"{_lower(query.local)}@{query.domain}"
        if isinstance(query, AccountQuery):
            return key if key in self.accounts else None
        if isinstance(query, ListQuery):
            return self.lists.get(key)
        if isinstance(query, GroupQuery):
            return self.groups.get(key)
        return self.aliases.get(key)


def resolve_with(
    facts: StaticFacts,
    table: Table,
    address: str,
    main_domain: str,
    kind: str = "mail",
    max_hops: int = DEFAULT_MAX_HOPS,
) -> Resolution:
    """Drive ``resolve`` synchronously with ``facts`` (tests, dry runs)."""
    gen = resolve(table, address, main_domain, kind, max_hops)
    answer: Any = None
    while True:
        try:
            query = gen.send(answer)
        except StopIteration as stop:
            result: Resolution = stop.value
            return result
        answer = facts.answer(query)
