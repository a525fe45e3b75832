"""Reverse Connect (callback verification): does the sender's own MX accept the sender address?

Owns one probe: resolve the sender domain's MX with the resolver passed in, connect through the
connector passed in (so tests reach loopback), speak EHLO/HELO, ``MAIL FROM:<>``,
``RCPT TO:<sender>``, QUIT (Postfix verify(8) style, COMMUNIGATE.md a.6), and report pass (2xx),
fail (5xx) or temperror (4xx, timeout, no connection). Results are cached (positive 24 h,
negative 1 h by default), probes per domain are rate-limited, concurrent probes are bounded,
a probe for a sender already being probed joins it, and each call makes at most one SMTP
conversation, so we are never an amplifier. The caller decides when to call (never for Client
IPs, authenticated sessions or ``<>``, at most once per transaction) and what a result means.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet import defer, error
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from cgtwist.checks.result import FAIL, PASS, SKIPPED, TEMPERROR, CheckResult, clean
from cgtwist.errors import DNSPermanentError, DNSTemporaryError
from cgtwist.interfaces import IResolver
from cgtwist.logs import Logger

log = Logger()

Connector = Callable[[str, int], Any]  # (ip, port) -> IStreamClientEndpoint

# What may go into RCPT TO:<...> on the wire: printable ASCII, no <> or spaces outside quotes.
_SAFE_PATH = re.compile(r"^[\x21-\x3b\x3d\x3f-\x7e]{1,254}$")  # no controls, space, < or >
_MAX_ADDRESSES = 3  # TCP connect attempts per probe (a refused connect sends nothing)


@dataclass(frozen=True)
class ReverseConnectConfig:
    """Tunables, read by the caller from settings at use time."""

    timeout: float = 30.0  # the whole probe, DNS included
    positive_ttl: float = 86400.0
    negative_ttl: float = 3600.0
    rate_limit: int = 10  # probes per domain per rate_window (0 = unlimited)
    rate_window: float = 60.0
    max_concurrency: int = 10
    helo: str = "localhost"
    port: int = 25


# A typed doorway (as in cgtwist.typedtwisted): Twisted leaves TCP6ClientEndpoint unannotated.
_tcp6_endpoint: Callable[..., IStreamClientEndpoint] = TCP6ClientEndpoint


def default_connector(reactor: Any, connect_timeout: float = 30.0) -> Connector:
    """Plain TCP to the MX address (IPv4 or IPv6)."""

    def connect(ip: str, port: int) -> Any:
        if ":" in ip:
            return _tcp6_endpoint(reactor, ip, port, timeout=connect_timeout)
        return TCP4ClientEndpoint(reactor, ip, port, timeout=connect_timeout)

    return connect


class _Probe(LineOnlyReceiver):
    """The SMTP client side of one callback conversation (RFC 5321 §4.1/§4.2 replies)."""

    delimiter = b"\r\n"
    MAX_LENGTH = 4096

    def __init__(self, helo: str, sender: str) -> None:
        self.helo = helo
        self.sender = sender
        self.done: defer.Deferred[tuple[str, str]] = defer.Deferred()
        self.step = "greeting"
        self._lines: list[str] = []
        self._outcome: Optional[tuple[str, str]] = None

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("latin-1")
        if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
            self._finish(TEMPERROR, f"bad reply at {self.step}: {clean(text, 80)}")
            return
        self._lines.append(text)
        if len(self._lines) > 100:
            self._finish(TEMPERROR, "reply too long")
            return
        if len(text) > 3 and text[3] == "-":
            return  # RFC 5321 §4.2.1 multiline reply continues
        code = int(text[:3])
        reply = clean(" ".join(x[4:] for x in self._lines), 200)
        self._lines = []
        self._reply(code, f"{code} {reply}")

    def _reply(self, code: int, reply: str) -> None:
        step = self.step
        if step == "greeting":
            if code // 100 != 2:
                self._finish(TEMPERROR, f"greeting {reply}")
                return
            self._send(f"EHLO {self.helo}", "ehlo")
        elif step in ("ehlo", "helo"):
            if code // 100 == 2:
                self._send("MAIL FROM:<>", "mail")
            elif step == "ehlo" and code // 100 == 5:
                self._send(f"HELO {self.helo}", "helo")
            else:
                self._finish(TEMPERROR, f"{step} {reply}")
        elif step == "mail":
            if code // 100 != 2:
                self._finish(TEMPERROR, f"MAIL FROM:<> refused: {reply}")
                return
            self._send(f"RCPT TO:<{self.sender}>", "rcpt")
        elif step == "rcpt":
            if code // 100 == 2:
                self._finish(PASS, reply)
            elif code // 100 == 5:
                self._finish(FAIL, reply)
            else:
                self._finish(TEMPERROR, reply)

    def _send(self, command: str, step: str) -> None:
        self.step = step
        if self.transport is not None:
            self.transport.write(command.encode("ascii") + self.delimiter)

    def _finish(self, outcome: str, reason: str) -> None:
        if self._outcome is not None:
            return
        self._outcome = (outcome, reason)
        transport: Any = self.transport
        if transport is not None:
            if self.step not in ("greeting", "quit"):
                self._send("QUIT", "quit")
            # Don't wait for the 221: a peer that never answers QUIT must not hold us.
            transport.loseConnection()
        self.done.callback(self._outcome)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._finish(TEMPERROR, "reply line too long")
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]  # an ITCPTransport

    def connectionLost(self, reason: Any = None) -> None:
        if self._outcome is None:
            self._outcome = (TEMPERROR, f"connection lost at {self.step}")
            self.done.callback(self._outcome)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]  # an ITCPTransport


class _OneShot(Factory):
    """A factory for exactly the one probe protocol we made."""

    def __init__(self, probe: _Probe) -> None:
        self.probe = probe

    def buildProtocol(self, addr: Any) -> _Probe:
        self.probe.factory = self
        return self.probe


class ReverseConnect:
    """Callback verification with caching, per-domain rate limit and bounded concurrency.

    ``config`` is a ReverseConnectConfig or a callable returning the current one (settings).
    """

    def __init__(
        self,
        resolver: IResolver,
        connector: Connector,
        clock: Any,
        config: ReverseConnectConfig | Callable[[], ReverseConnectConfig] = ReverseConnectConfig(),
        max_cache: int = 50000,
    ) -> None:
        self.resolver: Any = resolver
        self.connector = connector
        self.clock = clock
        self._config = config
        self.max_cache = max_cache
        self._cache: OrderedDict[str, tuple[float, str, str]] = OrderedDict()
        self._pending: dict[str, list[defer.Deferred[CheckResult]]] = {}
        self._rate: dict[str, deque[float]] = {}
        self._active = 0
        self._waiting: deque[Callable[[], None]] = deque()
        self.probes = 0  # SMTP conversations started (for tests and stats)

    def config(self) -> ReverseConnectConfig:
        return self._config() if callable(self._config) else self._config

    def forget(self, sender: Optional[str] = None) -> None:
        """Drop one cached result, or all of them."""
        if sender is None:
            self._cache.clear()
        else:
            self._cache.pop(sender.strip().lower(), None)

    def verify(self, sender: str) -> defer.Deferred[CheckResult]:
        """Fires with CheckResult("reverse-connect", pass|fail|temperror|skipped); never errs."""
        started = self.clock.seconds()
        key = sender.strip().lower()
        domain = key.rpartition("@")[2].rstrip(".")
        if (
            not key
            or "@" not in key
            or not domain
            or domain.startswith("[")
            or not _SAFE_PATH.match(sender)
        ):
            return defer.succeed(CheckResult("reverse-connect", SKIPPED, "nothing to verify"))
        cached = self._cache.get(key)
        if cached is not None:
            expiry, outcome, reason = cached
            if expiry > self.clock.seconds():
                return defer.succeed(
                    CheckResult(
                        "reverse-connect", outcome, reason, 0.0, {"cached": "yes", "domain": domain}
                    )
                )
            del self._cache[key]
        result: defer.Deferred[CheckResult] = defer.Deferred()
        if key in self._pending:
            self._pending[key].append(result)
            return result
        cfg = self.config()
        if not self._rate_ok(domain, cfg):
            log.info("reverse-connect rate limit for domain={domain}", domain=domain)
            return defer.succeed(
                CheckResult("reverse-connect", TEMPERROR, "rate limited", 0.0, {"domain": domain})
            )
        self._pending[key] = [result]
        self._run(sender, key, domain, cfg, started)
        return result

    def _rate_ok(self, domain: str, cfg: ReverseConnectConfig) -> bool:
        if cfg.rate_limit <= 0:
            return True
        now = self.clock.seconds()
        q = self._rate.setdefault(domain, deque())
        while q and q[0] <= now - cfg.rate_window:
            q.popleft()
        if len(q) >= cfg.rate_limit:
            return False
        q.append(now)
        if len(self._rate) > self.max_cache:
            for d in [
                d for d, qq in self._rate.items() if not qq or qq[-1] <= now - cfg.rate_window
            ]:
                del self._rate[d]
        return True

    def _run(
        self, sender: str, key: str, domain: str, cfg: ReverseConnectConfig, started: float
    ) -> None:
        state: dict[str, Any] = {"probe": None, "finished": False, "slot": False, "queued": None}

        def finish(outcome: str, reason: str) -> None:
            if state["finished"]:
                return
            state["finished"] = True
            if timer.active():
                timer.cancel()
            if state["queued"] is not None:
                try:
                    self._waiting.remove(state["queued"])
                except ValueError:
                    pass
            if state["slot"]:
                self._release()
            took = self.clock.seconds() - started
            if outcome in (PASS, FAIL):
                ttl = cfg.positive_ttl if outcome == PASS else cfg.negative_ttl
                self._cache[key] = (self.clock.seconds() + ttl, outcome, reason)
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_cache:
                    self._cache.popitem(last=False)
            log.info(
                "reverse-connect sender={sender} outcome={outcome} reason={reason} took={took:.3f}",
                sender=clean(sender),
                outcome=outcome,
                reason=reason,
                took=took,
            )
            res = CheckResult("reverse-connect", outcome, reason, took, {"domain": domain})
            for d in self._pending.pop(key, []):
                d.callback(res)

        def on_timeout() -> None:
            probe = state["probe"]
            if probe is not None:
                probe.abort()
            finish(TEMPERROR, "timeout")

        timer = self.clock.callLater(cfg.timeout, on_timeout)

        def start() -> None:
            state["queued"] = None
            if state["finished"]:
                self._release()
                return
            state["slot"] = True
            d = defer.ensureDeferred(self._probe(sender, domain, cfg, state))
            d.addCallback(lambda r: finish(*r))

            def crashed(f: Any) -> None:
                log.failure("reverse-connect crashed", f)
                finish(TEMPERROR, "internal error")

            d.addErrback(crashed)

        if self._active < max(1, cfg.max_concurrency):
            self._active += 1
            start()
        else:
            state["queued"] = start
            self._waiting.append(start)

    def _release(self) -> None:
        if self._waiting:
            nxt = self._waiting.popleft()
            nxt()  # the slot passes on
        else:
            self._active -= 1

    async def _probe(
        self, sender: str, domain: str, cfg: ReverseConnectConfig, state: dict[str, Any]
    ) -> tuple[str, str]:
        try:
            mx = await self.resolver.lookup_mx(domain)
        except DNSPermanentError:
            return FAIL, "sender domain does not exist"
        except DNSTemporaryError:
            return TEMPERROR, "MX lookup failed"
        if mx and all(h == "" for _p, h in mx):
            return FAIL, "sender domain has a null MX"
        hosts = [h for _p, h in mx if h] or [domain]  # RFC 5321 §5.1 implicit MX
        addresses: list[str] = []
        for host in hosts[:2]:
            for lookup in (self.resolver.lookup_a, self.resolver.lookup_aaaa):
                try:
                    addresses.extend(await lookup(host))
                except (DNSPermanentError, DNSTemporaryError):
                    continue
            if len(addresses) >= _MAX_ADDRESSES:
                break
        if not addresses:
            return TEMPERROR, "no MX address"
        last = "no connection"
        for ip in addresses[:_MAX_ADDRESSES]:
            if state["finished"]:
                return TEMPERROR, "timeout"
            probe = _Probe(
                cfg.helo if re.match(r"^[A-Za-z0-9.-]{1,253}$", cfg.helo) else "localhost", sender
            )
            try:
                endpoint: Any = self.connector(ip, cfg.port)
                await endpoint.connect(_OneShot(probe))
            except (error.ConnectError, error.TimeoutError, OSError) as e:
                last = f"connect {ip} failed: {type(e).__name__}"
                continue
            except defer.CancelledError:
                return TEMPERROR, "timeout"
            state["probe"] = probe
            self.probes += 1
            if state["finished"]:
                probe.abort()
                return TEMPERROR, "timeout"
            return await probe.done
        return TEMPERROR, last
