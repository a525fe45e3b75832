"""The one DNS resolver: configured nameservers only, timeouts, bounded concurrency, a TTL cache.

Owns every DNS lookup cgtwist makes on the reactor (MX, A, AAAA, TXT, PTR) through the
twisted.names client, asking only the ``ip:port`` servers it is given: it never reads
/etc/resolv.conf and never falls back to a system resolver. It must not block the reactor and
must not raise for DNS trouble except the two mapped errors of ``cgtwist.interfaces.IResolver``:
NXDOMAIN -> ``DNSPermanentError``; SERVFAIL, REFUSED, timeouts, garbage -> ``DNSTemporaryError``
(RFC 5321 §5.1: a temporary DNS failure never bounces mail). NOERROR/NODATA -> ``[]``.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.names import client
from twisted.names import dns as tdns
from twisted.names import error as terror
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.errors import DNSPermanentError, DNSTemporaryError
from cgtwist.interfaces import IResolver
from cgtwist.logs import Logger

log = Logger()

_LABEL = re.compile(r"^[a-z0-9_-]+$")
_CNAME_DEPTH = 8
_NXDOMAIN = object()  # cache marker for a name that does not exist  # follow at most this many CNAMEs ourselves (RFC 1034 §3.6.2 chains)


def parse_nameserver(entry: str) -> tuple[str, int]:
    """``"1.2.3.4"``, ``"1.2.3.4:5353"``, ``"::1"``, ``"[::1]:5353"`` -> (ip, port).

    Raises ValueError for anything that is not an IP literal with an optional port.
    """
    entry = entry.strip()
    m = re.match(r"^\[([0-9a-fA-F:.]+)\](?::(\d+))?$", entry)
    if m:
        host, port = m.group(1), int(m.group(2) or 53)
    elif entry.count(":") == 1:
        host, _, p = entry.partition(":")
        port = int(p)
    else:
        host, port = entry, 53
    ipaddress.ip_address(host)  # raises ValueError
    if not 0 < port < 65536:
        raise ValueError(f"bad port in nameserver {entry!r}")
    return host, port


def system_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The ``nameserver`` lines of a resolv.conf, as ``ip:port`` strings.

    Not used by the Resolver itself: the composition root may call it when the bootstrap
    configuration names no nameservers, so that choice is explicit and visible in one place.
    """
    out: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        host, port = parse_nameserver(parts[1].split("%")[0])
                    except ValueError:
                        continue
                    out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except OSError:
        pass
    return out


def reverse_name(ip: str) -> str:
    """The PTR name of an address: ``4.3.2.1.in-addr.arpa`` or the ip6.arpa nibbles."""
    return ipaddress.ip_address(ip).reverse_pointer


class _Cache:
    """A bounded LRU of (name, type) -> (expiry, value), expiring by the reactor clock."""

    def __init__(self, clock: IReactorTime, size: int, max_ttl: float) -> None:
        self.clock: Any = clock
        self.size = size
        self.max_ttl = max_ttl
        self._data: OrderedDict[tuple[str, int], tuple[float, Any]] = OrderedDict()

    def get(self, key: tuple[str, int]) -> Optional[Any]:
        hit = self._data.get(key)
        if hit is None:
            return None
        expiry, value = hit
        if expiry <= self.clock.seconds():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: tuple[str, int], value: Any, ttl: float) -> None:
        if self.size <= 0 or ttl <= 0:
            return
        self._data[key] = (self.clock.seconds() + min(ttl, self.max_ttl), value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


class _Waiters(list[tuple[Any, Any]]):
    """Callers waiting for one in-flight question: (result Deferred, deadline call)."""

    acquire: Any = None


@implementer(IResolver)
class Resolver:
    """cgtwist.interfaces.IResolver on twisted.names with only the configured servers.

    ``nameservers``: ``["127.0.0.1:5353", "[::1]:53", "192.0.2.1"]``; ``timeout``: seconds for
    one whole lookup (retransmissions and the wait for a concurrency slot included);
    ``max_concurrency``: lookups on the wire at once, the rest wait their turn.
    ``cache_size`` 0 disables caching; positive answers are kept for their TTL (capped).
    """

    def __init__(
        self,
        nameservers: Sequence[str],
        timeout: float = 5.0,
        max_concurrency: int = 100,
        reactor: Any = None,
        cache_size: int = 10000,
        max_cache_ttl: float = 3600.0,
        negative_ttl: float = 60.0,
    ) -> None:
        if reactor is None:
            raise TypeError("Resolver needs the reactor passed in")
        self.reactor = reactor
        self.timeout = float(timeout)
        self.servers = [parse_nameserver(s) for s in nameservers]
        self.nameservers = list(nameservers)
        self._sem = defer.DeferredSemaphore(max(1, int(max_concurrency)))
        self._cache = _Cache(reactor, cache_size, max_cache_ttl)
        self._client: Optional[client.Resolver] = None
        if self.servers:
            # resolv=None: twisted never reads /etc/resolv.conf (client.Resolver.maybeParseConfig).
            self._client = client.Resolver(  # type: ignore[no-untyped-call]
                servers=self.servers, timeout=self._retransmits(), reactor=reactor
            )
        self.negative_ttl = negative_ttl
        self.in_flight = 0
        self._inflight: dict[tuple[str, int], _Waiters] = {}

    def _retransmits(self) -> tuple[float, ...]:
        """Per-try timeouts; twisted tries every server per value, so they sum to ``timeout``."""
        per_server = self.timeout / max(1, len(self.servers))
        return (per_server * 0.4, per_server * 0.6)

    def stop(self) -> defer.Deferred[None]:
        """Close TCP connections kept to the nameservers (service shutdown, test cleanup)."""
        if self._client is None:
            return defer.succeed(None)
        for proto in list(self._client.connections):
            if proto.transport is not None:
                proto.transport.loseConnection()
        self._cache.clear()
        # The sockets close on the next reactor iterations.
        d: defer.Deferred[None] = defer.Deferred()
        self.reactor.callLater(0, lambda: self.reactor.callLater(0, d.callback, None))
        return d

    # -- IResolver
    def lookup_mx(self, domain: str) -> defer.Deferred[list[tuple[int, str]]]:
        """[(preference, host)] sorted; a null MX (RFC 7505) appears as host ``""``."""

        def conv(records: list[Any]) -> list[tuple[int, str]]:
            return sorted((r.preference, _name(r.name)) for r in records)

        return self._query(domain, tdns.MX, conv)

    def lookup_a(self, host: str) -> defer.Deferred[list[str]]:
        return self._query(host, tdns.A, lambda rs: [r.dottedQuad() for r in rs])

    def lookup_aaaa(self, host: str) -> defer.Deferred[list[str]]:
        return self._query(
            host, tdns.AAAA, lambda rs: [str(ipaddress.IPv6Address(r.address)) for r in rs]
        )

    def lookup_txt(self, name: str) -> defer.Deferred[list[str]]:
        def conv(records: list[Any]) -> list[str]:
            return [b"".join(r.data).decode("utf-8", "replace") for r in records]

        return self._query(name, tdns.TXT, conv)

    def lookup_ptr(self, ip: str) -> defer.Deferred[list[str]]:
        try:
            name = reverse_name(ip)
        except ValueError:
            return defer.fail(DNSPermanentError(f"not an IP address: {ip!r}"))
        return self._query(name, tdns.PTR, lambda rs: [_name(r.name) for r in rs])

    # -- machinery
    def _query(
        self, name: str, qtype: int, conv: Callable[[list[Any]], Any]
    ) -> defer.Deferred[Any]:
        name = name.strip().rstrip(".").lower()
        if not name.isascii():
            try:
                name = name.encode("idna").decode("ascii")  # RFC 5890 A-labels on the wire
            except UnicodeError:
                return defer.fail(DNSPermanentError(f"invalid DNS name {name!r}"))
        if not _valid_name(name):
            return defer.fail(DNSPermanentError(f"invalid DNS name {name!r}"))
        key = (name, qtype)
        cached = self._cache.get(key)
        if cached is _NXDOMAIN:
            return defer.fail(DNSPermanentError(f"{name}: no such domain"))
        if cached is not None:
            return defer.succeed(conv(cached))
        if self._client is None:
            log.warn("dns lookup {name} with no nameservers configured", name=name)
            return defer.fail(DNSTemporaryError("no nameservers configured"))

        # Identical questions asked at once share one wire query and one concurrency slot
        # (e.g. many connections from one IP asking the same RBL name).
        waiters = self._inflight.get(key)
        first = waiters is None
        if waiters is None:
            waiters = self._inflight[key] = _Waiters()
        result: defer.Deferred[Any] = defer.Deferred()

        def on_timeout() -> None:
            # Safety net: the overall deadline, covering the wait for a slot, retransmissions
            # and TCP fallback.
            if not result.called:
                log.info("dns timeout name={name} type={qtype}", name=name, qtype=_tname(qtype))
                result.errback(DNSTemporaryError(f"timeout looking up {name}"))
            if all(d.called for d, _g in waiters):
                acquire = getattr(waiters, "acquire", None)
                if acquire is not None and not acquire.called:
                    acquire.cancel()  # nobody waits any more: give the slot request up

        guard = self.reactor.callLater(self.timeout + 0.5, on_timeout)
        waiters.append((result, guard))
        if first:
            self._start(name, qtype, key, waiters)  # after appending: it may answer at once

        def convert(records: list[Any]) -> Any:
            try:
                return conv(records)
            except Exception:  # garbage rdata
                log.failure("dns answer conversion failed name={name}", name=name)
                raise DNSTemporaryError(f"malformed answer for {name}") from None

        return result.addCallback(convert)

    def _start(self, name: str, qtype: int, key: tuple[str, int], waiters: _Waiters) -> None:
        """Put one query on the wire when a slot is free; answer every waiter."""
        started = self.reactor.seconds()
        acquire = self._sem.acquire()
        waiters.acquire = acquire

        def run(_: Any) -> defer.Deferred[Any]:
            self.in_flight += 1
            if self.reactor.seconds() - started >= self.timeout:
                d: defer.Deferred[Any] = defer.fail(
                    DNSTemporaryError(f"timeout waiting to look up {name}")
                )
            else:
                d = defer.maybeDeferred(self._resolve, name, qtype, 0)

            def release(r: Any) -> Any:
                self.in_flight -= 1
                self._sem.release()
                return r

            return d.addBoth(release)

        def done(r: Any) -> None:
            if self._inflight.get(key) is waiters:
                del self._inflight[key]
            if isinstance(r, Failure):
                err = _map_failure(r, name, qtype)
                if isinstance(err, DNSPermanentError):
                    # RFC 2308 negative caching, kept short and capped (SOA minimum not used).
                    self._cache.put(key, _NXDOMAIN, self.negative_ttl)
            else:
                records, ttl = r
                self._cache.put(key, records, ttl if records else self.negative_ttl)
            for d, guard in waiters:
                if guard.active():
                    guard.cancel()
                if d.called:
                    continue  # its deadline already answered; drop the late outcome
                if isinstance(r, Failure):
                    d.errback(err)
                else:
                    d.callback(records)

        acquire.addCallback(run).addBoth(done)

    def _resolve(
        self, name: str, qtype: int, depth: int
    ) -> defer.Deferred[tuple[list[Any], float]]:
        assert self._client is not None
        d: defer.Deferred[_Sections]
        d = self._client.query(  # type: ignore[no-untyped-call]
            tdns.Query(name.encode("ascii"), qtype, tdns.IN), self._retransmits()
        )

        def got(sections: _Sections) -> Any:
            answers = sections[0]
            want = [rr for rr in answers if rr.type == qtype]
            if want:
                ttl = min((rr.ttl for rr in want), default=0)
                return [rr.payload for rr in want], ttl
            cnames = [rr for rr in answers if rr.type == tdns.CNAME]
            if cnames and depth < _CNAME_DEPTH:
                return self._resolve(_name(cnames[0].payload.name), qtype, depth + 1)
            if cnames:
                raise DNSTemporaryError(f"CNAME chain too long at {name}")
            return [], 0  # NODATA

        return d.addCallback(got)


_Sections = tuple[list[Any], list[Any], list[Any]]
"""What twisted.names' query gives: the answer, authority and additional records."""


def _name(n: Any) -> str:
    return str(n).rstrip(".").lower()


def _tname(qtype: int) -> str:
    return tdns.QUERY_TYPES.get(qtype, str(qtype))


def _valid_name(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    # Host-name characters plus "_" (SRV/DKIM-style labels); no controls, spaces or NULs.
    return all(0 < len(label) < 64 and _LABEL.match(label) for label in name.split("."))


def _map_failure(f: Failure, name: str, qtype: int) -> Exception:
    """twisted.names errors -> the two IResolver errors (RFC 1035 §4.1.1 RCODEs)."""
    err = f.value
    if isinstance(err, (DNSPermanentError, DNSTemporaryError)):
        return err
    if isinstance(err, terror.DNSNameError):
        return DNSPermanentError(f"{name}: no such domain")
    if isinstance(err, (terror.DNSServerError, terror.DNSQueryRefusedError)):
        reason = "server failure" if isinstance(err, terror.DNSServerError) else "refused"
        log.info(
            "dns {reason} name={name} type={qtype}", reason=reason, name=name, qtype=_tname(qtype)
        )
        return DNSTemporaryError(f"{name}: {reason}")
    if isinstance(err, (defer.TimeoutError, tdns.DNSQueryTimeoutError, defer.CancelledError)):
        log.info("dns timeout name={name} type={qtype}", name=name, qtype=_tname(qtype))
        return DNSTemporaryError(f"{name}: timeout")
    log.warn(
        "dns error name={name} type={qtype}: {error}",
        name=name,
        qtype=_tname(qtype),
        error=f.getErrorMessage(),
    )
    return DNSTemporaryError(f"{name}: {f.getErrorMessage()}")
