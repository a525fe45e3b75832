"""MULTIAPPEND (RFC 3502): several messages in one APPEND, stored all together or not at all."""

from __future__ import annotations

import re

from twisted.trial import unittest

from cgtwist import settings
from cgtwist.protocols.imap import append as imap_append
from cgtwist.protocols.imap.parse import ParseError
from cgtwist.settings import Settings
from tests.protocols.test_imap_support import Client, World

M1 = b"Subject: one\r\n\r\nfirst\r\n"
M2 = b"Subject: two\r\n\r\nsecond body\r\n"


class ParseTests(unittest.TestCase):
    def test_messages_and_arguments(self) -> None:
        """Each message has its own flags and date; the mailbox may be a literal; a literal8
        is marked binary; junk after the last message and no message at all are BAD."""
        req = imap_append.parse(
            [b"Box (\\Seen) {3}", b' "01-Jan-2026 10:00:00 +0000" ~{2}', b""], [b"abc", b"de"]
        )
        self.assertEqual(req.mailbox, b"Box")
        self.assertEqual(
            [(m.flags, m.data, m.binary) for m in req.messages],
            [(["\\Seen"], b"abc", False), ([], b"de", True)],
        )
        self.assertIsNotNone(req.messages[1].date)
        req = imap_append.parse([b"{3}", b" {1}", b""], [b"Box", b"x"])
        self.assertEqual((req.mailbox, len(req.messages)), (b"Box", 1))
        self.assertRaises(ParseError, imap_append.parse, [b"Box {1}", b" junk"], [b"x"])
        self.assertRaises(ParseError, imap_append.parse, [b"Box"], [])
        self.assertRaises(ParseError, imap_append.parse, [b"Box (\\Recent) {1}", b""], [b"x"])


class MultiAppendTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = Client(self.world)
        self.c.login()

    def append(self, first: bytes, *rest: bytes) -> bytes:
        """Send an APPEND line by line, each literal after its continuation."""
        out = self.c.send(first + b"\r\n")
        for chunk in rest:
            out += self.c.send(chunk)
        return out

    def count(self, box: bytes = b"INBOX") -> int:
        m = re.search(rb"MESSAGES (\d+)", self.c.send(b"s STATUS " + box + b" (MESSAGES)\r\n"))
        assert m is not None
        return int(m.group(1))

    def test_capability(self) -> None:
        self.assertIn(b" MULTIAPPEND", self.c.send(b"c CAPABILITY\r\n"))

    def test_two_messages_one_appenduid(self) -> None:
        """Both messages are stored with their own flags; APPENDUID names both UIDs."""
        out = self.append(
            b"a APPEND INBOX (\\Seen) {%d}" % len(M1),
            M1 + b" (\\Flagged) {%d}\r\n" % len(M2),
            M2 + b"\r\n",
        )
        self.assertEqual(out.count(b"+ "), 2)
        self.assertRegex(out, rb"a OK \[APPENDUID \d+ 1:2\] APPEND completed")
        self.c.select()
        out = self.c.send(b"f FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
        self.assertRegex(out, rb"\* 1 FETCH \(FLAGS \(\\Seen( \\Recent)?\)")
        self.assertRegex(out, rb"\* 2 FETCH \(FLAGS \(\\Flagged( \\Recent)?\)")
        self.assertIn(b"Subject: two", out)

    def test_bad_second_message_stores_nothing(self) -> None:
        """A bad flag before the second message is BAD before its literal is sent, and the
        first message is not stored either."""
        out = self.append(b"a APPEND INBOX {%d}" % len(M1), M1 + b" (\\Bogus) {%d}\r\n" % len(M2))
        self.assertIn(b"a BAD", out)
        self.assertEqual(out.count(b"+ "), 1)
        self.assertEqual(self.count(), 0)

    def test_store_failure_stores_nothing(self) -> None:
        """When the mailstore fails midway, the messages already written are removed: NO,
        and the mailbox is as it was."""
        from cgtwist.mailstore import folder as folder_mod

        real = folder_mod.Folder._deliver_blocking
        calls = []

        def fail_second(self: object, *args: object) -> object:
            calls.append(1)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real(self, *args)  # type: ignore[arg-type]

        self.patch(folder_mod.Folder, "_deliver_blocking", fail_second)
        out = self.append(
            b"a APPEND INBOX {%d}" % len(M1), M1 + b" {%d}\r\n" % len(M2), M2 + b"\r\n"
        )
        self.assertIn(b"a NO", out)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(len(calls), 2)
        self.assertEqual(self.count(), 0)

    def test_message_count_limit(self) -> None:
        """imap.max_append_messages caps the messages of one APPEND: NO [LIMIT] before the
        literal over the cap is sent."""
        self.world.settings.replace(Settings({"imap.max_append_messages": 1}))
        out = self.append(b"a APPEND INBOX {%d}" % len(M1), M1 + b" {%d}\r\n" % len(M2))
        self.assertIn(b"a NO [LIMIT]", out)
        self.assertEqual(out.count(b"+ "), 1)
        self.assertEqual(self.count(), 0)
        self.assertRaises(ValueError, settings.validate, "imap.max_append_messages", 0)


class AppendLimitTests(unittest.TestCase):
    """APPENDLIMIT (RFC 7889): the advertised cap is the one APPEND enforces, imap.max_literal."""

    def setUp(self) -> None:
        self.world = World({"imap.max_literal": 1000})
        self.c = Client(self.world)
        self.c.login()

    def test_advertised_in_capability_and_status(self) -> None:
        """CAPABILITY and STATUS (and LIST-STATUS) say the current setting."""
        self.assertIn(b" APPENDLIMIT=1000", self.c.send(b"c CAPABILITY\r\n"))
        self.assertIn(
            b'* STATUS "INBOX" (APPENDLIMIT 1000)', self.c.send(b"s STATUS INBOX (APPENDLIMIT)\r\n")
        )
        out = self.c.send(b'l LIST "" INBOX RETURN (STATUS (APPENDLIMIT MESSAGES))\r\n')
        self.assertIn(b'* STATUS "INBOX" (APPENDLIMIT 1000 MESSAGES 0)', out)
        self.world.settings.replace(Settings({"imap.max_literal": 2000}))
        self.assertIn(b" APPENDLIMIT=2000", self.c.send(b"c CAPABILITY\r\n"))

    def test_larger_message_refused_before_it_is_sent(self) -> None:
        """A message over the limit is NO [TOOBIG] without a continuation; one at the limit
        is stored."""
        out = self.c.send(b"a APPEND INBOX {1001}\r\n")
        self.assertIn(b"a NO [TOOBIG]", out)
        self.assertNotIn(b"+ ", out)
        body = b"Subject: x\r\n\r\n" + b"y" * (1000 - 16) + b"\r\n"
        self.assertEqual(len(body), 1000)
        self.assertIn(b"+ ", self.c.send(b"b APPEND INBOX {1000}\r\n"))
        self.assertIn(b"b OK [APPENDUID", self.c.send(body + b"\r\n"))
