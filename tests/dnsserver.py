"""A loopback authoritative DNS server for tests: test zones in, programmable faults, one port out.

Owns nothing of the product. Serves zones given as Python data or zone-file text on 127.0.0.1
(UDP and TCP on the same port 0-assigned port) with twisted.names, and can misbehave per name
(SERVFAIL, REFUSED, NXDOMAIN, no answer at all = a timeout, a delay, or raw reply bytes). Point
``cgtwist.dns.Resolver`` (and the e2e server's ``[dns] nameservers``) at ``server.address``.

In a trial test::

    server = DNSTestServer({"example.com": ["MX 10 mx.example.com", 'TXT "v=spf1 -all"'],
                            "mx.example.com": ["A 127.0.0.1"]})
    address = server.listen(reactor)          # "127.0.0.1:PORT"
    self.addCleanup(server.stop)
    server.set_behaviour("slow.example.com", "timeout")

From an e2e test, in a subprocess (prints ``127.0.0.1:PORT`` on the first stdout line, then
serves until killed)::

    python -m tests.dnsserver --zone tests/e2e/zones/example.com.zone [--json records.json]
        [--behaviours faults.json]   # {"name": "servfail", "name/TXT": "timeout", "n": ["delay", 2]}

Record syntax (Python data and zone text alike): ``[TTL] TYPE RDATA``, TYPE one of A, AAAA, MX,
TXT, PTR, CNAME, NS; TXT strings are quoted (``TXT "v=spf1 ip4:127.0.0.1 -all"``), longer than
255 octets they are split into several strings. Tuples such as ``("MX", 10, "mx.example.com")``
work too. A name not in the data answers NXDOMAIN; a known name without the asked type answers
NOERROR with no records (NODATA).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IReactorUDP
from twisted.names import dns, error, server
from twisted.names.common import ResolverBase
from twisted.python import failure

RecordSpec = Union[str, Sequence[Any]]
Records = Mapping[str, Sequence[RecordSpec]]
# A behaviour: "normal", "servfail", "refused", "nxdomain", "timeout" (never answer),
# ("delay", seconds) or ("raw", fn(query_message) -> bytes).
Behaviour = Union[str, tuple[str, Any]]

DEFAULT_TTL = 300


def _norm(name: str) -> str:
    return name.strip().lower().rstrip(".")


def make_record(spec: RecordSpec, origin: str = "") -> tuple[int, dns.IEncodableRecord]:
    """Turn one record spec into (type code, twisted record). Raises ValueError when malformed."""
    if isinstance(spec, str):
        parts: list[Any] = shlex.split(spec, comments=False, posix=True)
    else:
        parts = list(spec)
    if not parts:
        raise ValueError("empty record")
    ttl = DEFAULT_TTL
    if isinstance(parts[0], int) or (isinstance(parts[0], str) and parts[0].isdigit()):
        ttl = int(parts.pop(0))
    if parts and str(parts[0]).upper() == "IN":
        parts.pop(0)
    rtype = str(parts.pop(0)).upper()

    def host(value: Any) -> str:
        v = str(value)
        if v == "@":
            return origin
        if v.endswith(".") or not origin:
            return v.rstrip(".")
        return f"{v}.{origin}"

    if rtype == "A":
        return dns.A, dns.Record_A(str(parts[0]), ttl)
    if rtype == "AAAA":
        return dns.AAAA, dns.Record_AAAA(str(parts[0]), ttl)
    if rtype == "MX":
        exchange = str(parts[1])
        return dns.MX, dns.Record_MX(
            int(parts[0]), b"" if exchange == "." else host(exchange).encode(), ttl
        )
    if rtype in ("TXT", "SPF"):
        chunks: list[bytes] = []
        for s in parts:
            b = s if isinstance(s, bytes) else str(s).encode("utf-8")
            chunks.extend(b[i : i + 255] for i in range(0, max(len(b), 1), 255))
        cls = dns.Record_TXT if rtype == "TXT" else dns.Record_SPF
        return (dns.TXT if rtype == "TXT" else dns.SPF), cls(*chunks, ttl=ttl)
    if rtype == "PTR":
        return dns.PTR, dns.Record_PTR(host(parts[0]).encode(), ttl)
    if rtype == "CNAME":
        return dns.CNAME, dns.Record_CNAME(host(parts[0]).encode(), ttl)
    if rtype == "NS":
        return dns.NS, dns.Record_NS(host(parts[0]).encode(), ttl)
    raise ValueError(f"unsupported record type {rtype!r}")


def parse_zone_text(text: str, origin: str = "") -> dict[str, list[tuple[int, Any]]]:
    """Parse simple zone-file text: ``$ORIGIN``, ``$TTL``, ``;`` comments, ``@``, relative names.

    Each line is ``NAME [TTL] [IN] TYPE RDATA``; a line starting with whitespace reuses the
    previous name. Enough for test zones, not a full RFC 1035 master-file parser.
    """
    records: dict[str, list[tuple[int, Any]]] = {}
    origin = _norm(origin)
    ttl = DEFAULT_TTL
    last = origin
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw
        # strip ; comments outside quotes
        out, quoted = [], False
        for ch in line:
            if ch == '"':
                quoted = not quoted
            if ch == ";" and not quoted:
                break
            out.append(ch)
        line = "".join(out).rstrip()
        if not line.strip():
            continue
        try:
            if line.startswith("$ORIGIN"):
                origin = _norm(line.split()[1])
                continue
            if line.startswith("$TTL"):
                ttl = int(line.split()[1])
                continue
            if line[0].isspace():
                name, rest = last, line.strip()
            else:
                name, _, rest = line.partition(" ")
                name = name.strip()
                if name == "@":
                    name = origin
                elif name.endswith("."):
                    name = name.rstrip(".")
                elif origin:
                    name = f"{name}.{origin}"
                rest = rest.strip()
            last = _norm(name)
            words = rest.split(None, 1)
            if words and not words[0].isdigit():
                rest = f"{ttl} {rest}"
            rtype, rec = make_record(rest, origin)
        except (ValueError, IndexError) as e:
            raise ValueError(f"zone line {no}: {e}: {raw!r}") from None
        records.setdefault(last, []).append((rtype, rec))
    return records


class _Authority(ResolverBase):
    """Answers from an in-memory name -> records map; everything not in it is NXDOMAIN."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, list[tuple[int, Any]]] = {}
        self.soa = dns.Record_SOA(b"ns.test", b"hostmaster.test", serial=1, minimum=60, ttl=60)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> defer.Deferred[Any]:
        key = _norm(name.decode("ascii", "replace"))
        recs = self.records.get(key)
        if recs is None:
            return defer.fail(failure.Failure(dns.AuthoritativeDomainError(name)))
        answers: list[dns.RRHeader] = []
        cname = None
        for rtype, rec in recs:
            if rtype == type or type == dns.ALL_RECORDS:
                answers.append(
                    dns.RRHeader(name, rtype, dns.IN, rec.ttl or DEFAULT_TTL, rec, auth=True)
                )
            elif rtype == dns.CNAME:
                cname = rec
        if not answers and cname is not None:
            answers.append(
                dns.RRHeader(name, dns.CNAME, dns.IN, cname.ttl or DEFAULT_TTL, cname, auth=True)
            )
            target = _norm(cname.name.name.decode())
            for rtype, rec in self.records.get(target, []):
                if rtype == type:
                    answers.append(
                        dns.RRHeader(
                            cname.name.name, rtype, dns.IN, rec.ttl or DEFAULT_TTL, rec, auth=True
                        )
                    )
        authority: list[dns.RRHeader] = []
        if not answers:
            authority.append(dns.RRHeader(b"test", dns.SOA, dns.IN, 60, self.soa, auth=True))
        return defer.succeed((answers, authority, []))


class _Factory(server.DNSServerFactory):
    """The server factory with per-name misbehaviour and a query log."""

    def __init__(self, owner: DNSTestServer) -> None:
        super().__init__(authorities=[owner.authority])
        self.owner = owner
        self.noisy = False

    def handleQuery(self, message: dns.Message, protocol: Any, address: Any) -> Any:
        query = message.queries[0]
        name = _norm(query.name.name.decode("ascii", "replace"))
        tname = dns.QUERY_TYPES.get(query.type, str(query.type))
        self.owner.queries.append((name, tname))
        behaviour = self.owner.behaviour_for(name, tname)
        if behaviour == "timeout":
            self.owner.dropped += 1
            return None
        if behaviour in ("servfail", "refused", "nxdomain"):
            code = {"servfail": dns.ESERVER, "refused": dns.EREFUSED, "nxdomain": dns.ENAME}[
                behaviour
            ]
            self.sendReply(
                protocol, self._responseFromMessage(message=message, rCode=code), address
            )
            return None
        if isinstance(behaviour, tuple) and behaviour[0] == "delay":
            call = self.owner.clock.callLater(
                float(behaviour[1]), super().handleQuery, message, protocol, address
            )
            self.owner.delayed.append(call)
            return None
        if isinstance(behaviour, tuple) and behaviour[0] == "raw":
            data: bytes = behaviour[1](message)
            if address is not None:
                protocol.transport.write(data, address)
            else:
                protocol.sendString(data)
            return None
        return super().handleQuery(message, protocol, address)

    def sendReply(self, protocol: Any, message: Any, address: Any) -> None:
        # RFC 1035 §4.2.1 / RFC 7766: a UDP answer over 512 octets is sent empty with TC set,
        # so the client retries over TCP (twisted's own truncation leaves a half record).
        if address is not None:
            saved = message.maxSize
            message.maxSize = 0
            size = len(message.toStr())
            message.maxSize = saved
            if size > 512:
                message.answers, message.authority, message.additional = [], [], []
                message.trunc = 1
        super().sendReply(protocol, message, address)

    def gotResolverError(
        self, failure: failure.Failure, protocol: Any, message: Any, address: Any
    ) -> None:
        # Quiet NXDOMAIN handling (the base class logs non-domain errors as test failures).
        if failure.check(dns.DomainError, dns.AuthoritativeDomainError, error.DomainError):
            self.sendReply(
                protocol, self._responseFromMessage(message=message, rCode=dns.ENAME), address
            )
        else:
            self.sendReply(
                protocol, self._responseFromMessage(message=message, rCode=dns.ESERVER), address
            )


class DNSTestServer:
    """A loopback DNS server serving test records, with per-name faults.

    ``records``: name -> list of record specs; ``zone_text``: zone-file text (see module doc).
    ``queries`` logs every (name, type) asked, so tests can assert caching and probe counts.
    """

    def __init__(
        self, records: Optional[Records] = None, zone_text: str = "", origin: str = ""
    ) -> None:
        self.authority = _Authority()
        self.queries: list[tuple[str, str]] = []
        self.dropped = 0
        self.delayed: list[Any] = []
        self._behaviour: dict[tuple[str, Optional[str]], Behaviour] = {}
        self._ports: list[Any] = []
        self.address = ""
        self.port = 0
        self.clock: IReactorTime
        if records:
            self.add_records(records)
        if zone_text:
            self.add_zone_text(zone_text, origin)

    # -- data
    def add_records(self, records: Records) -> None:
        for name, specs in records.items():
            entries = self.authority.records.setdefault(_norm(name), [])
            entries.extend(make_record(s) for s in specs)

    def add_zone_text(self, text: str, origin: str = "") -> None:
        for name, recs in parse_zone_text(text, origin).items():
            self.authority.records.setdefault(name, []).extend(recs)

    def remove(self, name: str) -> None:
        """Forget every record of ``name`` (it becomes NXDOMAIN)."""
        self.authority.records.pop(_norm(name), None)

    # -- faults
    def set_behaviour(self, name: str, behaviour: Behaviour, qtype: Optional[str] = None) -> None:
        """Make queries for ``name`` (optionally only of type ``qtype``) misbehave.

        ``behaviour``: "normal", "servfail", "refused", "nxdomain", "timeout", ("delay", secs),
        ("raw", fn(message) -> bytes).
        """
        self._behaviour[(_norm(name), qtype.upper() if qtype else None)] = behaviour

    def behaviour_for(self, name: str, qtype: str) -> Behaviour:
        return self._behaviour.get((name, qtype)) or self._behaviour.get((name, None)) or "normal"

    def count(self, name: str, qtype: Optional[str] = None) -> int:
        """How many queries for ``name`` (of ``qtype``) arrived."""
        n = _norm(name)
        return sum(1 for q, t in self.queries if q == n and (qtype is None or t == qtype.upper()))

    # -- lifecycle
    def listen(self, reactor: Any, interface: str = "127.0.0.1") -> str:
        """Listen on UDP and TCP (same port, chosen by the OS); return ``"127.0.0.1:PORT"``."""
        assert IReactorUDP.providedBy(reactor) and IReactorTCP.providedBy(reactor)
        self.clock = reactor
        factory = self._factory = _Factory(self)
        last_error: Optional[Exception] = None
        for _ in range(20):
            udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface=interface)
            port = udp.getHost().port
            try:
                tcp = reactor.listenTCP(port, factory, interface=interface)
            except Exception as e:  # the TCP port is taken: try another
                last_error = e
                udp.stopListening()
                continue
            self._ports = [udp, tcp]
            self.port = port
            self.address = f"{interface}:{port}"
            return self.address
        raise RuntimeError(f"could not bind UDP+TCP on one port: {last_error}")

    def stop(self) -> defer.Deferred[Any]:
        """Stop listening and cancel delayed answers (use as a trial cleanup)."""
        for call in self.delayed:
            if call.active():
                call.cancel()
        self.delayed = []
        factory = getattr(self, "_factory", None)
        for proto in list(factory.connections if factory is not None else []):
            if proto.transport is not None:
                proto.transport.loseConnection()
        ports, self._ports = self._ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


def raw_reply(fn: Callable[[int], bytes]) -> Behaviour:
    """A ("raw", ...) behaviour answering ``fn(query_id)`` bytes, for hostile-answer tests."""
    return ("raw", lambda message: fn(message.id))


def main(argv: Optional[list[str]] = None) -> None:
    """Serve zone files / JSON records on loopback until killed; print the address first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--zone",
        action="append",
        default=[],
        help="zone file; origin from $ORIGIN or the file name minus .zone",
    )
    parser.add_argument(
        "--json", action="append", default=[], help='JSON {"name": ["A 127.0.0.1"]}'
    )
    parser.add_argument(
        "--behaviours",
        action="append",
        default=[],
        help='JSON {"name": "servfail", "name/TXT": "timeout", "n": ["delay", 2]}',
    )
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    srv = DNSTestServer()
    for path in args.zone:
        import os

        base = os.path.basename(path)
        origin = base[:-5] if base.endswith(".zone") else base
        with open(path, encoding="utf-8") as f:
            srv.add_zone_text(f.read(), origin)
    for path in args.json:
        with open(path, encoding="utf-8") as f:
            srv.add_records(json.load(f))
    for path in args.behaviours:
        with open(path, encoding="utf-8") as f:
            for key, behaviour in json.load(f).items():
                name, _, qtype = key.partition("/")
                srv.set_behaviour(
                    name,
                    tuple(behaviour) if isinstance(behaviour, list) else behaviour,
                    qtype or None,
                )
    address = srv.listen(reactor, args.interface)
    sys.stdout.write(address + "\n")
    sys.stdout.flush()
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
