"""Pure IMAP helpers: literal announcements, tokenising, search compilation, structures, SASL."""

from __future__ import annotations

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.protocols.imap import messagetext as imap_messagetext
from cgtwist.protocols.imap import parse as imap_parse
from cgtwist.protocols.imap import search as imap_search
from cgtwist.protocols.imap import structure as imap_structure


class LiteralSpecTests(unittest.TestCase):
    def test_valid_literals(self) -> None:
        """{n} is synchronising, {n+} is LITERAL+; the offset of '{' is reported."""
        spec = imap_parse.literal_at_end(b"a LOGIN {5}")
        assert spec is not None
        self.assertEqual((spec.size, spec.sync, spec.start), (5, True, 8))
        spec = imap_parse.literal_at_end(b"a APPEND x {0+}")
        assert spec is not None
        self.assertEqual((spec.size, spec.sync), (0, False))
        self.assertIsNone(imap_parse.literal_at_end(b"a NOOP"))
        self.assertIsNone(imap_parse.literal_at_end(b'a LOGIN "x {5}'))

    def test_malformed_literals_raise(self) -> None:
        """Negative, empty, non-numeric and over-32-bit sizes are ParseErrors, never ints."""
        for bad in (b"{-1}", b"{}", b"{abc}", b"{9999999999}", b"{1 }", b"{+}", b"{{1}}"):
            with self.assertRaises(imap_parse.ParseError, msg=bad):
                imap_parse.literal_at_end(b"a X " + bad)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=64))
    def test_literal_parser_never_crashes(self, data: bytes) -> None:
        """Any line either has no literal, a valid literal, or raises ParseError."""
        try:
            spec = imap_parse.literal_at_end(data)
        except imap_parse.ParseError:
            return
        if spec is not None:
            self.assertTrue(0 <= spec.size <= imap_parse.MAX_NUMBER)


class TokenizeTests(unittest.TestCase):
    def test_atoms_strings_lists_literals(self) -> None:
        """Quoted strings lose escapes, lists nest, literals are kept verbatim."""
        toks = imap_parse.tokenize([b'A "b \\"c\\"" (D (E)) {3}', b" F"], [b"x y"])
        self.assertEqual(toks, [b"A", b'b "c"', [b"D", [b"E"]], b"x y", b"F"])
        self.assertIsInstance(toks[3], imap_parse.Literal)

    def test_limits(self) -> None:
        """Unbalanced, too deep and too long inputs raise ParseError."""
        for bad in (b"(A", b"A)", b'"open', b"(" * 100 + b")" * 100):
            with self.assertRaises(imap_parse.ParseError):
                imap_parse.tokenize([bad], [])
        with self.assertRaises(imap_parse.ParseError):
            imap_parse.tokenize([b"A " * 10000], [], max_tokens=100)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_tokenizer_never_crashes(self, data: bytes) -> None:
        """Random bytes tokenise or raise ParseError, nothing else."""
        try:
            imap_parse.tokenize([data.replace(b"{", b"")], [])
        except imap_parse.ParseError:
            pass

    def test_split_command_and_nesting(self) -> None:
        """UID sub-commands are folded into the name; nesting ignores quoted parentheses."""
        self.assertEqual(
            imap_parse.split_command(b"t uid fetch 1 FLAGS"), (b"t", b"UID FETCH", b"fetch 1 FLAGS")
        )
        self.assertEqual(imap_parse.nesting_depth(b'((a) "((((" (b))'), 2)


class _Msg:
    def __init__(self, raw: bytes, flags: list[str], date: str, size: int) -> None:
        self.raw, self.flags, self.date, self.size = raw, flags, date, size

    def getFlags(self) -> list[str]:
        return self.flags

    def getInternalDate(self) -> str:
        return self.date

    def getSize(self) -> int:
        return self.size

    def getHeaders(self, negate: bool, *names: str) -> dict[str, str]:
        head = self.raw.split(b"\r\n\r\n")[0].decode("latin-1")  # as the mailstore does
        pairs = [line.split(": ", 1) for line in head.split("\r\n")]
        return {k.lower(): v for k, v in pairs if k.lower() in names}


class SearchCompileTests(unittest.TestCase):
    RAW = b"Subject: Report\r\nFrom: a@b.c\r\nDate: Wed, 04 Mar 2026 23:30:00 -0500\r\n\r\nQuarterly numbers\r\n"

    def match(self, query: bytes, flags: list[str] = (), seq: int = 1, uid: int = 10) -> bool:  # type: ignore[assignment]
        _cs, pred = imap_search.compile_search(imap_parse.tokenize([query], []))
        msg = _Msg(self.RAW, list(flags), "Thu, 05 Mar 2026 04:30:00 +0000", len(self.RAW))
        return pred(
            imap_messagetext.MessageText(msg, lambda: self.RAW),
            imap_search.Context(seq, uid, 3, 12),
        )

    def test_dates_use_their_own_zone(self) -> None:
        """SENTON compares the Date header's own calendar day (RFC 3501 §6.4.4)."""
        self.assertTrue(self.match(b"SENTON 4-Mar-2026"))
        self.assertTrue(self.match(b"ON 5-Mar-2026"))
        self.assertTrue(self.match(b"SINCE 5-Mar-2026"))
        self.assertFalse(self.match(b"BEFORE 5-Mar-2026"))

    def test_sets_and_flags(self) -> None:
        """Sequence sets, UID sets with '*', keywords and NOT/OR combine correctly."""
        self.assertTrue(self.match(b"1,3:*"))
        self.assertTrue(self.match(b"UID 5:*"))
        self.assertFalse(self.match(b"UID 11:*"))
        self.assertTrue(self.match(b"KEYWORD $Important", flags=["$Important"]))
        self.assertTrue(self.match(b"OR DELETED NOT SEEN"))
        self.assertTrue(self.match(b"TEXT quarterly SUBJECT report"))

    def test_errors(self) -> None:
        """Unknown keys, missing arguments and excessive terms are SearchErrors."""
        for bad in (b"BOGUS", b"SUBJECT", b"LARGER x", b"OR ALL", b"UID abc", b"SINCE 1-Foo-2020"):
            with self.assertRaises(imap_parse.ParseError, msg=bad):
                imap_search.compile_search(imap_parse.tokenize([bad], []))
        with self.assertRaises(imap_search.SearchError):
            imap_search.compile_search(imap_parse.tokenize([b"NOT " * 200 + b"ALL"], []))
        with self.assertRaises(imap_search.BadCharset):
            imap_search.compile_search(imap_parse.tokenize([b"CHARSET X-UNKNOWN ALL"], []))


class StructureTests(unittest.TestCase):
    def test_no_content_type_defaults_to_text_plain(self) -> None:
        """A message without Content-Type is text/plain; charset us-ascii (RFC 2045 §5.2)."""
        out = imap_structure.body_structure(b"Subject: x\r\n\r\nhello\r\n", False)
        self.assertEqual(out, b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1)')

    def test_message_rfc822_part(self) -> None:
        """An attached message/rfc822 part carries the inner ENVELOPE and BODYSTRUCTURE."""
        raw = (
            b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n'
            b"Subject: inner\r\nFrom: x@y.z\r\n\r\ninner body\r\n--B--\r\n"
        )
        out = imap_structure.body_structure(raw, True)
        self.assertIn(b'("message" "rfc822" NIL NIL NIL "7bit"', out)
        self.assertIn(b'"inner"', out)
        self.assertIn(b'"mixed" ("boundary" "B")', out)

    def test_envelope_odd_addresses(self) -> None:
        """Addresses without '@' and 8-bit names do not break ENVELOPE."""
        env = imap_structure.envelope(
            {"from": "undisclosed", "to": "J\xf6rg <j@x.de>", "subject": "caf\xe9"}
        )
        self.assertEqual(env[2], [[None, None, b"undisclosed", None]])
        self.assertEqual(env[5], [[b"J\xf6rg", None, b"j", b"x.de"]])
        self.assertEqual(env[1], b"caf\xe9")


_ = datetime  # keep the import for date helpers in future tests


class SearchTextTests(unittest.TestCase):
    """SEARCH matches what a user reads, not the transfer encoding."""

    def match(self, raw: bytes, query: bytes) -> bool:
        _cs, pred = imap_search.compile_search(imap_parse.tokenize([query], []))
        msg = _Msg(raw, [], "Thu, 05 Mar 2026 04:30:00 +0000", len(raw))
        return pred(imap_messagetext.MessageText(msg, lambda: raw), imap_search.Context(1, 1, 1, 1))

    def test_encoded_and_8bit_headers(self) -> None:
        """An RFC 2047 subject and a raw UTF-8 subject both match a UTF-8 search string."""
        enc = b"Subject: =?UTF-8?Q?Caf=C3=A9_menu?=\r\n\r\nx\r\n"
        raw8 = "Subject: Café menu\r\n\r\nx\r\n".encode()
        for raw in (enc, raw8):
            self.assertTrue(self.match(raw, "CHARSET UTF-8 SUBJECT café".encode()))
            self.assertFalse(self.match(raw, b"SUBJECT tea"))

    def test_base64_body_and_text_covers_headers(self) -> None:
        """BODY finds words inside a base64 text part; TEXT also searches the header."""
        import base64

        body = base64.b64encode("Grüße aus Berlin".encode())
        raw = (
            b"Subject: hi\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"\r\n"
        )
        self.assertTrue(self.match(raw, "BODY grüße".encode()))
        self.assertFalse(self.match(raw, b"BODY hi"))
        self.assertTrue(self.match(raw, b"TEXT hi"))
        self.assertTrue(self.match(raw, b"TEXT berlin"))


class SequenceSetTests(unittest.TestCase):
    def test_parse_and_membership(self) -> None:
        """'*' resolves to the highest number, reversed ranges work, zero and junk are refused."""
        ranges = imap_parse.parse_sequence_set(b"1,3:4,*:9,20:*")
        s = imap_parse.SequenceSet(ranges, 25)
        self.assertEqual(
            [n for n in range(1, 27) if n in s],
            [1, 3, 4, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25],
        )
        for bad in (b"", b"0", b"1:0", b"a", b"1,,2", b"4294967296", b"-1"):
            with self.assertRaises(imap_parse.ParseError, msg=bad):
                imap_parse.parse_sequence_set(bad)

    def test_huge_set_is_linear(self) -> None:
        """A 70 KiB sequence-set parses at once (Twisted's parseIdList needs ~80 s for it)."""
        spec = b",".join(b"%d" % i for i in range(1, 26000, 2))
        s = imap_parse.SequenceSet(imap_parse.parse_sequence_set(spec), 30000)
        self.assertIn(25999, s)
        self.assertNotIn(26000, s)
        self.assertEqual(len(s.starts), 13000)


_BODY_HEADS = [
    b"Content-Type: text/plain; charset=us-ascii",
    b'Content-Type: text/plain; charset="ISO-8859-1"',
    b"Content-Type: text/html",
    b"Content-Type: TEXT/Plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit",
    b"Content-Type: text/plain; charset=bogus-cs",
    b"Content-Type: application/pdf",
    b"Content-Transfer-Encoding: 7bit",
    b"Content-Type: text/plain;\r\n charset=utf-8",
    b"Content-type: text/plain; charset*=utf-8''x",
    b"Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable",
    b"Content-Type: text/plain; format=flowed; charset=utf-8",
    b'Content-Type: text/plain; charset="utf-8',
    b"Content-Type: text/plain\r\nContent-Type: text/html; charset=latin-1",
    b"Content-Type:text/plain;charset=latin-1;",
    b"Content-Transfer-Encoding: BASE64\r\nContent-Type: text/plain",
    b"Content-Type: message/rfc822",
]
_BODIES = [
    b"hello\r\nworld\r\n",
    "caf\u00e9 na\u00efve\r\n".encode(),
    "caf\u00e9\r\n".encode("latin-1"),
    b"",
    b"a\r\n\r\nb\r\n.\r\n",
    b"Y2Fm6Q==\r\n",
    b"caf=C3=A9\r\n",
]


class SearchBodyTests(unittest.TestCase):
    @settings(max_examples=150, deadline=None)
    @given(
        st.sampled_from(_BODY_HEADS),
        st.sampled_from(_BODY_HEADS + [b"X-A: b"]),
        st.sampled_from(_BODIES),
    )
    def test_quick_body_decoding_matches_full_parse(
        self, h1: bytes, h2: bytes, body: bytes
    ) -> None:
        """SEARCH BODY finds the same text whether a message is decoded by the quick single-part
        path or by the full MIME parse (charsets, transfer encodings, odd headers)."""
        for head in (h1, h1 + b"\r\n" + h2):
            raw = b"Subject: x\r\n" + head + b"\r\n\r\n" + body
            self.assertEqual(
                imap_messagetext._decoded_body(raw), imap_messagetext._parsed_body(raw)
            )

    def test_quick_path_taken_for_plain_text(self) -> None:
        """An everyday text/plain message is searched without parsing its body line by line."""
        self.assertEqual(
            imap_messagetext._simple_text_charset(
                b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            ),
            "us-ascii",
        )
        self.assertIsNone(
            imap_messagetext._simple_text_charset(
                b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
            )
        )
