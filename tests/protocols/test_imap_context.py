"""CONTEXT=SEARCH (RFC 5267 §4): SEARCH RETURN (UPDATE) results kept up to date."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from cgtwist.protocols.imap import scan as imap_scan
from cgtwist.protocols.imap import sort as imap_sort
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

    def _deferred_runner(self) -> list[tuple[defer.Deferred[None], Any, tuple[Any, ...]]]:
        """Every message counts as large (read off the reactor) and the session's reads wait
        until the test runs them, as the I/O threads would."""
        calls: list[tuple[defer.Deferred[None], Any, tuple[Any, ...]]] = []

        def runner(fn: Any, *args: Any) -> defer.Deferred[None]:
            d: defer.Deferred[None] = defer.Deferred()
            calls.append((d, fn, args))
            return d

        self.patch(imap_scan, "OFFLOAD", 0)
        self.patch(self.c.proto.account, "run", runner)
        return calls

    def _run_reads(self, calls: list[tuple[defer.Deferred[None], Any, tuple[Any, ...]]]) -> None:
        while calls:
            d, fn, args = calls.pop(0)
            d.callback(fn(*args))

    def test_body_search_reads_changed_messages_off_the_reactor(self) -> None:
        """An updating search on BODY reads a changed message in the I/O threads, not on the
        reactor: the STORE's tagged reply waits for it, and the ADDTO comes before it."""
        self.c.send(b's SEARCH RETURN (UPDATE) SEEN BODY "second line"\r\n')
        calls = self._deferred_runner()
        out = self.c.send(b"a STORE 2 +FLAGS (\\Seen)\r\n")
        self.assertIn(b"* 2 FETCH", out)
        self.assertNotIn(b"a OK", out)
        self.assertEqual(len(calls), 1)
        self._run_reads(calls)
        out = self.c.take()
        self.assertIn(b'* ESEARCH (TAG "s") ADDTO (0 2)\r\n', out)
        self.assertLess(out.index(b"ADDTO"), out.index(b"a OK"))
        self.assertIn(b"OK", self.c.send(b"b NOOP\r\n"))

    def test_during_idle_results_follow_when_matched(self) -> None:
        """During IDLE another session's change is matched off the reactor and its ADDTO
        sent as soon as it is."""
        self.c.send(b's SEARCH RETURN (UPDATE) SEEN TEXT "first line"\r\n')
        calls = self._deferred_runner()
        self.c.send(b"i IDLE\r\n")
        other = session(self.world)
        other.send(b"a STORE 3 +FLAGS (\\Seen)\r\n")
        self.assertEqual(len(calls), 1)
        self.assertNotIn(b"ADDTO", self.c.take())
        # A change while that match runs is matched after it, still during IDLE.
        other.send(b"b STORE 4 +FLAGS (\\Seen)\r\n")
        self._run_reads(calls)
        out = self.c.take()
        self.assertIn(b'* ESEARCH (TAG "s") ADDTO (0 3)\r\n', out)
        self.assertIn(b'* ESEARCH (TAG "s") ADDTO (0 4)\r\n', out)
        self.assertIn(b"i OK", self.c.send(b"DONE\r\n"))

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

    def test_a_change_does_not_sort_the_whole_result_again(self) -> None:
        """A message joining or leaving a kept SORT result is put in its place (bisect): the
        result is not sorted anew at each change, which for a large mailbox would be seconds
        of the reactor per STORE."""
        self.c.send(b"s SORT RETURN (UPDATE) (ARRIVAL) UTF-8 ALL\r\n")

        def no_full_sort(*args: object) -> list[int]:
            raise AssertionError("the whole result was sorted again")

        self.patch(imap_sort, "ordered", no_full_sort)
        self.c.send(b"a STORE 2 +FLAGS (\\Deleted)\r\n")
        out = self.c.send(b"b EXPUNGE\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") REMOVEFROM (0 2)\r\n', out)
        self.world.deliver("alice@example.com", MESSAGE)
        out = self.c.send(b"c NOOP\r\n")
        self.assertIn(b'* ESEARCH (TAG "s") ADDTO (4 4)\r\n', out)
        self.assertIn(b"c OK", out)
