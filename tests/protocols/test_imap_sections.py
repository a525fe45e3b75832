"""The byte-range MIME tree: every part a generated message holds is found at its octets."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.protocols.imap import sections as imap_sections

_TEXT = st.text(alphabet="abc xyz-\r\n", max_size=40).map(
    lambda s: s.replace("\r", "").replace("\n", "\r\n")
)


@st.composite
def _entity(draw: Any, depth: int = 0, name: str = "b") -> tuple[bytes, bytes, Any]:
    """(header, body, expected) of a random MIME entity; expected is the body for a leaf,
    a list of children's expectations for a multipart, ("msg", inner) for message/rfc822."""
    kind = draw(st.sampled_from(["leaf", "leaf", "multi", "message"] if depth < 3 else ["leaf"]))
    if kind == "leaf":
        body = draw(_TEXT).encode().replace(b"--", b"")
        return b"Content-Type: text/plain\r\n", body, body
    if kind == "message":
        h, b, e = draw(_entity(depth + 1, name + "m"))
        return (
            b"Content-Type: message/rfc822\r\n",
            b"Subject: inner\r\n" + h + b"\r\n" + b,
            ("msg", e),
        )
    boundary = f"{name}{depth}".encode()
    kids = draw(st.lists(_entity(depth + 1, name + str(depth)), min_size=1, max_size=3))
    folded = draw(st.booleans())
    header = (
        b'Content-Type: multipart/mixed;\r\n boundary="' + boundary + b'"\r\n'
        if folded
        else b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n'
    )
    body = b"preamble\r\n"
    for h, b, _e in kids:
        body += b"--" + boundary + b"\r\n" + h + b"\r\n" + b + b"\r\n"
    body += b"--" + boundary + b"--\r\nepilogue\r\n"
    return header, body, [e for _h, _b, e in kids]


class SectionTreeTests(unittest.TestCase):
    def check(self, raw: bytes, node: imap_sections.Part, expected: Any) -> None:
        if isinstance(expected, list):
            self.assertEqual(len(node.children), len(expected))
            for child, e in zip(node.children, expected, strict=True):
                self.check(raw, child, e)
        elif isinstance(expected, tuple):
            assert node.message is not None
            self.check(raw, node.message, expected[1])
        else:
            self.assertEqual(raw[node.body : node.end], expected)

    @settings(max_examples=300, deadline=None)
    @given(_entity())
    def test_generated_messages(self, entity: tuple[bytes, bytes, Any]) -> None:
        """Nested multiparts (boundaries folded or not) and message/rfc822 parts: each leaf's
        octets are exactly the body that was put there (RFC 2046 §5.1.1: the line break before
        a delimiter belongs to it)."""
        header, body, expected = entity
        raw = b"From: a@b\r\n" + header + b"\r\n" + body
        root = imap_sections.parse(raw)
        self.check(raw, root, expected)

    def test_resolve(self) -> None:
        """Numbers go into a message/rfc822 part's message; a missing part is None."""
        raw = (
            b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n\r\none\r\n'
            b"--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ninner\r\n--x--\r\n"
        )
        root = imap_sections.parse(raw)
        one = imap_sections.resolve(root, [1])
        assert one is not None
        self.assertEqual(raw[one.body : one.end], b"one")
        inner = imap_sections.resolve(root, [2, 1])
        assert inner is not None
        self.assertEqual(raw[inner.body : inner.end], b"inner")
        self.assertIsNone(imap_sections.resolve(root, [3]))
        self.assertIsNone(imap_sections.resolve(root, [2, 2]))

    def test_deep_nesting_is_bounded(self) -> None:
        """A message nested a thousand multiparts deep is parsed to MAX_DEPTH, not further."""
        raw = b""
        for i in range(1000):
            raw += b'Content-Type: multipart/mixed; boundary="%d"\r\n\r\n--%d\r\n' % (i, i)
        root = imap_sections.parse(raw + b"\r\nend\r\n")
        depth, node = 0, root
        while node.children:
            node, depth = node.children[0], depth + 1
        self.assertEqual(depth, imap_sections.MAX_DEPTH)
