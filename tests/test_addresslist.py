"""Tests for cgtwist.addresslist: the Client IPs / blacklist address-list field."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.addresslist import AddressList, AddressListCache, AddressListError

SAMPLE = """
; our networks
10.0.0.0/8          # office
192.0.2.10-192.0.2.20
198.51.100.5-9
203.0.113.7
2001:db8::/32
2001:db8:ffff::1-2001:db8:ffff::ff ; v6 range

[::1]
"""


class ParseTests(unittest.TestCase):
    def setUp(self) -> None:
        self.lst = AddressList.parse(SAMPLE)

    def test_single_cidr_range(self) -> None:
        """Single addresses, networks and ranges all match what an administrator meant."""
        for ip in (
            "10.1.2.3",
            "192.0.2.10",
            "192.0.2.15",
            "192.0.2.20",
            "198.51.100.9",
            "203.0.113.7",
            "2001:db8:1::5",
            "::1",
        ):
            self.assertTrue(self.lst.contains(ip), ip)
        for ip in (
            "11.0.0.1",
            "192.0.2.9",
            "192.0.2.21",
            "198.51.100.10",
            "203.0.113.8",
            "2001:db9::1",
            "::2",
            "127.0.0.1",
        ):
            self.assertFalse(self.lst.contains(ip), ip)

    def test_ipv4_mapped_peer(self) -> None:
        """A peer seen as ::ffff:10.1.1.1 on a dual-stack socket matches the IPv4 entry."""
        self.assertTrue(self.lst.contains("::ffff:10.1.1.1"))

    def test_comments_and_blank_lines(self) -> None:
        """Comments and blank lines are not entries."""
        self.assertEqual(len(self.lst), 7)

    def test_commas_separate_entries(self) -> None:
        """A list typed on the command line may separate entries with commas."""
        lst = AddressList.parse("192.0.2.1, 192.0.2.3")
        self.assertTrue(lst.contains("192.0.2.3"))
        self.assertFalse(lst.contains("192.0.2.2"))

    def test_list_of_lines(self) -> None:
        """A JSON list setting works like text with one entry per line."""
        self.assertTrue(AddressList.parse(["192.0.2.0/24", "::1"]).contains("192.0.2.200"))

    def test_errors_name_the_line(self) -> None:
        """A typo is refused with its line number, so the administrator can find it."""
        for text, line in (
            ("10.0.0.1\nexample.com\n", 2),
            ("\n\n1.2.3.4-1.2.3.1", 3),
            ("1.2.3.4-::1", 1),
            ("10.0.0.0/33", 1),
            ("1.2.3.4-300", 1),
        ):
            with self.assertRaises(AddressListError) as cm:
                AddressList.parse(text)
            self.assertEqual(cm.exception.line_no, line, text)
            self.assertIn(f"line {line}", str(cm.exception))

    def test_empty(self) -> None:
        """An empty list contains nothing, including garbage input."""
        lst = AddressList.parse("")
        self.assertFalse(lst)
        self.assertFalse(lst.contains("127.0.0.1"))
        self.assertFalse(self.lst.contains("garbage"))

    def test_cache(self) -> None:
        """The same setting text is parsed once."""
        cache = AddressListCache()
        self.assertIs(cache.get("10.0.0.0/8"), cache.get("10.0.0.0/8"))
        self.assertTrue(cache.get(["10.0.0.0/8"]).contains("10.9.9.9"))


class PropertyTests(unittest.TestCase):
    @given(st.ip_addresses(v=4), st.integers(min_value=8, max_value=32))
    def test_cidr_matches_ipaddress(self, ip: ipaddress.IPv4Address, prefix: int) -> None:
        """Membership agrees with Python's ipaddress for any network and probe address."""
        net = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
        lst = AddressList.parse(str(net))
        probe = ipaddress.IPv4Address((int(ip) ^ 0x00010001) & 0xFFFFFFFF)
        self.assertTrue(lst.contains(str(ip)))
        self.assertEqual(lst.contains(str(probe)), probe in net)

    @given(
        st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 4096)), max_size=20),
        st.integers(0, 2**32 - 1),
    )
    def test_ranges_merge(self, ranges: list[tuple[int, int]], probe: int) -> None:
        """Overlapping and adjacent ranges merge without losing or adding addresses."""
        lines = []
        for lo, width in ranges:
            hi = min(lo + width, 2**32 - 1)
            lines.append(f"{ipaddress.IPv4Address(lo)}-{ipaddress.IPv4Address(hi)}")
        lst = AddressList.parse("\n".join(lines))
        expected = any(lo <= probe <= min(lo + w, 2**32 - 1) for lo, w in ranges)
        self.assertEqual(lst.contains(str(ipaddress.IPv4Address(probe))), expected)


class HostKeyTests(unittest.TestCase):
    def test_ipv6_per_64(self) -> None:
        """Per-host limits treat a whole IPv6 /64 as one host, IPv4 per address."""
        from cgtwist.addresslist import host_key

        self.assertEqual(host_key("2001:db8:1:2:aaaa::1"), host_key("2001:db8:1:2:bbbb::9"))
        self.assertNotEqual(host_key("2001:db8:1:2::1"), host_key("2001:db8:1:3::1"))
        self.assertEqual(host_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertNotEqual(host_key("192.0.2.1"), host_key("192.0.2.2"))
