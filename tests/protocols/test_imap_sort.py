"""SORT and THREAD (RFC 5256, RFC 5957 SORT=DISPLAY): arguments, keys, order, and the commands
over the real Maildir store."""

from __future__ import annotations

import functools
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.logs import Logger
from cgtwist.protocols.imap import scan as imap_scan
from cgtwist.protocols.imap import sort as imap_sort
from cgtwist.protocols.imap import sortcmds as imap_sortcmds
from cgtwist.protocols.imap.messagetext import MessageText
from cgtwist.protocols.imap.parse import ParseError, tokenize
from cgtwist.protocols.imap.search import BadCharset
from tests.protocols.test_imap_support import Client, World


def _tok(text: bytes) -> Any:
    return tokenize([text], [])[0]


class _Msg:
    """Just enough of a message for the key functions: headers, size and internal date."""

    def __init__(self, headers: dict[str, str], size: int = 100, date: float = 0.0) -> None:
        self.headers = headers
        self.size = size
        self.meta = type("Meta", (), {"date": date})()

    def header_value(self, name: str) -> Any:
        return self.headers.get(name)

    def getSize(self) -> int:
        return self.size


def _text(**headers: str) -> MessageText:
    return MessageText(_Msg({k.replace("_", "-"): v for k, v in headers.items()}), lambda: b"")


class ArgumentTests(unittest.TestCase):
    def test_criteria(self) -> None:
        """REVERSE applies to the key after it; unknown keys, a trailing or doubled REVERSE
        and an empty or missing list are refused (BAD)."""
        self.assertEqual(
            imap_sort.parse_criteria(_tok(b"(reverse Subject DATE displayfrom)")),
            [("SUBJECT", True), ("DATE", False), ("DISPLAYFROM", False)],
        )
        for bad in (
            b"()",
            b"(REVERSE)",
            b"(REVERSE REVERSE DATE)",
            b"(BOGUS)",
            b"DATE",
            b"((DATE))",
        ):
            self.assertRaises(ParseError, imap_sort.parse_criteria, _tok(bad))

    def test_charset_and_algorithm(self) -> None:
        self.assertEqual(imap_sort.check_charset(_tok(b"utf-8")), "UTF-8")
        self.assertRaises(BadCharset, imap_sort.check_charset, _tok(b"KOI8-R"))
        self.assertEqual(imap_sort.parse_algorithm(_tok(b"references")), "REFERENCES")
        self.assertRaises(ParseError, imap_sort.parse_algorithm, _tok(b"JWZ"))


class KeyTests(unittest.TestCase):
    def test_address_keys(self) -> None:
        """FROM/TO/CC sort by the first address's mailbox (a group's name when the field
        starts with a group, as imaptest's sort-addresses expects), ASCII case folded."""
        self.assertEqual(imap_sort.address_key(_text(cc="user2: blah@domain1.org;"), "cc"), "USER2")
        self.assertEqual(
            imap_sort.address_key(_text(to="foo bar <User1@d.org>, x@y"), "to"), "USER1"
        )
        self.assertEqual(imap_sort.address_key(_text(), "from"), "")

    def test_display_keys(self) -> None:
        """RFC 5957: the display name decoded, else the addr-spec, else a group's name."""
        self.assertEqual(
            imap_sort.display_key(_text(to="=?iso-8859-1?q?foo_aar?= <e@f.g>"), "to"), "FOO AAR"
        )
        self.assertEqual(imap_sort.display_key(_text(to="b@c.d"), "to"), "B@C.D")
        self.assertEqual(imap_sort.display_key(_text(to="a: xx@xx.org, yy@yy.org;"), "to"), "A")
        self.assertEqual(imap_sort.display_key(_text(to="d"), "to"), "D")

    def test_dates(self) -> None:
        """DATE is the Date: header as an instant (zones count), INTERNALDATE when it is
        missing or unparsable; ARRIVAL is always INTERNALDATE."""
        self.assertEqual(
            imap_sort.sent_date(_text(date="Fri, 22 Feb 2008 02:00:00 +0200")), 1203638400.0
        )
        self.assertEqual(
            imap_sort.sent_date(MessageText(_Msg({"date": "garbage"}, date=5.0), lambda: b"")), 5.0
        )
        keys = imap_sort.sort_keys(
            MessageText(_Msg({"subject": "Re: [list] x"}, date=7.0), lambda: b""),
            [("ARRIVAL", False), ("SUBJECT", True), ("SIZE", False)],
        )
        self.assertEqual(keys, (7.0, "X", 100))

    def test_reverse_keeps_mailbox_order_for_ties(self) -> None:
        """imaptest's sort-arrival: REVERSE turns the key around, but messages with equal
        keys stay in mailbox order (Dovecot's answer)."""
        rows = [(1, (0,)), (2, (2,)), (3, (1,)), (4, (2,)), (5, (2,))]
        self.assertEqual(imap_sort.ordered(rows, [("ARRIVAL", False)]), [1, 3, 2, 4, 5])
        self.assertEqual(imap_sort.ordered(rows, [("ARRIVAL", True)]), [2, 4, 5, 3, 1])

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.tuples(st.integers(0, 3), st.text("ab", max_size=2)), max_size=20),
        st.lists(st.booleans(), min_size=2, max_size=2),
    )
    def test_ordered_matches_a_comparator(
        self, keys: list[tuple[int, str]], rev: list[bool]
    ) -> None:
        """The stable multi-pass sort equals a comparison of the criteria in turn, then of
        the sequence number."""
        rows = [(i + 1, k) for i, k in enumerate(keys)]
        criteria = [("SIZE", rev[0]), ("SUBJECT", rev[1])]

        def cmp(a: tuple[int, Any], b: tuple[int, Any]) -> int:
            for i, (_k, r) in enumerate(criteria):
                if a[1][i] != b[1][i]:
                    less = a[1][i] < b[1][i]
                    return (1 if less else -1) if r else (-1 if less else 1)
            return a[0] - b[0]

        want = [n for n, _ in sorted(rows, key=functools.cmp_to_key(cmp))]
        self.assertEqual(imap_sort.ordered(rows, criteria), want)
        # An updating SORT keeps its result by rank (bisect): the same order.
        ranked = sorted(imap_sort.rank(n, k, criteria) for n, k in rows)
        self.assertEqual([r[-1] for r in ranked], want)


def _message(subject: str, frm: str, date: str, extra: str = "", body: str = "body") -> bytes:
    return (
        f"From: {frm}\r\nTo: bob@example.com\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"{extra}\r\n{body}\r\n"
    ).encode()


class CommandTests(unittest.TestCase):
    """The commands through CgIMAP4Server on a StringTransport, over the real Maildir."""

    def setUp(self) -> None:
        self.world = World()
        self.c = Client(self.world)
        self.c.login()
        msgs = [
            _message(
                "Plan",
                "Zed <zed@example.com>",
                "Mon, 02 Mar 2026 10:00:00 +0000",
                "Message-ID: <p1@x>\r\n",
            ),
            _message(
                "Re: plan",
                "amy@example.com",
                "Mon, 02 Mar 2026 12:00:00 +0000",
                "Message-ID: <p2@x>\r\nIn-Reply-To: <p1@x>\r\n",
                "a longer body " * 20,
            ),
            _message(
                "Other",
                "Bob <bob@example.com>",
                "Mon, 02 Mar 2026 11:00:00 +0000",
                "Message-ID: <o1@x>\r\n",
            ),
        ]
        for i, m in enumerate(msgs):
            out = self.c.send(
                b'a APPEND INBOX "0%d-Mar-2026 09:00:00 +0000" {%d+}\r\n%s\r\n' % (i + 1, len(m), m)
            )
            self.assertIn(b"a OK", out)
        self.c.select()
        self.c.send(b"d STORE 2 +FLAGS (\\Deleted)\r\n")
        self.c.send(b"u UID STORE 3 +FLAGS (\\Flagged)\r\n")

    def answer(self, command: bytes, what: bytes = b"SORT") -> bytes:
        out = self.c.send(b"t " + command + b"\r\n")
        self.assertIn(b"t OK", out, command)
        m = re.search(rb"^\* " + what + rb"(.*)\r$", out, re.M)
        assert m is not None, out
        return m.group(1).strip()

    def test_capabilities(self) -> None:
        """SORT, SORT=DISPLAY and both THREAD algorithms are advertised."""
        out = self.c.send(b"c CAPABILITY\r\n")
        for cap in (
            b" SORT ",
            b" SORT=DISPLAY ",
            b" THREAD=REFERENCES ",
            b" THREAD=ORDEREDSUBJECT",
        ):
            self.assertIn(cap, out)

    def test_sort(self) -> None:
        """Each criterion orders the matching messages; UID SORT answers UIDs; the search
        part narrows the set."""
        self.assertEqual(self.answer(b"SORT (DATE) UTF-8 ALL"), b"1 3 2")
        self.assertEqual(self.answer(b"SORT (REVERSE ARRIVAL) US-ASCII ALL"), b"3 2 1")
        self.assertEqual(self.answer(b"SORT (SUBJECT DATE) UTF-8 ALL"), b"3 1 2")
        self.assertEqual(self.answer(b"SORT (FROM) UTF-8 ALL"), b"2 3 1")
        self.assertEqual(self.answer(b"SORT (DISPLAYFROM) UTF-8 ALL"), b"2 3 1")
        self.assertEqual(self.answer(b"SORT (REVERSE SIZE) UTF-8 UNDELETED"), b"3 1")
        self.assertEqual(self.answer(b"UID SORT (TO DATE) UTF-8 FLAGGED"), b"3")
        self.assertEqual(self.answer(b'SORT (DATE) UTF-8 SUBJECT "nothing"'), b"")

    def test_thread(self) -> None:
        """REFERENCES links the reply under its parent; ORDEREDSUBJECT groups by subject."""
        self.assertEqual(self.answer(b"THREAD REFERENCES UTF-8 ALL", b"THREAD"), b"(1 2)(3)")
        self.assertEqual(self.answer(b"THREAD ORDEREDSUBJECT UTF-8 ALL", b"THREAD"), b"(1 2)(3)")
        self.assertEqual(
            self.answer(b"UID THREAD REFERENCES UTF-8 NOT DELETED", b"THREAD"), b"(1)(3)"
        )
        self.assertEqual(self.answer(b"THREAD REFERENCES UTF-8 SUBJECT nothing", b"THREAD"), b"")

    def test_keys_are_kept_with_the_message(self) -> None:
        """Issue 19: a message's sort and thread keys are derived once and kept with it in the
        folder index, so a later SORT or THREAD parses no Date:, Subject:, address or msg-id
        again, and answers the same."""
        commands = [
            (b"SORT (DATE) UTF-8 ALL", b"SORT"),
            (b"SORT (SUBJECT FROM) UTF-8 ALL", b"SORT"),
            (b"SORT (DISPLAYFROM TO CC) UTF-8 ALL", b"SORT"),
            (b"THREAD REFERENCES UTF-8 ALL", b"THREAD"),
            (b"THREAD ORDEREDSUBJECT UTF-8 ALL", b"THREAD"),
        ]
        first = [self.answer(c, w) for c, w in commands]

        def parsed(*_a: Any) -> Any:
            raise AssertionError("a key was derived again")

        for module, name in (
            (imap_sort, "_epoch"),
            (imap_sort, "_first_address"),
            (imap_sort.imap_thread, "base_subject"),
            (imap_sort.imap_thread, "message_ids"),
        ):
            self.patch(module, name, parsed)
        self.assertEqual([self.answer(c, w) for c, w in commands], first)

    def test_errors(self) -> None:
        """Bad arguments get BAD, an unknown charset NO [BADCHARSET], and outside the
        selected state the commands are not valid; the session goes on. Each refusal is
        logged with the account and address."""
        events: list[dict[str, Any]] = []
        self.c.proto.log = Logger(observer=events.append)
        for bad in (
            b"SORT DATE UTF-8 ALL",
            b"SORT (BOGUS) UTF-8 ALL",
            b"SORT (DATE) UTF-8",
            b"SORT (DATE)",
            b"THREAD JWZ UTF-8 ALL",
            b"THREAD REFERENCES UTF-8 FROBNICATE",
            b"SORT (DATE) UTF-8 ALL )",
            b"UID THREAD",
        ):
            self.assertIn(b"x BAD", self.c.send(b"x " + bad + b"\r\n"), bad)
        self.assertIn(
            b"y NO [BADCHARSET (US-ASCII UTF-8)]", self.c.send(b"y SORT (DATE) KOI8-R ALL\r\n")
        )
        self.assertIn(b"y NO [BADCHARSET", self.c.send(b"y THREAD REFERENCES KOI8-R ALL\r\n"))
        refused = [e for e in events if "refused" in e.get("log_format", "")]
        self.assertEqual(len(refused), 10)
        self.assertEqual(refused[-1]["account"], "alice@example.com")
        self.assertEqual(refused[-1]["why"], "KOI8-R")
        other = Client(self.world)
        other.login()
        self.assertIn(
            b"z BAD Command not valid in this state", other.send(b"z SORT (DATE) UTF-8 ALL\r\n")
        )
        self.assertEqual(self.answer(b"SORT (DATE) UTF-8 ALL"), b"1 3 2")

    def test_charset_and_search_string_as_literals(self) -> None:
        self.assertIn(b"+ ", self.c.send(b"t SORT (DATE) {5}\r\n"))
        self.assertIn(b"+ ", self.c.send(b"UTF-8 SUBJECT {4}\r\n"))
        self.assertIn(b"* SORT 1 2\r\n", self.c.send(b"plan\r\n"))

    def test_keys_are_collected_in_bounded_batches(self) -> None:
        """Matching and key collection stop after a batch and go on in a later reactor turn,
        other sessions being served in between; the answer is the same."""
        self.patch(imap_scan, "BATCH", 1)
        out = self.c.send(b"s SORT (DATE) UTF-8 ALL\r\n")
        self.assertNotIn(b"* SORT", out)
        other = Client(self.world)
        other.login()
        self.assertIn(b"n OK", other.send(b"n NOOP\r\n"))
        self.world.clock.advance(0)
        self.world.clock.advance(0)
        out = self.c.take()
        self.assertIn(b"* SORT 1 3 2\r\n", out)
        self.assertIn(b"s OK", out)

    def test_large_sets_are_ordered_in_a_mailstore_thread(self) -> None:
        """Above the threshold the final sort and the threading run through the account's
        ``run`` (the mailstore's threads), not on the reactor."""
        self.patch(imap_sortcmds, "_ORDER_IN_THREAD", 1)
        account = self.world.realm.account("alice@example.com")
        ran: list[str] = []
        real = account.run

        def run(fn: Any, *args: Any) -> Any:
            ran.append(fn.__name__)
            return real(fn, *args)

        self.patch(account, "run", run)
        self.assertEqual(self.answer(b"SORT (DATE) UTF-8 ALL"), b"1 3 2")
        self.assertEqual(self.answer(b"THREAD REFERENCES UTF-8 ALL", b"THREAD"), b"(1 2)(3)")
        self.assertEqual(ran, ["ordered", "threads"])


class ExpungeHoldTests(unittest.TestCase):
    def test_no_expunge_during_sort_or_thread(self) -> None:
        """RFC 3501 §7.4.1: SORT and THREAD answer sequence numbers, so another session's
        expunge is not reported during them (the numbers would shift under the client); it
        comes with the next command that may carry it, and the UID forms may carry it."""
        world = World()
        for _ in range(3):
            world.deliver("alice@example.com")
        a, b = Client(world), Client(world)
        for c in (a, b):
            c.login()
            c.select()
        a.send(b"s STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        a.send(b"e EXPUNGE\r\n")
        out = b.send(b"t SORT (ARRIVAL) UTF-8 ALL\r\n")
        self.assertNotIn(b"EXPUNGE", out)
        self.assertIn(b"* SORT 1 2 3\r\n", out)
        out = b.send(b"t THREAD ORDEREDSUBJECT UTF-8 ALL\r\n")
        self.assertNotIn(b"EXPUNGE", out)
        out = b.send(b"u UID SORT (ARRIVAL) UTF-8 ALL\r\n")
        self.assertIn(b"* 1 EXPUNGE\r\n", out)
        self.assertIn(b"* SORT 1 2\r\n", b.send(b"t SORT (ARRIVAL) UTF-8 ALL\r\n"))
