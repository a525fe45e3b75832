"""BINARY (RFC 3516): decoded parts over FETCH, literal8, UNKNOWN-CTE and literal8 APPEND."""

from __future__ import annotations

import base64
import re

from twisted.trial import unittest

from cgtwist.protocols.imap import binary as imap_binary
from cgtwist.protocols.imap import messages as imap_messages
from tests.protocols.test_imap_support import World, session

PAYLOAD = b"\x00\x01binary\r\nbytes\xff\x00"
QP_TEXT = b"caf=C3=A9 =\r\nand more  \r\nline=3D2\r\n"

MIME = (
    b"From: a@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")
    + b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    + QP_TEXT
    + b"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
    b"--b--\r\n"
)


class DecodeTests(unittest.TestCase):
    def test_sections(self) -> None:
        """Base64 and quoted-printable parts decode; [] is the message as it is; a missing part
        is None; an unknown encoding raises UnknownCTE."""
        self.assertEqual(imap_binary.section(MIME, [0]), PAYLOAD)
        self.assertEqual(imap_binary.section(MIME, [1]), "café and more\r\nline=2".encode())
        self.assertEqual(imap_binary.section(MIME, []), MIME)
        self.assertIsNone(imap_binary.section(MIME, [7]))
        self.assertRaises(imap_binary.UnknownCTE, imap_binary.section, MIME, [2])

    def test_quoted_printable_edges(self) -> None:
        """Soft breaks with whitespace after ``=``, trailing whitespace, broken escapes."""
        self.assertEqual(imap_binary.decode_qp(b"a= \t\r\nb  \r\n=ZZ=4"), b"ab\r\n=ZZ=4")

    def test_split_items(self) -> None:
        """BINARY items are taken out in order with their part and partial; a partial on
        BINARY.SIZE or a HEADER section is left for the parser to refuse."""
        pieces = imap_binary.split_items(b"UID BINARY.PEEK[1.2]<5.10> BINARY.SIZE[3] FLAGS")
        items = [p for p in pieces if isinstance(p, imap_binary.BinaryItem)]
        self.assertEqual(
            [(i.part, i.peek, i.size, i.partialBegin, i.partialLength) for i in items],
            [([0, 1], True, False, 5, 10), ([2], False, True, None, None)],
        )
        for bad in (b"BINARY.SIZE[1]<0.5>", b"BINARY[1.HEADER]", b"BINARY[0]"):
            self.assertEqual(imap_binary.split_items(bad), [bad])

    def test_literal8_append_becomes_base64(self) -> None:
        """A binary part is stored as base64 and decodes back to the same octets."""
        msg = (
            b"Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n" + PAYLOAD
        )
        stored = imap_binary.binary_to_base64(msg)
        self.assertNotIn(b"\x00", stored)
        self.assertIn(b"Content-Transfer-Encoding: base64\r\n", stored)
        self.assertEqual(imap_binary.section(stored, [0]), PAYLOAD)
        plain = b"Subject: t\r\n\r\nhello\r\n"
        self.assertEqual(imap_binary.binary_to_base64(plain), plain)


class BinaryFetchTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, MIME)

    def test_capability(self) -> None:
        self.assertIn(b" BINARY", self.c.send(b"c CAPABILITY\r\n"))

    def test_binary_fetch(self) -> None:
        """BINARY.PEEK gives the decoded octets as a literal8 (they hold NUL), BINARY.SIZE
        their count, partials cut the decoded data; none of it sets \\Seen."""
        out = self.c.send(b"f FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[2]<0.4>)\r\n")
        self.assertIn(
            b"BINARY.SIZE[1] %d BINARY[1] ~{%d}\r\n" % (len(PAYLOAD), len(PAYLOAD)) + PAYLOAD, out
        )
        self.assertIn(b"BINARY[2]<0> {4}\r\ncaf\xc3", out)
        self.assertIn(b"f OK", out)
        self.assertNotIn(b"\\Seen", self.c.send(b"g FETCH 1 FLAGS\r\n"))
        out = self.c.send(b"h FETCH 1 (BINARY[1])\r\n")
        self.assertIn(b"\\Seen", out)
        self.assertIn(b"h OK", out)

    def test_unknown_encoding_and_missing_part(self) -> None:
        """An unknown transfer encoding fails the FETCH with NO [UNKNOWN-CTE]; a part that is
        not there is NIL; a section with HEADER is BAD."""
        out = self.c.send(b"f FETCH 1 (BINARY.PEEK[3])\r\n")
        self.assertIn(b"f NO [UNKNOWN-CTE]", out)
        self.assertNotIn(b"FETCH (", out)
        out = self.c.send(b"g FETCH 1 (BINARY.PEEK[9])\r\n")
        self.assertIn(b"BINARY[9] NIL", out)
        self.assertIn(b"h BAD", self.c.send(b"h FETCH 1 (BINARY[1.HEADER])\r\n"))

    def test_large_message_decoded_in_a_thread(self) -> None:
        """Above the FETCH offload size a BINARY item is decoded through the account's
        runner (an I/O thread in the server), not on the reactor."""
        self.patch(imap_messages, "_FETCH_OFFLOAD", 10)
        account = self.c.proto.account
        calls: list[object] = []
        real = account.run

        def spy(fn: object, *args: object) -> object:
            calls.append(fn)
            return real(fn, *args)  # type: ignore[arg-type]

        self.patch(account, "run", spy)
        out = self.c.send(b"f FETCH 1 (BINARY.PEEK[1])\r\n")
        for _ in range(10):  # the streamer goes on in later reactor turns
            self.world.clock.advance(0)
            out += self.c.take()
        self.assertIn(PAYLOAD, out)
        self.assertIn(b"f OK", out)
        self.assertTrue(calls)

    def test_append_literal8(self) -> None:
        """APPEND with a literal8 ``~{n}``: BODY[1] gives base64 (no NUL), BINARY[1] the
        octets sent."""
        msg = (
            b"Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n" + PAYLOAD
        )
        self.assertIn(b"+ ", self.c.send(b"a APPEND INBOX ~{%d}\r\n" % len(msg)))
        self.assertIn(b"a OK [APPENDUID", self.c.send(msg + b"\r\n"))
        self.c.send(b"n NOOP\r\n")
        out = self.c.send(b"f FETCH 2 (BODY.PEEK[1] BINARY.PEEK[1])\r\n")
        m = re.search(rb"BODY\[1\] \{(\d+)\}\r\n", out)
        assert m is not None, out
        body = out[m.end() : m.end() + int(m.group(1))]
        self.assertNotIn(b"\x00", body)
        self.assertEqual(base64.b64decode(body), PAYLOAD)
        self.assertIn(b"BINARY[1] ~{%d}\r\n" % len(PAYLOAD) + PAYLOAD, out)
