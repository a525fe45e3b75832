"""The hop markers (cgtwist.message.loops): read as the Rules read them, refusals, never back."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.message import loops
from cgtwist.message.headers import MAX_HEADER_BYTES

MESSAGE = b"From: a@far.dom\r\nSubject: hi\r\n\r\nDelivered-To: body@example.com\r\n"


class LoopTests(unittest.TestCase):
    def test_hops_newest_first_header_only(self) -> None:
        """Markers come from the header section only, folded or not, lower-cased."""
        data = loops.marked(
            b"delivered-to:\r\n <Bob@Example.com>\r\nDelivered-To: carol@example.com\r\n" + MESSAGE,
            "Team@Example.com",
        )
        self.assertEqual(
            loops.hops(data), ["team@example.com", "bob@example.com", "carol@example.com"]
        )
        self.assertEqual(loops.hops(MESSAGE), [])

    def test_hops_read_a_bounded_header_section(self) -> None:
        """Markers are read by the one header parser from at most MAX_HEADER_BYTES: one
        past a header that long is not read, and a bare-LF header reads like a CRLF one."""
        pad = b"X-Pad: " + b"y" * MAX_HEADER_BYTES + b"\r\n"
        self.assertEqual(
            loops.hops(b"Delivered-To: a@x\r\n" + pad + b"Delivered-To: b@x\r\n"), ["a@x"]
        )
        self.assertEqual(
            loops.hops(b"Delivered-To: <A@x>\nSubject: s\n\nDelivered-To: b@x\n"), ["a@x"]
        )

    def test_marked_keeps_the_line_ending_and_injects_nothing(self) -> None:
        self.assertEqual(loops.marked(b"A: b\n\nx\n", "t@x"), b"Delivered-To: t@x\nA: b\n\nx\n")
        self.assertTrue(
            loops.marked(MESSAGE, "t@x\r\nBcc: evil@x").startswith(
                b"Delivered-To: t@xBcc: evil@x\r\nFrom:"
            )
        )

    def test_refusal_and_never_back(self) -> None:
        passed = ["a@x", "b@x"]
        self.assertEqual(loops.refusal("c@x", passed), "")
        self.assertIn("already delivered to A@x", loops.refusal("A@x", passed))
        self.assertIn("3 hops", loops.refusal("c@x", passed + ["d@x"], max_hops=2))
        self.assertEqual(loops.never_back(["B@x", "c@x"], passed), (["c@x"], ["B@x"]))
        self.assertEqual(
            loops.nowhere_left(["B@x"]), "5.4.6 mail loop: B@x had this message before"
        )
