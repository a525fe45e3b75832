"""IMAP behaviour the imaptest compliance groups check, and the defects fuzzing found.

Each test names the imaptest group (or the fuzzing finding) it guards, and runs the command
through the real protocol on a StringTransport over a real Maildir account.
"""

from __future__ import annotations

from twisted.trial import unittest

from tests.protocols.test_imap_support import Client, World


def _lines(out: bytes) -> list[bytes]:
    return [x for x in out.split(b"\r\n") if x]


class ListTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World({"imap.max_list_pattern": 64})
        self.c = Client(self.world)
        self.c.login()

    def test_pattern_longer_than_the_setting_is_bad(self) -> None:
        """A reference plus pattern longer than imap.max_list_pattern is BAD (fuzzing: a long
        wildcard pattern froze the server); at the limit it is answered normally."""
        out = self.c.send(b'l LIST "" "' + b"*" * 65 + b'"\r\n')
        self.assertEqual(_lines(out), [b"l BAD Reference and pattern longer than 64 octets"])
        out = self.c.send(b'm LSUB "' + b"a" * 40 + b'" "' + b"%" * 30 + b'"\r\n')
        self.assertTrue(out.startswith(b"m BAD"), out)
        out = self.c.send(b'n LIST "" "' + b"*" * 63 + b'x"\r\n')
        self.assertEqual(_lines(out), [b"n OK LIST completed"])
        self.assertIn(b"o OK", self.c.send(b"o NOOP\r\n"))

    def test_lsub_lists_unsubscribed_parent_noselect(self) -> None:
        """imaptest subscribe: LSUB "" box/% gives the unsubscribed box/test2 (a folder) and
        box/test3 (not one) \\Noselect for their subscribed children, and not the children."""
        for name in (b"box/test", b"box/test2/test", b"box/test3/test3"):
            self.assertIn(b"c OK", self.c.send(b"c CREATE " + name + b"\r\n"))
        self.c.send(b"c CREATE box/test2\r\n")
        for name in (b"box/test", b"box/test2/test", b"box/test3/test3"):
            self.assertIn(b"s OK", self.c.send(b"s SUBSCRIBE " + name + b"\r\n"))
        out = self.c.send(b'l LSUB "" box/%\r\n')
        self.assertEqual(sorted(_lines(out)[:-1]), [
            b'* LSUB () "/" "box/test"',
            b'* LSUB (\\Noselect) "/" "box/test2"',
            b'* LSUB (\\Noselect) "/" "box/test3"',
        ])
        out = self.c.send(b'l LSUB "" *test\r\n')
        self.assertEqual(sorted(_lines(out)[:-1]), [
            b'* LSUB () "/" "box/test"', b'* LSUB () "/" "box/test2/test"'])
