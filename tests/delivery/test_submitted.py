"""PIPE submission: Submitted/*.sub files parsed, enqueued as trusted, deleted, or renamed .bad."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, task
from twisted.trial import unittest

from cgtwist.delivery.submitted import BadSubmission, SubmittedPickup, parse_submitted
from cgtwist.errors import MailError
from cgtwist.types import Envelope


class FakeSubmission:
    def __init__(self) -> None:
        self.submitted: list[tuple[Envelope, bytes]] = []
        self.error: Exception | None = None
        self.waiters: list[defer.Deferred[None]] = []

    def submit(self, envelope: Envelope, data: bytes) -> defer.Deferred[str]:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(None)
        if self.error is not None:
            return defer.fail(self.error)
        self.submitted.append((envelope, data))
        return defer.succeed(f"id{len(self.submitted)}")


class Parsing(unittest.TestCase):
    def test_recipients_from_to_cc_bcc_and_bcc_removed(self) -> None:
        """Without Envelope-To the recipients are To, Cc and Bcc; Bcc vanishes from the
        message; native LF line endings become CRLF; the sender is the From address."""
        raw = (
            b"From: Alice <alice@src.test>\nTo: bob@dst.test, Carol <carol@dst.test>\n"
            b"Cc: dave@dst.test\nBcc: secret@dst.test\nSubject: hi\n\nbody\n.\nend\n"
        )
        p = parse_submitted(raw, "h.test", now=1700000000)
        self.assertEqual(
            [r.address for r in p.envelope.recipients],
            ["bob@dst.test", "carol@dst.test", "dave@dst.test", "secret@dst.test"],
        )
        self.assertEqual(p.envelope.sender, "alice@src.test")
        self.assertEqual(p.envelope.submit["trusted"], "1")
        self.assertNotIn(b"Bcc", p.data)
        self.assertNotIn(b"secret", p.data)
        self.assertNotIn(b"\n", p.data.replace(b"\r\n", b""))
        self.assertTrue(p.data.endswith(b"\r\n\r\nbody\r\n.\r\nend\r\n"))
        self.assertIn(b"Message-ID: <", p.data)
        self.assertIn(b"Date: ", p.data)

    def test_envelope_to_overrides_and_is_removed(self) -> None:
        """Envelope-To headers alone give the recipients and are removed; Envelope-Ignore
        excludes addresses; a folded header is read whole."""
        raw = (
            b"From: a@src.test\r\nTo: visible@dst.test\r\nEnvelope-To: one@dst.test,\r\n"
            b"  two@dst.test\r\nEnvelope-To: three@dst.test\r\nEnvelope-Ignore: two@dst.test\r\n"
            b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n\r\nx\r\n"
        )
        p = parse_submitted(raw)
        self.assertEqual(
            [r.address for r in p.envelope.recipients], ["one@dst.test", "three@dst.test"]
        )
        self.assertNotIn(b"Envelope-", p.data)
        self.assertIn(b"To: visible@dst.test", p.data)
        self.assertEqual(p.data.count(b"Date:"), 1)

    def test_return_path_gives_sender_and_is_removed(self) -> None:
        """A Return-Path header sets the envelope sender (<> allowed) and is not kept."""
        p = parse_submitted(b"Return-Path: <>\nFrom: a@src.test\nTo: b@dst.test\n\nx\n")
        self.assertEqual(p.envelope.sender, "")
        self.assertNotIn(b"Return-Path", p.data)

    def test_bad_files(self) -> None:
        """No recipients, a malformed header line or a bad address make the file bad."""
        for raw in (
            b"From: a@src.test\nSubject: none\n\nx\n",
            b"From: a@src.test\nnot a header\nTo: b@dst.test\n\nx\n",
            b"To: <b@dst.test\r\n>\n\nx",
            b"\nTo: b@dst.test\n",
            b'To: "x" <a b@c>\n\nx',
        ):
            with self.assertRaises(BadSubmission, msg=raw):
                parse_submitted(raw)


class Pickup(unittest.TestCase):
    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.base = tempfile.mkdtemp(prefix="cgtwist-submitted-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.dir = os.path.join(self.base, "Submitted")
        os.makedirs(self.dir)
        self.sub = FakeSubmission()

    def write(self, name: str, data: bytes) -> str:
        tmp = os.path.join(self.dir, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        final = os.path.join(self.dir, name + ".sub")
        os.rename(tmp, final)
        return final

    def pickup(self, **kw: object) -> SubmittedPickup:
        p = SubmittedPickup(self.base, self.sub, kw.pop("reactor", self.reactor), **kw)  # type: ignore[arg-type]
        p.startService()
        self.addCleanup(p.stopService)
        return p

    async def test_scan_at_start_processes_and_deletes(self) -> None:
        """Files already waiting at start are submitted and deleted; .tmp files are left alone."""
        self.write("a", b"From: a@src.test\nTo: b@dst.test\n\nhello\n")
        with open(os.path.join(self.dir, "c.tmp"), "wb") as f:
            f.write(b"To: x@dst.test\n\nunfinished\n")
        p = self.pickup(use_inotify=False, reactor=task.Clock())
        await p.when_idle()
        self.assertEqual(len(self.sub.submitted), 1)
        self.assertEqual(sorted(os.listdir(self.dir)), ["c.tmp"])

    async def test_bad_file_renamed(self) -> None:
        """A file without recipients is renamed .bad, not deleted and not submitted."""
        self.write("b", b"From: a@src.test\nSubject: none\n\nx\n")
        p = self.pickup(use_inotify=False, reactor=task.Clock())
        await p.when_idle()
        self.assertEqual(self.sub.submitted, [])
        self.assertEqual(os.listdir(self.dir), ["b.bad"])

    async def test_symlink_not_followed(self) -> None:
        """A .sub symlink to another file (say /etc/passwd) is never read or mailed: it is
        renamed .bad."""
        secret = os.path.join(self.base, "secret")
        with open(secret, "wb") as f:
            f.write(b"To: thief@evil.test\n\nsecret\n")
        os.symlink(secret, os.path.join(self.dir, "link.sub"))
        p = self.pickup(use_inotify=False, reactor=task.Clock())
        await p.when_idle()
        self.assertEqual(self.sub.submitted, [])
        self.assertEqual(os.listdir(self.dir), ["link.bad"])

    async def test_permanent_refusal_renamed_bad_temporary_kept(self) -> None:
        """A permanent refusal by the queue makes the file .bad; a temporary one keeps it for a
        later retry, which then succeeds."""
        clock = task.Clock()
        self.sub.error = MailError(452, "4.3.1", "Queue full")
        self.write("t", b"To: b@dst.test\n\nx\n")
        p = self.pickup(use_inotify=False, reactor=clock)
        await p.when_idle()
        self.assertEqual(os.listdir(self.dir), ["t.sub"])
        self.sub.error = None
        clock.advance(60)
        await p.when_idle()
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual(len(self.sub.submitted), 1)
        self.sub.error = MailError(554, "5.7.1", "Refused")
        self.write("p", b"To: b@dst.test\n\nx\n")
        p.scan()
        await p.when_idle()
        self.assertEqual(os.listdir(self.dir), ["p.bad"])

    async def test_inotify_picks_up_renamed_file(self) -> None:
        """With inotify a file renamed to .sub while running is picked up without polling."""
        p = self.pickup()
        if p._notifier is None:
            raise unittest.SkipTest("inotify not available here")
        seen: defer.Deferred[None] = defer.Deferred()
        self.sub.waiters.append(seen)
        self.write("live", b"From: a@src.test\nTo: b@dst.test\n\nhello\n")
        await seen
        await p.when_idle()
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual(self.sub.submitted[0][0].recipients[0].address, "b@dst.test")

    async def test_fallback_scan_interval(self) -> None:
        """Without inotify a new file is found by the periodic scan."""
        clock = task.Clock()
        p = self.pickup(use_inotify=False, reactor=clock)
        self.write("later", b"To: b@dst.test\n\nx\n")
        await p.when_idle()
        self.assertEqual(self.sub.submitted, [])
        clock.advance(60)
        await p.when_idle()
        self.assertEqual(len(self.sub.submitted), 1)
