"""Extended LIST: selection and return options (RFC 5258), LIST-STATUS (RFC 5819), the
SPECIAL-USE selection (RFC 6154) and STATUS=SIZE (RFC 8438)."""

from __future__ import annotations

import re

from twisted.trial import unittest

from cgtwist.protocols.imap import list as imap_list
from cgtwist.protocols.imap.parse import ParseError
from tests.protocols.test_imap_support import MESSAGE, MULTIPART, World, session


def _rows(out: bytes) -> list[bytes]:
    return [x for x in out.split(b"\r\n") if x.startswith((b"* LIST", b"* STATUS"))]


class ParseTests(unittest.TestCase):
    def test_arguments(self) -> None:
        """Selection options, a pattern list and RETURN with STATUS items are read; unknown
        options, RECURSIVEMATCH alone and unknown STATUS items are syntax errors."""
        req = imap_list.parse(
            [
                [b"SUBSCRIBED", b"RECURSIVEMATCH"],
                b"",
                [b"a*", b"b"],
                b"RETURN",
                [b"CHILDREN", b"STATUS", [b"MESSAGES", b"SIZE"]],
            ]
        )
        self.assertTrue(req.subscribed and req.recursive)
        self.assertEqual(req.patterns, (b"a*", b"b"))
        self.assertEqual(req.status, (b"MESSAGES", b"SIZE"))
        for bad in (
            [[b"IMAPTEST"], b"", b"*"],
            [[b"RECURSIVEMATCH"], b"", b"*"],
            [[b"RECURSIVEMATCH", b"REMOTE"], b"", b"*"],
            [b"", b"*", b"RETURN", [b"FOO"]],
            [b"", b"*", b"RETURN", [b"STATUS", [b"BOGUS"]]],
            [b"", b"*", b"RETURN"],
        ):
            self.assertRaises(ParseError, imap_list.parse, bad)
        self.assertFalse(imap_list.is_extended([b"", b"*"]))
        self.assertTrue(imap_list.is_extended([b"", [b"*"]]))


class ListExtendedTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, MESSAGE, MULTIPART, select=False)
        for name in (b"P/a", b"P/b/c", b"P/d", b"P/e/f"):
            self.assertIn(b"c OK", self.c.send(b"c CREATE " + name + b"\r\n"))
        for name in (b"P/a", b"P/b/c", b"P/d", b"P/e/f", b"P/e"):
            self.assertIn(b"s OK", self.c.send(b"s SUBSCRIBE " + name + b"\r\n"))
        for name in (b"P/d", b"P/b", b"P/e"):  # P/b and P/e stay as parents of their child
            self.assertIn(b"d OK", self.c.send(b"d DELETE " + name + b"\r\n"))

    def test_capabilities(self) -> None:
        """LIST-EXTENDED, LIST-STATUS and STATUS=SIZE are advertised."""
        out = self.c.send(b"c CAPABILITY\r\n")
        for cap in (b" LIST-EXTENDED", b" LIST-STATUS", b" STATUS=SIZE"):
            self.assertIn(cap, out)

    def test_deleted_folder_stays_subscribed(self) -> None:
        """RFC 3501 §6.3.9: DELETE leaves the subscription; LIST (SUBSCRIBED) marks the name
        \\NonExistent (not \\Noselect)."""
        self.assertIn(b'"P/d"', self.c.send(b'l LSUB "" P/*\r\n'))
        out = self.c.send(b'l LIST (SUBSCRIBED) "" P/*\r\n')
        self.assertIn(b'* LIST (\\NonExistent \\Subscribed) "/" "P/d"', out)
        self.assertIn(b'* LIST (\\HasNoChildren \\Subscribed) "/" "P/a"', out)
        self.assertNotIn(b'"P/b"', out)
        self.assertIn(b"l OK", out)

    def test_several_patterns_and_return_subscribed(self) -> None:
        """A list of patterns lists each match once; RETURN (SUBSCRIBED CHILDREN) marks the
        subscribed ones and gives the children attributes."""
        out = self.c.send(b'l LIST "" (P/% P/b/* P/a) RETURN (SUBSCRIBED CHILDREN)\r\n')
        rows = _rows(out)
        self.assertEqual(
            rows,
            [
                b'* LIST (\\HasNoChildren \\Subscribed) "/" "P/a"',
                b'* LIST (\\Noselect \\HasChildren) "/" "P/b"',
                b'* LIST (\\HasNoChildren \\Subscribed) "/" "P/b/c"',
                b'* LIST (\\Noselect \\HasChildren \\Subscribed) "/" "P/e"',
            ],
        )

    def test_recursivematch_childinfo(self) -> None:
        """RECURSIVEMATCH lists a parent whose subscribed child no pattern matches, with
        CHILDINFO; a parent whose subscribed children are all listed gets none."""
        out = self.c.send(b'l LIST (SUBSCRIBED RECURSIVEMATCH) "" P/%\r\n')
        self.assertIn(
            b'* LIST (\\Noselect \\HasChildren) "/" "P/b" ("CHILDINFO" ("SUBSCRIBED"))', out
        )
        self.assertIn(
            b'* LIST (\\Noselect \\HasChildren \\Subscribed) "/" "P/e" ("CHILDINFO" ("SUBSCRIBED"))',
            out,
        )
        out = self.c.send(b'm LIST (SUBSCRIBED RECURSIVEMATCH) "" (P/b P/b/c)\r\n')
        self.assertEqual(_rows(out), [b'* LIST (\\HasNoChildren \\Subscribed) "/" "P/b/c"'])
        self.assertIn(b"n BAD", self.c.send(b'n LIST (RECURSIVEMATCH) "" *\r\n'))
        self.assertIn(b"o BAD", self.c.send(b'o LIST (IMAPTEST) "" *\r\n'))
        self.assertIn(b"p OK", self.c.send(b'p LIST (REMOTE) "" %\r\n'))

    def test_special_use_selection(self) -> None:
        """LIST (SPECIAL-USE) lists only the folders with a special use."""
        rows = _rows(self.c.send(b'l LIST (SPECIAL-USE) "" *\r\n'))
        self.assertTrue(rows)
        self.assertTrue(
            all(re.search(rb"\\(Sent|Trash|Drafts|Junk|Archive|All|Flagged)\b", r) for r in rows),
            rows,
        )
        self.assertIn(b'"Sent"', b"".join(rows))

    def test_list_status_and_size(self) -> None:
        """RETURN (STATUS ...) follows each selectable row with its STATUS, none for a
        \\Noselect parent; SIZE is the sum of the message sizes, in STATUS too."""
        size = len(MESSAGE) + len(MULTIPART)
        out = self.c.send(b'l LIST "" (INBOX P/*) RETURN (STATUS (MESSAGES SIZE UNSEEN))\r\n')
        rows = _rows(out)
        self.assertIn(b'* STATUS "INBOX" (MESSAGES 2 SIZE %d UNSEEN 2)' % size, rows)
        self.assertIn(b'* STATUS "P/a" (MESSAGES 0 SIZE 0 UNSEEN 0)', rows)
        i = rows.index(b'* LIST (\\HasNoChildren) "/" "P/a"')
        self.assertEqual(rows[i + 1], b'* STATUS "P/a" (MESSAGES 0 SIZE 0 UNSEEN 0)')
        self.assertFalse([r for r in rows if r.startswith(b'* STATUS "P/b"')])
        self.assertIn(b"l OK", out)
        out = self.c.send(b"s STATUS INBOX (SIZE MESSAGES)\r\n")
        self.assertIn(b'* STATUS "INBOX" (SIZE %d MESSAGES 2)' % size, out)
