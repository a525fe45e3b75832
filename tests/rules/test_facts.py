"""cgtwist.rules.facts: the fast reading of address fields agrees with getaddresses."""

from __future__ import annotations

import unittest
from email.utils import getaddresses

from hypothesis import given, settings
from hypothesis import strategies as st

from cgtwist.rules.facts import parse_addresses

# Characters that make up address fields, the RFC 5322 specials included, so both the simple
# forms the fast path reads and the others it must leave to getaddresses are drawn.
_ALPHABET = st.sampled_from(list("ab.-+_ @<>\"(),;:\\[]=?'\tZ9é"))


class ParseAddressesTests(unittest.TestCase):
    @settings(max_examples=2000, deadline=None)
    @given(st.text(_ALPHABET, max_size=30))
    def test_same_as_getaddresses(self, value: str) -> None:
        """Whatever the field holds, the result is getaddresses' result."""
        self.assertEqual(parse_addresses([value]), getaddresses([value]))

    @settings(max_examples=500, deadline=None)
    @given(
        st.from_regex(r"[A-Za-z][A-Za-z .'-]{0,12}", fullmatch=True),
        st.from_regex(
            r"[a-z0-9][a-z0-9.+_-]{0,8}@[a-z0-9-]{1,8}(\.[a-z]{2,4}){1,2}", fullmatch=True
        ),
    )
    def test_named_and_bare_forms(self, name: str, address: str) -> None:
        for value in (address, f" {address} ", f"{name} <{address}>", f"<{address}>"):
            self.assertEqual(parse_addresses([value]), getaddresses([value]), value)
