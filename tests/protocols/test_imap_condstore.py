"""CONDSTORE and QRESYNC (RFC 7162): MODSEQ on the wire, conditional STORE, resync at SELECT."""

from __future__ import annotations

import re

from twisted.trial import unittest

from cgtwist.protocols.imap import condstore as imap_condstore
from cgtwist.protocols.imap import streamer as imap_streamer
from cgtwist.protocols.imap.parse import ParseError
from tests.protocols.test_imap_support import MESSAGE, Client, World, session


def _lines(out: bytes, start: bytes) -> list[bytes]:
    return [x for x in out.split(b"\r\n") if x.startswith(start)]


def _fetches(out: bytes) -> list[bytes]:
    return [x for x in _lines(out, b"* ") if b" FETCH (" in x]


def _modseq(line: bytes) -> int:
    m = re.search(rb"MODSEQ \((\d+)\)", line)
    assert m is not None, line
    return int(m.group(1))


def _highest(out: bytes) -> int:
    m = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", out)
    assert m is not None, out
    return int(m.group(1))


class ParserTests(unittest.TestCase):
    def test_select_params(self) -> None:
        """SELECT's (CONDSTORE) and (QRESYNC (...)) parameters; anything else is BAD."""
        p = imap_condstore.select_params([[b"CONDSTORE"]])
        self.assertTrue(p.condstore)
        p = imap_condstore.select_params([[b"QRESYNC", [b"67890007", b"90060115194045000"]]])
        self.assertEqual(p.qresync, imap_condstore.Qresync(67890007, 90060115194045000, None))
        p = imap_condstore.select_params([[b"QRESYNC", [b"1", b"5", b"1:9", [b"1,3", b"2,7"]]]])
        assert p.qresync is not None
        self.assertEqual(p.qresync.known_uids, [(1, 9)])
        for bad in (
            [[b"FOO"]],
            [[b"QRESYNC"]],
            [[b"QRESYNC", [b"0", b"5"]]],
            [[b"QRESYNC", [b"1", b"0"]]],
            [[b"QRESYNC", [b"1", b"5", b"x"]]],
            [[b"QRESYNC", [b"1", b"5", b"1:9", [b"1"]]]],
        ):
            self.assertRaises(ParseError, imap_condstore.select_params, bad)

    def test_fetch_modifiers_and_items(self) -> None:
        """FETCH's modifier list is split off the items; MODSEQ inside a header list stays."""
        self.assertEqual(
            imap_condstore.split_fetch_modifiers(b"(FLAGS) (CHANGEDSINCE 12)"),
            (b"(FLAGS)", b"CHANGEDSINCE 12"),
        )
        self.assertEqual(
            imap_condstore.split_fetch_modifiers(b"BODY[HEADER.FIELDS (CHANGEDSINCE)]"),
            (b"BODY[HEADER.FIELDS (CHANGEDSINCE)]", b""),
        )
        m = imap_condstore.fetch_modifiers(b"VANISHED CHANGEDSINCE 0")
        self.assertEqual((m.changedsince, m.vanished), (0, True))
        self.assertRaises(ParseError, imap_condstore.fetch_modifiers, b"VANISHED")
        self.assertRaises(ParseError, imap_condstore.fetch_modifiers, b"CHANGEDSINCE x")
        self.assertEqual(
            imap_condstore.take_modseq_items(b"FLAGS modseq BODY[HEADER.FIELDS (MODSEQ)]"),
            (b"FLAGS BODY[HEADER.FIELDS (MODSEQ)]", 1),
        )

    def test_missing_uids(self) -> None:
        """Without tombstones that reach back far enough, VANISHED (EARLIER) names every UID
        below UIDNEXT that no message has, within the client's known UIDs."""
        self.assertEqual(imap_condstore.missing([2, 3, 7], 10, None), [(1, 1), (4, 6), (8, 9)])
        self.assertEqual(imap_condstore.missing([2, 3, 7], 10, [(3, 8)]), [(4, 6), (8, 8)])
        self.assertEqual(imap_condstore.missing([], 1, None), [])


class CondstoreSessionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, *[MESSAGE] * 4, select=False)

    def test_select_reports_highestmodseq_and_status(self) -> None:
        """Every SELECT/EXAMINE says HIGHESTMODSEQ (RFC 7162 §3.1.2.1); STATUS has it too."""
        out = self.c.send(b"s STATUS INBOX (HIGHESTMODSEQ MESSAGES)\r\n")
        m = re.search(rb"\* STATUS \"?INBOX\"? \(HIGHESTMODSEQ (\d+) MESSAGES 4\)", out)
        self.assertIsNotNone(m, out)
        out = self.c.send(b"e EXAMINE INBOX (CONDSTORE)\r\n")
        self.assertGreaterEqual(_highest(out), 1)
        self.assertIn(b"e OK [READ-ONLY]", out)

    def test_fetch_modseq_and_changedsince(self) -> None:
        """The MODSEQ item, and CHANGEDSINCE answering only the messages changed since;
        the first CONDSTORE-enabling command tells the HIGHESTMODSEQ (RFC 7162 §3.1)."""
        self.c.select()
        out = self.c.send(b"f FETCH 1:* (UID MODSEQ)\r\n")
        self.assertEqual(len(_lines(out, b"* OK [HIGHESTMODSEQ")), 1)
        before = max(_modseq(x) for x in _fetches(out))
        self.c.send(b"s STORE 2 +FLAGS.SILENT (\\Flagged)\r\n")
        out = self.c.send(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE %d)\r\n" % before)
        fetches = _fetches(out)
        self.assertEqual(len(fetches), 1, out)
        self.assertTrue(fetches[0].startswith(b"* 2 FETCH ("), out)
        self.assertGreater(_modseq(fetches[0]), before)
        self.assertIn(b"\\Flagged", fetches[0])

    def test_store_unchangedsince(self) -> None:
        """UNCHANGEDSINCE: messages changed since are left alone and named in [MODIFIED];
        the rest are changed and their FETCH carries the new MODSEQ (RFC 7162 §3.1.3)."""
        self.c.select()
        out = self.c.send(b"f FETCH 1:4 MODSEQ\r\n")
        old = max(_modseq(x) for x in _fetches(out))
        self.c.send(b"s STORE 3 +FLAGS (\\Seen)\r\n")
        out = self.c.send(b"u UID STORE 1:4 (UNCHANGEDSINCE %d) +FLAGS (\\Answered)\r\n" % old)
        self.assertIn(b"u OK [MODIFIED 3]", out)
        changed = _fetches(out)
        self.assertEqual(len(changed), 3, out)
        self.assertTrue(all(b"UID" in x and _modseq(x) > old for x in changed), out)
        out = self.c.send(b"f FETCH 3 FLAGS\r\n")
        self.assertNotIn(b"\\Answered", out)
        # .SILENT still tells the new MODSEQ; 0 fails for every message.
        out = self.c.send(b"v STORE 1 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Draft)\r\n")
        self.assertIn(b"v OK [MODIFIED 1]", out)
        out = self.c.send(b"w STORE 2 +FLAGS.SILENT (\\Draft)\r\n")
        line = _lines(out, b"* 2 FETCH")
        self.assertEqual(len(line), 1, out)
        self.assertNotIn(b"FLAGS", line[0])
        self.assertIn(b"BAD", self.c.send(b"x STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)\r\n"))

    def test_search_modseq(self) -> None:
        """SEARCH MODSEQ matches messages changed at or after the value and gives the highest
        MODSEQ of what it found (RFC 7162 §3.1.5)."""
        self.c.select()
        self.c.send(b"s STORE 2 +FLAGS (\\Seen)\r\n")
        out = self.c.send(b"f FETCH 2 MODSEQ\r\n")
        m2 = _modseq(_lines(out, b"* 2 FETCH")[0])
        out = self.c.send(b'q SEARCH MODSEQ "/flags/\\\\seen" all %d\r\n' % m2)
        self.assertIn(b"* SEARCH 2 (MODSEQ %d)\r\n" % m2, out)
        out = self.c.send(b"r SEARCH RETURN (ALL) MODSEQ %d\r\n" % (m2 + 1))
        self.assertIn(b'* ESEARCH (TAG "r")\r\n', out)
        self.assertIn(b"BAD", self.c.send(b'b SEARCH MODSEQ "/flags/x" bogus 1\r\n'))

    def test_other_sessions_flag_change_has_modseq(self) -> None:
        """Once CONDSTORE is on, an unsolicited FETCH about another session's change carries
        its MODSEQ (RFC 7162 §3.1)."""
        self.c.send(b"e ENABLE CONDSTORE\r\n")
        self.c.select()
        other = session(self.world)
        other.send(b"s STORE 1 +FLAGS (\\Flagged)\r\n")
        out = self.c.send(b"n NOOP\r\n")
        line = _lines(out, b"* 1 FETCH")
        self.assertEqual(len(line), 1, out)
        self.assertGreater(_modseq(line[0]), 0)


class QresyncSessionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, *[MESSAGE] * 5, select=False)
        self.c.send(b"e ENABLE QRESYNC\r\n")
        out = self.c.select()
        self.uv = int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))  # type: ignore[union-attr]
        self.seen = _highest(out)

    def other_changes(self) -> None:
        other = session(self.world)
        other.send(b"a UID STORE 2,4 +FLAGS (\\Deleted)\r\n")
        other.send(b"b EXPUNGE\r\n")
        other.send(b"c STORE 1 +FLAGS (\\Seen)\r\n")
        other.send(b"d LOGOUT\r\n")

    def test_enable_and_vanished_instead_of_expunge(self) -> None:
        """ENABLE QRESYNC is answered; once on, expunges go out as VANISHED (RFC 7162
        §3.2.10), the EXPUNGE's OK carries HIGHESTMODSEQ."""
        self.c.send(b"s STORE 3 +FLAGS (\\Deleted)\r\n")
        out = self.c.send(b"x EXPUNGE\r\n")
        self.assertIn(b"* VANISHED 3\r\n", out)
        self.assertNotIn(b"EXPUNGE\r\n", out.split(b"x OK")[0])
        self.assertIn(b"x OK [HIGHESTMODSEQ", out)
        self.other_changes()
        out = self.c.send(b"n NOOP\r\n")
        self.assertIn(b"* VANISHED 2,4\r\n", out)

    def test_select_resyncs(self) -> None:
        """A QRESYNC SELECT after others expunged and changed flags: VANISHED (EARLIER) with
        the UIDs gone, a FETCH with UID, FLAGS and MODSEQ of each message changed since, and
        [CLOSED] for the mailbox left (RFC 7162 §3.2.5.1, §3.2.11)."""
        self.other_changes()
        out = self.c.send(b"q SELECT INBOX (QRESYNC (%d %d))\r\n" % (self.uv, self.seen))
        self.assertIn(b"* OK [CLOSED]", out)
        self.assertIn(b"* VANISHED (EARLIER) 2,4\r\n", out)
        fetches = _lines(out, b"* 1 FETCH")
        self.assertEqual(len(fetches), 1, out)
        self.assertIn(b"UID 1 ", fetches[0])
        self.assertIn(b"\\Seen", fetches[0])
        self.assertEqual(len(_fetches(out)), 1, out)
        # Known UIDs limit the report; a wrong UIDVALIDITY gets a plain SELECT.
        out = self.c.send(b"r SELECT INBOX (QRESYNC (%d %d 3:5))\r\n" % (self.uv, self.seen))
        self.assertIn(b"* VANISHED (EARLIER) 4\r\n", out)
        out = self.c.send(b"w SELECT INBOX (QRESYNC (%d %d))\r\n" % (self.uv + 1, self.seen))
        self.assertNotIn(b"VANISHED", out)
        self.assertEqual(_fetches(out), [])

    def test_select_resync_is_paced_by_the_reader(self) -> None:
        """The FETCH lines of a QRESYNC SELECT go through the streamer: a client that stops
        reading (the transport pauses the producer) gets no more of them, and the tagged OK
        comes once they are all written; nothing is written in one go however many changed."""
        other = Client(self.world)
        other.login()
        other.select()
        other.send(b"a STORE 1:5 +FLAGS (\\Seen)\r\n")
        self.patch(imap_streamer, "STREAM_BURST", 1)  # one line per reactor turn
        out = self.c.send(b"q SELECT INBOX (QRESYNC (%d %d))\r\n" % (self.uv, self.seen))
        self.assertEqual(len(_fetches(out)), 1, out)
        self.assertNotIn(b"q OK", out)
        producer = self.c.transport.producer
        assert producer is not None
        producer.pauseProducing()
        self.world.clock.advance(0)
        self.assertEqual(self.c.take(), b"")
        producer.resumeProducing()
        for _ in range(10):
            self.world.clock.advance(0)
            out += self.c.take()
        self.assertEqual(len(_fetches(out)), 5, out)
        self.assertIn(b"q OK [READ-WRITE] SELECT completed", out)

    def test_uid_fetch_vanished(self) -> None:
        """UID FETCH ... (CHANGEDSINCE n VANISHED) names the UIDs expunged since n within
        the set asked for (RFC 7162 §3.2.6); VANISHED needs QRESYNC and UID FETCH."""
        self.other_changes()
        out = self.c.send(b"u UID FETCH 1:3 FLAGS (CHANGEDSINCE %d VANISHED)\r\n" % self.seen)
        self.assertIn(b"* VANISHED (EARLIER) 2\r\n", out)
        self.assertIn(b"u OK", out)
        self.assertIn(b"BAD", self.c.send(b"v FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)\r\n"))

    def test_qresync_select_needs_enable(self) -> None:
        c = Client(self.world)
        c.login()
        self.assertIn(b"q BAD", c.send(b"q SELECT INBOX (QRESYNC (1 1))\r\n"))
