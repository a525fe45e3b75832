"""CommuniGate's "address list" field: which IPs a list of addresses, networks and ranges covers.

Pure: parses text and answers membership, no I/O. One entry per line (commas also separate
entries, for the command line): a single IPv4/IPv6 address, a CIDR network ``10.0.0.0/8``, a
range ``192.0.2.10-192.0.2.20`` or ``192.0.2.10-20``; ``;`` or ``#`` start a comment; blank
lines are ignored. Used for Client IPs, blacklisted IPs, white-holed IPs, listener restrictions.
IPv4-mapped IPv6 peers (``::ffff:192.0.2.1``) match IPv4 entries.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

MAX_ENTRIES = 100000  # a pasted list larger than this is a mistake, not a configuration


class AddressListError(ValueError):
    """A line of an address list is not an address, network or range; names the line."""

    def __init__(self, line_no: int, text: str, why: str) -> None:
        super().__init__(f"line {line_no}: {why}: {text!r}")
        self.line_no = line_no
        self.text = text


def _ip(text: str) -> IPAddress:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return ipaddress.ip_address(text)


def normalise(ip: Union[str, IPAddress]) -> IPAddress:
    """Parse an address; an IPv4-mapped IPv6 address becomes the IPv4 address."""
    if isinstance(ip, str):
        return _normalise_text(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=4096)
def _normalise_text(ip: str) -> IPAddress:
    """``normalise`` of a string, remembered: the same peers connect again and again, and
    every session asks several address lists about its peer (ValueError is not cached)."""
    return normalise(ipaddress.ip_address(ip.split("%")[0]))


@dataclass(frozen=True)
class AddressList:
    """A parsed address list: sorted, merged intervals per IP version for O(log n) lookups."""

    v4: tuple[tuple[int, int], ...] = ()
    v6: tuple[tuple[int, int], ...] = ()
    entries: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, text: Union[str, Iterable[str], None]) -> AddressList:
        """Parse address-list text (or a list of lines). Raises AddressListError naming the line."""
        if text is None:
            return cls()
        lines = text.splitlines() if isinstance(text, str) else [str(x) for x in text]
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        entries: list[str] = []
        for no, raw in enumerate(lines, 1):
            line = raw
            for mark in (";", "#"):
                if mark in line:
                    line = line[: line.index(mark)]
            for item in line.split(","):
                item = item.strip()
                if not item:
                    continue
                if len(entries) >= MAX_ENTRIES:
                    raise AddressListError(no, item, f"more than {MAX_ENTRIES} entries")
                lo, hi = _interval(no, item)
                (v4 if isinstance(lo, ipaddress.IPv4Address) else v6).append((int(lo), int(hi)))
                entries.append(item)
        return cls(_merge(v4), _merge(v6), tuple(entries))

    def contains(self, ip: Union[str, IPAddress]) -> bool:
        """True when ``ip`` falls in any entry. A malformed ``ip`` is never contained."""
        try:
            addr = normalise(ip)
        except ValueError:
            return False
        table = self.v4 if isinstance(addr, ipaddress.IPv4Address) else self.v6
        if not table:
            return False
        n = int(addr)
        i = bisect.bisect_right(table, (n, 1 << 129)) - 1
        return i >= 0 and table[i][0] <= n <= table[i][1]

    __contains__ = contains

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __len__(self) -> int:
        return len(self.entries)


def _interval(no: int, item: str) -> tuple[IPAddress, IPAddress]:
    try:
        if "/" in item:
            net = ipaddress.ip_network(item.strip("[]"), strict=False)
            lo: IPAddress = net.network_address
            hi: IPAddress = net.broadcast_address
            return normalise(lo), normalise(hi)
        if "-" in item:
            a, _, b = item.partition("-")
            lo = normalise(_ip(a))
            b = b.strip()
            if isinstance(lo, ipaddress.IPv4Address) and b.isdigit():
                # "192.0.2.10-20": the last octet only
                prefix = str(lo).rsplit(".", 1)[0]
                hi = ipaddress.IPv4Address(f"{prefix}.{int(b)}")
            else:
                hi = normalise(_ip(b))
            if lo.version != hi.version:
                raise AddressListError(no, item, "range mixes IPv4 and IPv6")
            if int(hi) < int(lo):
                raise AddressListError(no, item, "range ends before it starts")
            return lo, hi
        addr = normalise(_ip(item))
        return addr, addr
    except AddressListError:
        raise
    except ValueError:
        raise AddressListError(no, item, "not an IP address, network or range") from None


def _merge(intervals: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


class AddressListCache:
    """Parses each distinct setting text once; keeps the last few (settings change rarely)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._cache: dict[str, AddressList] = {}

    def get(self, text: Union[str, Iterable[str], None]) -> AddressList:
        """The parsed list for ``text``; raises AddressListError like ``AddressList.parse``."""
        key = text if isinstance(text, str) or text is None else "\n".join(str(x) for x in text)
        key = key or ""
        hit = self._cache.get(key)
        if hit is None:
            hit = AddressList.parse(key)
            if len(self._cache) >= self.size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = hit
        return hit


def host_key(ip: str) -> str:
    """The unit a per-host limit counts: the IPv4 address, or the IPv6 /64 (one end site).

    A malformed ``ip`` is its own key, so it cannot share another host's counter by accident.
    """
    try:
        addr = normalise(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)
