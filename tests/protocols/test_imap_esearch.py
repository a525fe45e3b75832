"""SEARCH RETURN: ESEARCH results (RFC 4731) and the saved result ``$`` (RFC 5182)."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.protocols.imap import esearch as imap_esearch
from cgtwist.protocols.imap.parse import ParseError
from tests.protocols.test_imap_support import MESSAGE, MULTIPART, World, session


def _esearch(out: bytes) -> bytes:
    lines = [x for x in out.split(b"\r\n") if x.startswith(b"* ESEARCH")]
    assert len(lines) == 1, out
    return lines[0]


class ReturnOptionTests(unittest.TestCase):
    def test_split_and_render(self) -> None:
        """RETURN () means ALL; an unknown option is a syntax error; MIN/MAX/ALL are left
        out when nothing matched while COUNT 0 is still said."""
        ret, rest = imap_esearch.split_return([b"RETURN", [], b"ALL"])
        assert ret is not None
        self.assertEqual(ret.options, {b"ALL"})
        self.assertEqual(rest, [b"ALL"])
        self.assertEqual(imap_esearch.split_return([b"ALL"]), (None, [b"ALL"]))
        self.assertRaises(ParseError, imap_esearch.split_return, [b"RETURN", [b"FOO"], b"ALL"])
        self.assertRaises(ParseError, imap_esearch.split_return, [b"RETURN", b"ALL"])
        every = imap_esearch.Return(frozenset((b"MIN", b"MAX", b"ALL", b"COUNT")))
        self.assertEqual(
            imap_esearch.response(b"a1", True, every, [2, 3, 4, 9]),
            b'ESEARCH (TAG "a1") UID MIN 2 MAX 9 ALL 2:4,9 COUNT 4',
        )
        self.assertEqual(
            imap_esearch.response(b"a1", False, every, []), b'ESEARCH (TAG "a1") COUNT 0'
        )

    def test_what_save_keeps(self) -> None:
        """RFC 5182 §2.4: SAVE with MIN and/or MAX alone keeps only those; otherwise all."""

        def saved(*opts: bytes) -> list[int]:
            return imap_esearch.Return(frozenset(opts)).saved([3, 5, 8])

        self.assertEqual(saved(b"SAVE"), [3, 5, 8])
        self.assertEqual(saved(b"SAVE", b"MIN"), [3])
        self.assertEqual(saved(b"SAVE", b"MAX"), [8])
        self.assertEqual(saved(b"SAVE", b"MIN", b"MAX"), [3, 8])
        self.assertEqual(saved(b"SAVE", b"MIN", b"COUNT"), [3, 5, 8])


class ESearchSessionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, *[MESSAGE, MULTIPART] * 3)

    def test_capabilities(self) -> None:
        """ESEARCH and SEARCHRES are advertised."""
        out = self.c.send(b"c CAPABILITY\r\n")
        self.assertIn(b" ESEARCH", out)
        self.assertIn(b" SEARCHRES", out)

    def test_return_options(self) -> None:
        """MIN, MAX, ALL and COUNT answer for sequence numbers and UIDs, with the tag."""
        self.c.send(b"d STORE 2 +FLAGS (\\Deleted)\r\n")
        self.c.send(b"e EXPUNGE\r\n")
        out = self.c.send(b"a1 SEARCH RETURN (MIN MAX COUNT ALL) FROM carol\r\n")
        self.assertEqual(_esearch(out), b'* ESEARCH (TAG "a1") MIN 3 MAX 5 ALL 3,5 COUNT 2')
        self.assertIn(b"a1 OK", out)
        out = self.c.send(b"a2 UID SEARCH RETURN () ALL\r\n")
        self.assertEqual(_esearch(out), b'* ESEARCH (TAG "a2") UID ALL 1,3:6')
        out = self.c.send(b"a3 SEARCH RETURN (MIN) 1000\r\n")
        self.assertEqual(_esearch(out), b'* ESEARCH (TAG "a3")')
        out = self.c.send(b"a4 UID SEARCH RETURN (COUNT) 1000\r\n")
        self.assertEqual(_esearch(out), b'* ESEARCH (TAG "a4") UID COUNT 0')
        self.assertIn(b"a5 BAD", self.c.send(b"a5 SEARCH RETURN (FOO) ALL\r\n"))
        self.assertNotIn(b"ESEARCH", self.c.send(b"a6 SEARCH ALL\r\n"))

    def test_saved_result_feeds_later_commands(self) -> None:
        """RETURN (SAVE) answers no ESEARCH; ``$`` then names those messages in FETCH, UID
        FETCH, STORE, SEARCH and COPY, and still the same messages after an expunge renumbers
        them."""
        out = self.c.send(b"s SEARCH RETURN (SAVE) FROM carol\r\n")
        self.assertNotIn(b"ESEARCH", out)
        self.assertIn(b"s OK", out)
        out = self.c.send(b"f FETCH $ (UID)\r\n")
        self.assertEqual(
            [x for x in out.split(b"\r\n") if x.startswith(b"*")],
            [b"* 2 FETCH (UID 2)", b"* 4 FETCH (UID 4)", b"* 6 FETCH (UID 6)"],
        )
        self.c.send(b"d STORE 1 +FLAGS (\\Deleted)\r\n")
        self.c.send(b"e EXPUNGE\r\n")
        out = self.c.send(b"g FETCH $ (UID)\r\n")
        self.assertIn(b"* 1 FETCH (UID 2)", out)
        self.assertIn(b"* 5 FETCH (UID 6)", out)
        out = self.c.send(b"h UID FETCH $ (FLAGS)\r\n")
        self.assertEqual(out.count(b" FETCH ("), 3)
        self.assertIn(b"t OK", self.c.send(b"t STORE $ +FLAGS.SILENT (\\Flagged)\r\n"))
        out = self.c.send(b"u SEARCH FLAGGED\r\n")
        self.assertIn(b"* SEARCH 1 3 5\r\n", out)
        out = self.c.send(b"v SEARCH RETURN (ALL) NOT $\r\n")
        self.assertEqual(_esearch(out), b'* ESEARCH (TAG "v") ALL 2,4')
        out = self.c.send(b"w UID SEARCH UID $\r\n")
        self.assertIn(b"* SEARCH 2 4 6\r\n", out)
        self.assertIn(b"c OK [COPYUID", self.c.send(b"c COPY $ Trash\r\n"))

    def test_min_max_save_and_reset(self) -> None:
        """SAVE with MIN keeps one message; a failed SAVE search and a new SELECT empty ``$``."""
        out = self.c.send(b"s SEARCH RETURN (SAVE MIN) FROM carol\r\n")
        self.assertEqual(_esearch(out), b'* ESEARCH (TAG "s") MIN 2')
        self.assertIn(b"* 2 FETCH (UID 2)", self.c.send(b"f FETCH $ (UID)\r\n"))
        self.assertIn(b"x BAD", self.c.send(b"x SEARCH RETURN (SAVE) FROBNICATE\r\n"))
        out = self.c.send(b"g FETCH $ (UID)\r\n")
        self.assertNotIn(b"FETCH (", out)
        self.assertIn(b"g OK", out)
        self.c.send(b"s SEARCH RETURN (SAVE) ALL\r\n")
        self.c.select()
        out = self.c.send(b"h FETCH $ (UID)\r\n")
        self.assertNotIn(b"FETCH (", out)
        self.assertIn(b"h OK", out)
