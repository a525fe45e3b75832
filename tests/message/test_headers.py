"""Tests for cgtwist.message.headers, the one header-field parser, and its readers."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.message.headers import MAX_HEADER_BYTES, header_block, header_fields
from cgtwist.rules.facts import parse_headers

BLOCK = (
    b"Received: a\r\n\tfolded\r\nX-Bad line\r\n continued\r\nSubject : no\r\n"
    + "Subject: caf\u00e9\r\n".encode()
)


class HeaderFieldTests(unittest.TestCase):
    def test_fields_in_order_folding_kept(self) -> None:
        """Names lower-cased, folding kept (CRLF), octets kept (latin-1), the obsolete blanks
        before the colon accepted (RFC 5322 §4.5.3), lines that are not a field skipped with
        their continuations, the blank line ends the block."""
        block = BLOCK + b"\r\nbody: not a field\r\n"
        self.assertEqual(
            list(header_fields(block)),
            [
                ("received", "a\r\n\tfolded"),
                ("subject", "no"),
                ("subject", "caf\u00e9".encode().decode("latin-1")),
            ],
        )

    def test_a_name_is_printable_ascii_without_blanks(self) -> None:
        """RFC 5322 §3.6.8: a line whose 'name' has blanks inside or 8-bit octets is text,
        not a field (as IMAP's FETCH HEADER.FIELDS and SEARCH HEADER must agree)."""
        block = b"Dear John: hi\r\n\xe9t\xe9: x\r\nFrom \t: a@x\r\n\r\n"
        self.assertEqual(list(header_fields(block)), [("from", "a@x")])

    def test_rules_read_the_same_fields(self) -> None:
        """The Rules' facts are the same fields, unfolded and read as UTF-8 (RFC 6532)."""
        self.assertEqual(
            parse_headers(BLOCK + b"\r\nSubject: in the body\r\n"),
            (("received", "a folded"), ("subject", "no"), ("subject", "caf\u00e9")),
        )

    def test_rules_read_a_bounded_header_section(self) -> None:
        """A header section without its end costs at most MAX_HEADER_BYTES of parsing."""
        data = b"Subject: x\r\n" + b"X-Pad: " + b"y" * (2 * MAX_HEADER_BYTES)
        fields = parse_headers(data)
        self.assertEqual(fields[0], ("subject", "x"))
        self.assertLess(len(fields[1][1]), MAX_HEADER_BYTES)

    def test_header_block_stops_at_the_blank_line_and_the_bound(self) -> None:
        """The header section alone, CRLF or LF, none for a message that starts blank, at
        most MAX_HEADER_BYTES without its end."""
        self.assertEqual(header_block(b"A: b\r\nC: d\r\n\r\nE: f\r\n"), b"A: b\r\nC: d\r\n")
        self.assertEqual(header_block(b"A: b\n\nE: f\n"), b"A: b\n")
        self.assertEqual(header_block(b"\r\nE: f\r\n"), b"")
        self.assertEqual(len(header_block(b"A: " + b"b" * 2 * MAX_HEADER_BYTES)), MAX_HEADER_BYTES)
