"""DNS blacklists (RBL/DNSBL): is the connecting IP listed in any configured zone?

Owns building the query name (reversed IPv4 octets or IPv6 nibbles + zone, RFC 5782 §2.1/§2.4),
asking every zone at once through the resolver passed in, and classifying answers: an A record
in 127.0.0.0/8 is a listing, except 127.255.255.0/24 which is the list's error channel
(Spamhaus: "should NOT be interpreted as any sort of reputation") and is logged, not obeyed;
answers outside 127/8, timeouts and SERVFAIL are not listings either (fail open, logged).
A zone entry may name the return codes it acts on: ``zone=127.0.0.2-127.0.0.9,127.0.0.11``.
It never raises and never decides the reply (cgtwist.core.protection does).
"""

from __future__ import annotations

import ipaddress
from typing import Optional, Sequence, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from cgtwist.addresslist import AddressList, normalise
from cgtwist.checks.result import ERROR, LISTED, PASS, SKIPPED, CheckResult, clean
from cgtwist.errors import DNSPermanentError, DNSTemporaryError
from cgtwist.interfaces import IResolver
from cgtwist.logs import Logger
from cgtwist.settings_protection import parse_rbl_zone as parse_zone

# One zone's answer: (outcome, zone, return code, reason text).
_Answer = tuple[str, str, str, str]

log = Logger()

_LISTING_NET = ipaddress.IPv4Network("127.0.0.0/8")
_ERROR_NET = ipaddress.IPv4Network("127.255.255.0/24")


def query_name(ip: str, zone: str) -> str:
    """``192.0.2.1`` + ``rbl.example`` -> ``1.2.0.192.rbl.example`` (IPv6: 32 nibbles)."""
    addr = normalise(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        rev = ".".join(reversed(str(addr).split(".")))
    else:
        rev = ".".join(reversed(addr.exploded.replace(":", "")))
    return f"{rev}.{zone.strip().strip('.').lower()}"


def classify(addresses: Sequence[str], codes: Optional[AddressList] = None) -> tuple[str, str]:
    """(outcome, code) for one zone's A answers: listed, error or pass."""
    listed, errors = [], []
    for a in addresses:
        try:
            ip = ipaddress.IPv4Address(a)
        except ValueError:
            errors.append(a)
            continue
        if ip in _ERROR_NET or ip not in _LISTING_NET:
            errors.append(a)
        elif codes is not None and not codes.contains(a):
            continue  # a return code this configuration does not act on
        else:
            listed.append(a)
    if listed:
        return LISTED, listed[0]
    if errors:
        return ERROR, errors[0]
    return PASS, ""


class RBLChecker:
    """Queries each zone as reversed-IP.zone; the first listing wins (all run concurrently)."""

    def __init__(self, resolver: IResolver, clock: IReactorTime) -> None:
        self.resolver = resolver
        self.clock = clock

    def check(self, ip: str, zones: Sequence[str]) -> defer.Deferred[CheckResult]:
        """Fires with CheckResult("rbl", listed|pass|error|skipped, reason, duration, data);
        a listing's data names the first zone (``zone``, ``code``, ``text``) and every zone
        that listed the IP (``zones``, comma-separated)."""
        started = self.clock.seconds()
        parsed = []
        for entry in zones:
            try:
                zone, codes = parse_zone(entry)
            except ValueError as e:
                log.error(
                    "bad RBL zone entry {entry!r}: {error}; skipped", entry=entry, error=str(e)
                )
                continue
            if zone:
                parsed.append((zone, codes))
        try:
            normalise(ip)
        except ValueError:
            return defer.succeed(CheckResult("rbl", SKIPPED, f"not an IP: {clean(ip, 60)}"))
        if not parsed:
            return defer.succeed(CheckResult("rbl", SKIPPED, "no zones configured"))
        ds = [self._one(ip, z, codes) for z, codes in parsed]

        def combine(results: list[tuple[str, str, str, str]]) -> CheckResult:
            took = self.clock.seconds() - started
            listed = [
                (zone, code, reason) for outcome, zone, code, reason in results if outcome == LISTED
            ]
            if listed:
                # The first listing names the refusal; every listing zone is kept for the
                # RBL Listed rule condition (protection.rbl.action tag).
                zone, code, reason = listed[0]
                return CheckResult(
                    "rbl",
                    LISTED,
                    "listed in " + ", ".join(f"{z} ({c})" for z, c, _r in listed),
                    took,
                    {
                        "zone": zone,
                        "code": code,
                        "text": reason,
                        "zones": ",".join(z for z, _c, _r in listed),
                    },
                )
            errs = [f"{z}: {r}" for o, z, _c, r in results if o == ERROR]
            if errs:
                return CheckResult("rbl", ERROR, "; ".join(errs), took)
            return CheckResult("rbl", PASS, "not listed", took)

        return defer.gatherResults(ds).addCallback(combine)

    def _one(
        self, ip: str, zone: str, codes: Optional[AddressList] = None
    ) -> defer.Deferred[_Answer]:
        name = query_name(ip, zone)
        d = self.resolver.lookup_a(name)

        def got(addresses: list[str]) -> Union[_Answer, defer.Deferred[_Answer]]:
            outcome, code = classify(addresses, codes)
            if outcome == ERROR:
                log.warn(
                    "rbl zone {zone} answered error code {code} for {ip}: treated as not listed",
                    zone=zone,
                    code=code,
                    ip=ip,
                )
                return ERROR, zone, code, f"error code {code}"
            if outcome == LISTED:
                # The zone's TXT usually carries a URL; fetch it for the log, never wait long on it.
                t = self.resolver.lookup_txt(name)

                def reason(txt: list[str]) -> _Answer:
                    return LISTED, zone, code, clean(" ".join(txt), 200)

                def no_reason(_f: Failure) -> _Answer:
                    return LISTED, zone, code, ""

                return t.addCallback(reason).addErrback(no_reason)
            return PASS, zone, "", ""

        def failed(f: Failure) -> _Answer:
            if isinstance(f.value, DNSPermanentError):
                return PASS, zone, "", ""  # NXDOMAIN: not listed
            if not isinstance(f.value, DNSTemporaryError):
                log.failure("rbl lookup {name} crashed", f, name=name)
            else:
                log.warn(
                    "rbl zone {zone} lookup failed for {ip}: {err}; treated as not listed",
                    zone=zone,
                    ip=ip,
                    err=f.getErrorMessage(),
                )
            return ERROR, zone, "", "lookup failed"

        return d.addCallbacks(got, failed)
