"""cgtwist.rules.facts: the fast readings of address fields and of the header section agree
with getaddresses and with cgtwist.message.headers."""

from __future__ import annotations

import unittest
from email.utils import getaddresses

from hypothesis import given, settings
from hypothesis import strategies as st

from cgtwist.message.headers import header_block, header_fields, unfolded
from cgtwist.rules.facts import field_index, parse_addresses

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


# Pieces of header sections: names, colons, blanks, line ends bare and CRLF, a lone CR, a
# folded line, UTF-8 and latin-1 octets str.strip() counts as blanks (NEL, NBSP), a control.
_PIECES = st.sampled_from(
    [b"From", b"to", b"X-A", b":", b" ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n ", b"a@b.example"]
    + [b"v", b"\xc3\xa9", b"\x85", b"\xa0", b"\x1c", b"=?x?q?y?=", b"\r\n\r\nbody"]
)


def reference_index(data: bytes) -> dict[str, list[str]]:
    """The field index as cgtwist.message.headers reads it, field by field."""
    index: dict[str, list[str]] = {}
    for name, value in header_fields(header_block(data)):
        index.setdefault(name, []).append(unfolded(value))
    return index


class FieldIndexTests(unittest.TestCase):
    @settings(max_examples=3000, deadline=None)
    @given(st.lists(_PIECES, max_size=24))
    def test_same_as_the_header_parser(self, pieces: list[bytes]) -> None:
        """Whatever the octets, the regular-expression reading of a plain header section
        (and the parser for any other) gives what cgtwist.message.headers gives."""
        data = b"".join(pieces)
        self.assertEqual(field_index(data), reference_index(data))

    @settings(max_examples=500, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["From", "To", "Subject", "Received", "X-Spam :"]),
                st.lists(st.text("ab @\t\u00e9", max_size=8), min_size=1, max_size=3),
            ),
            max_size=6,
        ),
        st.sampled_from([b"\r\n", b"\n"]),
    )
    def test_folded_fields(self, fields: list[tuple[str, list[str]]], end: bytes) -> None:
        """Well-formed sections with folded fields, CRLF or bare LF: the fast path's own
        ground, read as the parser reads it."""
        lines = [f"{n}: " + (end.decode() + " ").join(parts) for n, parts in fields]
        data = end.join(x.encode() for x in lines) + end + end + b"body"
        self.assertEqual(field_index(data), reference_index(data))
