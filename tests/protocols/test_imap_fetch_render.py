"""FETCH's everyday items rendered whole per message (``imap_fetch.render``) give the same
octets as the item-by-item generator (``fetch_response``) for every combination a session
can ask for: UID added by UID FETCH, \\Seen set by BODY[], \\Recent hidden in IMAP4rev2,
messages with CRLF and bare LF line ends, single part and multipart; and which queries it
answers (``renderable``)."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.trial import unittest

from cgtwist.protocols.imap import fetch as imap_fetch
from tests.protocols.test_imap_support import MESSAGE, MULTIPART, World, session

LF_MESSAGE = MESSAGE.replace(b"\r\n", b"\n")

RENDERED = [
    b"(BODY.PEEK[])",
    b"(BODY[])",
    b"(UID FLAGS RFC822.SIZE ENVELOPE)",
    b"(FLAGS UID RFC822.SIZE ENVELOPE)",
    b"(INTERNALDATE MODSEQ)",
    b"(BODYSTRUCTURE BODY)",
    b"(ENVELOPE BODY.PEEK[] FLAGS)",
    b"FAST",
    b"ALL",
    b"FULL",
    b"UID",
]
NOT_RENDERED = [
    b"(BODY.PEEK[HEADER])",
    b"(BODY.PEEK[TEXT])",
    b"(BODY.PEEK[1])",
    b"(BODY.PEEK[]<0.10>)",
    b"(BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
    b"(RFC822)",
    b"(RFC822.HEADER)",
    b"(BINARY.PEEK[1])",
    b"(UID BINARY.SIZE[1])",
]


class RenderTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, MESSAGE, MULTIPART, LF_MESSAGE)
        self.c.send(b"s STORE 1 +FLAGS (\\Flagged $Important)\r\n")

    def query(self, text: bytes) -> list[Any]:
        items, rest = self.c.proto.arg_fetchatt(text)
        self.assertEqual(rest, b"")
        return items

    def test_same_octets_as_the_generator(self) -> None:
        rows = self.c.proto.mbox.every_message()
        self.assertEqual(len(rows), 3)
        for text in RENDERED:
            query = self.query(text)
            self.assertTrue(imap_fetch.renderable(query), text)
            renderers = {
                (uid, recent): imap_fetch.Renderer(query, uid, recent)
                for uid in (False, True)
                for recent in (False, True)
            }
            for (seq, msg), uid, seen, recent in itertools.product(
                rows, (False, True), (False, True), (False, True)
            ):
                want = b"".join(imap_fetch.fetch_response(seq, msg, query, uid, seen, None, recent))
                got = renderers[uid, recent](seq, msg, seen)
                self.assertEqual(got, want, (text, seq, uid, seen, recent))
                self.assertEqual(imap_fetch.render(seq, msg, query, uid, seen, recent), want)

    def test_what_it_answers(self) -> None:
        for text in NOT_RENDERED:
            self.assertFalse(imap_fetch.renderable(self.query(text)), text)

    def test_large_body_left_to_the_stream(self) -> None:
        """BODY[] of a message over ``WHOLE`` is streamed, not read at once."""
        big = MESSAGE + b"x" * (imap_fetch.WHOLE + 10) + b"\r\n"
        self.world.deliver("alice@example.com", big)
        self.c.send(b"n NOOP\r\n")
        seq, msg = self.c.proto.mbox.every_message()[-1]
        self.assertIsNone(imap_fetch.render(seq, msg, self.query(b"(BODY.PEEK[])"), True))
        out = self.c.send(b"f UID FETCH 4 (BODY.PEEK[])\r\n")
        for _ in range(1000):  # the stream's later bursts go out on later turns
            if out.endswith(b"f OK FETCH completed\r\n"):
                break
            self.world.clock.advance(0)
            out += self.c.take()
        self.assertEqual(
            out,
            b"* 4 FETCH (UID 4 BODY[] {%d}\r\n" % len(big) + big + b")\r\nf OK FETCH completed\r\n",
        )

    def test_seen_set_by_body_fetch(self) -> None:
        """FETCH BODY[] of an unseen message answers with its FLAGS and \\Seen among them
        (RFC 3501 §6.4.5), and the flag is stored."""
        out = self.c.send(b"f FETCH 2 (BODY[])\r\n")
        self.assertEqual(
            out,
            b"* 2 FETCH (BODY[] {%d}\r\n" % len(MULTIPART)
            + MULTIPART
            + b" FLAGS (\\Seen \\Recent))\r\nf OK FETCH completed\r\n",
        )
        out = self.c.send(b"g FETCH 2 (FLAGS)\r\n")
        self.assertEqual(out, b"* 2 FETCH (FLAGS (\\Seen \\Recent))\r\ng OK FETCH completed\r\n")

    def test_failure_drops_only_that_message(self) -> None:
        """A message whose response cannot be made is left out (logged), the others are
        answered and the FETCH completes, as with the item-by-item generator."""
        real = imap_fetch.Renderer.__call__

        def render(self: imap_fetch.Renderer, seq: int, msg: Any, *args: Any) -> Any:
            if seq == 2:
                raise ValueError("broken message")
            return real(self, seq, msg, *args)

        self.patch(imap_fetch.Renderer, "__call__", render)
        out = self.c.send(b"f FETCH 1:3 (UID RFC822.SIZE)\r\n")
        self.assertEqual(
            out,
            b"* 1 FETCH (UID 1 RFC822.SIZE %d)\r\n" % len(MESSAGE)
            + b"* 3 FETCH (UID 3 RFC822.SIZE %d)\r\n" % len(MESSAGE)
            + b"f OK FETCH completed\r\n",
        )
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_many_messages_through_the_stream(self) -> None:
        """FETCH 1:* of more messages than are answered at once (the Streamer's path, the
        responses in chunks of several messages) gives each message's response in order."""
        for i in range(80):
            self.world.deliver("alice@example.com", MESSAGE.replace(b"Hello", b"Hello %d" % i))
        self.c.send(b"n NOOP\r\n")
        query = self.query(b"(FLAGS UID RFC822.SIZE ENVELOPE)")
        want = b"".join(
            b"".join(imap_fetch.fetch_response(seq, msg, query, False))
            for seq, msg in self.c.proto.mbox.every_message()
        )
        out = self.c.send(b"f FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE)\r\n")
        for _ in range(1000):
            if out.endswith(b"f OK FETCH completed\r\n"):
                break
            self.world.clock.advance(0)
            out += self.c.take()
        self.assertEqual(out, want + b"f OK FETCH completed\r\n")
        self.assertEqual(out.count(b" FETCH ("), 83)

    def test_facts_follow_the_items(self) -> None:
        """The facts kept for a session's last FETCH items are looked at again when the
        items change: BODY.PEEK[] leaves \\Seen alone, BODY[] after it sets it, BINARY
        after those is decoded."""
        out = self.c.send(b"a FETCH 3 (BODY.PEEK[])\r\n")
        self.assertNotIn(b"FLAGS", out)
        out = self.c.send(b"b FETCH 3 (BODY.PEEK[])\r\n")
        self.assertNotIn(b"FLAGS", out)
        out = self.c.send(b"c FETCH 3 (BODY[])\r\n")
        self.assertIn(b" FLAGS (\\Seen \\Recent))\r\nc OK", out)
        out = self.c.send(b"d FETCH 3 (BINARY.PEEK[1])\r\n")
        self.assertIn(b"* 3 FETCH (BINARY[1] {", out)
        out = self.c.send(b"e FETCH 3 (UID BODY.PEEK[])\r\n")
        self.assertTrue(out.startswith(b"* 3 FETCH (UID 3 BODY[] {%d}\r\n" % len(MESSAGE)), out)
