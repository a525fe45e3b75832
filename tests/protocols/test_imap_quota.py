"""IMAP QUOTA (RFC 9208, cgtwist.protocols.imap.quota): capabilities, GETQUOTAROOT, GETQUOTA,
SETQUOTA refused, STATUS DELETED / DELETED-STORAGE, and APPEND / COPY over quota answered
NO [OVERQUOTA] with nothing stored."""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial import unittest

from cgtwist.account_settings import QuotaLimits
from cgtwist.mailstore.account import MaildirAccount
from cgtwist.mailstore.quota import scan_usage
from cgtwist.mailstore.tree import provision
from tests.protocols.test_imap_support import MESSAGE, Client, World

NAME = "alice@example.com"


class QuotaTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.limits = QuotaLimits()
        path = os.path.join(self.world.tmp, NAME, "Maildir")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        provision(path)
        self.path = path
        self.world.realm.accounts[NAME] = MaildirAccount(
            path, NAME, self.world.notifier, quota_limits=lambda: defer.succeed(self.limits)
        )
        self.c = Client(self.world)
        self.addCleanup(self.c.close)
        self.c.login()

    def append(self, data: bytes = MESSAGE, box: bytes = b"INBOX") -> bytes:
        return self.c.send(b"A1 APPEND " + box + b" {%d+}\r\n" % len(data) + data + b"\r\n")

    def test_capabilities(self) -> None:
        out = self.c.send(b"C1 CAPABILITY\r\n")
        for cap in (b" QUOTA ", b" QUOTA=RES-STORAGE ", b" QUOTA=RES-MESSAGE"):
            self.assertIn(cap, out)
        self.assertNotIn(b"QUOTASET", out)

    def test_getquotaroot_reports_usage_and_limits(self) -> None:
        """The account is one root "" over all its folders, STORAGE in KiB (RFC 9208 §5.1)."""
        self.limits = QuotaLimits(storage=10 * 1024, messages=100)
        self.assertIn(b"A1 OK", self.append())
        self.assertIn(b"A1 OK", self.append(box=b"Sent"))
        kib = -(-2 * len(MESSAGE) // 1024)
        out = self.c.send(b"Q1 GETQUOTAROOT INBOX\r\n")
        self.assertEqual(
            out,
            b'* QUOTAROOT "INBOX" ""\r\n* QUOTA "" (STORAGE %d 10 MESSAGE 2 100)\r\n'
            b"Q1 OK GETQUOTAROOT completed\r\n" % kib,
        )
        out = self.c.send(b'Q2 GETQUOTA ""\r\n')
        self.assertEqual(
            out, b'* QUOTA "" (STORAGE %d 10 MESSAGE 2 100)\r\nQ2 OK GETQUOTA completed\r\n' % kib
        )
        self.assertIn(b"Q3 NO [NONEXISTENT]", self.c.send(b"Q3 GETQUOTA other\r\n"))
        self.assertIn(b"Q4 NO [NONEXISTENT]", self.c.send(b"Q4 GETQUOTAROOT Nope\r\n"))

    def test_no_limits_no_root(self) -> None:
        out = self.c.send(b"Q1 GETQUOTAROOT INBOX\r\n")
        self.assertEqual(out, b'* QUOTAROOT "INBOX"\r\nQ1 OK GETQUOTAROOT completed\r\n')
        self.assertIn(b"Q2 NO [NONEXISTENT]", self.c.send(b'Q2 GETQUOTA ""\r\n'))

    def test_setquota_refused(self) -> None:
        """RFC 9208 §4.1.3: a user cannot set quotas; the administrator does."""
        out = self.c.send(b'Q1 SETQUOTA "" (STORAGE 999999)\r\n')
        self.assertTrue(out.startswith(b"Q1 NO [NOPERM]"), out)
        self.assertIn(b"Q2 BAD", self.c.send(b"Q2 SETQUOTA\r\n"))

    def test_append_and_copy_over_quota(self) -> None:
        """NO [OVERQUOTA], and the mailbox holds what it held (RFC 9208 §4.3)."""
        self.limits = QuotaLimits(storage=len(MESSAGE) + 10)
        self.assertIn(b"A1 OK", self.append())
        out = self.append()
        self.assertIn(b"A1 NO [OVERQUOTA]", out)
        self.assertEqual(scan_usage(self.path).messages, 1)
        self.c.select()
        out = self.c.send(b"C1 COPY 1 Trash\r\n")
        self.assertIn(b"C1 NO [OVERQUOTA]", out)
        self.assertEqual(scan_usage(self.path).messages, 1)
        out = self.c.send(b"M1 MOVE 1 Trash\r\n")
        self.assertIn(b"M1 OK", out)  # adds nothing: allowed at the limit

    def test_status_deleted(self) -> None:
        self.assertIn(b"A1 OK", self.append())
        self.assertIn(b"A1 OK", self.append())
        self.c.select()
        self.assertIn(b"S2 OK", self.c.send(b"S2 STORE 2 +FLAGS (\\Deleted)\r\n"))
        out = self.c.send(b"S3 STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)\r\n")
        kib = -(-len(MESSAGE) // 1024)
        self.assertIn(b"(MESSAGES 2 DELETED 1 DELETED-STORAGE %d)" % kib, out)
