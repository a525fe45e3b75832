"""SPF (RFC 7208) for one transaction, and the Received-SPF / Authentication-Results text for it.

Owns evaluating SPF with pyspf off the reactor (in a thread pool passed in) against the same
configured nameservers the Resolver uses: pyspf's DNS goes through a dnspython resolver built
here with ``configure=False`` (never /etc/resolv.conf). Returns a CheckResult whose outcome is
one of pass, fail, softfail, neutral, none, temperror, permerror; never raises. It does not
decide what a result means (cgtwist.core.protection does) and never copies peer-supplied bytes
into a header unsanitised (RELIABILITY.md a8: header injection).
"""

from __future__ import annotations

import re
import types
from typing import Any, Callable, Optional, Sequence

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import spf as pyspf
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool

from cgtwist.checks.result import CheckResult, clean
from cgtwist.dns import parse_nameserver
from cgtwist.logs import Logger
from cgtwist.settings_protection import SPF_RESULTS as RESULTS  # RFC 7208 §2.6

log = Logger()

_DOMAIN = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})?)*\.?$"
)
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`{|}~-]+$")  # RFC 2045 token (no tspecials)

DNSLookupFn = Callable[..., list[tuple[tuple[str, str], Any]]]


def make_dns_lookup(nameservers: Sequence[str], timeout: float) -> DNSLookupFn:
    """A pyspf ``DNSLookup``-compatible function asking only ``nameservers`` (ip[:port]).

    Same contract as ``spf.DNSLookup_dnspython``: NXDOMAIN and NODATA give ``[]``; SERVFAIL,
    REFUSED and timeouts raise ``spf.TempError`` (RFC 7208 §5: -> temperror).
    """
    servers = [parse_nameserver(s) for s in nameservers]

    def lookup(
        name: str, qtype: str, strict: Any = True, timeout_: Optional[float] = None
    ) -> list[tuple[tuple[str, str], Any]]:
        if not servers:
            raise pyspf.TempError("DNS: no nameservers configured")
        t = min(timeout, timeout_) if timeout_ and timeout_ > 0 else timeout
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
        res.timeout = t
        res.lifetime = t
        res.cache = None
        out: list[tuple[tuple[str, str], Any]] = []
        try:
            answer = res.resolve(name, qtype, search=False, raise_on_no_answer=False, lifetime=t)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return out
        except dns.exception.Timeout as e:
            raise pyspf.TempError(f"DNS timeout: {name}") from e
        except dns.resolver.NoNameservers as e:
            raise pyspf.TempError(f"DNS server failure: {name}") from e
        except dns.exception.DNSException as e:
            raise pyspf.TempError(f"DNS error: {name}: {type(e).__name__}") from e
        for rdata in answer.rrset or ():
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                out.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), rdata.strings))
            elif qtype == "CNAME":
                out.append(((name, qtype), rdata.target.to_text(True)))
        return out

    return lookup


def _query_class(lookup: DNSLookupFn) -> type:
    """A ``spf.query`` subclass whose DNS goes to ``lookup`` (no global monkeypatching).

    pyspf calls its module-level ``DNSLookup`` from ``query.dns``; we rebuild that one method
    over a copy of the module's globals where ``DNSLookup`` is ours.
    """
    original = pyspf.query.dns
    g = dict(vars(pyspf))
    g["DNSLookup"] = lookup
    method = types.FunctionType(
        original.__code__, g, original.__name__, original.__defaults__, original.__closure__
    )
    return type("CgtwistSPFQuery", (pyspf.query,), {"dns": method})


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2] if "@" in address else ""


class SPFChecker:
    """Evaluates SPF in a thread pool, DNS on the configured nameservers.

    ``timeout``: per DNS lookup; ``query_time``: the whole evaluation (RFC 7208 §4.6.4
    suggests at least 20 s); ``receiver``: our host name, for the Received-SPF text.
    """

    def __init__(
        self,
        nameservers: Sequence[str],
        reactor: Any,
        threadpool: Any = None,
        timeout: float = 5.0,
        query_time: float = 20.0,
        receiver: str = "localhost",
    ) -> None:
        self.reactor = reactor
        self.threadpool = threadpool
        self.timeout = timeout
        self.query_time = query_time
        self.receiver = receiver
        self._query = _query_class(make_dns_lookup(nameservers, timeout))

    def check(self, ip: str, sender: str, helo: str) -> defer.Deferred[CheckResult]:
        """SPF for MAIL FROM ``sender`` (``""`` for ``<>``: the HELO identity, RFC 7208 §2.4)."""
        started = self.reactor.seconds()
        identity = "mailfrom" if sender else "helo"
        data = {
            "identity": identity,
            "client_ip": ip,
            "sender": sender,
            "helo": helo,
            "domain": _domain_of(sender) if sender else helo,
            "receiver": self.receiver,
        }
        if not sender and not _DOMAIN.match(helo or ""):
            # RFC 7208 §2.3: a HELO that is not a domain name cannot be checked.
            return defer.succeed(CheckResult("spf", "none", "HELO is not a domain name", 0.0, data))
        pool = self.threadpool if self.threadpool is not None else self.reactor.getThreadPool()
        d = deferToThreadPool(self.reactor, pool, self._evaluate, ip, sender, helo)

        def done(outcome: tuple[str, str]) -> CheckResult:
            result, why = outcome
            return CheckResult("spf", result, why, self.reactor.seconds() - started, data)

        def failed(f: Any) -> CheckResult:
            log.failure("spf evaluation crashed for {sender}", f, sender=clean(sender))
            return CheckResult(
                "spf", "temperror", "internal error", self.reactor.seconds() - started, data
            )

        return d.addCallbacks(done, failed)

    def _evaluate(self, ip: str, sender: str, helo: str) -> tuple[str, str]:
        """Runs in a worker thread: pyspf's answer as (result, short reason)."""
        try:
            q = self._query(
                i=ip,
                s=sender,
                h=helo,
                receiver=self.receiver,
                timeout=self.timeout,
                querytime=self.query_time,
            )
            result, _code, explanation = q.check()
        except pyspf.TempError as e:
            return "temperror", clean(e)
        except pyspf.PermError as e:
            return "permerror", clean(e)
        except (ValueError, UnicodeError) as e:  # hostile input pyspf did not expect
            return "permerror", clean(e)
        result = str(result).lower()
        if result not in RESULTS:
            result = {"error": "temperror", "unknown": "permerror"}.get(result, "permerror")
        # pyspf's explanation may come from the domain's exp= record: log-only, sanitised.
        return result, clean(explanation, 120)


# -- header text (RFC 7208 §9.1, RFC 8601) ------------------------------------------------


def _quoted(s: str) -> str:
    s = clean(s, 254).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def _comment(s: str) -> str:
    return re.sub(r"[()\\]", "", clean(s, 200))


def _address_value(address: str) -> str:
    local, _, domain = address.rpartition("@")
    if local and _DOT_ATOM.match(local) and _DOMAIN.match(domain):
        return address
    return _quoted(address)


def received_spf(result: CheckResult) -> str:
    """The value of a ``Received-SPF:`` header for an SPF CheckResult (RFC 7208 §9.1)."""
    d = result.data
    outcome = result.outcome if result.outcome in RESULTS else "permerror"
    receiver = d.get("receiver", "localhost")
    receiver = receiver if _DOMAIN.match(receiver) else "localhost"
    ip = clean(d.get("client_ip", ""), 45)
    ident = d.get("identity", "mailfrom")
    who = d.get("sender", "") if ident == "mailfrom" else f"postmaster@{d.get('helo', '')}"
    domain = d.get("domain", "")
    explain = {
        "pass": f"domain of {who} designates {ip} as permitted sender",
        "fail": f"domain of {who} does not designate {ip} as permitted sender",
        "softfail": f"domain of transitioning {who} does not designate {ip} as permitted sender",
        "neutral": f"{ip} is neither permitted nor denied by domain of {who}",
        "none": f"domain of {who} does not designate permitted sender hosts",
        "temperror": f"error in processing during lookup of {domain}",
        "permerror": f"permanent error in processing domain of {domain}",
    }[outcome]
    parts = [
        f"client-ip={ip}" if re.match(r"^[0-9A-Fa-f:.]+$", ip) else "client-ip=unknown",
        f"envelope-from={_address_value(d.get('sender', ''))}"
        if d.get("sender")
        else 'envelope-from=""',
        f"helo={d['helo'] if _DOMAIN.match(d.get('helo', '')) else _quoted(d.get('helo', ''))}",
        f"receiver={receiver}",
        f"identity={ident}",
    ]
    return f"{outcome} ({receiver}: {_comment(explain)}) " + "; ".join(parts) + ";"


def authentication_results_part(result: CheckResult) -> str:
    """The ``spf=...`` method clause of ``Authentication-Results:`` (RFC 8601 §2.7.2)."""
    d = result.data
    outcome = result.outcome if result.outcome in RESULTS else "permerror"
    if d.get("identity") == "helo":
        helo = d.get("helo", "")
        prop = f"smtp.helo={helo if _DOMAIN.match(helo) and _TOKEN.match(helo) else _quoted(helo)}"
    else:
        sender = d.get("sender", "")
        prop = f"smtp.mailfrom={_address_value(sender)}"
    reason = (
        f" ({_comment(result.reason)})"
        if result.reason and outcome in ("temperror", "permerror")
        else ""
    )
    return f"spf={outcome}{reason} {prop}"
