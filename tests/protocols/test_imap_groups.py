"""IMAP behaviour the imaptest compliance groups check, and the defects fuzzing found.

Each test names the imaptest group (or the fuzzing finding) it guards, and runs the command
through the real protocol on a StringTransport over a real Maildir account.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.protocols.imap import address as imap_address
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
        self.assertEqual(
            sorted(_lines(out)[:-1]),
            [
                b'* LSUB () "/" "box/test"',
                b'* LSUB (\\Noselect) "/" "box/test2"',
                b'* LSUB (\\Noselect) "/" "box/test3"',
            ],
        )
        out = self.c.send(b'l LSUB "" *test\r\n')
        self.assertEqual(
            sorted(_lines(out)[:-1]),
            [b'* LSUB () "/" "box/test"', b'* LSUB () "/" "box/test2/test"'],
        )


class AppendArgumentTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = Client(self.world)
        self.c.login()

    def messages(self) -> list[bytes]:
        self.c.select()
        return _lines(self.c.send(b"x FETCH 1:* (INTERNALDATE FLAGS)\r\n"))[:-1]

    def test_nested_flag_list_is_bad_before_the_literal(self) -> None:
        """Fuzzing: APPEND INBOX (((\\Seen))) {5} answered NO [SERVERBUG] (MismatchedNesting);
        it is BAD at once, no '+' is sent, and nothing is stored."""
        out = self.c.send(b"a APPEND INBOX (((\\Seen))) {5}\r\n")
        self.assertTrue(out.startswith(b"a BAD"), out)
        self.assertNotIn(b"+ ", out)
        self.assertNotIn(b"SERVERBUG", out)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.messages(), [])

    def test_nested_flags_with_literal_plus_are_bad_after_the_literal(self) -> None:
        """With LITERAL+ the message is already on its way: it is read and the command is BAD."""
        out = self.c.send(b"a APPEND INBOX (((\\Seen))) {5+}\r\nhello\r\n")
        self.assertEqual(_lines(out)[0][:5], b"a BAD")
        self.assertIn(b"n OK", self.c.send(b"n NOOP\r\n"))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.messages(), [])

    def test_impossible_dates_are_bad(self) -> None:
        """Fuzzing: APPEND stored 30-Feb-2021 24:00:00 +2500 and 99-Jan-2020 as some other
        date. They are BAD before the literal (or after a LITERAL+ one), and nothing is stored."""
        for date in (
            b"30-Feb-2021 24:00:00 +2500",
            b"99-Jan-2020 10:00:00 +0000",
            b"29-Feb-2021 10:00:00 +0000",
            b"01-Jan-2021 10:60:00 +0000",
            b"01-Jan-2021 10:00:00 +0075",
            b"01-Foo-2021 10:00:00 +0000",
        ):
            out = self.c.send(b'a APPEND INBOX (\\Seen) "' + date + b'" {5}\r\n')
            self.assertTrue(out.startswith(b"a BAD"), (date, out))
            out = self.c.send(b'b APPEND INBOX "' + date + b'" {5+}\r\nhello\r\n')
            self.assertTrue(out.startswith(b"b BAD"), (date, out))
        # A mailbox sent as a literal first: the arguments after it are checked as well.
        out = self.c.send(b"c APPEND {5}\r\n")
        self.assertEqual(out, b"+ Ready for literal data\r\n")
        out = self.c.send(b'INBOX "30-Feb-2021 10:00:00 +0000" {5}\r\n')
        self.assertTrue(out.startswith(b"c BAD"), out)
        self.assertEqual(self.messages(), [])

    def test_real_dates_are_kept(self) -> None:
        """A valid date-time (leap day, space-padded day, any zone) is the INTERNALDATE stored."""
        for date in (b"29-Feb-2024 23:59:59 +1400", b" 9-Jan-2020 00:00:00 -0130"):
            out = self.c.send(b'a APPEND INBOX (\\Seen $Work) "' + date + b'" {5}\r\n')
            self.assertEqual(out, b"+ Ready for literal data\r\n")
            self.assertIn(b"a OK [APPENDUID", self.c.send(b"hello\r\n"))
        got = self.messages()
        self.assertIn(b'INTERNALDATE "29-Feb-2024 09:59:59 +0000"', got[0])
        self.assertIn(b'INTERNALDATE "09-Jan-2020 01:30:00 +0000"', got[1])
        self.assertIn(b"$Work", got[0])


INNER = (
    b"From: sub@domain.org\r\nDate: Sun, 12 Aug 2012 12:34:56 +0300\r\nSubject: submsg\r\n\r\n"
    b"Hello world\r\n"
)
RFC822_TOP = (
    b"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + INNER
)
NESTED = (
    b"From: user@domain.org\r\nMime-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="foo\r\n bar"\r\n\r\nprologue\r\n'
    b"--foo bar\r\nContent-Type: text/x-myown; charset=us-ascii\r\n\r\nhello\r\n\r\n"
    b"--foo bar\r\nContent-Type: message/rfc822\r\n\r\n"
    b'From: sub@domain.org\r\nContent-Type: multipart/alternative; boundary="sub1"\r\n\r\n'
    b"--sub1\r\nContent-Type: text/html\r\n\r\n<p>Hello</p>\r\n"
    b"--sub1\r\nContent-Type: text/plain\r\n\r\nHello another world\r\n--sub1--\r\n"
    b"\r\n--foo bar--\r\nepilogue\r\n"
)


class SectionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.world.deliver("alice@example.com", RFC822_TOP)
        self.world.deliver("alice@example.com", NESTED)
        self.c = Client(self.world)
        self.c.login()
        self.c.select()

    def fetch(self, seq: int, item: bytes) -> bytes:
        out = self.c.send(b"f FETCH %d (%s)\r\n" % (seq, item))
        self.assertTrue(out.endswith(b"f OK FETCH completed\r\n"), out)
        return out.split(b"\r\nf OK")[0]

    def literal(self, seq: int, item: bytes) -> bytes:
        out = self.fetch(seq, item)
        head, _, rest = out.partition(b"}\r\n")
        size = int(head.rsplit(b"{", 1)[1])
        return rest[:size]

    def test_numbers_inside_a_message_rfc822_part(self) -> None:
        """imaptest fetch-body-message-rfc822: in a message whose body is a message/rfc822,
        BODY[1] is the inner message, 1.1 its body, 1.HEADER and 1.TEXT its parts."""
        self.assertEqual(self.literal(1, b"BODY.PEEK[1]"), INNER)
        self.assertEqual(self.literal(1, b"BODY.PEEK[1.1]"), b"Hello world\r\n")
        self.assertEqual(
            self.literal(1, b"BODY.PEEK[1.HEADER]"), INNER.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        )
        self.assertEqual(self.literal(1, b"BODY.PEEK[1.TEXT]"), b"Hello world\r\n")
        self.assertEqual(
            self.literal(1, b"BODY.PEEK[1.HEADER.FIELDS (SUBJECT)]"), b"Subject: submsg\r\n\r\n"
        )
        self.assertIn(b"BODY[1.2] NIL", self.fetch(1, b"BODY.PEEK[1.2]"))

    def test_nested_parts_and_folded_boundary(self) -> None:
        """imaptest fetch-body-mime, -rfc822-mime, fetch-bodystructure: a boundary folded over
        two lines is unfolded; the parts of a multipart inside a message/rfc822 part are
        2.1 and 2.2, with their MIME headers, and sizes in BODYSTRUCTURE match the octets."""
        self.assertEqual(self.literal(2, b"BODY.PEEK[1]"), b"hello\r\n")
        self.assertEqual(
            self.literal(2, b"BODY.PEEK[1.MIME]"),
            b"Content-Type: text/x-myown; charset=us-ascii\r\n\r\n",
        )
        self.assertEqual(
            self.literal(2, b"BODY.PEEK[2.MIME]"), b"Content-Type: message/rfc822\r\n\r\n"
        )
        self.assertEqual(self.literal(2, b"BODY.PEEK[2.1]"), b"<p>Hello</p>")
        self.assertEqual(self.literal(2, b"BODY.PEEK[2.2]"), b"Hello another world")
        self.assertEqual(
            self.literal(2, b"BODY.PEEK[2.2.MIME]"), b"Content-Type: text/plain\r\n\r\n"
        )
        self.assertEqual(
            self.literal(2, b"BODY.PEEK[2.HEADER.FIELDS (FROM)]"), b"From: sub@domain.org\r\n\r\n"
        )
        out = self.fetch(2, b"BODY")
        self.assertIn(
            b'(("text" "x-myown" ("charset" "us-ascii") NIL NIL "7bit" 7 1) '
            b'("message" "rfc822" NIL NIL NIL "7bit" ',
            out,
        )
        self.assertIn(
            b'(("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 1) '
            b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 19 1) "alternative")',
            out,
        )
        self.assertTrue(out.endswith(b' "mixed"))'), out)


GROUPS = (
    b"From: user@domain (Real Name)\r\nTo: group: g1@d1.org, g2@d2.org;,\r\n group2: g3@d3.org;\r\n"
    b"Cc: group:;, group2: (foo) ;\r\nSubject: groups\r\n\r\nbody\r\n"
)
COMMENTS = (
    b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: <@route:user@domain>\r\n"
    b"X-Extra: hello beautiful header\r\nX-Extra: another one\r\nSubject: c\r\n\r\nbody\r\n"
)


class AddressTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.world.deliver("alice@example.com", GROUPS)
        self.world.deliver("alice@example.com", COMMENTS)
        self.c = Client(self.world)
        self.c.login()
        self.c.select()

    def search(self, criteria: bytes) -> bytes:
        out = _lines(self.c.send(b"s SEARCH " + criteria + b"\r\n"))
        self.assertEqual(out[-1], b"s OK SEARCH completed")
        return out[0]

    def test_envelope_groups_routes_and_comment_names(self) -> None:
        """imaptest fetch-envelope: groups become RFC 3501 start/end markers (an empty group
        and one holding only a comment too), a trailing comment names the sender and a
        source route is the at-domain-list."""
        out = self.c.send(b"f FETCH 1:2 ENVELOPE\r\n")
        self.assertIn(
            b'(("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) '
            b'(("Real Name" NIL "user" "domain")) ((NIL NIL "group" NIL) (NIL NIL "g1" "d1.org") '
            b'(NIL NIL "g2" "d2.org") (NIL NIL NIL NIL) (NIL NIL "group2" NIL) '
            b'(NIL NIL "g3" "d3.org") (NIL NIL NIL NIL)) ((NIL NIL "group" NIL) (NIL NIL NIL NIL) '
            b'(NIL NIL "group2" NIL) (NIL NIL NIL NIL)) NIL NIL NIL)',
            out,
        )
        self.assertIn(
            b'((NIL NIL "user-from" "domain.org")) ((NIL NIL "user-from" "domain.org")) '
            b'((NIL NIL "user-from" "domain.org")) ((NIL "@route" "user" "domain"))',
            out,
        )

    def test_search_reads_addresses_not_their_comments(self) -> None:
        """imaptest search-addresses: FROM user-from@domain.org finds the address written with
        comments inside it; TO finds group names and members; a comment's name is found."""
        self.assertEqual(self.search(b"FROM user-from@domain.org"), b"* SEARCH 2")
        self.assertEqual(self.search(b"TO group2"), b"* SEARCH 1")
        self.assertEqual(self.search(b"TO g3@d3.org"), b"* SEARCH 1")
        self.assertEqual(self.search(b'FROM "real name"'), b"* SEARCH 1")
        self.assertEqual(self.search(b"TO user@domain"), b"* SEARCH 2")

    def test_search_header_sees_every_instance(self) -> None:
        """imaptest search-header: HEADER X-Extra "another" matches the second X-Extra line."""
        self.assertEqual(self.search(b'HEADER X-Extra "another"'), b"* SEARCH 2")
        self.assertEqual(self.search(b'HEADER X-Extra "beautiful"'), b"* SEARCH 2")
        self.assertEqual(self.search(b'HEADER X-Extra ""'), b"* SEARCH 2")
        self.assertEqual(self.search(b'NOT HEADER X-Extra ""'), b"* SEARCH 1")


class AddressParserTests(unittest.TestCase):
    @settings(max_examples=2000, deadline=None)
    @given(st.text(alphabet='ab@.,;:<>()"\\[] \r\n\t\xe9', max_size=60))
    def test_any_header_value_parses(self, value: str) -> None:
        """Whatever a header holds, ENVELOPE and SEARCH get address structures, never an
        exception, and every group start has its end marker."""
        out = imap_address.parse(value)
        starts = sum(
            1
            for a in out
            if a.host is None and a.name is None and a.adl is None and a.mailbox is not None
        )
        ends = sum(1 for a in out if a == imap_address.GROUP_END)
        self.assertGreaterEqual(starts, ends)
        imap_address.search_text(value)


class RecentTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.a, self.b, self.c = Client(self.world), Client(self.world), Client(self.world)
        for c in (self.a, self.b, self.c):
            c.login()

    def recent(self, client: Client) -> bytes:
        out = _lines(client.send(b"s STATUS INBOX (MESSAGES RECENT)\r\n"))
        return out[0]

    def test_recent_belongs_to_one_session_and_status_agrees(self) -> None:
        """imaptest append: with two sessions selected, a new message is \\Recent in exactly
        one of them, and STATUS from a third says RECENT 0 (no session selecting now would
        see it as recent)."""
        self.a.select()
        self.b.select()
        self.assertIn(b"OK [APPENDUID", self.a.send(b"a APPEND INBOX {5+}\r\nhello\r\n"))
        flags = [c.send(b"f FETCH 1 FLAGS\r\n") for c in (self.a, self.b)]
        self.assertEqual(sum(b"\\Recent" in f for f in flags), 1, flags)
        self.assertEqual(self.recent(self.c), b'* STATUS "INBOX" (MESSAGES 1 RECENT 0)')

    def test_examine_and_status_show_unclaimed_recent(self) -> None:
        """imaptest select: EXAMINE shows the messages no session has seen as RECENT without
        taking them, STATUS agrees, SELECT then takes them and STATUS says 0."""
        for _ in range(2):
            self.assertIn(b"OK [APPENDUID", self.c.send(b"a APPEND INBOX {5+}\r\nhello\r\n"))
        out = self.a.send(b"e EXAMINE INBOX\r\n")
        self.assertIn(b"* 2 RECENT", out)
        self.assertIn(b"\\Recent", self.a.send(b"f FETCH 1 FLAGS\r\n"))
        self.a.send(b"c CLOSE\r\n")
        self.assertEqual(self.recent(self.c), b'* STATUS "INBOX" (MESSAGES 2 RECENT 2)')
        self.assertIn(b"* 2 RECENT", self.b.send(b"s SELECT INBOX\r\n"))
        self.b.send(b"c CLOSE\r\n")
        self.assertEqual(self.recent(self.c), b'* STATUS "INBOX" (MESSAGES 2 RECENT 0)')


class MoveTests(unittest.TestCase):
    def test_move_into_the_selected_mailbox(self) -> None:
        """imaptest move: MOVE 1 to the mailbox itself gives COPYUID, then 1 EXPUNGE, then an
        EXISTS that counts the mailbox as it now is (not the count before the expunge)."""
        world = World()
        for _ in range(3):
            world.deliver("alice@example.com")
        c = Client(world)
        c.login()
        c.select()
        out = _lines(c.send(b"m MOVE 1 INBOX\r\n"))
        self.assertRegex(out[0], rb"\A\* OK \[COPYUID \d+ 1 4\]")
        self.assertEqual(out[1:4], [b"* 1 EXPUNGE", b"* 3 EXISTS", b"* 3 RECENT"])
        self.assertNotIn(b"* 4 EXISTS", out)
        self.assertEqual(out[-1], b"m OK MOVE completed")
        out = c.send(b"f FETCH 1:* UID\r\n")
        self.assertEqual(
            _lines(out)[:-1], [b"* 1 FETCH (UID 2)", b"* 2 FETCH (UID 3)", b"* 3 FETCH (UID 4)"]
        )


def _large(size: int) -> bytes:
    blob = (b"QUJD" * 19 + b"\r\n") * (size // 78)
    return (
        b"From: big@example.com\r\nSubject: large\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nthe needle is here\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + blob
        + b"--B--\r\n"
    )


class OffReactorTests(unittest.TestCase):
    """Fuzzing: SEARCH BODY over a 20 MB message held the reactor (every protocol) for
    seconds, FETCH BODY[1] and BODYSTRUCTURE of one for most of a second. A large message is
    now read and parsed in the account's threads (``account.run``), the reactor only
    matches and writes; bench/imap_reactor_stall.py measures the stall."""

    def setUp(self) -> None:
        self.world = World()
        self.world.deliver("alice@example.com", _large(3 << 20))
        self.world.deliver("alice@example.com")
        self.c = Client(self.world)
        self.c.login()
        self.c.select()
        account = self.c.proto.account
        self.jobs: list[str] = []
        inline = account.run

        def run(fn, *args):  # type: ignore[no-untyped-def]
            self.jobs.append(getattr(fn, "__name__", repr(fn)))
            return inline(fn, *args)

        account.run = run

    def send(self, data: bytes) -> bytes:
        """Send, then let the clock run the turns the command yields (FETCH streams in turns)."""
        out = self.c.send(data)
        for _ in range(1000):
            if data.split(b" ", 1)[0] + b" OK" in out:
                break
            self.world.clock.advance(0)
            out += self.c.take()
        return out

    def test_search_body_of_a_large_message_reads_it_in_a_thread(self) -> None:
        """SEARCH BODY/TEXT finds text in a large message, whose text was built off the
        reactor; the small message is matched on the reactor as before."""
        out = _lines(self.send(b"s SEARCH BODY needle\r\n"))
        self.assertEqual(out, [b"* SEARCH 1", b"s OK SEARCH completed"])
        self.assertEqual(self.jobs, ["prepare"])
        out = _lines(self.send(b"t SEARCH TEXT large\r\n"))
        self.assertEqual(out[0], b"* SEARCH 1")
        out = _lines(self.send(b"u SEARCH SUBJECT large\r\n"))  # no body needed: no thread
        self.assertEqual(self.jobs, ["prepare", "prepare"])

    def test_fetch_part_and_structure_of_a_large_message_in_a_thread(self) -> None:
        """FETCH BODY[1] and BODYSTRUCTURE of a large multipart are parsed off the reactor
        and answer the same as for a small one; the structure is then cached."""
        out = self.send(b"f FETCH 1 (BODY.PEEK[1] BODYSTRUCTURE)\r\n")
        self.assertIn(b"BODY[1] {18}\r\nthe needle is here BODYSTRUCTURE", out)
        self.assertIn(
            b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 18 1 NIL NIL NIL NIL)', out
        )
        self.assertIn(b'("application" "octet-stream" NIL NIL NIL "base64" ', out)
        self.assertTrue(out.endswith(b"f OK FETCH completed\r\n"), out[-200:])
        self.assertEqual(self.jobs, ["precompute"])
        out = self.send(b"g FETCH 1:2 (BODYSTRUCTURE)\r\n")
        self.assertIn(b"g OK FETCH completed", out)
        self.assertEqual(self.jobs, ["precompute", "precompute"])  # only the large one again
