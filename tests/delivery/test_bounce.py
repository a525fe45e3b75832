"""RFC 3464 DSNs parsed back with the email package: structure, per-recipient fields, RET,
NOTIFY, never to <>, and no header injection from the original or a remote reply."""

from __future__ import annotations

import email
import email.policy
from email.message import Message
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.trial import unittest

from cgtwist.delivery.bounce import (
    Bouncer,
    build_dsn,
    notify_wants,
    parse_detail,
    remote_detail,
)
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, Recipient

ORIGINAL = (
    b"From: Alice <alice@src.test>\r\nTo: bob@dst.test\r\nSubject: report\r\n"
    b"Message-ID: <orig@src.test>\r\n\r\nBody line\r\n.dot line\r\n"
)


class FakeSubmission:
    def __init__(self) -> None:
        self.submitted: list[tuple[Envelope, bytes]] = []

    def submit(self, envelope: Envelope, data: bytes) -> defer.Deferred[str]:
        self.submitted.append((envelope, data))
        return defer.succeed(f"dsn{len(self.submitted)}")


def parse(dsn: bytes) -> Message:
    return email.message_from_bytes(dsn, policy=email.policy.compat32)


def status_groups(msg: Message) -> list[Message]:
    """The message/delivery-status part's groups: [per-message, per-recipient...]."""
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            assert isinstance(payload, list)
            return payload
    raise AssertionError("no message/delivery-status part")


def failed(addr: str, detail: str, **kw: Any) -> Recipient:
    return Recipient(address=addr, state="failed", detail=detail, **kw)


class DSNStructure(unittest.TestCase):
    def build(
        self,
        env: Envelope | None = None,
        data: bytes = ORIGINAL,
        action: str = "failed",
        recipients: list[Recipient] | None = None,
        **kw: Any,
    ) -> Message:
        env = env or Envelope("alice@src.test", submit={"arrival": "1700000000"})
        recipients = recipients or [
            failed(
                "bob@dst.test",
                remote_detail("mx.dst.test", "192.0.2.7", "550 5.1.1 No such user"),
                orcpt="rfc822;Bob+40dst.test",
            ),
            failed("carol@dst.test", "5.1.2 domain dst2.test does not exist"),
        ]
        raw = build_dsn(
            hostname="mail.out.test",
            envelope=env,
            data=data,
            recipients=recipients,
            action=action,
            now=1700003600.0,
            msg_id="Q1",
            **kw,
        )
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))  # CRLF only
        return parse(raw)

    def test_multipart_report_with_three_parts(self) -> None:
        """A bounce is multipart/report; report-type=delivery-status with a text part, the
        delivery-status part and the returned message, sent as an auto-reply."""
        msg = self.build()
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        parts = msg.get_payload()
        assert isinstance(parts, list)
        self.assertEqual(
            [p.get_content_type() for p in parts],
            ["text/plain", "message/delivery-status", "message/rfc822"],
        )
        self.assertEqual(msg["To"], "<alice@src.test>")
        self.assertEqual(msg["Auto-Submitted"], "auto-replied")
        self.assertIn("MAILER-DAEMON@mail.out.test", msg["From"])
        self.assertIn("No such user", parts[0].get_payload())

    def test_per_message_and_per_recipient_fields(self) -> None:
        """Reporting-MTA, Arrival-Date and for each recipient Final-Recipient,
        Original-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date."""
        groups = status_groups(self.build())
        self.assertEqual(len(groups), 3)
        head, bob, carol = groups
        self.assertEqual(head["Reporting-MTA"], "dns; mail.out.test")
        self.assertIn("14 Nov 2023", head["Arrival-Date"])
        self.assertEqual(bob["Final-Recipient"], "rfc822; bob@dst.test")
        self.assertEqual(bob["Original-Recipient"], "rfc822;Bob@dst.test")
        self.assertEqual(bob["Action"], "failed")
        self.assertEqual(bob["Status"], "5.1.1")
        self.assertEqual(bob["Remote-MTA"], "dns; mx.dst.test")
        self.assertEqual(bob["Diagnostic-Code"], "smtp; 550 5.1.1 No such user")
        self.assertIn("GMT", bob["Last-Attempt-Date"])
        self.assertEqual(carol["Status"], "5.1.2")
        self.assertIsNone(carol["Remote-MTA"])
        self.assertIsNone(carol["Original-Recipient"])

    def test_ret_full_returns_whole_message(self) -> None:
        """RET=FULL returns the original message intact as message/rfc822."""
        msg = self.build(Envelope("alice@src.test", params={"RET": "FULL"}))
        last = msg.get_payload()[-1]
        self.assertEqual(last.get_content_type(), "message/rfc822")
        inner = last.get_payload()[0]
        self.assertEqual(inner["Subject"], "report")
        self.assertIn(".dot line", inner.get_payload())

    def test_ret_hdrs_returns_headers_only(self) -> None:
        """RET=HDRS returns only the original headers as text/rfc822-headers."""
        msg = self.build(Envelope("alice@src.test", params={"RET": "HDRS"}))
        last = msg.get_payload()[-1]
        self.assertEqual(last.get_content_type(), "text/rfc822-headers")
        self.assertIn("Subject: report", last.get_payload())
        self.assertNotIn("Body line", last.get_payload())

    def test_large_message_defaults_to_headers(self) -> None:
        """Without RET a message over the size limit comes back as headers only."""
        big = ORIGINAL + b"x" * 5000 + b"\r\n"
        msg = self.build(data=big, max_full=1000)
        self.assertEqual(msg.get_payload()[-1].get_content_type(), "text/rfc822-headers")
        msg = self.build(data=ORIGINAL, max_full=1000)
        self.assertEqual(msg.get_payload()[-1].get_content_type(), "message/rfc822")

    def test_delay_warning_fields(self) -> None:
        """A delay warning says Action: delayed with a 4.x.x status and returns headers only."""
        r = Recipient(
            "bob@dst.test", detail=remote_detail("mx", "192.0.2.1", "451 4.3.0 try later")
        )
        msg = self.build(action="delayed", recipients=[r], retry_until=1700400000.0)
        _head, g = status_groups(msg)
        self.assertEqual(g["Action"], "delayed")
        self.assertEqual(g["Status"], "4.3.0")
        self.assertIn("Nov 2023", g["Will-Retry-Until"])
        self.assertEqual(msg.get_payload()[-1].get_content_type(), "text/rfc822-headers")
        self.assertIn("Delayed", msg["Subject"])

    def test_envid_echoed_decoded(self) -> None:
        """ENVID comes back as Original-Envelope-Id, xtext-decoded (RFC 3464 §2.2.1)."""
        msg = self.build(Envelope("alice@src.test", params={"ENVID": "ab+2Bcd"}))
        self.assertEqual(status_groups(msg)[0]["Original-Envelope-Id"], "ab+cd")

    def test_injection_attempts_do_not_add_headers(self) -> None:
        """CR/LF smuggled through ENVID, ORCPT, a remote reply, the recipient or the sender
        never creates a header line in the DSN or its status groups."""
        env = Envelope(
            "alice@src.test>\r\nBcc: victim@evil.test",
            params={"ENVID": "x+0D+0ABcc:+20victim@evil.test", "RET": "HDRS"},
        )
        r = failed(
            "bob@dst.test\r\nX-Injected: 1",
            remote_detail("mx\r\nX-Injected: 2", "1.2.3.4", "550 5.1.1 no\r\nX-Injected: 3"),
            orcpt="rfc822;a+0D+0AX-Injected:+204",
        )
        data = b"Subject: =?UTF-8?Q?=0A?=Bcc: x\r\nX-Orig: 1\r\n\r\nbody"
        raw = build_dsn(
            hostname="mail.out.test\r\nX-Injected: 5",
            envelope=env,
            data=data,
            recipients=[r],
            action="failed",
            now=1700000000.0,
        )
        msg = parse(raw)
        self.assertIsNone(msg["Bcc"])
        self.assertIsNone(msg["X-Injected"])
        self.assertEqual(msg["To"], "undisclosed-recipients:;")
        for g in status_groups(msg):
            self.assertIsNone(g["X-Injected"])
            self.assertIsNone(g["Bcc"])
        self.assertNotIn(b"\r\nX-Injected", raw)
        self.assertNotIn(b"\r\nBcc:", raw)

    def test_boundary_not_in_returned_message(self) -> None:
        """A returned message that contains the would-be boundary cannot break the MIME structure."""
        seed = b"\x00" * 12
        boundary = f"1700003600/{seed.hex()}/mail.out.test"
        data = ORIGINAL + b"--" + boundary.encode() + b"--\r\n"
        raw = build_dsn(
            hostname="mail.out.test",
            envelope=Envelope("a@src.test", params={"RET": "FULL"}),
            data=data,
            recipients=[failed("b@dst.test", "5.0.0 x")],
            action="failed",
            now=1700003600.0,
            boundary_seed=seed,
        )
        msg = parse(raw)
        self.assertEqual(len(msg.get_payload()), 3)
        self.assertNotEqual(msg.get_boundary(), boundary)

    @settings(max_examples=60, deadline=None)
    @given(st.text(max_size=80), st.text(max_size=80), st.binary(max_size=200))
    def test_arbitrary_details_keep_structure(self, detail: str, envid: str, body: bytes) -> None:
        """Whatever a remote server or the original says, the DSN parses to exactly three
        parts and one group per recipient with the fixed field set."""
        raw = build_dsn(
            hostname="h.test",
            envelope=Envelope("a@src.test", params={"ENVID": envid}),
            data=body,
            recipients=[failed("b@dst.test", detail)],
            action="failed",
            now=1700000000.0,
        )
        msg = parse(raw)
        self.assertEqual(len(msg.get_payload()), 3)
        groups = status_groups(msg)
        self.assertEqual(len(groups), 2)
        self.assertTrue(
            set(groups[1].keys())
            <= {
                "Final-Recipient",
                "Action",
                "Status",
                "Remote-MTA",
                "Diagnostic-Code",
                "Last-Attempt-Date",
            }
        )
        self.assertEqual(groups[1]["Action"], "failed")


class DetailParsing(unittest.TestCase):
    def test_remote_reply(self) -> None:
        """A remote 5xx reply gives its enhanced code, an smtp diagnostic and the remote MTA."""
        d = parse_detail(remote_detail("mx.x", "1.2.3.4", "552 5.2.2 Mailbox full"), "failed")
        self.assertEqual(
            (d.status, d.diagnostic, d.remote_mta),
            ("5.2.2", "smtp; 552 5.2.2 Mailbox full", "mx.x"),
        )

    def test_reply_without_enhanced_code(self) -> None:
        """A reply without an enhanced code gets the class default (x.0.0)."""
        self.assertEqual(parse_detail("550 go away", "failed").status, "5.0.0")

    def test_free_text(self) -> None:
        """Free text from a local agent keeps a generic status for the action."""
        d = parse_detail("mailbox locked", "delayed")
        self.assertEqual((d.status, d.diagnostic), ("4.0.0", "x-cgtwist; mailbox locked"))


class BouncerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sub = FakeSubmission()
        self.clock = task.Clock()
        self.clock.advance(1700000000)
        self.bouncer = Bouncer(
            self.sub,
            "mail.out.test",
            self.clock,
            SettingsHolder(Settings({"dsn.max_full_size": 100000})),
        )

    async def test_bounce_submitted_from_null_sender_to_original_sender(self) -> None:
        """The DSN goes from <> to the original envelope sender, through the submission seam."""
        new_id = await self.bouncer.bounce(
            "Q1", Envelope("alice@src.test"), ORIGINAL, [failed("bob@dst.test", "550 5.1.1 nope")]
        )
        self.assertEqual(new_id, "dsn1")
        env, data = self.sub.submitted[0]
        self.assertEqual(env.sender, "")
        self.assertEqual([r.address for r in env.recipients], ["alice@src.test"])
        self.assertEqual(parse(data).get_content_type(), "multipart/report")

    async def test_never_bounce_to_null_sender(self) -> None:
        """A failed message from <> (itself a bounce) produces no DSN (RFC 5321 §6.1)."""
        result = await self.bouncer.bounce(
            "Q2", Envelope(""), ORIGINAL, [failed("bob@dst.test", "550 5.1.1 nope")]
        )
        self.assertIsNone(result)
        self.assertEqual(self.sub.submitted, [])

    async def test_notify_never_and_success_only_suppress_failure_dsn(self) -> None:
        """NOTIFY=NEVER or NOTIFY=SUCCESS recipients get no failure report; the others do."""
        rs = [
            failed("a@dst.test", "5.0.0 x", notify="NEVER"),
            failed("b@dst.test", "5.0.0 x", notify="SUCCESS"),
            failed("c@dst.test", "5.0.0 x", notify="FAILURE,DELAY"),
        ]
        await self.bouncer.bounce("Q3", Envelope("alice@src.test"), ORIGINAL, rs)
        groups = status_groups(parse(self.sub.submitted[0][1]))
        self.assertEqual([g["Final-Recipient"] for g in groups[1:]], ["rfc822; c@dst.test"])
        self.sub.submitted.clear()
        await self.bouncer.bounce("Q4", Envelope("alice@src.test"), ORIGINAL, rs[:2])
        self.assertEqual(self.sub.submitted, [])

    async def test_delay_warning_respects_notify(self) -> None:
        """Delay warnings go to recipients without NOTIFY or with DELAY, not to FAILURE-only."""
        rs = [
            Recipient("a@dst.test", detail="4.4.1 no answer"),
            Recipient("b@dst.test", detail="4.4.1 no answer", notify="FAILURE"),
        ]
        await self.bouncer.delay_warning("Q5", Envelope("alice@src.test"), ORIGINAL, rs)
        groups = status_groups(parse(self.sub.submitted[0][1]))
        self.assertEqual(
            [(g["Final-Recipient"], g["Action"]) for g in groups[1:]],
            [("rfc822; a@dst.test", "delayed")],
        )

    async def test_success_report_only_on_request(self) -> None:
        """Delivery reports are sent only for NOTIFY=SUCCESS recipients."""
        rs = [
            Recipient("a@dst.test", state="delivered", detail="250 2.0.0 ok", notify="SUCCESS"),
            Recipient("b@dst.test", state="delivered", detail="250 2.0.0 ok"),
        ]
        await self.bouncer.delivered("Q6", Envelope("alice@src.test"), ORIGINAL, rs)
        groups = status_groups(parse(self.sub.submitted[0][1]))
        self.assertEqual(
            [(g["Final-Recipient"], g["Action"], g["Status"]) for g in groups[1:]],
            [("rfc822; a@dst.test", "delivered", "2.0.0")],
        )

    async def test_success_after_smtp_relay(self) -> None:
        """A NOTIFY=SUCCESS recipient handed to a next hop without DSN gets a 'relayed' report;
        one handed to a DSN-capable hop gets none from us (RFC 3461 §6.2.2)."""
        from cgtwist.delivery.bounce import DSN_PASSED

        rs = [
            Recipient(
                "a@dst.test",
                state="delivered",
                route="SMTP(dst.test)",
                notify="SUCCESS",
                detail=remote_detail("mx", "192.0.2.1", "250 2.0.0 ok"),
            ),
            Recipient(
                "b@dst.test",
                state="delivered",
                route="SMTP(dst.test)",
                notify="SUCCESS",
                detail=remote_detail("mx", "192.0.2.1", "250 2.0.0 ok") + DSN_PASSED,
            ),
        ]
        await self.bouncer.delivered("Q7", Envelope("alice@src.test"), ORIGINAL, rs)
        self.assertEqual(len(self.sub.submitted), 1)
        groups = status_groups(parse(self.sub.submitted[0][1]))
        self.assertEqual(
            [(g["Final-Recipient"], g["Action"]) for g in groups[1:]],
            [("rfc822; a@dst.test", "relayed")],
        )
        self.sub.submitted.clear()
        await self.bouncer.delivered("Q8", Envelope("alice@src.test"), ORIGINAL, rs[1:])
        self.assertEqual(self.sub.submitted, [])

    def test_notify_defaults(self) -> None:
        """No NOTIFY: failures and delays are reported, successes are not (RFC 3461 §4.1)."""
        r = Recipient("a@b")
        self.assertEqual(
            [notify_wants(r, a) for a in ("failed", "delayed", "delivered")], [True, True, False]
        )
