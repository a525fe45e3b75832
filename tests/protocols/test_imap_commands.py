"""IMAP mailbox commands over the real Maildir store: RFC 3501 items and the extensions."""

from __future__ import annotations

import re

from twisted.trial import unittest

from tests.protocols.test_imap_support import MESSAGE, MULTIPART, Client, World, session


def _lines(out: bytes) -> list[bytes]:
    return [x for x in out.split(b"\r\n") if x]


class Base(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, MESSAGE, MULTIPART, select=False)

    def uidvalidity(self, name: bytes) -> int:
        out = self.c.send(b"v STATUS " + name + b" (UIDVALIDITY)\r\n")
        m = re.search(rb"UIDVALIDITY (\d+)", out)
        assert m is not None, out
        return int(m.group(1))


class SelectAndListTests(Base):
    def test_select_reports_counts_and_codes(self) -> None:
        """SELECT gives EXISTS, FLAGS, UIDVALIDITY, UIDNEXT, PERMANENTFLAGS and READ-WRITE."""
        out = self.c.select()
        for part in (
            b"* 2 EXISTS",
            b"* FLAGS (",
            b"[UIDVALIDITY ",
            b"[UIDNEXT 3]",
            b"[PERMANENTFLAGS (",
            b"S1 OK [READ-WRITE]",
        ):
            self.assertIn(part, out)

    def test_examine_is_read_only(self) -> None:
        """EXAMINE opens read-only: STORE and EXPUNGE are refused and FETCH BODY[] sets no \\Seen."""
        out = self.c.send(b"e EXAMINE INBOX\r\n")
        self.assertIn(b"e OK [READ-ONLY]", out)
        self.assertIn(b"s NO", self.c.send(b"s STORE 1 +FLAGS (\\Seen)\r\n"))
        self.assertIn(b"x NO", self.c.send(b"x EXPUNGE\r\n"))
        out = self.c.send(b"f FETCH 1 (BODY[])\r\n")
        self.assertNotIn(b"\\Seen", out)

    def test_select_missing_mailbox(self) -> None:
        """SELECT of a missing mailbox is NO and leaves no mailbox selected."""
        self.c.select()
        self.assertIn(b"a NO", self.c.send(b"a SELECT Nowhere\r\n"))
        self.assertIn(b"b BAD", self.c.send(b"b FETCH 1 FLAGS\r\n"))

    def test_list_special_use_and_children(self) -> None:
        """LIST shows special-use attributes and \\HasChildren/\\HasNoChildren (RFC 6154, 3348)."""
        self.assertIn(b"OK", self.c.send(b"c CREATE Projects/2026\r\n"))
        out = self.c.send(b'l LIST "" *\r\n')
        self.assertIn(b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"', out)
        self.assertIn(b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"', out)
        self.assertIn(b'* LIST (\\HasChildren) "/" "Projects"', out)
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "Projects/2026"', out)
        out = self.c.send(b'm LIST "" %\r\n')
        self.assertNotIn(b"Projects/2026", out)
        self.c.send(b"c CREATE &AOQ-/sub\r\n")
        out = self.c.send(b'o LIST "" "&AOQ-/%"\r\n')
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "&AOQ-/sub"', out)
        out = self.c.send(b'n LIST "" ""\r\n')
        self.assertIn(b'* LIST (\\Noselect) "/" ""', out)

    def test_lsub_and_subscribe(self) -> None:
        """SUBSCRIBE/UNSUBSCRIBE change what LSUB lists."""
        self.c.send(b"c CREATE Lists\r\n")
        self.assertNotIn(b'"Lists"', self.c.send(b'l LSUB "" *\r\n'))
        self.assertIn(b"s OK", self.c.send(b"s SUBSCRIBE Lists\r\n"))
        self.assertIn(b'"Lists"', self.c.send(b'l LSUB "" *\r\n'))
        self.assertIn(b"u OK", self.c.send(b"u UNSUBSCRIBE Lists\r\n"))
        self.assertNotIn(b'"Lists"', self.c.send(b'l LSUB "" *\r\n'))

    def test_create_rename_delete_and_traversal(self) -> None:
        """Folder management works; names that try to leave the account get NO."""
        self.assertIn(b"a OK", self.c.send(b"a CREATE Work\r\n"))
        self.assertIn(b"b NO", self.c.send(b"b CREATE Work\r\n"))
        self.assertIn(b"c OK", self.c.send(b"c RENAME Work Job\r\n"))
        self.assertIn(b"d OK", self.c.send(b"d DELETE Job\r\n"))
        self.assertIn(b"e NO", self.c.send(b"e DELETE INBOX\r\n"))
        for evil in (b'"../x"', b'"a/../../b"', b'"&AC8-"', b'"INBOX/../../etc"'):
            out = self.c.send(b"f CREATE " + evil + b"\r\n")
            self.assertTrue(out.startswith(b"f NO") or out.startswith(b"f BAD"), (evil, out))

    def test_status(self) -> None:
        """STATUS reports the counts asked for; an unknown item is BAD."""
        out = self.c.send(b"s STATUS INBOX (MESSAGES UNSEEN UIDNEXT)\r\n")
        self.assertIn(b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 2 UIDNEXT 3)', out)
        self.assertIn(b"t BAD", self.c.send(b"t STATUS INBOX (BOGUS)\r\n"))
        self.assertIn(b"u NO", self.c.send(b"u STATUS Nowhere (MESSAGES)\r\n"))

    def test_namespace_id_enable(self) -> None:
        """NAMESPACE lists the personal namespace; ID answers; ENABLE turns on what we have and nothing else."""
        self.assertIn(b'* NAMESPACE (("" "/")) NIL NIL', self.c.send(b"n NAMESPACE\r\n"))
        out = self.c.send(b'i ID ("name" "imaplib" "version" "3.11")\r\n')
        self.assertIn(b'* ID ("name" "cgtwist"', out)
        self.assertIn(b"i OK", out)
        self.assertIn(b"j BAD", self.c.send(b'j ID ("odd")\r\n'))
        out = self.c.send(b"e ENABLE X-UNKNOWN CONDSTORE\r\n")
        self.assertIn(b"* ENABLED CONDSTORE\r\n", out)


class FetchTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.c.select()

    def test_fetch_all_simple_items(self) -> None:
        """FLAGS, UID, RFC822.SIZE, INTERNALDATE, ENVELOPE and BODYSTRUCTURE come back for each message."""
        out = self.c.send(
            b"f FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)\r\n"
        )
        self.assertEqual(out.count(b" FETCH ("), 2)
        self.assertIn(
            b'ENVELOPE ("Mon, 02 Mar 2026 10:00:00 +0000" "Hello there" (("Alice Example" NIL "alice" "example.com"))',
            out,
        )
        self.assertIn(
            b'BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 37 2', out
        )
        self.assertIn(b'"mixed" ("boundary" "XX")', out)
        self.assertIn(b"RFC822.SIZE %d" % len(MESSAGE), out)
        self.assertRegex(
            out.decode(), r'INTERNALDATE "\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"'
        )

    def test_body_sections_and_partial(self) -> None:
        """BODY[HEADER]+BODY[TEXT] equals BODY[]; partials echo their origin; PEEK keeps unseen."""
        whole = self.c.send(b"a FETCH 1 (BODY.PEEK[])\r\n")
        self.assertIn(b"BODY[] {%d}\r\n" % len(MESSAGE) + MESSAGE, whole)
        head, body = MESSAGE.split(b"\r\n\r\n", 1)
        out = self.c.send(b"b FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[TEXT])\r\n")
        self.assertIn(b"BODY[HEADER] {%d}\r\n" % (len(head) + 4) + head + b"\r\n\r\n", out)
        self.assertIn(b"BODY[TEXT] {%d}\r\n" % len(body) + body, out)
        out = self.c.send(b"c FETCH 1 (BODY.PEEK[TEXT]<6.4>)\r\n")
        self.assertIn(b"BODY[TEXT]<6> {4}\r\nline", out)
        out = self.c.send(b"d FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
        self.assertIn(b"BODY[HEADER.FIELDS (SUBJECT)] {24}\r\nSubject: Hello there\r\n\r\n", out)
        out = self.c.send(b"e FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT DATE FROM TO)])\r\n")
        self.assertIn(b"Message-ID", out)
        self.assertNotIn(b"Subject:", out)
        self.assertNotIn(b"\\Seen", self.c.send(b"g FETCH 1 FLAGS\r\n"))

    def test_body_fetch_sets_seen(self) -> None:
        """A non-PEEK BODY[] fetch sets \\Seen and reports the new FLAGS (RFC 3501 §6.4.5)."""
        out = self.c.send(b"a FETCH 1 (BODY[TEXT])\r\n")
        self.assertIn(b"FLAGS (", out)
        self.assertIn(b"\\Seen", out)
        self.assertIn(b"\\Seen", self.c.send(b"b FETCH 1 FLAGS\r\n"))

    def test_rfc822_items(self) -> None:
        """RFC822, RFC822.HEADER and RFC822.TEXT return the message, header and body."""
        out = self.c.send(b"a FETCH 1 (RFC822.HEADER RFC822.TEXT)\r\n")
        head, body = MESSAGE.split(b"\r\n\r\n", 1)
        self.assertIn(b"RFC822.HEADER {%d}" % (len(head) + 4), out)
        self.assertIn(b"RFC822.TEXT {%d}\r\n" % len(body) + body, out)
        self.assertIn(b"RFC822 {%d}\r\n" % len(MESSAGE), self.c.send(b"b FETCH 1 RFC822\r\n"))

    def test_mime_parts(self) -> None:
        """BODY[n], BODY[n.MIME] and BODY of a multipart message address the right parts."""
        out = self.c.send(b"a FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY)\r\n")
        self.assertIn(b"BODY[1] {13}\r\npart one text", out)
        self.assertIn(b"BODY[2.MIME] {27}\r\nContent-Type: text/html\r\n\r\n", out)
        self.assertIn(b'BODY (("text" "plain"', out)
        out = self.c.send(b"b FETCH 2 (BODY.PEEK[7])\r\n")
        self.assertIn(b"* 2 FETCH (BODY[7] NIL)\r\nb OK", out)

    def test_macros_and_uid_fetch(self) -> None:
        """ALL/FAST/FULL macros work; UID FETCH always includes UID."""
        self.assertIn(b"ENVELOPE", self.c.send(b"a FETCH 1 ALL\r\n"))
        out = self.c.send(b"b UID FETCH 2 FLAGS\r\n")
        self.assertIn(b"* 2 FETCH (UID 2 FLAGS", out)
        self.assertIn(b"c BAD", self.c.send(b"c FETCH 1 (NONSENSE)\r\n"))
        self.assertIn(b"d BAD", self.c.send(b"d FETCH 0 FLAGS\r\n"))

    def test_slow_reader_gets_back_pressure(self) -> None:
        """A client that stops reading pauses the FETCH instead of buffering the whole mailbox."""
        big = MESSAGE.replace(b"second line\r\n", b"x" * 78 + b"\r\n") * 1
        big = big + (b"y" * 78 + b"\r\n") * 20000  # ~1.6 MB
        self.world.deliver("alice@example.com", big)
        self.c.send(b"n NOOP\r\n")
        self.c.proto.dataReceived(b"a FETCH 3 (BODY.PEEK[])\r\n")
        first = len(self.c.take())
        self.assertGreater(first, 0)
        self.assertLess(first, len(big))
        producer = self.c.transport.producer
        self.assertIsNotNone(producer)
        producer.pauseProducing()
        self.world.clock.advance(0)
        self.assertEqual(self.c.take(), b"")
        producer.resumeProducing()
        total = first
        for _ in range(50):
            self.world.clock.advance(0)
            total += len(self.c.transport.value())
            if b"a OK FETCH completed" in self.c.transport.value():
                break
            self.c.transport.clear()
        self.assertGreater(total, len(big))
        self.assertIsNone(self.c.transport.producer)


class SearchTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.c.select()

    def search(self, criteria: bytes) -> list[int]:
        out = self.c.send(b"s SEARCH " + criteria + b"\r\n")
        self.assertIn(b"s OK", out, criteria)
        line = [x for x in _lines(out) if x.startswith(b"* SEARCH")][0]
        return [int(x) for x in line.split()[2:]]

    def test_search_keys(self) -> None:
        """Every RFC 3501 search key family matches the right messages."""
        self.c.send(b"f STORE 2 +FLAGS (\\Flagged $Work)\r\n")
        cases = {
            b"ALL": [1, 2],
            b"SUBJECT hello": [1],
            b"FROM carol": [2],
            b"TO bob": [1, 2],
            b"HEADER Message-ID m1": [1],
            b'BODY "part two"': [2],
            b"TEXT Alice": [1],
            b"TEXT first": [1],
            b"FLAGGED": [2],
            b"UNFLAGGED": [1],
            b"KEYWORD $Work": [2],
            b"UNKEYWORD $Work": [1],
            b"NOT FLAGGED": [1],
            b"OR SUBJECT hello FROM carol": [1, 2],
            b"SENTON 3-Mar-2026": [2],
            b"SENTBEFORE 3-Mar-2026": [1],
            b"SENTSINCE 3-Mar-2026": [2],
            b"SINCE 1-Jan-2026": [1, 2],
            b"BEFORE 1-Jan-2026": [],
            b"LARGER 200": [2],
            b"SMALLER 200": [1],
            b"2": [2],
            b"1:*": [1, 2],
            b"UID 2": [2],
            b"(SEEN)": [],
            b"UNSEEN DELETED": [],
            b"UNDELETED ANSWERED": [],
            b"NEW": [1, 2],
            b"CHARSET UTF-8 ALL": [1, 2],
            b"CC nobody": [],
            b"BCC nobody": [],
            b"DRAFT": [],
            b"UNDRAFT": [1, 2],
            b"OLD": [],
            b"UNANSWERED RECENT": [1, 2],
            b'HEADER X-Missing ""': [],
        }
        for crit, want in cases.items():
            self.assertEqual(self.search(crit), want, crit)

    def test_uid_search_and_errors(self) -> None:
        """UID SEARCH returns UIDs; unknown keys are BAD; unknown charsets are NO [BADCHARSET]."""
        out = self.c.send(b"u UID SEARCH FROM carol\r\n")
        self.assertIn(b"* SEARCH 2\r\n", out)
        self.assertIn(b"x BAD", self.c.send(b"x SEARCH FROBNICATE\r\n"))
        self.assertIn(b"y NO [BADCHARSET", self.c.send(b"y SEARCH CHARSET KOI8-R ALL\r\n"))
        self.assertIn(b"z BAD", self.c.send(b"z SEARCH SINCE notadate\r\n"))

    def test_search_with_literal(self) -> None:
        """A search string may come as a literal."""
        self.assertIn(b"+ ", self.c.send(b"s SEARCH SUBJECT {5}\r\n"))
        self.assertIn(b"* SEARCH 1\r\n", self.c.send(b"Hello\r\n"))

    def test_full_text_search_yields_after_reading_its_byte_budget(self) -> None:
        """A BODY search stops its batch once it has read the batch's budget of message text
        and goes on in a later reactor turn (other sessions are served in between); flag
        searches read nothing and finish in one turn. The answer is the same."""
        from cgtwist.protocols.imap import scan as imap_scan

        self.patch(imap_scan, "BATCH_BYTES", 1)
        out = self.c.send(b's SEARCH BODY "part two"\r\n')
        self.assertNotIn(b"* SEARCH", out)
        other = Client(self.world)
        other.login()
        self.assertIn(b"n OK", other.send(b"n NOOP\r\n"))
        self.world.clock.advance(0)
        out = self.c.take()
        self.assertIn(b"* SEARCH 2\r\n", out)
        self.assertIn(b"s OK", out)
        self.assertEqual(self.search(b"UNFLAGGED"), [1, 2])


class StoreCopyMoveTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.c.select()

    def test_store_modes(self) -> None:
        """FLAGS, +FLAGS, -FLAGS and .SILENT change flags as asked; bad modes are BAD."""
        self.assertIn(
            b"* 1 FETCH (FLAGS (\\Flagged", self.c.send(b"a STORE 1 +FLAGS (\\Flagged)\r\n")
        )
        out = self.c.send(b"b STORE 1 +FLAGS.SILENT (\\Answered)\r\n")
        self.assertEqual(out, b"b OK STORE completed\r\n")
        out = self.c.send(b"c STORE 1 -FLAGS (\\Flagged)\r\n")
        self.assertNotIn(b"\\Flagged", out)
        self.assertIn(b"\\Answered", out)
        out = self.c.send(b"d UID STORE 1 FLAGS (\\Seen)\r\n")
        self.assertIn(b"UID 1", out)
        self.assertNotIn(b"\\Answered", out)
        self.assertIn(b"e BAD", self.c.send(b"e STORE 1 XFLAGS (\\Seen)\r\n"))
        self.assertIn(b"f BAD", self.c.send(b"f STORE 1 +FLAGS (\\Bogus)\r\n"))

    def test_copy_returns_copyuid(self) -> None:
        """COPY answers [COPYUID uidvalidity src dst] with the new UIDs (RFC 4315)."""
        out = self.c.send(b"c COPY 1:2 Trash\r\n")
        self.assertIn(b"c OK [COPYUID %d 1:2 1:2]" % self.uidvalidity(b"Trash"), out)
        self.assertIn(b"d NO [TRYCREATE]", self.c.send(b"d COPY 1 Nowhere\r\n"))
        self.assertIn(b"MESSAGES 2", self.c.send(b"s STATUS Trash (MESSAGES)\r\n"))

    def test_move(self) -> None:
        """MOVE copies, reports COPYUID untagged, then EXPUNGEs the source (RFC 6851)."""
        out = self.c.send(b"m UID MOVE 1 Junk\r\n")
        lines = _lines(out)
        self.assertTrue(
            lines[0].startswith(b"* OK [COPYUID %d 1 1]" % self.uidvalidity(b"Junk")), lines
        )
        self.assertEqual(lines[1], b"* 1 EXPUNGE")
        self.assertTrue(lines[2].startswith(b"m OK"))
        self.assertIn(b"* SEARCH 1\r\n", self.c.send(b"s SEARCH ALL\r\n"))

    def test_expunge_and_uid_expunge(self) -> None:
        """UID EXPUNGE removes only the named \\Deleted messages; EXPUNGE removes the rest."""
        self.c.send(b"a STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n")
        out = self.c.send(b"b UID EXPUNGE 2\r\n")
        self.assertEqual(_lines(out), [b"* 2 EXPUNGE", b"b OK UID EXPUNGE completed"])
        out = self.c.send(b"c EXPUNGE\r\n")
        self.assertEqual(_lines(out), [b"* 1 EXPUNGE", b"c OK EXPUNGE completed"])

    def test_close_expunges_silently_and_unselect_does_not(self) -> None:
        """CLOSE expunges \\Deleted messages without EXPUNGE responses; UNSELECT keeps them."""
        self.c.send(b"a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        self.assertEqual(self.c.send(b"u UNSELECT\r\n"), b"u OK UNSELECT completed\r\n")
        self.assertIn(b"MESSAGES 2", self.c.send(b"s STATUS INBOX (MESSAGES)\r\n"))
        self.c.select()
        self.assertEqual(self.c.send(b"c CLOSE\r\n"), b"c OK CLOSE completed\r\n")
        self.assertIn(b"MESSAGES 1", self.c.send(b"s STATUS INBOX (MESSAGES)\r\n"))
        self.assertIn(b"f BAD", self.c.send(b"f FETCH 1 FLAGS\r\n"))

    def test_append_with_flags_date_and_appenduid(self) -> None:
        """APPEND stores flags and the internal date and answers [APPENDUID] (RFC 4315)."""
        msg = b"Subject: drafted\r\n\r\nhello\r\n"
        self.c.send(
            b'a APPEND Drafts (\\Draft \\Seen) "05-Jan-2026 08:00:00 +0100" {%d}\r\n' % len(msg)
        )
        out = self.c.send(msg + b"\r\n")
        self.assertIn(b"a OK [APPENDUID %d 1]" % self.uidvalidity(b"Drafts"), out)
        self.c.send(b"x EXAMINE Drafts\r\n")
        out = self.c.send(b"f FETCH 1 (FLAGS INTERNALDATE BODY.PEEK[])\r\n")
        self.assertIn(b"\\Draft", out)
        self.assertIn(b'INTERNALDATE "05-Jan-2026 07:00:00 +0000"', out)
        self.assertIn(msg, out)
        self.assertIn(b"b NO [TRYCREATE]", self.c.send(b"b APPEND Nowhere {1+}\r\nx\r\n"))
        self.assertIn(b"c BAD", self.c.send(b"c APPEND Drafts (\\Recent) {1+}\r\nx\r\n"))
        self.assertIn(b"d BAD", self.c.send(b'd APPEND Drafts "yesterday" {1+}\r\nx\r\n'))

    def test_append_literal_plus_large_message(self) -> None:
        """A large non-synchronising APPEND literal within the limit is stored in full."""
        body = b"Subject: big\r\n\r\n" + b"z" * 2_000_000 + b"\r\n"
        out = self.c.send(b"a APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
        self.assertIn(b"a OK [APPENDUID", out)
        self.assertIn(b"RFC822.SIZE %d" % len(body), self.c.send(b"f FETCH 3 RFC822.SIZE\r\n"))


class UnsolicitedTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.world.deliver("alice@example.com")
        self.a = Client(self.world)
        self.b = Client(self.world)
        for c in (self.a, self.b):
            c.login()
            c.select()

    def test_idle_sees_delivery_at_once(self) -> None:
        """A message delivered while a session IDLEs shows up as `* n EXISTS` immediately."""
        self.assertEqual(self.a.send(b"i IDLE\r\n"), b"+ idling\r\n")
        self.world.deliver("alice@example.com")
        self.assertIn(b"* 2 EXISTS", self.a.take())
        self.assertEqual(self.a.send(b"DONE\r\n"), b"i OK IDLE terminated\r\n")

    def test_flag_and_expunge_updates_reach_other_session(self) -> None:
        """Flags set and messages expunged by one session reach the other at its next command."""
        self.a.send(b"a STORE 1 +FLAGS (\\Flagged)\r\n")
        out = self.b.send(b"n NOOP\r\n")
        self.assertIn(b"* 1 FETCH (FLAGS (", out)
        self.assertIn(b"\\Flagged", out)
        self.a.send(b"b STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        self.a.send(b"c EXPUNGE\r\n")
        out = self.b.send(b"f FETCH 1:* FLAGS\r\n")
        self.assertNotIn(b"EXPUNGE", out)  # RFC 3501 §7.4.1: not during FETCH
        out = self.b.send(b"n NOOP\r\n")
        self.assertIn(b"* 1 EXPUNGE", out)

    def test_expunge_pushed_during_idle(self) -> None:
        """An expunge by another session is pushed to an IDLE session."""
        self.b.send(b"i IDLE\r\n")
        self.a.send(b"b STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        self.a.send(b"c EXPUNGE\r\n")
        self.assertIn(b"* 1 EXPUNGE", self.b.take())
        self.b.send(b"DONE\r\n")

    def test_new_mail_reported_on_noop(self) -> None:
        """Without IDLE, new mail appears as EXISTS in the reply to the next command."""
        self.world.deliver("alice@example.com")
        self.assertIn(b"* 2 EXISTS", self.b.send(b"n NOOP\r\n"))


class BigSetTests(Base):
    def test_fetch_and_search_with_huge_sequence_sets(self) -> None:
        """FETCH and SEARCH with a 60 KiB message set answer promptly and correctly."""
        self.c.select()
        spec = b",".join(b"%d" % i for i in range(1, 22000, 2))
        out = self.c.send(b"f FETCH " + spec + b" UID\r\n")
        self.assertIn(b"* 1 FETCH (UID 1)", out)
        self.assertNotIn(b"* 2 FETCH", out)
        self.assertIn(b"f OK", out)
        out = self.c.send(b"s SEARCH " + spec + b"\r\n")
        self.assertIn(b"* SEARCH 1\r\n", out)
        out = self.c.send(b"u UID SEARCH UID " + spec + b"\r\n")
        self.assertIn(b"* SEARCH 1\r\n", out)


class BodyStructureCacheTests(Base):
    def test_cached_structure_equals_parsed(self) -> None:
        """The BODYSTRUCTURE built from cached headers matches a full parse of the file."""
        from cgtwist.protocols.imap import fetch as imap_fetch
        from cgtwist.protocols.imap import structure as imap_structure

        self.world.deliver(
            "alice@example.com",
            b'Subject: q\r\nContent-Type: text/html; charset="ISO-8859-1"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n"
            b"Content-Disposition: inline\r\n\r\n<p>caf=E9</p>\r\nline\r\n",
        )
        self.c.select()
        box = self.c.proto.mbox
        for seq in (1, 3):
            msg = box.message(seq)
            cached = imap_structure.cached_structure(msg, True)
            self.assertIsNotNone(cached)
            self.assertEqual(cached, imap_structure.body_structure(imap_fetch.read_raw(msg), True))
        self.assertIsNone(imap_structure.cached_structure(box.message(2), True))  # multipart

    def test_multipart_structure_and_envelope_not_rebuilt(self) -> None:
        """A second FETCH of BODYSTRUCTURE and ENVELOPE answers the same without reading or
        parsing the message again (the multipart one is kept in the store's cache)."""
        from cgtwist.protocols.imap import fetch as imap_fetch

        self.c.select()
        first = self.c.send(b"a FETCH 1:2 (BODYSTRUCTURE ENVELOPE BODY)\r\n")
        self.assertIn(b'"mixed" ("boundary" "XX")', first)
        self.assertIn("bodystructure-ext-2", self.c.proto.mbox.message(2).meta.extra)
        real = imap_fetch.read_raw

        def no_reads(msg: object) -> bytes:
            raise AssertionError("message file parsed again")

        imap_fetch.read_raw = no_reads  # type: ignore[assignment]
        try:
            again = self.c.send(b"b FETCH 1:2 (BODYSTRUCTURE ENVELOPE BODY)\r\n")
        finally:
            imap_fetch.read_raw = real  # type: ignore[assignment]
        self.assertEqual(again.replace(b"b OK", b"a OK"), first)
