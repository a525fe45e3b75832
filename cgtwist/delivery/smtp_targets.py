"""Where outbound SMTP connects: MX hosts in order, implicit MX, null MX, literals, smarthost.

Owns turning a destination (a domain, an address literal or the configured smarthost) into an
ordered list of hosts and addresses through the resolver (RFC 5321 §5.1, RFC 7505). Knows
nothing about SMTP sessions; ``cgtwist.delivery.smtp`` walks the targets.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cgtwist.errors import DNSPermanentError, DNSTemporaryError
from cgtwist.logs import Logger

log = Logger(namespace="cgtwist.delivery.smtp")


@dataclass(frozen=True)
class Target:
    """One host to try: its name (for TLS and logs) and its addresses in order."""

    host: str  # name used for TLS SNI/verification and logs
    ips: tuple[str, ...]


class DestinationError(Exception):
    """The destination as a whole cannot be used now (temporary) or ever (permanent)."""

    def __init__(self, enhanced: str, text: str, permanent: bool) -> None:
        super().__init__(f"{enhanced} {text}")
        self.enhanced = enhanced
        self.text = text
        self.permanent = permanent


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def parse_hostport(spec: str, default_port: int) -> tuple[str, int, bool]:
    """``host``, ``host:port``, ``[host]:port`` or ``[ip]`` -> (host, port, bracketed)."""
    spec = spec.strip()
    m = re.match(r"^\[([^\]]+)\](?::(\d+))?$", spec)
    if m:
        return m.group(1), int(m.group(2) or default_port), True
    if spec.count(":") == 1:
        host, _, port = spec.partition(":")
        return host, int(port), False
    return spec, default_port, False


async def relay_targets(resolver: Any, host: str) -> AsyncIterator[Target]:
    """The smarthost: an IP address as is, a name by its address records (no MX)."""
    if is_ip(host):
        yield Target(host, (host,))
        return
    yield Target(host, tuple(await addresses(resolver, host, implicit=True)))


async def mx_targets(resolver: Any, queue: str, rng: random.Random) -> AsyncIterator[Target]:
    """Hosts in MX preference order, shuffled within a preference (RFC 5321 §5.1)."""
    literal = re.match(r"^\[(?:IPv6:)?([^\]]+)\]$", queue, re.I)
    if literal:
        ip = literal.group(1)
        if not is_ip(ip):
            raise DestinationError("5.1.2", f"bad address literal {queue}", True)
        yield Target(ip, (ip,))
        return
    domain = queue.lower().rstrip(".")
    try:
        mx = await resolver.lookup_mx(domain)
    except DNSPermanentError:
        raise DestinationError("5.1.2", f"domain {domain} does not exist", True) from None
    except DNSTemporaryError as e:
        raise DestinationError(
            "4.4.3", f"DNS lookup of MX for {domain} failed ({e or 'temporary'})", False
        ) from None
    hosts = [(int(pref), str(h).lower().rstrip(".")) for pref, h in mx]
    if len(hosts) == 1 and hosts[0][1] == "":
        # RFC 7505 §3: a null MX ("MX 0 .") says the domain accepts no mail.
        raise DestinationError("5.1.10", f"domain {domain} accepts no mail (null MX)", True)
    hosts = [(p, h) for p, h in hosts if h]
    implicit = not hosts
    if implicit:
        hosts = [(0, domain)]  # RFC 5321 §5.1: no MX, the domain itself is the host
    ordered: list[str] = []
    for pref in sorted({p for p, _ in hosts}):
        group = [h for p, h in hosts if p == pref]
        rng.shuffle(group)
        ordered += [h for h in group if h not in ordered]
    resolved_any = False
    temp = False
    for host in ordered:
        try:
            ips = await addresses(resolver, host, implicit)
        except DestinationError as e:
            if implicit:
                raise
            temp = temp or not e.permanent
            log.info(
                "MX host {host} of {domain} unusable: {err}", host=host, domain=domain, err=str(e)
            )
            continue
        if ips:
            resolved_any = True
            yield Target(host, tuple(ips))
    if not resolved_any:
        if implicit:
            raise DestinationError("5.4.4", f"domain {domain} has no MX and no address", True)
        raise DestinationError(
            "4.4.4" if not temp else "4.4.3",
            f"no usable address for the MX hosts of {domain}",
            False,
        )


async def addresses(resolver: Any, host: str, implicit: bool) -> list[str]:
    """IPv4 addresses of ``host``; IPv6 only when it has none (one lookup in the usual case)."""
    if is_ip(host):
        return [host]
    errors: list[Exception] = []
    for lookup in (resolver.lookup_a, resolver.lookup_aaaa):
        try:
            out = [str(x) for x in await lookup(host)]
        except DNSPermanentError as e:
            errors.append(e)
            break  # NXDOMAIN holds for every type
        except DNSTemporaryError as e:
            errors.append(e)
            continue
        if out:
            return out
    if any(isinstance(e, DNSTemporaryError) for e in errors):
        raise DestinationError("4.4.3", f"DNS lookup of {host} failed", False)
    if errors and implicit:
        raise DestinationError("5.1.2", f"host {host} does not exist", True)
    if errors:
        raise DestinationError("5.4.4", f"MX host {host} does not exist", True)
    return []
