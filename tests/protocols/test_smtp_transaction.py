"""The SMTP mail transaction as one object (cgtwist.protocols.smtp.transaction): what MAIL FROM
starts and RSET, EHLO and the end of DATA replace."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.protocols.smtp.transaction import Transaction
from cgtwist.types import Recipient
from tests.protocols.test_smtp_fakes import Harness


class TransactionTests(unittest.TestCase):
    def test_recipients_once_and_envelope_copied(self) -> None:
        """The same recipient twice (any case) is kept once; the envelope handed on is a copy
        that later changes to the transaction do not reach."""
        t = Transaction("alice@example.org", {"SIZE": "120", "BODY": "8BITMIME"})
        t.add_recipient(Recipient("bob@example.com", notify="NEVER"))
        t.add_recipient(Recipient("BOB@example.com"))
        t.add_recipient(Recipient("carol@example.com"))
        self.assertEqual(t.declared_size, 120)
        self.assertEqual(Transaction("").declared_size, 0)
        envelope = t.envelope({"peer": "192.0.2.1"})
        t.add_recipient(Recipient("dave@example.com"))
        t.params["RET"] = "HDRS"
        self.assertEqual(
            [(r.address, r.notify) for r in envelope.recipients],
            [("bob@example.com", "NEVER"), ("carol@example.com", "")],
        )
        self.assertEqual(dict(envelope.params), {"SIZE": "120", "BODY": "8BITMIME"})
        self.assertEqual(
            (envelope.sender, dict(envelope.submit)), ("alice@example.org", {"peer": "192.0.2.1"})
        )


class SessionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.h.cmd("EHLO c.example")

    def start(self) -> None:
        self.assertEqual(
            self.h.send(b"MAIL FROM:<alice@example.org> SIZE=10\r\nRCPT TO:<bob@example.com>\r\n"),
            ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"],
        )
        transaction = self.h.proto.transaction
        assert transaction is not None
        self.assertEqual(transaction.sender, "alice@example.org")
        self.assertEqual(transaction.params, {"SIZE": "10"})
        self.assertEqual([r.address for r in transaction.recipients], ["bob@example.com"])

    def test_rset_and_ehlo_drop_the_transaction(self) -> None:
        """RSET and EHLO (RFC 5321 §4.1.4) end the transaction: RCPT needs a new MAIL."""
        for command in ("RSET", "EHLO c.example"):
            self.start()
            self.h.cmd(command)
            self.assertIsNone(self.h.proto.transaction)
            self.assertEqual(
                self.h.cmd("RCPT TO:<bob@example.com>"), ["503 5.5.1 Error: need MAIL command"]
            )

    def test_end_of_data_drops_the_transaction(self) -> None:
        """After a message the next MAIL starts from nothing: no recipient carries over."""
        self.start()
        self.assertEqual(self.h.send(b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n")[-1][:3], "250")
        self.assertIsNone(self.h.proto.transaction)
        self.h.cmd("MAIL FROM:<>")
        self.assertEqual(self.h.cmd("DATA"), ["503 5.5.1 Error: no valid recipients"])
        envelope, _ = self.h.submission.messages[0]
        self.assertEqual([r.address for r in envelope.recipients], ["bob@example.com"])
