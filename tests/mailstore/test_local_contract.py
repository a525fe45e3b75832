"""The contract with LOCAL delivery: what it writes into new/ and announces is what IMAP/POP3 see."""

from __future__ import annotations

import os
from typing import Any

from twisted.mail import imap4
from twisted.trial import unittest

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, provision
from cgtwist.mailstore.maildir import MaildirWriter


class LocalContractTests(unittest.TestCase):
    def test_delivered_message_pushed_to_selected_session(self) -> None:
        """A message written by LOCAL (``,S=`` name in new/) and announced with mailbox_changed
        reaches a selected session at once, with the right size and body."""
        md = os.path.join(os.path.abspath(self.mktemp()), "Maildir")
        provision(md)
        notifier = MailboxNotifier()
        account = MaildirAccount(md, "a@example.com", notifier)
        boxes: list[Any] = []
        account.select("INBOX").addCallback(boxes.append)
        [box] = boxes
        seen: list[int] = []

        class Listener:  # a session in IDLE
            def viewChanged(self) -> None:
                exists = box.sync().exists
                if exists is not None:
                    seen.append(exists)

        box.addListener(Listener())
        data = b"Return-Path: <s@example.org>\r\nSubject: via LOCAL\r\n\r\nbody\r\n"
        name = MaildirWriter().deliver(md, [data[:10], data[10:]])
        self.assertIn(f",S={len(data)}", name)
        notifier.mailbox_changed("A@example.com", "INBOX")
        self.assertEqual(seen, [1])
        [(_seq, m)] = box.fetch(imap4.MessageSet(1), False)
        self.assertEqual(
            (m.getSize(), m.open().read(), m.getFlags()), (len(data), data, ["\\Recent"])
        )
