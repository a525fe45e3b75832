"""CONTEXT=SEARCH (RFC 5267 §4): SEARCH RETURN (UPDATE) results kept up to date."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.settings import Settings
from tests.protocols.test_imap_support import MESSAGE, World, session


class UpdateTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, *[MESSAGE] * 4)

    def test_own_changes_add_and_remove(self) -> None:
        """Flags set and cleared by this session, and an expunge, move messages in and out
        of the kept result: ADDTO, REMOVEFROM (numbered as before the EXPUNGE, which
        follows it), until CANCELUPDATE."""
        out = self.c.send(b"s SEARCH RETURN (UPDATE ALL) SEEN\r\n")
        self.assertIn(b'* ESEARCH (TAG "s")\r\n', out)
        out = self.c.send(b"a STORE 2,4 +FLAGS (\\Seen)\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") ADDTO (0 2,4)\r\n', out)
        out = self.c.send(b"b STORE 2 -FLAGS (\\Seen)\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") REMOVEFROM (0 2)\r\n', out)
        self.c.send(b"c STORE 4 +FLAGS.SILENT (\\Deleted)\r\n")
        out = self.c.send(b"d EXPUNGE\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") REMOVEFROM (0 4)\r\n* 4 EXPUNGE\r\n', out)
        self.assertIn(b"e OK", self.c.send(b'e CANCELUPDATE "s"\r\n'))
        out = self.c.send(b"f STORE 1 +FLAGS (\\Seen)\r\n")
        self.assertNotIn(b"ESEARCH", out)

    def test_other_sessions_changes_and_new_mail(self) -> None:
        """Another session's flag change and new mail reach the result at the next command;
        UID searches name UIDs; MIN/MAX/COUNT are sent anew."""
        out = self.c.send(b"s UID SEARCH RETURN (UPDATE COUNT) UNSEEN\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") UID COUNT 4\r\n', out)
        other = session(self.world)
        other.send(b"a STORE 1 +FLAGS (\\Seen)\r\n")
        self.world.deliver("alice@example.com", MESSAGE)
        out = self.c.send(b"n NOOP\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") UID REMOVEFROM (0 1)\r\n', out)
        self.assertIn(b'* ESEARCH (TAG "s") UID ADDTO (0 5)\r\n', out)
        self.assertIn(b'* ESEARCH (TAG "s") UID COUNT 4\r\n', out)
        self.assertLess(out.index(b"* 5 EXISTS"), out.index(b"ADDTO"))

    def test_limit_and_bad_combinations(self) -> None:
        """imap.max_search_updates caps the kept searches: beyond it OK [NOUPDATE]; a new
        SELECT drops them; UPDATE with PARTIAL or SAVE is BAD."""
        self.world.settings.replace(Settings({"imap.max_search_updates": 1}))
        self.assertIn(b"a OK SEARCH", self.c.send(b"a SEARCH RETURN (UPDATE) SEEN\r\n"))
        out = self.c.send(b"b SEARCH RETURN (UPDATE) SEEN\r\n")
        self.assertIn(b'b OK [NOUPDATE "b"]', out)
        self.c.select()
        self.assertIn(b"c OK SEARCH", self.c.send(b"c SEARCH RETURN (UPDATE) SEEN\r\n"))
        self.assertIn(b"d BAD", self.c.send(b"d SEARCH RETURN (UPDATE PARTIAL 1:2) ALL\r\n"))
        self.assertIn(b"e BAD", self.c.send(b"e SEARCH RETURN (UPDATE SAVE) ALL\r\n"))


class SortUpdateTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, *[MESSAGE] * 4)

    def test_sorted_result_kept_up_to_date(self) -> None:
        """SORT RETURN (UPDATE): a message joining the result is added at its position in
        sort order (RFC 5267 §4.3), one leaving it is removed, COUNT is sent anew."""
        out = self.c.send(b"s SORT RETURN (UPDATE COUNT) (REVERSE ARRIVAL) UTF-8 SEEN\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") COUNT 0\r\n', out)
        out = self.c.send(b"a STORE 1,3 +FLAGS (\\Seen)\r\n")
        # Reverse arrival: 3 sorts before 1.
        self.assertIn(b'* ESEARCH (TAG "s") ADDTO (1 3 2 1)\r\n', out)
        self.assertIn(b'* ESEARCH (TAG "s") COUNT 2\r\n', out)
        out = self.c.send(b"b STORE 4 +FLAGS (\\Seen)\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") ADDTO (1 4)\r\n', out)
        out = self.c.send(b"c STORE 3 -FLAGS (\\Seen)\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") REMOVEFROM (0 3)\r\n', out)
        self.assertIn(
            b"d BAD", self.c.send(b"d SORT RETURN (UPDATE PARTIAL 1:2) (ARRIVAL) UTF-8 ALL\r\n")
        )
