"""ESORT (RFC 5267 §4.2: SORT RETURN) and PARTIAL (RFC 9394: a range of a result)."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.protocols.imap import esearch as imap_esearch
from cgtwist.protocols.imap.parse import ParseError
from tests.protocols.test_imap_support import MESSAGE, World, session


class PartialRangeTests(unittest.TestCase):
    def test_ranges(self) -> None:
        """Positions in either order, negative ones from the end; ``*``, a single number,
        0 and mixed signs are BAD; PARTIAL and ALL exclude each other."""
        self.assertEqual(imap_esearch.partial_range(b"4:2"), (2, 4))
        self.assertEqual(imap_esearch.partial_range(b"-5:-1"), (-1, -5))
        for bad in (b"1", b"1:*", b"*:1", b"0:3", b"-1:3", b"x:y"):
            self.assertRaises(ParseError, imap_esearch.partial_range, bad)
        self.assertRaises(
            ParseError, imap_esearch.split_return, [b"RETURN", [b"PARTIAL", b"1:2", b"ALL"]]
        )
        found = [3, 5, 8, 9, 12]
        self.assertEqual(imap_esearch.partial_of(found, (2, 4)), [5, 8, 9])
        self.assertEqual(imap_esearch.partial_of(found, (-1, -2)), [9, 12])
        self.assertEqual(imap_esearch.partial_of(found, (6, 9)), [])


class SessionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, *[MESSAGE] * 5)

    def test_search_partial(self) -> None:
        out = self.c.send(b"a SEARCH RETURN (PARTIAL 4:2) ALL\r\n")
        self.assertIn(b'* ESEARCH (TAG "a") PARTIAL (2:4 2:4)\r\n', out)
        out = self.c.send(b"b SEARCH RETURN (PARTIAL 6:6) ALL\r\n")
        self.assertIn(b'* ESEARCH (TAG "b") PARTIAL (6:6 NIL)\r\n', out)
        out = self.c.send(b"c UID SEARCH RETURN (COUNT PARTIAL -1:-2) ALL\r\n")
        self.assertIn(b'* ESEARCH (TAG "c") UID COUNT 5 PARTIAL (-1:-2 4:5)\r\n', out)
        self.assertIn(b"d BAD", self.c.send(b"d SEARCH RETURN (PARTIAL 1:*) ALL\r\n"))

    def test_esort(self) -> None:
        """SORT RETURN answers with ESEARCH; ALL and MIN/MAX follow the sort order."""
        out = self.c.send(b"a SORT RETURN (MIN MAX COUNT ALL) (REVERSE ARRIVAL) UTF-8 ALL\r\n")
        self.assertIn(b'* ESEARCH (TAG "a") MIN 5 MAX 1 ALL 5,4,3,2,1 COUNT 5\r\n', out)
        out = self.c.send(b"b UID SORT RETURN (PARTIAL 1:2) (ARRIVAL) UTF-8 ALL\r\n")
        self.assertIn(b'* ESEARCH (TAG "b") UID PARTIAL (1:2 1:2)\r\n', out)
        self.assertIn(b"c BAD", self.c.send(b"c SORT RETURN (SAVE) (ARRIVAL) UTF-8 ALL\r\n"))
        self.assertIn(b"d BAD", self.c.send(b"d SORT RETURN (ALL)\r\n"))
