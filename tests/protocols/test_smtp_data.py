"""DATA: only CRLF.CRLF ends a message; SMTP smuggling vectors never split or inject one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.errors import MailError
from cgtwist.protocols.smtp.data import DataReader
from tests.protocols.test_smtp_fakes import Harness

# Hanno Böck's smtpsmug endings (RELIABILITY.md a8), each followed by a smuggled transaction.
VECTORS = [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r"]
SMUGGLED = (
    b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\npay now\r\n"
)


def feed_all(reader: DataReader, data: bytes, step: int) -> bytes | None:
    rest = None
    for i in range(0, len(data), step):
        rest = reader.feed(data[i : i + step])
        if rest is not None:
            return rest + data[i + step :]
    return rest


class SmugglingTests(unittest.TestCase):
    def test_vectors_never_end_data(self) -> None:
        """No smuggling ending ends the DATA: one message, refused, nothing smuggled is run."""
        for vector in VECTORS:
            h = Harness()
            h.cmd("EHLO c.example")
            out = h.send(
                b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
                b"Subject: one\r\n\r\nfirst" + vector + SMUGGLED + b".\r\nNOOP\r\n"
            )
            self.assertEqual(
                out,
                [
                    "250 2.1.0 Sender OK",
                    "250 2.1.5 Recipient OK",
                    "354 End data with <CR><LF>.<CR><LF>",
                    "554 5.6.0 Message refused: bare CR or LF in message data",
                    "250 2.0.0 Ok",
                ],
                repr(vector),
            )
            self.assertEqual(h.submission.messages, [], repr(vector))
            self.assertEqual(
                [c for c in h.policy.calls if c[0] == "mail_from"],
                [("mail_from", ("a@b.example", {}))],
                repr(vector),
            )

    def test_vectors_split_across_packets(self) -> None:
        """The same holds however the bytes are cut into TCP segments."""
        for vector in VECTORS + [b"\r\n\x00.\r\n"]:
            data = b"Subject: one\r\n\r\nfirst" + vector + SMUGGLED + b".\r\nNOOP\r\n"
            for step in (1, 2, 3, 7):
                r = DataReader(10**6, 1000, 100)
                rest = feed_all(r, data, step)
                self.assertEqual(rest, b"NOOP\r\n", (vector, step))
                if b"\x00" in vector:
                    self.assertIsInstance(r.result(), bytes)  # NUL is data, not an ending
                else:
                    self.assertIsInstance(r.result(), MailError, (vector, step))

    def test_bare_lf_in_body_refused(self) -> None:
        """A body with a bare LF is refused after the final dot (RFC 5321 §2.3.8), never stored."""
        r = DataReader(10**6, 1000, 100)
        self.assertEqual(r.feed(b"a\r\nb\nc\r\n.\r\nX"), b"X")
        result = r.result()
        assert isinstance(result, MailError)
        self.assertEqual((result.code, result.enhanced), (554, "5.6.0"))

    def test_dot_unstuffing_and_end(self) -> None:
        """Leading dots are removed once (RFC 5321 §4.5.2); the content is otherwise byte-exact."""
        for step in (1, 2, 5, 1000):
            r = DataReader(10**6, 1000, 100)
            rest = feed_all(r, b"..a\r\n. \r\n...\r\nx.\r\n\r\n.\r\nQUIT\r\n", step)
            self.assertEqual(rest, b"QUIT\r\n")
            self.assertEqual(r.result(), b".a\r\n \r\n..\r\nx.\r\n\r\n")

    def test_empty_message(self) -> None:
        """A DATA with no content at all ends at the lone dot."""
        r = DataReader(100, 100, 10)
        self.assertEqual(r.feed(b".\r\n"), b"")
        self.assertEqual(r.result(), b"")

    def test_long_line_then_dot(self) -> None:
        """A dot right after an over-long line is part of that line, not the end of data."""
        r = DataReader(10**6, 10, 100)
        self.assertIsNone(r.feed(b"x" * 20))
        self.assertIsNone(r.feed(b".\r\n"))
        self.assertEqual(r.feed(b".\r\nrest"), b"rest")
        self.assertIsInstance(r.result(), MailError)

    @settings(max_examples=400, deadline=None)
    @given(
        st.lists(
            st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n.\r\n", b"..", b"\x00"]),
            max_size=40,
        ).map(b"".join),
        st.integers(min_value=1, max_value=9),
    )
    def test_segmentation_does_not_matter(self, data: bytes, step: int) -> None:
        """Where the message ends and what is stored never depends on how TCP cut the bytes."""
        whole = DataReader(10**6, 1000, 100)
        a = whole.feed(data + b"\r\n.\r\nTAIL")
        pieces = DataReader(10**6, 1000, 100)
        b = feed_all(pieces, data + b"\r\n.\r\nTAIL", step)
        self.assertEqual(a, b)
        ra, rb = whole.result(), pieces.result()
        self.assertEqual(type(ra), type(rb))
        if isinstance(ra, bytes):
            self.assertEqual(ra, rb)
            # Accepted content never contains a bare CR or LF.
            self.assertEqual(ra.count(b"\r"), ra.count(b"\r\n"))
            self.assertEqual(ra.count(b"\n"), ra.count(b"\r\n"))
