"""An over-long IMAP command line that ends with a LITERAL+ announcement (found by the fuzz
suite): the literal's octets follow at once, and must never be run as commands."""

from __future__ import annotations

import os

from twisted.trial import unittest

from tests.protocols.test_imap_support import Client, World

INJECTED = b"Z1 CREATE Injected\r\n"


class OverlongLiteralTests(unittest.TestCase):
    def check(self, send: list[bytes]) -> None:
        world = World({"imap.max_command_length": 1024})
        c = Client(world, allow_plain=True)
        c.login()
        out = b"".join(c.send(x) for x in send)
        self.assertIn(b"A1 BAD [TOOBIG]", out)
        self.assertIn(b"* BYE", out)
        self.assertNotIn(b"Z1 ", out)
        self.assertTrue(c.transport.disconnecting)
        maildir = world.realm.account("alice@example.com").path
        self.assertFalse(os.path.exists(os.path.join(maildir, ".Injected")))

    def test_overlong_line_with_nonsync_literal_in_one_read(self) -> None:
        """The whole line is in the buffer: BAD, BYE, and the literal is not a command."""
        self.check([b"A1 APPEND INBOX " + b"x" * 2000 + b" {%d+}\r\n" % len(INJECTED) + INJECTED])

    def test_overlong_line_with_nonsync_literal_in_pieces(self) -> None:
        """The line arrives in pieces, the first already over the limit (discarded as it comes)."""
        self.check(
            [
                b"A1 APPEND INBOX " + b"x" * 2000,
                b"x" * 2000,
                b" {%d+}\r\n" % len(INJECTED) + INJECTED,
            ]
        )
