"""IMAP reads a header field in RFC 5322's obsolete form (``Subject :``) the same everywhere."""

from __future__ import annotations

from twisted.trial import unittest

from tests.protocols.test_imap_support import Client, World

OBSOLETE = (
    b"From : Carol <carol@example.net>\r\nTo: alice@example.com\r\n"
    b"Subject : obsolete form\r\nMessage-ID: <obs@example.net>\r\n\r\nbody\r\n"
)


class ObsoleteFieldTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.world.deliver("alice@example.com", OBSOLETE)
        self.c = Client(self.world)
        self.c.login()
        self.assertIn(b"s OK", self.c.send(b"s SELECT INBOX\r\n"))

    def test_search_finds_what_fetch_shows(self) -> None:
        """RFC 5322 §4.5.3: blanks before the colon still make a field (RFC 3501 §6.4.4
        SEARCH HEADER names fields as RFC 2822 defines them, obsolete syntax included).
        FETCH HEADER.FIELDS (SUBJECT) shows the field, so SEARCH HEADER and SUBJECT find
        the message, as Dovecot does."""
        out = self.c.send(b"f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
        self.assertIn(b"Subject : obsolete form\r\n", out)
        for criteria in (b"HEADER Subject obsolete", b"SUBJECT obsolete", b"FROM carol"):
            out = self.c.send(b"s SEARCH " + criteria + b"\r\n")
            self.assertIn(b"* SEARCH 1\r\n", out, criteria)
