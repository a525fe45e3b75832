"""FETCH writes its responses in few steps: one write of a message's whole response (literal
and data together) when it fits in a burst, no producer registered for it, one write per
burst for many messages, and the same octets as before for BODY[] of every kind."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from tests.protocols.test_imap_support import MESSAGE, MULTIPART, World, session


class FetchWriteTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, MESSAGE, MULTIPART)
        self.writes: list[bytes] = []
        self.registered: list[Any] = []
        transport = self.c.transport
        real_write, real_register = transport.write, transport.registerProducer

        def write(data: bytes) -> None:
            self.writes.append(data)
            real_write(data)

        def register(producer: Any, streaming: bool) -> None:
            self.registered.append(producer)
            real_register(producer, streaming)

        self.patch(transport, "write", write)
        self.patch(transport, "registerProducer", register)

    def test_one_message_one_write(self) -> None:
        """UID FETCH <uid> (BODY.PEEK[]): the untagged response and the tagged OK go out in
        one write (one send: the client wakes once, as with Dovecot's corked output), its
        literal's length and the message together; no producer is registered for it. The
        next command's reply is not held back."""
        self.writes.clear()
        out = self.c.send(b"a UID FETCH 1 (BODY.PEEK[])\r\n")
        self.assertEqual(
            out,
            b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(MESSAGE)
            + MESSAGE
            + b")\r\na OK FETCH completed\r\n",
        )
        self.assertEqual(self.writes, [out])
        self.assertEqual(self.registered, [])
        self.writes.clear()
        self.assertEqual(self.c.send(b"n NOOP\r\n"), b"n OK NOOP No operation performed\r\n")
        self.assertEqual(len(self.writes), 1)

    def test_store_answer_one_write(self) -> None:
        """UID STORE: its FETCH responses and the tagged OK go out in one write."""
        self.writes.clear()
        out = self.c.send(b"s UID STORE 1:2 +FLAGS (\\Flagged)\r\n")
        self.assertEqual(
            out,
            b"* 1 FETCH (FLAGS (\\Flagged \\Recent) UID 1)\r\n"
            b"* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2)\r\n"
            b"s OK STORE completed\r\n",
        )
        self.assertEqual(self.writes, [out])

    def test_many_messages_one_write_per_burst(self) -> None:
        """FETCH 1:* of a few small messages is one write, not one per message."""
        for i in range(20):
            self.world.deliver("alice@example.com", MESSAGE.replace(b"Hello", b"Hello %d" % i))
        self.c.send(b"n NOOP\r\n")
        self.writes.clear()
        out = self.c.send(b"a FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)\r\n")
        self.assertEqual(out.count(b" FETCH (UID "), 22)
        fetches = [w for w in self.writes if b" FETCH (UID " in w]
        self.assertEqual(len(fetches), 1, [w[:40] for w in self.writes])

    def test_body_sections_unchanged(self) -> None:
        """BODY[], its partial form, HEADER, TEXT and a part give the octets they always did."""
        head, body = MESSAGE.split(b"\r\n\r\n", 1)
        out = self.c.send(b"a FETCH 1 (BODY.PEEK[] BODY.PEEK[]<5.10> BODY.PEEK[HEADER])\r\n")
        self.assertIn(b"BODY[] {%d}\r\n" % len(MESSAGE) + MESSAGE, out)
        self.assertIn(b"BODY[]<5> {10}\r\n" + MESSAGE[5:15], out)
        self.assertIn(b"BODY[HEADER] {%d}\r\n" % (len(head) + 4) + head + b"\r\n\r\n", out)
        out = self.c.send(b"b FETCH 1 (BODY.PEEK[TEXT] RFC822.SIZE)\r\n")
        self.assertIn(b"BODY[TEXT] {%d}\r\n" % len(body) + body, out)
        self.assertIn(b"RFC822.SIZE %d" % len(MESSAGE), out)
        out = self.c.send(b"c FETCH 2 (BODY.PEEK[1])\r\n")
        self.assertIn(b"BODY[1] {13}\r\npart one text", out)

    def test_item_lists_parsed_once(self) -> None:
        """A FETCH item list sent again is taken from the parsed ones: the same answers,
        a fresh list each time (the MODSEQ item CHANGEDSINCE adds goes into a copy),
        and no more than 256 lists kept."""
        from cgtwist.protocols.imap import arguments

        arguments._FETCH_ITEMS.clear()
        first = self.c.send(b"a FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])\r\n")
        again = self.c.send(b"a FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])\r\n")
        self.assertEqual(first, again)
        self.assertIn(b"(FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])", arguments._FETCH_ITEMS)
        # CHANGEDSINCE adds a MODSEQ item to its own copy of the query, every time.
        for _ in range(2):
            changed = self.c.send(b"b FETCH 1 (FLAGS) (CHANGEDSINCE 0)\r\n")
            [line] = [x for x in changed.split(b"\r\n") if x.startswith(b"* 1 FETCH")]
            self.assertEqual(line.count(b"MODSEQ"), 1, line)
        self.assertIn(b"d BAD", self.c.send(b"d FETCH 1 (NONSENSE)\r\n"))
        self.assertNotIn(b"(NONSENSE)", arguments._FETCH_ITEMS)
        for i in range(300):
            self.c.send(b"e FETCH 1 (FLAGS BODY.PEEK[]<0.%d>)\r\n" % (i + 1))
        self.assertLessEqual(len(arguments._FETCH_ITEMS), 256)
