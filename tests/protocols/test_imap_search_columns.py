"""SEARCH from the folder index's columns answers exactly what matching message by message
answers: flags (\\Recent and keywords included), sizes, INTERNALDATE days (odd dates too),
the cached header fields (encoded, 8-bit, missing), address text, sequence and UID sets,
MODSEQ and every combination; a key the index cannot answer falls back to the old walk."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import task
from twisted.mail import imap4
from twisted.trial import unittest

from cgtwist.mailstore import maildir, searchfacts
from cgtwist.mailstore.mailbox import MaildirMailbox
from cgtwist.protocols.imap import parse as imap_parse
from cgtwist.protocols.imap import scan as imap_scan
from cgtwist.protocols.imap import search as imap_search
from cgtwist.protocols.imap.messagetext import MessageText
from tests.mailstore.test_mailstore import Recorder, StoreTestBase, result

MESSAGES: list[tuple[bytes, Optional[float]]] = [
    (
        b"From: Alice Example <alice@example.com>\r\nTo: b@example.com\r\n"
        b"Cc: Carol <carol@example.org>\r\nSubject: Quarterly report\r\n"
        b"Date: Tue, 3 Jan 2023 10:00:00 +0000\r\nMessage-ID: <q1@example.com>\r\n\r\nhello\r\n",
        1672740000.0,  # 3 Jan 2023 10:00 UTC
    ),
    (
        b"From: =?utf-8?q?Z=C3=B6e?= <zoe@example.net>\r\nTo: (comment) <b (x) @ example.com>\r\n"
        b"Subject: =?utf-8?q?quarterly_r=C3=A9sum=C3=A9?=\r\nX-Extra: one\r\nX-Extra: two\r\n"
        b"\r\n" + b"a longer body line\r\n" * 400,
        1735689599.0,  # 31 Dec 2024 23:59:59 UTC
    ),
    (b"X-Nothing: here\r\n\r\nno subject, no from\r\n", 1735689600.0),  # 1 Jan 2025 00:00 UTC
    (
        "From: Björn <bjorn@example.se>\r\nSubject: Grüße quarterly\r\n"
        "To: undisclosed-recipients:;\r\n\r\nbody\r\n".encode(),
        -86400.0 * 400,  # 1968
    ),
    (
        b"From: alice@example.com\r\nSubject: \r\nBcc: hidden@example.com\r\n\r\nx\r\n",
        4102444800.0,  # 1 Jan 2100
    ),
]

QUERIES = [
    b"ALL",
    b"UNSEEN",
    b"SEEN",
    b"FLAGGED",
    b"UNFLAGGED",
    b"DELETED",
    b"UNDELETED",
    b"ANSWERED",
    b"DRAFT",
    b"RECENT",
    b"OLD",
    b"NEW",
    b"KEYWORD $label1",
    b"UNKEYWORD $label1",
    b"KEYWORD $never",
    b'FROM "alice"',
    'FROM "ZÖE"'.encode(),
    b'FROM "example"',
    b'FROM ""',
    b'TO "b@example.com"',
    b'TO "undisclosed"',
    b'CC "carol"',
    b'BCC "hidden"',
    b'SUBJECT "quarterly"',
    'SUBJECT "RÉSUMÉ"'.encode(),
    'SUBJECT "grüße"'.encode(),
    b'SUBJECT ""',
    b'HEADER Subject ""',
    b'HEADER Message-ID "q1@"',
    b'HEADER From "bjorn"',
    b"SINCE 1-Jan-2025",
    b"SINCE 31-Dec-2024",
    b"ON 31-Dec-2024",
    b"ON 1-Jan-1970",
    b"BEFORE 1-Jan-1970",
    b"BEFORE 2-Jan-1970",
    b"BEFORE 3-Jan-2023",
    b"ON 3-Jan-2023",
    b"SINCE 1-Jan-2100",
    b"LARGER 200",
    b"SMALLER 200",
    b"LARGER 0",
    b"1:3",
    b"2,4:*",
    b"*",
    b"UID 2:*",
    b"UID 1,5",
    b"UID 9:*",
    b"MODSEQ 1",
    b"MODSEQ 100000",
    b"NOT FLAGGED",
    b"OR FLAGGED SEEN",
    b'(UNSEEN FROM "alice")',
    b'UNSEEN SUBJECT "quarterly" NOT LARGER 5000',
    b'OR (FLAGGED SEEN) (NOT SINCE 1-Jan-2024 FROM "bjorn")',
    b"NOT (OR 1 UID 3)",
]


class _Columns(StoreTestBase):
    """A folder of ``messages``, selected, with flags set; ``both`` matches both ways."""

    messages = MESSAGES

    def setUp(self) -> None:
        super().setUp()
        for data, when in self.messages:
            maildir.deliver(self.md, data, mtime=when, to_new=True)  # mtime: INTERNALDATE
        self.box = self.select()
        Recorder().on(self.box)  # the messages are \Recent for this session
        self.store([1, 3], ["\\Seen"])
        self.store([2], ["\\Flagged", "$Label1"])
        self.store([4], ["\\Deleted", "\\Answered", "\\Draft"])

    def store(self, uids: list[int], flags: list[str]) -> None:
        ms = imap4.MessageSet()
        for u in uids:
            ms.add(u)
        result(self.box.store(ms, flags, 1, True))

    def run_clock(self, d: Any, clock: task.Clock) -> Any:
        out: list[Any] = []
        d.addBoth(out.append)
        while not out:
            clock.advance(0)
        if not isinstance(out[0], list):
            out[0].raiseException()
        return out[0]

    def both(self, box: MaildirMailbox, spec: bytes) -> tuple[list[int], Optional[list[int]]]:
        """(seq numbers matched message by message, by the columns or None when the query
        has no column form or the index cannot answer it)."""
        query = imap_search.compile_query(imap_parse.tokenize([spec], []))
        clock = task.Clock()
        rows = self.run_clock(
            imap_scan.collect(
                box, None, clock, lambda: False, query.pred, set(), lambda t, s, u: s
            ),
            clock,
        )
        if query.column is None:
            return rows, None
        d = imap_scan.collect_columns(
            box,
            clock,
            lambda: False,
            query.column,
            lambda f, found, first: [first + i + 1 for i in found],
        )
        return rows, None if d is None else self.run_clock(d, clock)


class ColumnSearchTests(_Columns):
    def test_columns_match_the_row_walk(self) -> None:
        for spec in QUERIES:
            rows, columns = self.both(self.box, spec)
            self.assertIsNotNone(columns, spec)
            self.assertEqual(columns, rows, spec)

    def test_read_only_view_and_batches(self) -> None:
        """An EXAMINE view (\\Recent unclaimed shows there) and a mailbox larger than one
        reactor turn's share give the same answers as the walk."""
        self.patch(imap_scan, "COLUMN_BATCH", 2)
        ro = self.select(rw=False)
        for spec in QUERIES:
            for box in (self.box, ro):
                rows, columns = self.both(box, spec)
                self.assertEqual(columns, rows, spec)

    def test_unindexed_keys_walk_the_messages(self) -> None:
        """BODY, TEXT, the SENT dates and a header field the index does not keep have no
        column form, or fall back when asked: matched message by message, as before."""
        for spec in (
            b'BODY "longer"',
            b'TEXT "nothing"',
            b"SENTSINCE 1-Jan-2023",
            b'FLAGGED BODY "longer"',
        ):
            query = imap_search.compile_query(imap_parse.tokenize([spec], []))
            self.assertIsNone(query.column, spec)
        for spec in (b'HEADER X-Extra "two"', b'HEADER X-Nothing ""', b'OR SEEN HEADER X-A ""'):
            rows, columns = self.both(self.box, spec)
            self.assertIsNone(columns, spec)
        # One message has each field (the second X-Extra line counts too).
        self.assertEqual(len(self.both(self.box, b'HEADER X-Extra "two"')[0]), 1)
        self.assertEqual(len(self.both(self.box, b'HEADER X-Nothing ""')[0]), 1)

    def test_no_message_object_per_message(self) -> None:
        """The column path builds a message only where the index lacks a value it keeps for
        SEARCH (an address field's text, the first time): never for flags, sizes, dates or
        the subject."""
        made: list[int] = []
        real = searchfacts.SearchFacts.row

        def row(facts: searchfacts.SearchFacts, i: int) -> Any:
            made.append(i)
            return real(facts, i)

        self.patch(searchfacts.SearchFacts, "row", row)
        for spec in (b"UNSEEN", b"FLAGGED", b'SUBJECT "q"', b"SINCE 1-Jan-2025", b"LARGER 9"):
            self.both(self.box, spec)
        self.assertEqual(made, [])
        self.both(self.box, b'FROM "alice"')
        first = len(made)
        self.both(self.box, b'FROM "alice"')
        self.assertEqual(len(made), first)  # kept in the index the first time


class ExpungedElsewhereTests(_Columns):
    def test_messages_expunged_by_another_session(self) -> None:
        """A view still holding messages another session expunged (not yet told to its
        client) searches them from their last entries, as the walk does."""
        held = self.select()
        Recorder(hold_expunges=True).on(held)
        other = self.select()
        ms = imap4.MessageSet()
        ms.add(2)
        result(other.store(ms, ["\\Deleted"], 1, True))
        result(other.expunge())
        self.assertTrue(held.pending_expunges)
        for spec in (b"ALL", b"FLAGGED", b"DELETED", b'SUBJECT "quarterly"', b"UID 2"):
            rows, columns = self.both(held, spec)
            self.assertEqual(columns, rows, spec)
        self.assertIn(2, self.both(held, b"DELETED")[1] or [])


class PlainHeaderTests(_Columns):
    """Every message with a plain ASCII From and Subject: the columns' loops in C (the
    address texts once the index keeps them all) answer as the walk does."""

    messages = [
        (
            b"From: %s <%s@example.com>\r\nTo: b@example.com\r\nSubject: %s report %d\r\n\r\nx\r\n"
            % (name.capitalize(), name, word, i),
            1700000000.0 + 86400 * i,
        )
        for i, (name, word) in enumerate(
            [(b"alice", b"Quarterly"), (b"bob", b"weekly"), (b"carol", b"QUARTERLY")] * 2
        )
    ]

    def test_columns_match_the_row_walk(self) -> None:
        for spec in (b'FROM "alice"', b'FROM "ALICE"', b'SUBJECT "quarterly"', b'SUBJECT "x"'):
            for _ in range(2):  # the second time from the texts the index kept
                rows, columns = self.both(self.box, spec)
                self.assertEqual(columns, rows, spec)
                self.assertTrue(rows or spec == b'SUBJECT "x"', spec)


class DateColumnTests(StoreTestBase):
    def test_odd_dates_read_as_the_row_walk_reads_them(self) -> None:
        """INTERNALDATEs a ``datetime.date`` cannot hold (and NaN) compare as 1 Jan 1970 in
        the column form, as ``MaildirMessage.internal_day`` gives them message by message."""
        import dataclasses
        import datetime

        odd = [float("nan"), 1e20, -1e20, 0.0, 86399.9, -0.1, 1735689600.0]
        maildir.deliver(self.md, b"Subject: x\r\n\r\nx\r\n", to_new=True)
        box = self.select()
        [e] = list(box.folder.entries.values())
        entries = []
        for t in odd:
            meta = dataclasses.replace(e.meta, date=t)
            entries.append(dataclasses.replace(e, meta=meta))
        facts = searchfacts.SearchFacts(box.folder, entries, frozenset())
        for key in (b"BEFORE", b"ON", b"SINCE"):
            for day in ("1-Jan-1970", "2-Jan-1970", "31-Dec-1969", "1-Jan-2025"):
                query = imap_search.compile_query(
                    imap_parse.tokenize([key + b" " + day.encode()], [])
                )
                assert query.column is not None
                got = query.column(imap_search.Span(facts, 0, len(entries), 1))
                want = []
                for i in range(len(entries)):
                    text = MessageText(facts.row(i), lambda: b"")
                    want.append(query.pred(text, imap_search.Context(i + 1, 1, len(odd), 1)))
                self.assertEqual(got, want, (key, day))
                self.assertIsInstance(text.internal_date(), datetime.date)


class SearchCommandTests(unittest.TestCase):
    def test_answers_over_several_shares(self) -> None:
        """SEARCH, UID SEARCH, a MODSEQ search and ESEARCH answer the same whether the
        column search takes one reactor turn or one per message."""
        from tests.protocols.test_imap_support import MESSAGE, MULTIPART, World, session

        answers = []
        for batch in (5000, 1):
            self.patch(imap_scan, "COLUMN_BATCH", batch)
            c = session(World(), MESSAGE, MULTIPART, MESSAGE)
            c.send(b"f STORE 1,3 +FLAGS (\\Flagged)\r\n")
            out = []
            for cmd in (
                b"a SEARCH FLAGGED",
                b"b UID SEARCH NOT FLAGGED",
                b"c SEARCH MODSEQ 1",
                b"d SEARCH RETURN (MIN MAX COUNT ALL) ALL",
                b"e SEARCH LARGER 100000",
            ):
                reply = c.send(cmd + b"\r\n")
                for _ in range(10):  # a share per reactor turn
                    if cmd[:2] + b"OK" in reply:
                        break
                    c.world.clock.advance(0)
                    reply += c.take()
                self.assertIn(cmd[:2] + b"OK", reply)
                out.append([x for x in reply.split(b"\r\n") if x.startswith(b"* ")])
            answers.append(out)
        self.assertEqual(answers[0], answers[1])
        self.assertEqual(answers[0][0], [b"* SEARCH 1 3"])
        self.assertEqual(answers[0][1], [b"* SEARCH 2"])
        self.assertTrue(answers[0][2][-1].startswith(b"* SEARCH 1 2 3 (MODSEQ "), answers[0][2])
        self.assertIn(b"MIN 1 MAX 3 ALL 1:3 COUNT 3", answers[0][3][0])
        self.assertEqual(answers[0][4], [b"* SEARCH"])
