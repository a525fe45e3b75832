"""The Received: trace header: format, folding and injection resistance."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default as default_policy

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.message.trace import received_header, safe_header_line, sanitize, with_protocol


def _header(
    helo: str = "client.example", rcpts: tuple[str, ...] = ("bob@example.com",), **kw: object
) -> bytes:
    args: dict = dict(
        helo=helo,
        peer_ip="192.0.2.1",
        hostname="mx.example.com",
        protocol="ESMTPS",
        msg_id="abc.1",
        when=1_800_000_000.0,
        recipients=rcpts,
        tls_version="TLSv1.3",
    )
    args.update(kw)
    return received_header(**args)


class ReceivedHeaderTests(unittest.TestCase):
    def test_format(self) -> None:
        """The header reads like RFC 5321 §4.4 asks: from, by, with, id, for, date."""
        h = _header()
        self.assertEqual(
            h,
            b"Received: from client.example ([192.0.2.1])\r\n\tby mx.example.com (cgtwist) with ESMTPS"
            b" (TLSv1.3)\r\n\tid abc.1 for <bob@example.com>;\r\n\tFri, 15 Jan 2027 08:00:00 +0000\r\n",
        )

    def test_no_for_clause_with_many_recipients(self) -> None:
        """A message to several recipients does not list them all in every copy."""
        self.assertNotIn(b" for ", _header(rcpts=("a@x.example", "b@x.example")))

    def test_protocol_names(self) -> None:
        """RFC 3848 protocol names tell readers whether TLS and AUTH were used."""
        self.assertEqual(
            [
                with_protocol(False, False, False),
                with_protocol(True, False, False),
                with_protocol(True, True, False),
                with_protocol(True, False, True),
                with_protocol(True, True, True),
            ],
            ["SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"],
        )

    def test_injection_attempts(self) -> None:
        """A hostile HELO cannot add a header line, close the comment or fake the date."""
        for helo in [
            "x\r\nBcc: victim@example.com",
            "x\nX-Injected: 1",
            "x\rX-Injected: 1",
            "a) (b; Mon, 1 Jan 2001",
            'q"\\',
            "é\x00\x7f",
            "x" * 2000,
            "=?UTF-8?Q?=0A?=Bcc: x",
        ]:
            h = _header(helo=helo)
            self.assertEqual(h.count(b"\r\n"), 4, helo)  # exactly our own folds and the end
            self.assertEqual(h.count(b"\n"), 4)
            self.assertEqual(h.count(b"\r"), 4)
            self.assertEqual(h.count(b";"), 1)
            msg = message_from_bytes(h + b"Subject: s\r\n\r\nbody\r\n", policy=default_policy)
            self.assertEqual(sorted(msg.keys()), ["Received", "Subject"], helo)
            self.assertTrue(all(len(line) <= 998 for line in h.split(b"\r\n")))

    def test_empty_helo(self) -> None:
        """A client that never said HELO shows as 'unknown'."""
        self.assertTrue(_header(helo="").startswith(b"Received: from unknown ([192.0.2.1])"))

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=300), st.text(max_size=100))
    def test_sanitize_property(self, helo: str, rcpt: str) -> None:
        """No client text of any kind puts CR, LF or a second header into the trace."""
        h = _header(helo=helo, rcpts=(rcpt,))
        self.assertEqual(h.count(b"\r\n"), 4)
        self.assertNotIn(b"\n", h.replace(b"\r\n", b""))
        self.assertNotIn(b"\r", h.replace(b"\r\n", b""))
        self.assertTrue(all(33 <= ord(c) <= 126 for c in sanitize(helo)))


class SafeHeaderLineTests(unittest.TestCase):
    def test_safe_header_line(self) -> None:
        """Trace lines from other checks are passed only when they are exactly one header line."""
        self.assertEqual(safe_header_line(b"Received-SPF: pass (x)"), b"Received-SPF: pass (x)\r\n")
        for bad in [
            b"",
            b"no colon",
            b"A: b\r\nBcc: c",
            b"A: b\nc",
            b": empty name",
            b"Bad Name: x",
            b"A: \x00",
        ]:
            self.assertIsNone(safe_header_line(bad), bad)


class IPv6Tests(unittest.TestCase):
    def test_ipv6_peer(self) -> None:
        """An IPv6 client is written as an RFC 5321 IPv6 address literal."""
        h = received_header(
            helo="c.example",
            peer_ip="2001:db8::1",
            hostname="mx.example.com",
            protocol="ESMTP",
            msg_id="x",
            when=0.0,
        )
        self.assertTrue(h.startswith(b"Received: from c.example ([IPv6:2001:db8::1])\r\n"))
