"""The store behind Twisted's own IMAP4Server: the stock interfaces are enough to serve mail."""

from __future__ import annotations

import os

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.mail import imap4
from twisted.trial import unittest

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, maildir, provision


class StockServerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.md = os.path.join(os.path.abspath(self.mktemp()), "Maildir")
        provision(self.md)
        maildir.deliver(
            self.md,
            b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\n"
            b"Subject: hello\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nHi Bob\r\n",
            to_new=True,
        )
        self.account = MaildirAccount(self.md, "bob@example.com", MailboxNotifier())
        self.server = imap4.IMAP4Server()
        self.clock = task.Clock()
        coop = task.Cooperator(scheduler=lambda f: self.clock.callLater(0, f))
        self.server._scheduler = coop.coiterate
        self.tr = StringTransport()
        self.server.makeConnection(self.tr)
        self.server.account = self.account
        self.server.state = "auth"
        self.addCleanup(self.server.connectionLost, None)

    def cmd(self, line: bytes) -> bytes:
        self.tr.clear()
        self.server.dataReceived(line + b"\r\n")
        for _ in range(1000):  # run the cooperator and play a reading client until quiet
            if self.tr.producer is not None:
                self.tr.producer.resumeProducing()
            elif self.clock.getDelayedCalls():
                self.clock.advance(0)
            else:
                break
        return self.tr.value()

    def test_session(self) -> None:
        """SELECT, FETCH (envelope, structure, body), STORE, COPY, EXPUNGE, LIST and STATUS work
        through twisted.mail.imap4's stock server."""
        out = self.cmd(b"a SELECT INBOX")
        self.assertIn(b"* 1 EXISTS", out)
        self.assertIn(b"* 1 RECENT", out)
        self.assertIn(b"a OK [READ-WRITE]", out)
        out = self.cmd(b"b FETCH 1 (FLAGS UID RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY[])")
        self.assertIn(b"UID 1", out)
        self.assertIn(b'"hello"', out)
        self.assertIn(b'(("Ann" NIL "ann" "example.com"))', out)
        self.assertIn(b"Hi Bob", out)
        self.assertIn(b"b OK", out)
        self.assertIn(b"FLAGS (\\Seen \\Recent)", self.cmd(b"c STORE 1 +FLAGS (\\Seen)"))
        self.assertIn(b"d OK", self.cmd(b"d COPY 1 Trash"))
        self.assertIn(
            b"* 1 EXPUNGE",
            self.cmd(b"e STORE 1 +FLAGS.SILENT (\\Deleted)") + self.cmd(b"f EXPUNGE"),
        )
        self.assertIn(b'(\\HasNoChildren \\Trash) "/" "Trash"', self.cmd(b'g LIST "" *'))
        self.assertIn(
            b"STATUS Trash (MESSAGES 1 UNSEEN 0)", self.cmd(b"h STATUS Trash (MESSAGES UNSEEN)")
        )
        self.assertIn(b"i OK", self.cmd(b"i CREATE Work/Projects"))
        self.assertIn(b"Work/Projects", self.cmd(b'j LIST "" Work/*'))
