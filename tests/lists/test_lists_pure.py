"""Tests for the pure LIST logic: addresses and VERP, tokens, headers, commands, bounces,
digests and CSV (cgtwist.lists)."""

from __future__ import annotations

import email

from twisted.trial import unittest

from cgtwist.lists import addresses, bounces, commands, csvio, digest, headers, tokens
from cgtwist.lists.model import MailingList, Subscriber, check_field

LST = MailingList("dev", "example.org", owner="alice@example.org", description="Dev talk")
POST = (
    b"From: Bob <bob@example.net>\r\nTo: dev@example.org\r\nSubject: Hello\r\n"
    b"List-Id: <other.example.com>\r\nPrecedence: bulk\r\nReply-To: x@y.org\r\n\r\nbody\r\n"
)


class AddressTests(unittest.TestCase):
    def test_roles_and_verp(self) -> None:
        """Every role address reads back to its list and role; VERP round-trips."""
        cases = {
            "dev@example.org": addresses.Role("dev", "post"),
            "dev-on@example.org": addresses.Role("dev", "on"),
            "Dev-Off@example.org": addresses.Role("dev", "off"),
            "dev-request@example.org": addresses.Role("dev", "request"),
            "dev-bounce+bob=example.net@example.org": addresses.Role(
                "dev", "bounce", "bob@example.net"
            ),
        }
        for addr, role in cases.items():
            self.assertEqual(addresses.role_of(addr, "dev@example.org"), role)
        verp = addresses.bounce_address("dev@example.org", "bob@example.net")
        self.assertEqual(verp, "dev-bounce+bob=example.net@example.org")
        self.assertEqual(addresses.verp_decode("bob=example.net"), "bob@example.net")
        self.assertIsNone(addresses.verp_decode("nonsense"))


class TokenTests(unittest.TestCase):
    def test_valid_forged_expired_other_list(self) -> None:
        """Only an unexpired token made with the secret, for this list and action, checks."""
        secret = b"s" * 32
        t = tokens.make(secret, "subscribe", "dev@example.org", "bob@example.net", 2000)
        ok = tokens.check(secret, t, "dev@example.org", 1000)
        self.assertEqual((ok.action, ok.subject), ("subscribe", "bob@example.net"))
        self.assertIsNone(tokens.check(secret, t, "dev@example.org", 2001))
        self.assertIsNone(tokens.check(secret, t, "ops@example.org", 1000))
        self.assertIsNone(tokens.check(b"x" * 32, t, "dev@example.org", 1000))
        self.assertIsNone(tokens.check(secret, t, "dev@example.org", 1000, "unsubscribe"))
        forged = t.replace("subscribe.", "unsubscribe.", 1)
        self.assertIsNone(tokens.check(secret, forged, "dev@example.org", 1000))
        self.assertEqual(tokens.find(secret, f"Re: confirm {t}", "dev@example.org", 1000), ok)
        self.assertIsNone(tokens.check(secret, "a.b.c.d", "dev@example.org", 1000))


class HeaderTests(unittest.TestCase):
    def test_distribution_copy(self) -> None:
        """The copy carries List-Id, the RFC 2369 fields and Precedence: list (replacing the
        post's own), the subject tag once, Reply-To by policy and a footer on plain text."""
        lst = MailingList(
            "dev",
            "example.org",
            description="Dev",
            subject_tag="[dev]",
            footer="Bye",
            reply_to="list",
        )
        copy = headers.distribution_copy(POST, lst, one_click="https://h/u?t=1")
        msg = email.message_from_bytes(copy)
        self.assertEqual(msg["List-Id"], '"Dev" <dev.example.org>')
        self.assertEqual(msg["List-Post"], "<mailto:dev@example.org>")
        self.assertIn("<mailto:dev-off@example.org?subject=unsubscribe>", msg["List-Unsubscribe"])
        self.assertIn("<https://h/u?t=1>", msg["List-Unsubscribe"])
        self.assertEqual(msg["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        self.assertEqual(msg.get_all("Precedence"), ["list"])
        self.assertEqual(msg["Subject"], "[dev] Hello")
        self.assertEqual(msg.get_all("Reply-To"), ["<dev@example.org>"])
        self.assertTrue(copy.endswith(b"body\r\n-- \r\nBye\r\n"))
        again = headers.distribution_copy(copy, lst)
        self.assertEqual(email.message_from_bytes(again)["Subject"], "[dev] Hello")
        self.assertTrue(headers.is_our_copy(headers.split_message(copy)[0], lst))
        self.assertFalse(headers.is_our_copy(headers.split_message(POST)[0], lst))

    def test_prepared_once_per_post(self) -> None:
        """A personalised post is read once: each subscriber's copy differs from the shared
        one only in its unsubscribe fields, and the digest keeps the copies' tagged subject."""
        lst = MailingList("dev", "example.org", subject_tag="[dev]", footer="Bye")
        prepared = headers.prepare(POST, lst)
        self.assertEqual(prepared.subject, "[dev] Hello")
        self.assertEqual(prepared.copy(lst), headers.distribution_copy(POST, lst))
        mine = email.message_from_bytes(prepared.copy(lst, "https://h/u?t=tok", "tok"))
        self.assertIn("subject=unsubscribe%20tok", mine["List-Unsubscribe"])
        self.assertEqual(mine["Subject"], "[dev] Hello")

    def test_fields_read_as_the_one_parser_reads_them(self) -> None:
        """From, Subject and List-Id are read through cgtwist.message.headers: folded,
        encoded (RFC 2047, broken words kept as written), the obsolete 'From :' form."""
        post = (
            b"From :\r\n Bob <Bob@Example.NET>\r\nSubject: =?utf-8?q?Caf=C3=A9?=\r\n\tnews\r\n"
            b"List-Id: =?utf-8?b?a?= <dev.example.org>\r\n\r\nbody\r\n"
        )
        fields, _body = headers.split_message(post)
        self.assertEqual(headers.sender_of(fields), "Bob@example.net")
        self.assertEqual(headers.field_value(fields, "Subject"), "Caf\u00e9 news")
        self.assertTrue(headers.is_our_copy(fields, LST))
        lst = MailingList("dev", "example.org", subject_tag="[dev]")
        self.assertEqual(headers.prepare(post, lst).subject, "[dev] Caf\u00e9 news")

    def test_no_footer_on_multipart(self) -> None:
        """A footer is never appended to a MIME multipart body (it would corrupt it)."""
        post = b"From: a@b.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x--\r\n"
        lst = MailingList("dev", "example.org", footer="Bye")
        self.assertTrue(headers.distribution_copy(post, lst).endswith(b"\r\n\r\n--x--\r\n"))


class CommandTests(unittest.TestCase):
    def test_commands(self) -> None:
        """Subject first, then the first body lines; -on/-off default to their action."""
        self.assertEqual(commands.parse("request", "subscribe", b"").action, "subscribe")
        self.assertEqual(commands.parse("request", "Re: confirm abc", b"").action, "confirm")
        self.assertEqual(
            commands.parse("request", "", b"\r\nunsubscribe\r\n").action, "unsubscribe"
        )
        self.assertEqual(commands.parse("on", "hello", b"").action, "subscribe")
        self.assertEqual(commands.parse("off", "", b"").action, "unsubscribe")
        self.assertEqual(commands.parse("request", "what?", b"").action, "help")


class BounceTests(unittest.TestCase):
    def test_dsn_and_counting(self) -> None:
        """A DSN names its failed recipients; N bounces in a window suspend, a bounce after
        the window starts a new one, and suspension leads to removal later."""
        dsn = (
            b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
            b"Final-Recipient: rfc822; bob@Example.NET\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
            b"Final-Recipient: rfc822; carol@example.net\r\nAction: delayed\r\n"
        )
        self.assertEqual(bounces.dsn_recipients(dsn), ["bob@example.net"])
        self.assertEqual(bounces.attribute("v@x.org", dsn), ["v@x.org"])
        self.assertIsNone(bounces.attribute("", b"hello"))
        s = Subscriber("bob@example.net")
        s = bounces.count(s, 100, window=50, limit=3)
        s = bounces.count(s, 120, window=50, limit=3)
        s = bounces.count(s, 200, window=50, limit=3)  # new window
        self.assertEqual((s.bounces, s.state), (1, "active"))
        s = bounces.count(bounces.count(s, 210, 50, 3), 220, 50, 3)
        self.assertEqual((s.state, s.suspended_at), ("suspended", 220))
        self.assertFalse(bounces.due_for_removal(s, 300, 100))
        self.assertTrue(bounces.due_for_removal(s, 320, 100))


class DigestTests(unittest.TestCase):
    def test_digest_and_index(self) -> None:
        """A digest is multipart/digest: a subject index first, then each post; an index
        mode message is the subject index alone."""
        posts = [digest.post_of(POST), digest.post_of(POST.replace(b"Hello", b"Second"))]
        data = digest.build(LST, posts, 3, "Mon, 7 Dec 2026 12:00:00 +0000", "<d@x>", False)
        msg = email.message_from_bytes(data)
        self.assertEqual(msg.get_content_type(), "multipart/digest")
        parts = msg.get_payload()
        self.assertIn("Hello (Bob <bob@example.net>)", parts[0].get_payload())
        self.assertIn("Second", parts[0].get_payload())
        self.assertEqual([p.get_content_type() for p in parts[1:]], ["message/rfc822"] * 2)
        self.assertEqual(msg["List-Id"], '"Dev talk" <dev.example.org>')
        index = digest.build(LST, posts, 3, "d", "<i@x>", True)
        self.assertIn(b"Second", index)
        self.assertNotIn(b"body", index)


class ModelTests(unittest.TestCase):
    def test_fields_refused(self) -> None:
        """A value the agent would not act on is refused, not stored."""
        for key, value in [
            ("policy", "all"),
            ("size_limit", -1),
            ("digest_interval", 0),
            ("subject_tag", "a\nb"),
            ("owner", "nobody"),
            ("personalize", "yes"),
            ("nonsense", 1),
        ]:
            with self.assertRaises(ValueError):
                check_field(key, value)

    def test_csv_errors_name_the_line(self) -> None:
        with self.assertRaisesRegex(ValueError, "line 3"):
            csvio.parse("address,mode\na@b.org,feed\nc@d.org,loud\n")
        self.assertEqual(
            [s.address for s in csvio.parse("a@b.org\nc@D.org\n")], ["a@b.org", "c@d.org"]
        )

    def test_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_imports(self) -> None:
        """Spreadsheets save "CSV UTF-8" with a byte order mark before the header: it must
        not turn the header line into a bad address (WebAdmin's upload, the CLI's file)."""
        subs = csvio.parse("\ufeffaddress,mode\r\na@b.org,digest\r\n")
        self.assertEqual([(s.address, s.mode) for s in subs], [("a@b.org", "digest")])
        subs = csvio.parse("\ufeffa@b.org\n")
        self.assertEqual([s.address for s in subs], ["a@b.org"])
