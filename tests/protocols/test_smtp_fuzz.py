"""Protocol fuzzing in every SMTP state (RELIABILITY.md b-K 57): no crash, no hang, sane replies."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.types import ListenerSpec
from tests.protocols.test_smtp_fakes import Harness

WORDS = [
    b"EHLO x",
    b"HELO",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"VRFY",
    b"EXPN",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"BDAT 1",
    b"<>",
    b"<a@b.example>",
    b'<"q\\"x"@[1.2.3.4]>',
    b" SIZE=",
    b" BODY=8BITMIME",
    b" NOTIFY=NEVER",
    b"AGFsaWNlAHNlY3JldA==",
    b"*",
    b"=",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b".",
    b"\r\n.\r\n",
    b"\n.\n",
    b"..",
    b"\xff\xfe",
    b" ",
    b"x" * 300,
    b"9" * 25,
]
CHUNKS = st.lists(st.lists(st.sampled_from(WORDS), max_size=12).map(b"".join), max_size=8)

STATES = {
    "fresh": b"",
    "ehlo": b"EHLO c.example\r\n",
    "mail": b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
    "data": b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n",
    "auth": b"EHLO c.example\r\nAUTH LOGIN\r\n",
}
REPLY = re.compile(r"^[2-5][0-9][0-9][ -]")
ENHANCED = re.compile(r"^[2-5][0-9][0-9] [245]\.[0-9]{1,3}\.[0-9]{1,3} ")


class FuzzTests(unittest.TestCase):
    @settings(max_examples=250, deadline=None)
    @given(st.sampled_from(sorted(STATES)), CHUNKS)
    def test_any_input_in_any_state(self, state: str, chunks: list[bytes]) -> None:
        """Whatever bytes arrive in whatever state, the client gets well-formed replies, the
        server never crashes, and a silent client is disconnected at the idle timeout."""
        h = Harness(
            listener=ListenerSpec("smtp", 587, allow_plain_auth=True),
            overrides={"smtp.max_errors": 50, "smtp.max_command_length": 512},
        )
        lines = h.send(STATES[state])
        for chunk in chunks:
            lines += h.send(chunk)
        h.clock.advance(10)  # any AUTH failure delay
        lines += h.replies()
        previous = ""
        for line in lines:
            self.assertRegex(line, REPLY)
            # RFC 2034 §3: every final reply has an enhanced code except the greeting, HELO/EHLO
            # answers and the 334/354 intermediates.
            hello = line.startswith("250 ") and (previous.startswith("250-") or " Hello [" in line)
            if line[3] == " " and line[:3] not in ("220", "334", "354") and not hello:
                self.assertRegex(line, ENHANCED)
            previous = line
        h.clock.advance(3600)
        self.assertTrue(h.closed)
        self.assertEqual(self.flushLoggedErrors(), [])
