"""IMAP4rev2 (RFC 9051) beside IMAP4rev1: what a session sees once it gave ENABLE IMAP4rev2,
and that a session which did not sees nothing new, both on the same folder."""

from __future__ import annotations

import imaplib
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from tests.protocols.test_imap_e2e import Harness, client_tls
from tests.protocols.test_imap_support import MESSAGE, Client, World, session

OTHER = MESSAGE.replace(b"Subject: Hello there", b"Subject: Already read")


def rev2(world: World, select: bool = True) -> Client:
    """A session of alice that enabled IMAP4rev2 (INBOX selected unless told otherwise)."""
    c = session(world, select=False)
    out = c.send(b"E1 ENABLE IMAP4rev2\r\n")
    assert b"* ENABLED IMAP4rev2\r\n" in out, out
    if select:
        c.select()
    return c


class CapabilityTests(unittest.TestCase):
    def test_both_revisions_advertised(self) -> None:
        """RFC 9051 §6.3.1: a server of both revisions lists IMAP4rev1 and IMAP4rev2, in the
        greeting and in CAPABILITY, before and after login."""
        w = World()
        c = Client(w)
        self.assertRegex(c.greeting, rb"\[CAPABILITY IMAP4rev1 IMAP4rev2 ")
        c.login()
        out = c.send(b"C1 CAPABILITY\r\n")
        self.assertRegex(out, rb"\* CAPABILITY IMAP4rev1 IMAP4rev2 ")

    def test_enable_names_it_once(self) -> None:
        """ENABLE IMAP4rev2 answers ENABLED IMAP4rev2; enabling it again names nothing
        (RFC 5161 §3.1: only what this command turned on)."""
        c = rev2(World(), select=False)
        out = c.send(b"E2 enable imap4rev2\r\n")
        self.assertIn(b"* ENABLED\r\nE2 OK", out)

    def test_enable_only_before_select(self) -> None:
        """ENABLE is an authenticated-state command (RFC 9051 §6.3.1): refused with a mailbox
        selected, and the session stays IMAP4rev1."""
        c = session(World(), MESSAGE)
        out = c.send(b"E1 ENABLE IMAP4rev2\r\n")
        self.assertIn(b"E1 BAD", out)
        self.assertIn(b"* SEARCH 1\r\n", c.send(b"S2 SEARCH ALL\r\n"))


class SelectTests(unittest.TestCase):
    def test_select_responses_per_revision(self) -> None:
        """RFC 9051 §6.3.2: SELECT answers FLAGS, EXISTS, a LIST of the mailbox and the
        UIDVALIDITY/UIDNEXT/PERMANENTFLAGS codes, never RECENT or [UNSEEN]; an IMAP4rev1
        session on the same folder still gets RECENT and [UNSEEN] and no LIST."""
        w = World()
        w.deliver("alice@example.com", MESSAGE)
        w.deliver("alice@example.com", MESSAGE)
        old = session(w, select=False)
        out1 = old.send(b"X1 EXAMINE INBOX\r\n")
        self.assertIn(b"* 2 EXISTS\r\n", out1)
        self.assertIn(b"* 2 RECENT\r\n", out1)
        self.assertIn(b"* OK [UNSEEN 1]", out1)
        self.assertNotIn(b"* LIST", out1)

        new = rev2(w, select=False)
        out2 = new.send(b"S1 SELECT inbox\r\n")
        self.assertIn(b"* 2 EXISTS\r\n", out2)
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n', out2)
        self.assertIn(b"* FLAGS (", out2)
        for code in (b"UIDVALIDITY", b"UIDNEXT", b"PERMANENTFLAGS"):
            self.assertIn(b"* OK [" + code, out2)
        self.assertNotIn(b"RECENT", out2)
        self.assertNotIn(b"UNSEEN", out2)
        self.assertIn(b"S1 OK [READ-WRITE]", out2)

    def test_list_at_select_names_special_use(self) -> None:
        """The LIST at SELECT carries the mailbox's attributes (RFC 9051 §6.3.2: they MUST
        be accurate), a special-use attribute included."""
        c = rev2(World(), select=False)
        c.send(b"C1 CREATE Projects/2026\r\n")
        out = c.send(b"S1 EXAMINE Projects\r\n")
        self.assertIn(b'* LIST (\\HasChildren) "/" "Projects"\r\n', out)
        out = c.send(b"S2 EXAMINE Sent\r\n")  # provisioned with the account
        self.assertIn(b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n', out)

    def test_closed_when_another_mailbox_is_selected(self) -> None:
        """RFC 9051 §6.3.2, §7.1: SELECT with a mailbox selected first says OK [CLOSED], so
        the client knows where the old mailbox's responses end; an IMAP4rev1 session without
        QRESYNC is not told (RFC 3501 has no such code)."""
        w = World()
        c = rev2(w)
        out = c.send(b"S2 EXAMINE INBOX\r\n")
        self.assertTrue(out.startswith(b"* OK [CLOSED]"), out)
        old = session(w)
        self.assertNotIn(b"CLOSED", old.send(b"S2 EXAMINE INBOX\r\n"))


class RecentTests(unittest.TestCase):
    def test_no_recent_flag_or_response(self) -> None:
        """RFC 9051 removed \\Recent: no RECENT response when mail arrives and no \\Recent in
        FLAGS of FETCH, STORE or unsolicited FETCH; the IMAP4rev1 session on the same folder
        still sees both."""
        w = World()
        w.deliver("alice@example.com", MESSAGE)
        old = session(w, select=False)
        out = old.send(b"X1 EXAMINE INBOX\r\n")  # read-only: sees \Recent, claims nothing
        self.assertIn(b"* 1 RECENT\r\n", out)
        self.assertIn(b"\\Recent", old.send(b"F1 FETCH 1 FLAGS\r\n"))
        new = rev2(w)  # claims the \Recent of the message
        self.assertIn(b"* 1 FETCH (FLAGS ())\r\n", new.send(b"F1 FETCH 1 FLAGS\r\n"))

        w.deliver("alice@example.com", MESSAGE)
        out = new.send(b"N1 NOOP\r\n")
        self.assertIn(b"* 2 EXISTS\r\n", out)
        self.assertNotIn(b"RECENT", out)
        out = new.send(b"T1 STORE 2 +FLAGS (\\Flagged)\r\n")
        self.assertIn(b"* 2 FETCH (FLAGS (\\Flagged))\r\n", out)
        self.assertNotIn(b"\\Recent", new.send(b"F2 FETCH 1:* (FLAGS UID)\r\n"))

        out = old.send(b"N1 NOOP\r\n")
        self.assertIn(b"* 2 EXISTS\r\n", out)
        self.assertRegex(out, rb"\* \d+ RECENT\r\n")

    def test_status_recent_refused(self) -> None:
        """RECENT is no STATUS item in IMAP4rev2 (RFC 9051 §6.3.11): BAD, in STATUS and in
        LIST RETURN (STATUS); IMAP4rev1 still answers it."""
        w = World()
        new = rev2(w, select=False)
        self.assertIn(b"T1 BAD", new.send(b"T1 STATUS INBOX (MESSAGES RECENT)\r\n"))
        out = new.send(b'L1 LIST "" "*" RETURN (STATUS (RECENT))\r\n')
        self.assertIn(b"L1 BAD", out)
        old = session(w, select=False)
        self.assertIn(b"* STATUS", old.send(b"T1 STATUS INBOX (RECENT)\r\n"))


class StatusTests(unittest.TestCase):
    def test_deleted_and_size(self) -> None:
        """RFC 9051 §6.3.11: STATUS DELETED counts messages with \\Deleted, SIZE is the total
        of RFC822.SIZE; both revisions answer them."""
        w = World()
        w.deliver("alice@example.com", MESSAGE)
        w.deliver("alice@example.com", OTHER)
        c = rev2(w)
        c.send(b"T1 STORE 2 +FLAGS (\\Deleted)\r\n")
        size = len(MESSAGE) + len(OTHER)
        for who in (c, session(w, select=False)):
            out = who.send(b"T2 STATUS INBOX (MESSAGES DELETED SIZE)\r\n")
            self.assertIn(b'* STATUS "INBOX" (MESSAGES 2 DELETED 1 SIZE %d)\r\n' % size, out)
        out = c.send(b'L1 LIST "" "INBOX" RETURN (STATUS (DELETED))\r\n')
        self.assertIn(b'* STATUS "INBOX" (DELETED 1)\r\n', out)


class SearchTests(unittest.TestCase):
    def test_search_answered_with_esearch(self) -> None:
        """RFC 9051 §6.4.4: SEARCH without RETURN is ESEARCH ALL (with UID for UID SEARCH;
        nothing after the tag when nothing matched); IMAP4rev1 keeps * SEARCH."""
        w = World()
        w.deliver("alice@example.com", MESSAGE)
        w.deliver("alice@example.com", OTHER)
        new = rev2(w)
        self.assertEqual(
            new.send(b"S2 SEARCH ALL\r\n"),
            b'* ESEARCH (TAG "S2") ALL 1:2\r\nS2 OK SEARCH completed\r\n',
        )
        out = new.send(b"S3 UID SEARCH SUBJECT read\r\n")
        self.assertRegex(out, rb'\* ESEARCH \(TAG "S3"\) UID ALL \d+\r\nS3 OK')
        out = new.send(b"S4 SEARCH SUBJECT nowhere\r\n")
        self.assertEqual(out, b'* ESEARCH (TAG "S4")\r\nS4 OK SEARCH completed\r\n')
        out = new.send(b"S5 SEARCH RETURN (COUNT) ALL\r\n")
        self.assertIn(b'* ESEARCH (TAG "S5") COUNT 2\r\n', out)
        old = session(w)
        self.assertIn(b"* SEARCH 1 2\r\n", old.send(b"S2 SEARCH ALL\r\n"))


class NameTests(unittest.TestCase):
    def test_utf8_names_for_rev2_modified_utf7_for_rev1(self) -> None:
        """RFC 9051 §5.1: an IMAP4rev2 session names mailboxes in UTF-8 (``&`` is just a
        character) and is answered in UTF-8; an IMAP4rev1 session sees the same folder in
        modified UTF-7 (RFC 3501 §5.1.3), and both reach the same messages."""
        w = World()
        new = rev2(w, select=False)
        name = "Grüße & Co".encode()
        self.assertIn(b"C1 OK", new.send(b'C1 CREATE "' + name + b'"\r\n'))
        out = new.send(b'L1 LIST "" "Gr*"\r\n')
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "' + name + b'"\r\n', out)
        old = session(w, select=False)
        mutf7 = b"Gr&APwA3w-e &- Co"
        out = old.send(b'L1 LIST "" "Gr*"\r\n')
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "' + mutf7 + b'"\r\n', out)
        out = old.send(b'A2 APPEND "' + mutf7 + b'" {%d+}\r\n' % len(MESSAGE) + MESSAGE + b"\r\n")
        self.assertIn(b"A2 OK", out)
        out = new.send(b'T1 STATUS "' + name + b'" (MESSAGES)\r\n')
        self.assertIn(b'* STATUS "' + name + b'" (MESSAGES 1)\r\n', out)
        out = new.send(b'S1 SELECT "' + name + b'"\r\n')
        self.assertIn(b"* 1 EXISTS\r\n", out)
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "' + name + b'"\r\n', out)
        out = new.send(b'M1 COPY 1 "' + name + b'/Sub"\r\n')
        self.assertIn(b"M1 NO [TRYCREATE]", out)

    def test_name_that_is_not_utf8(self) -> None:
        """A rev2 mailbox name that is not UTF-8 gets NO, never a traceback; the session goes
        on."""
        c = rev2(World(), select=False)
        for cmd in (b"C1 CREATE", b"S1 SELECT", b"T1 STATUS", b"D1 DELETE"):
            tail = b" (MESSAGES)" if cmd.endswith(b"STATUS") else b""
            out = c.send(cmd + b' "bad\xff\xfe"' + tail + b"\r\n")
            self.assertIn(cmd.split()[0] + b" NO", out)
        out = c.send(b'A1 APPEND "bad\xff" {%d+}\r\n' % len(MESSAGE) + MESSAGE + b"\r\n")
        self.assertIn(b"A1 NO", out)
        self.assertIn(b"N1 OK", c.send(b"N1 NOOP\r\n"))

    def test_list_extended_subscribed_nonexistent(self) -> None:
        """LIST-EXTENDED is part of IMAP4rev2 (RFC 9051 §6.3.9): a subscription without a
        folder is \\NonExistent \\Subscribed, in UTF-8."""
        c = rev2(World(), select=False)
        c.send('U1 SUBSCRIBE "Äpfel"\r\n'.encode())
        out = c.send(b'L1 LIST (SUBSCRIBED) "" "*"\r\n')
        self.assertIn('* LIST (\\NonExistent \\Subscribed) "/" "Äpfel"\r\n'.encode(), out)


class RealClientTests(Harness):
    @defer.inlineCallbacks
    def test_imaplib_rev1_and_rev2_on_one_folder(self) -> Any:
        """Over loopback TLS, imaplib as an IMAP4rev2 client (ENABLE, then raw commands) and
        as a plain IMAP4rev1 client, one after the other on the same INBOX."""
        port = self.listen("implicit")

        def sessions() -> dict[str, Any]:
            r: dict[str, Any] = {}
            new = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_tls())
            r["caps"] = new.capabilities
            new.login("alice@example.com", "secret")
            r["enable"] = new.enable("IMAP4rev2")
            r["enabled"] = new.untagged_responses.get("ENABLED")
            new._encoding = "utf-8"  # imaplib sends UTF-8 only for UTF8=ACCEPT by itself
            r["create"] = new.create('"Grüße"')
            r["select"] = new.select("INBOX")
            r["select_untagged"] = dict(new.untagged_responses)
            typ, data = new._simple_command("SEARCH", "ALL")
            r["search"] = new._untagged_response(typ, data, "ESEARCH")
            new.logout()
            old = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_tls())
            old.login("alice@example.com", "secret")
            r["old_select"] = old.select("INBOX")
            r["old_recent"] = old.response("RECENT")
            r["old_search"] = old.search(None, "ALL")
            r["old_list"] = old.list('""', "Gr*")
            old.logout()
            return r

        r = yield self.in_thread(sessions)
        self.assertIn("IMAP4REV1", r["caps"])
        self.assertIn("IMAP4REV2", r["caps"])
        self.assertEqual(r["enable"][0], "OK")
        self.assertEqual(r["enabled"], [b"IMAP4rev2"])
        self.assertEqual(r["create"][0], "OK")
        self.assertEqual(r["select"], ("OK", [b"1"]))
        self.assertEqual(r["select_untagged"].get("LIST"), [b'(\\HasNoChildren) "/" "INBOX"'])
        self.assertNotIn("RECENT", r["select_untagged"])
        self.assertEqual(r["search"][0], "OK")
        self.assertRegex(r["search"][1][0], rb'^\(TAG "\w+"\) ALL 1$')
        self.assertEqual(r["old_select"], ("OK", [b"1"]))
        self.assertEqual(r["old_recent"][0], "RECENT")
        self.assertEqual(r["old_search"], ("OK", [b"1"]))
        self.assertEqual(r["old_list"], ("OK", [b'(\\HasNoChildren) "/" "Gr&APwA3w-e"']))
