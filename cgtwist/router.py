"""The Router: parse the routing table, analyse addresses, and decide each address's route.

Pure: no I/O, no twisted.internet. Facts that live in the store (is this domain ours, is there
such an account or alias) are asked for by *yielding* a query from the ``resolve`` generator;
cgtwist.core.routing answers them from the store, tests answer them from ``StaticFacts``.
Semantics follow COMMUNIGATE.md a.1 and a.2; the points marked [D] there are our specification.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Generator, Iterator, Mapping, Optional, Union

from cgtwist.types import Route

KINDS = ("mail", "access", "signal")
DEFAULT_MAX_HOPS = 10
PIPE_DOMAIN = "pipe"

# The error texts of ERROR routes: RFC 3463 enhanced code, then generic text.
LOOP = "5.4.6 routing loop detected"
UNKNOWN_USER = "5.1.1 unknown user"
REJECTED = "5.1.1 address rejected"
BAD_SYNTAX = "5.1.3 bad address syntax"
BAD_DOMAIN = "5.1.2 bad destination domain"
BAD_PROGRAM = "5.1.3 invalid PIPE program name"
NOT_LOCAL = "5.7.8 not a local account"

_RELAY_PREFIXES = {"relay": "Relay", "relayall": "RelayAll", "norelay": "NoRelay"}
_KIND_PREFIXES = {"mail": "Mail", "access": "Access", "signal": "Signal"}
_PREFIX_RE = re.compile(r"([A-Za-z]+)\s*:\s*")
_ENHANCED_RE = re.compile(r"^[45]\.\d{1,3}\.\d{1,3}(\s|$)")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# LDH labels (RFC 1035 §2.3.1) plus "_", which real host names carry and cgtwist.address accepts.
_LABEL_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# route() calls per resolution: bounds NoRelay back-tracking, restarts and the generator depth.
_MAX_WORK = 200
# Longest address analysed: RFC 5321 §4.5.3.1.3 allows 256 octets in a path; login names and
# rewritten addresses get some room, attacker-sized strings none.
MAX_ADDRESS = 1024


def _lower(text: str) -> str:
    """ASCII-only lower-casing: keeps the length, so wildcard offsets stay valid."""
    return text.translate(_ASCII_LOWER)


class RouterParseError(ValueError):
    """A bad Router table; ``line`` is the 1-based line number, ``reason`` the problem."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class AddressError(ValueError):
    """An address the Router cannot analyse; ``status`` is the ERROR route text to use."""

    def __init__(self, reason: str, status: str = BAD_SYNTAX) -> None:
        super().__init__(reason)
        self.status = status


# --- address analysis (COMMUNIGATE.md a.1) -------------------------------------------------


def _scan(text: str) -> Iterator[tuple[int, str]]:
    """Yield (index, char) of the characters outside double quotes (RFC 5321 §4.1.2)."""
    quoted = escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif not quoted:
            yield i, c
    if quoted or escaped:
        raise AddressError("unbalanced quotes")


def _unquote(local: str) -> str:
    """``"a b"`` -> ``a b`` (quoted-pairs undone); other strings unchanged."""
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def normalize_domain(domain: str) -> str:
    """Lower-case, strip one trailing dot, IDNA-encode, check LDH syntax or an IP literal."""
    d = _lower(domain.strip())
    d = d[:-1] if d.endswith(".") and not d.startswith("[") else d
    if d.startswith("[") and d.endswith("]"):  # RFC 5321 §4.1.3 address literals
        inner = d[1:-1]
        try:
            if inner.startswith("ipv6:"):
                return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
            return f"[{ipaddress.IPv4Address(inner)}]"
        except ValueError:
            raise AddressError(f"bad address literal {domain!r}", BAD_DOMAIN) from None
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:
            raise AddressError(f"bad domain {domain!r}", BAD_DOMAIN) from None
    if not _LABEL_RE.match(d):
        raise AddressError(f"bad domain {domain!r}", BAD_DOMAIN)
    return d


def split_address(text: str) -> tuple[str, str]:
    """Split an address into (local, domain), the domain being the next hop.

    Accepts ``local@domain``, the source route ``<@zzzz,@www:xxxx@yyyyy>``, the UUCP path
    ``zzzz!yyyyy!xxxx``, and ``xxxx%yyyyy`` with no ``@``. A complex local part is returned in
    the canonical ``%`` form: ``xxxx%yyyyy@zzzz`` gives ("xxxx%yyyyy", "zzzz"). No domain at all
    gives ("name", ""). Raises AddressError on syntax the Router cannot route.
    """
    s = text.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1].strip()
    if not s:
        raise AddressError("empty address")
    if len(s) > MAX_ADDRESS:
        raise AddressError("address too long")
    if _CONTROL_RE.search(s):
        raise AddressError("control character in address")
    plain = list(_scan(s))  # also checks the quotes
    if any(c.isspace() for _i, c in plain):
        raise AddressError("white space in address")
    if s.startswith("@"):  # RFC 5321 §4.1.2 A-d-l, §C: source routes are flattened with "%"
        colon = next((i for i, c in plain if c == ":"), -1)
        if colon < 0:
            raise AddressError("source route without ':'")
        hops = s[:colon].split(",")
        if any(len(h) < 2 or not h.startswith("@") for h in hops):
            raise AddressError("bad source route")
        local, domain = split_address(s[colon + 1 :])
        if not domain:
            raise AddressError("source route to an address without domain")
        tail = "".join("%" + h[1:] for h in reversed(hops[1:]))
        return f"{local}%{domain}{tail}", normalize_domain(hops[0][1:])
    ats = [i for i, c in plain if c == "@"]
    if ats:
        local, domain = s[: ats[-1]], s[ats[-1] + 1 :]
        if not local or not domain:
            raise AddressError("empty local part or domain")
        if len(ats) > 1:  # a@b@c: the canonical complex local part is a%b
            chars = list(local)
            for i in ats[:-1]:
                chars[i] = "%"
            local = "".join(chars)
        return local, normalize_domain(domain)
    pct = [i for i, c in plain if c == "%"]
    if pct:
        local, domain = s[: pct[-1]], s[pct[-1] + 1 :]
        if not local or not domain:
            raise AddressError("empty local part or domain")
        return local, normalize_domain(domain)
    bangs = [i for i, c in plain if c == "!"]
    if bangs:
        cuts = [-1, *bangs, len(s)]
        parts = [s[a + 1 : b] for a, b in zip(cuts, cuts[1:], strict=False)]
        if not all(parts):
            raise AddressError("empty element in '!' path")
        hosts, user = parts[:-1], parts[-1]
        return user + "".join("%" + h for h in reversed(hosts[1:])), normalize_domain(hosts[0])
    return s, ""


def _complex_inner(local: str) -> Optional[str]:
    """The address inside a complex local part (``user%other.dom``), or None for a plain name."""
    inner = _unquote(local)
    try:
        _l, domain = split_address(inner)
    except AddressError:
        return None
    return inner if domain else None


def pipe_command(address: str) -> list[str]:
    """The program and arguments of a ``"prog args"@pipe`` address; ValueError if unsafe.

    PIPE name rules (COMMUNIGATE.md a.5): no ``/`` or ``\\`` and no leading ``.``; never a shell.
    """
    local, _domain = split_address(address)
    command = _unquote(local)
    if "/" in command or "\\" in command or command.startswith("."):
        raise ValueError(f"program name may not contain / or \\ or start with '.': {command!r}")
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise ValueError(f"bad PIPE command {command!r}: {e}") from None
    if not argv or argv[0].startswith("."):
        raise ValueError(f"bad PIPE command {command!r}")
    return argv


# --- the table (COMMUNIGATE.md a.2) -------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One table line: ``[relay:][type:]<left> = right [; comment]``; ``left`` is lower-cased."""

    left: str
    right: str
    relay: str = ""  # "", "Relay", "RelayAll" or "NoRelay"
    kind: str = ""  # "", "Mail", "Access" or "Signal"
    comment: str = ""
    line: int = field(default=0, compare=False)

    @property
    def relays(self) -> bool:
        """Relay:/RelayAll: relay the message regardless of its source (dangerous)."""
        return self.relay in ("Relay", "RelayAll")

    @property
    def norelay(self) -> bool:
        return self.relay == "NoRelay"

    @property
    def target(self) -> str:
        """What the right side is: "error", "null", "domain" (``@domain``) or "address"."""
        low = _lower(self.right)
        if low == "error" or low.startswith("error:"):
            return "error"
        if low == "null":
            return "null"
        if self.right.startswith("@") and ":" not in self.right:
            return "domain"
        return "address"

    def applies_to(self, kind: str) -> bool:
        return not self.kind or self.kind.lower() == kind

    def match(self, address: str, main_domain: str) -> Optional[str]:
        """The right side with ``*`` substituted if ``address`` matches the left, else None.

        Case-insensitive; a left side without ``@`` means a name in the main domain [D].
        """
        pattern = self.left if "@" in self.left else f"{self.left}@{main_domain}"
        low = _lower(address)
        if "*" not in pattern:
            return self.right if low == pattern else None
        pre, post = pattern.split("*")
        if len(low) < len(pre) + len(post) or not (low.startswith(pre) and low.endswith(post)):
            return None
        return self.right.replace("*", address[len(pre) : len(address) - len(post)], 1)

    def render(self) -> str:
        prefix = "".join(p + ":" for p in (self.relay, self.kind) if p)
        text = f"{prefix}<{self.left}> = {self.right}"
        return f"{text} ; {self.comment}" if self.comment else text


@dataclass(frozen=True)
class Table:
    """The parsed Router table: records tried top to bottom, the first match wins."""

    records: tuple[Record, ...] = ()

    def render(self) -> str:
        return "".join(r.render() + "\n" for r in self.records)

    def relay_records(self) -> list[Record]:
        return [r for r in self.records if r.relays]


def _split_comment(text: str, line: int) -> tuple[str, str]:
    try:
        for i, c in _scan(text):
            if c == ";":
                return text[:i], text[i + 1 :]
    except AddressError:
        raise RouterParseError(line, "unbalanced quotes on the right side") from None
    return text, ""


def parse_record(text: str, line: int = 1) -> Record:
    """Parse one non-empty, non-comment line; raises RouterParseError naming ``line``."""
    rest = text.strip()
    if _CONTROL_RE.search(rest):
        raise RouterParseError(line, "control character in record")
    relay = kind = ""
    while not rest.startswith("<"):
        m = _PREFIX_RE.match(rest)
        if m is None:
            raise RouterParseError(
                line, "expected [prefix:]<left-address> = right, e.g. <*@old.dom> = *@new.dom"
            )
        word = m.group(1).lower()
        if word in _RELAY_PREFIXES and not relay and not kind:
            relay = _RELAY_PREFIXES[word]
        elif word in _KIND_PREFIXES and not kind:
            kind = _KIND_PREFIXES[word]
        elif word in _RELAY_PREFIXES and kind:
            raise RouterParseError(
                line, f"the relay prefix {m.group(1)}: must come before the type prefix"
            )
        elif word in _RELAY_PREFIXES or word in _KIND_PREFIXES:
            raise RouterParseError(
                line, f"more than one {'relay' if word in _RELAY_PREFIXES else 'type'} prefix"
            )
        else:
            raise RouterParseError(
                line,
                f"unknown prefix {m.group(1)}: (want Relay:, RelayAll:, NoRelay:, Mail:, Access:, Signal:)",
            )
        rest = rest[m.end() :]
    close = rest.find(">")
    if close < 0:
        raise RouterParseError(line, "missing '>' after the left address")
    left = _lower(rest[1:close].strip())
    if not left:
        raise RouterParseError(line, "empty left address")
    if any(c.isspace() or c == "<" for c in left):
        raise RouterParseError(line, "white space or '<' in the left address")
    if left.count("*") > 1:
        raise RouterParseError(line, "more than one '*' on the left side")
    rest = rest[close + 1 :].lstrip()
    if not rest.startswith("="):
        raise RouterParseError(line, "expected '=' after <left-address>")
    right, comment = _split_comment(rest[1:], line)
    right, comment = right.strip(), comment.strip()
    record = Record(left=left, right=right, relay=relay, kind=kind, comment=comment, line=line)
    _check_right(record, line)
    return record


def _check_right(record: Record, line: int) -> None:
    right = record.right
    if not right:
        raise RouterParseError(line, "empty right side")
    stars = right.count("*")
    if stars > 1:
        raise RouterParseError(line, "more than one '*' on the right side")
    if stars and "*" not in record.left:
        raise RouterParseError(line, "'*' on the right side but none on the left")
    if record.target in ("error", "null"):
        return
    sample = right.replace("*", "x")
    if record.target == "domain":
        sample = "x" + sample
    try:
        local, domain = split_address(sample)
        if domain == PIPE_DOMAIN:
            pipe_command(sample)
    except ValueError as e:
        raise RouterParseError(line, f"bad right address {right!r}: {e}") from None


def parse_table(text: str) -> Table:
    """Parse the whole table; blank lines and lines starting with ``;`` or ``#`` are ignored.

    Raises RouterParseError for the first bad line (line numbers count ``\\n``-separated lines).
    """
    records = []
    for no, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line and line[0] not in ";#":
            records.append(parse_record(line, no))
    return Table(tuple(records))


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


Query = Union[DomainQuery, AccountQuery, AliasQuery, ListQuery]


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
            return self._done(steps, error_route(address, UNKNOWN_USER), hops, address)
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

    def answer(self, query: Query) -> Any:
        if isinstance(query, DomainQuery):
            return query.domain in self.domains
        key = f"{_lower(query.local)}@{query.domain}"
        if isinstance(query, AccountQuery):
            return key if key in self.accounts else None
        if isinstance(query, ListQuery):
            return self.lists.get(key)
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
