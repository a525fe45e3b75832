"""Dovecot reads what cgtwist writes: the same messages, flags, keywords and folders."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

from twisted.mail import imap4
from twisted.trial import unittest

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, MaildirMailbox, maildir, provision

DOVECOT_IMAP = "/usr/lib/dovecot/imap"


def _skip_reason() -> str | None:
    if not os.path.exists(DOVECOT_IMAP):
        return "Dovecot is not installed"
    if os.geteuid() == 0 and (shutil.which("setpriv") is None or not _has_user("nobody")):
        return "running as root without setpriv/nobody (Dovecot refuses root)"
    return None


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class DovecotInteropTests(unittest.TestCase):
    skip = _skip_reason()

    def dovecot(self, md: str, script: bytes) -> str:
        """Run Dovecot's imap binary pre-authenticated on ``md`` (as nobody when we are root)."""
        cmd = [DOVECOT_IMAP, "-o", f"mail_location=maildir:{md}"]
        env = {"HOME": os.path.dirname(md), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            parent = os.path.dirname(os.path.dirname(md))
            while parent != os.path.dirname(parent):  # trial's temporary dirs are 0700
                mode = os.stat(parent).st_mode
                if not mode & 0o001:
                    os.chmod(parent, (mode & 0o7777) | 0o001)
                parent = os.path.dirname(parent)
            for root, dirs, files in os.walk(os.path.dirname(md)):
                for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                    os.chown(n, nobody.pw_uid, nobody.pw_gid)
            cmd = [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
            ] + cmd
            env["USER"] = "nobody"
        else:
            env["USER"] = pwd.getpwuid(os.geteuid()).pw_name
        proc = subprocess.run(cmd, input=script, env=env, capture_output=True, timeout=30)
        return proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")

    def test_dovecot_reads_our_maildir(self) -> None:
        """Messages, flags (incl. a keyword) and a non-ASCII folder written by cgtwist show up in
        Dovecot unchanged."""
        home = os.path.abspath(self.mktemp())
        md = os.path.join(home, "Maildir")
        provision(md)
        account = MaildirAccount(md, "a@example.com", MailboxNotifier())
        account.create("Caf\u00e9")
        maildir.deliver(md, b"Subject: first\r\n\r\none\r\n", to_new=True)
        maildir.deliver(md, b"Subject: second\nX: lf\n\ntwo\n", to_new=True)
        boxes: list[MaildirMailbox] = []
        account.select("INBOX").addCallback(boxes.append)
        [box] = boxes
        box.store(imap4.MessageSet(1), ["\\Seen", "$Junk"], 1, False)
        box.store(imap4.MessageSet(2), ["\\Answered", "\\Flagged"], 1, False)
        out = self.dovecot(
            md,
            b'a LIST "" "*"\r\nb SELECT INBOX\r\n'
            b"c FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
            b"d LOGOUT\r\n",
        )
        self.assertIn("Caf&AOk-", out)
        self.assertIn('\\Sent) "." Sent', out)
        self.assertIn("* 2 EXISTS", out)
        lines = {
            ln.split(" ")[1]: ln
            for ln in out.split("\r\n")
            if ln.startswith("* ") and " FETCH " in ln
        }
        flags = {
            n: set(ln.split("FLAGS (")[1].split(")")[0].split()) - {"\\Recent"}
            for n, ln in lines.items()
        }
        self.assertEqual(flags, {"1": {"\\Seen", "$Junk"}, "2": {"\\Answered", "\\Flagged"}})
        self.assertIn("Subject: first", out)
        crlf_size = len(b"Subject: second\r\nX: lf\r\n\r\ntwo\r\n")  # the file has bare LF
        self.assertIn(f"RFC822.SIZE {crlf_size}", out)

    def test_we_read_a_dovecot_maildir(self) -> None:
        """A Maildir written by Dovecot (APPEND, flags, keyword, folder) is read by cgtwist with
        Dovecot's UIDVALIDITY and UIDs, so a migrated user's client keeps its cache."""
        home = os.path.abspath(self.mktemp())
        md = os.path.join(home, "Maildir")
        os.makedirs(md)
        out = self.dovecot(
            md,
            b"a CREATE Work\r\n"
            b"b APPEND INBOX (\\Seen $Label1) {21}\r\nSubject: one\r\n\r\nbody\r\n"
            b"c APPEND INBOX (\\Flagged) {21}\r\nSubject: two\r\n\r\nbody\r\n"
            b"d SELECT INBOX\r\ne LOGOUT\r\n",
        )
        self.assertIn("b OK", out)
        uidvalidity = int(out.split("[UIDVALIDITY ")[1].split("]")[0])
        account = MaildirAccount(md, "a@example.com", MailboxNotifier())
        self.assertIn("Work", [n for n, _ in account.listMailboxes("", "*")])
        boxes: list[MaildirMailbox] = []
        account.select("INBOX").addCallback(boxes.append)
        [box] = boxes
        self.assertEqual(box.getUIDValidity(), uidvalidity)
        self.assertEqual(box.uids, [1, 2])
        self.assertEqual(box.flags_of(1), ["$Label1", "\\Seen"])
        self.assertEqual(box.flags_of(2), ["\\Flagged"])
        [(_s, m)] = box.fetch(imap4.MessageSet(2), False)
        self.assertEqual(m.getHeaders(False, "subject"), {"subject": "two"})
