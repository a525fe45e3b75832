"""SMTP receiver over real loopback TCP into the real Submission and on-disk Spool."""

from __future__ import annotations

import os
import smtplib
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from cgtwist.core.submission import Submission
from cgtwist.protocols.smtp.factory import SMTPFactory
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.spool.spool import Spool
from cgtwist.types import ListenerSpec
from tests.protocols.test_smtp_fakes import FakePolicy, make_portal

BODY = (
    b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: spool test\r\n\r\n"
    b"line one\r\n.leading dot\r\n\r\n" + b"x" * 3000 + b"\r\nlast line\r\n"
)


class Manager:
    def __init__(self) -> None:
        self.enqueued: list[str] = []

    def enqueue(self, msg_id: str, envelope: Any, data: bytes) -> None:
        self.enqueued.append(msg_id)


class SpoolPathTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = self.mktemp()
        os.makedirs(self.base)
        self.settings = SettingsHolder(Settings())
        self.spool = Spool(self.base, reactor)
        self.manager = Manager()
        self.spool.subscribe(self.manager.enqueue)
        submission = Submission(self.spool, self.settings)
        factory = SMTPFactory(
            ListenerSpec("smtp", 25),
            self.settings,
            FakePolicy(),
            submission,
            make_portal(),
            lambda: None,
            "mx.example.com",
            clock=reactor,
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    def test_message_is_durable_before_250(self) -> None:
        """When smtplib gets its 250 the message is already in Queue/ as .msg, byte-exact
        after our Received: header (smtplib dot-stuffs, we unstuff)."""

        def client() -> Any:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
                s.ehlo("client.example")
                return s.sendmail(
                    "alice@example.org", ["bob@example.com", "carol@example.com"], BODY
                )

        @defer.inlineCallbacks
        def check(refused: Any) -> Any:
            self.assertEqual(refused, {})
            self.assertEqual(len(self.manager.enqueued), 1)
            msg_id = self.manager.enqueued[0]
            self.assertTrue(os.path.exists(os.path.join(self.base, "Queue", msg_id + ".msg")))
            envelope, data = yield self.spool.load(msg_id)
            self.assertEqual(envelope.sender, "alice@example.org")
            self.assertEqual(
                [r.address for r in envelope.recipients], ["bob@example.com", "carol@example.com"]
            )
            self.assertTrue(data.startswith(b"Received: from client.example ([127.0.0.1])\r\n"))
            self.assertTrue(data.endswith(b"\r\n" + BODY))
            self.assertNotIn(b" for <", data.split(b"\r\nFrom:")[0])  # two recipients: no "for"

        return deferToThread(client).addCallback(check)
