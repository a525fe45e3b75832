"""The SMTP receiver's state machine, replies, pipelining order and limits (StringTransport)."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.errors import MailError
from cgtwist.types import ListenerSpec
from tests.protocols.test_smtp_fakes import Harness

BODY = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n..leading dot\r\n"


class GreetingAndEhloTests(unittest.TestCase):
    def test_greeting(self) -> None:
        """A client connecting sees a 220 banner with our host name."""
        h = Harness(greet=False)
        self.assertEqual(h.connect(), ["220 mx.example.com ESMTP cgtwist"])

    def test_ehlo_plain(self) -> None:
        """Without TLS available EHLO advertises exactly the implemented extensions, no AUTH."""
        h = Harness()
        self.assertEqual(
            h.cmd("EHLO client.example"),
            [
                "250-mx.example.com Hello [192.0.2.10]",
                "250-PIPELINING",
                "250-SIZE 10485760",
                "250-8BITMIME",
                "250-ENHANCEDSTATUSCODES",
                "250 DSN",
            ],
        )

    def test_ehlo_reply_is_one_write(self) -> None:
        """The multi-line EHLO reply goes out in one write (one segment for the client to
        wait for, not one per extension line)."""
        h = Harness()
        writes: list[bytes] = []
        original = h.transport.write

        def write(data: bytes) -> None:
            writes.append(data)
            original(data)

        h.transport.write = write  # type: ignore[method-assign]
        lines = h.cmd("EHLO client.example")
        self.assertEqual(len(lines), 6)
        self.assertEqual(len(writes), 1)

    def test_ehlo_with_tls_available(self) -> None:
        """With a certificate, STARTTLS is offered but AUTH is not (no passwords in clear)."""
        h = Harness(tls_ctx=object())
        lines = h.cmd("EHLO client.example")
        self.assertIn("250-STARTTLS", lines + [lines[-1].replace("250 ", "250-")])
        self.assertFalse(any("AUTH" in x for x in lines))

    def test_ehlo_plain_auth_allowed(self) -> None:
        """A listener that allows plaintext AUTH advertises AUTH PLAIN LOGIN without TLS."""
        h = Harness(listener=ListenerSpec("smtp", 587, submission=True, allow_plain_auth=True))
        self.assertEqual(h.cmd("EHLO c.example")[-1], "250 AUTH PLAIN LOGIN")
        h = Harness(overrides={"auth.allow_plaintext": True})
        self.assertEqual(h.cmd("EHLO c.example")[-1], "250 AUTH PLAIN LOGIN")

    def test_size_is_live_setting(self) -> None:
        """SIZE follows the setting at the moment of EHLO, without a restart."""
        from cgtwist.settings import Settings

        h = Harness()
        h.settings.replace(Settings({"smtp.max_message_size": 1234}))
        self.assertIn("250-SIZE 1234", h.cmd("EHLO c.example"))

    def test_helo(self) -> None:
        """HELO gets a single 250 line; HELO without a name is a 501 syntax error."""
        h = Harness()
        self.assertEqual(h.cmd("HELO c.example"), ["250 mx.example.com Hello [192.0.2.10]"])
        self.assertEqual(h.cmd("HELO"), ["501 5.5.4 Syntax: EHLO hostname"])

    def test_connect_refused_by_policy(self) -> None:
        """A peer the policy refuses (RBL, blacklist) gets the policy's reply and is closed."""
        h = Harness(greet=False)
        h.policy.refuse["connect"] = MailError(554, "5.7.1", "Access denied")
        self.assertEqual(h.connect(), ["554 5.7.1 Access denied"])
        self.assertTrue(h.closed)

    def test_connect_policy_marks_client(self) -> None:
        """The connect hook may return an updated session (e.g. a Client IP), used afterwards."""
        from dataclasses import replace

        h = Harness(greet=False)
        h.policy.hold.add("connect")
        h.connect()
        h.policy.connect_result = None
        session = h.policy.calls[0][1]
        h.policy.pending[0].callback(None)
        h.policy.pending.clear()
        self.assertEqual(h.replies(), ["220 mx.example.com ESMTP cgtwist"])
        h2 = Harness(greet=False)
        h2.policy.connect_result = replace(session, is_client_ip=True)
        h2.connect()
        h2.cmd("EHLO c.example")
        h2.cmd("MAIL FROM:<a@b.example>")
        h2.cmd("RCPT TO:<x@y.example>")
        self.assertTrue(h2.policy.calls[-1][1][0].is_client_ip)

    def test_pregreet_talker(self) -> None:
        """A client that talks before the banner (spam bots) gets 554 and is closed."""
        h = Harness(greet=False)
        h.policy.hold.add("connect")
        h.connect()
        h.send(b"EHLO bot\r\nMAIL FROM:<x@y.example>\r\n")
        h.policy.release()
        self.assertEqual(h.replies(), ["554 5.5.1 Protocol error: talked before the greeting"])
        self.assertTrue(h.closed)


class TransactionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.h.cmd("EHLO client.example")

    def test_full_transaction(self) -> None:
        """A message is accepted with 250 only after submission, byte-exact after our headers."""
        h = self.h
        self.assertEqual(
            h.cmd("MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME"), ["250 2.1.0 Sender OK"]
        )
        self.assertEqual(
            h.cmd("RCPT TO:<bob@example.com> NOTIFY=FAILURE"), ["250 2.1.5 Recipient OK"]
        )
        self.assertEqual(h.cmd("RCPT TO:<carol@example.com>"), ["250 2.1.5 Recipient OK"])
        self.assertEqual(h.cmd("DATA"), ["354 End data with <CR><LF>.<CR><LF>"])
        self.assertEqual(h.send(BODY + b".\r\n"), ["250 2.0.0 Ok: queued as Q1"])
        envelope, data = h.submission.messages[0]
        self.assertEqual(envelope.sender, "alice@example.org")
        self.assertEqual(
            [r.address for r in envelope.recipients], ["bob@example.com", "carol@example.com"]
        )
        self.assertEqual(envelope.recipients[0].notify, "FAILURE")
        self.assertEqual(dict(envelope.params), {"SIZE": "100", "BODY": "8BITMIME"})
        self.assertEqual(envelope.submit["protocol"], "ESMTP")
        self.assertEqual(envelope.submit["helo"], "client.example")
        self.assertTrue(data.startswith(b"Received: from client.example ([192.0.2.10])\r\n"))
        self.assertTrue(data.endswith(b"\r\n" + BODY.replace(b"..leading", b".leading")))
        self.assertEqual(data.count(b"Received:"), 1)

    def test_trace_headers_from_policy(self) -> None:
        """Header lines a check adds (SPF) follow our Received:; unsafe ones are dropped."""
        h = self.h
        h.policy.trace = [
            b"Received-SPF: pass (mx.example.com: domain of a@example.org)",
            b"X-Evil: a\r\nBcc: victim@example.com",
        ]
        h.transaction()
        data = h.submission.messages[0][1]
        self.assertIn(
            b";\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\nReceived-SPF: pass (mx.example.com: domain of a@example.org)\r\nSubject: hi",
            data,
        )
        self.assertNotIn(b"Bcc", data)

    def test_null_sender(self) -> None:
        """Bounces (MAIL FROM:<>) are accepted and spooled with an empty sender."""
        h = self.h
        h.send(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nx\r\n.\r\n")
        self.assertEqual(h.submission.messages[0][0].sender, "")

    def test_sequence_errors(self) -> None:
        """Commands out of order get 503 5.5.1 and change nothing (RFC 5321 §4.1.4)."""
        h = Harness()
        self.assertEqual(
            h.cmd("MAIL FROM:<a@b.example>"), ["503 5.5.1 Error: send HELO/EHLO first"]
        )
        h.cmd("EHLO c.example")
        self.assertEqual(h.cmd("RCPT TO:<a@b.example>"), ["503 5.5.1 Error: need MAIL command"])
        self.assertEqual(h.cmd("DATA"), ["503 5.5.1 Error: need MAIL command"])
        h.cmd("MAIL FROM:<a@b.example>")
        self.assertEqual(h.cmd("MAIL FROM:<a@b.example>"), ["503 5.5.1 Error: nested MAIL command"])
        self.assertEqual(h.cmd("DATA"), ["503 5.5.1 Error: no valid recipients"])
        self.assertEqual(h.cmd("DATA x"), ["501 5.5.4 Syntax: DATA takes no arguments"])

    def test_syntax_errors(self) -> None:
        """Bad MAIL/RCPT syntax gets the parser's reply; no traceback, connection stays."""
        h = self.h
        self.assertEqual(h.cmd("MAIL TO:<a@b.example>"), ["501 5.5.4 Syntax: MAIL FROM:<address>"])
        self.assertEqual(h.cmd("MAIL FROM:<a@@b>")[0][:9], "501 5.1.7")
        self.assertEqual(h.cmd("MAIL FROM:<a@b.example> FOO=1")[0][:9], "555 5.5.4")
        self.assertEqual(h.cmd("MAIL FROM:<a@b.example> SIZE=-1")[0][:9], "501 5.5.4")
        self.assertEqual(h.cmd("MAIL FROM:<\xe9@b.example>")[0][:9], "553 5.6.7")
        h.cmd("MAIL FROM:<a@b.example>")
        self.assertEqual(h.cmd("RCPT TO:<" + "a" * 300 + "@b.example>")[0][:9], "501 5.1.3")
        self.assertEqual(h.cmd("RCPT FROM:<a@b.example>"), ["501 5.5.4 Syntax: RCPT TO:<address>"])
        self.assertFalse(h.closed)

    def test_policy_refusals_are_relayed(self) -> None:
        """A refused recipient gets the policy's reply; the others still get the message."""
        h = self.h
        h.policy.refuse["rcpt:ghost@example.com"] = MailError(550, "5.1.1", "unknown user")
        h.cmd("MAIL FROM:<a@b.example>")
        self.assertEqual(h.cmd("RCPT TO:<ghost@example.com>"), ["550 5.1.1 unknown user"])
        self.assertEqual(h.cmd("RCPT TO:<bob@example.com>"), ["250 2.1.5 Recipient OK"])
        h.send(b"DATA\r\nx\r\n.\r\n")
        self.assertEqual(
            [r.address for r in h.submission.messages[0][0].recipients], ["bob@example.com"]
        )

    def test_policy_crash_is_451(self) -> None:
        """A bug in a policy check is logged and answered 451 4.3.0, never a dropped connection."""
        h = self.h
        h.policy.crash.add("mail_from")
        self.assertEqual(
            h.cmd("MAIL FROM:<a@b.example>"), ["451 4.3.0 Temporary local problem, try again later"]
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(h.closed)

    def test_submission_errors(self) -> None:
        """A spool refusal is passed on; an unexpected spool error becomes 451 4.3.0."""
        h = self.h
        h.submission.error = MailError(452, "4.3.1", "Insufficient system storage")
        self.assertEqual(h.transaction()[-1], "452 4.3.1 Insufficient system storage")
        h.submission.error = OSError("disk on fire")
        self.assertEqual(h.transaction()[-1], "451 4.3.0 Temporary local problem, try again later")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_rset_noop_help_vrfy_expn_quit(self) -> None:
        """The small commands behave as RFC 5321 says, with enhanced codes."""
        h = self.h
        h.cmd("MAIL FROM:<a@b.example>")
        self.assertEqual(h.cmd("RSET"), ["250 2.0.0 Ok"])
        self.assertEqual(h.cmd("RCPT TO:<a@b.example>")[0][:3], "503")
        self.assertEqual(h.cmd("NOOP"), ["250 2.0.0 Ok"])
        self.assertEqual(h.cmd("HELP")[0][:9], "214 2.0.0")
        self.assertEqual(h.cmd("VRFY bob")[0][:9], "252 2.5.0")
        self.assertEqual(h.cmd("EXPN list")[0][:9], "502 5.5.1")
        self.assertEqual(h.cmd("BDAT 10 LAST")[0][:9], "502 5.5.1")
        self.assertEqual(h.cmd("FOO")[0], "500 5.5.1 Command unrecognized")
        self.assertEqual(h.cmd("QUIT"), ["221 2.0.0 Bye"])
        self.assertTrue(h.closed)

    def test_several_messages_per_connection(self) -> None:
        """One connection can send several messages; each gets its own id and Received."""
        h = self.h
        h.transaction()
        h.transaction()
        self.assertEqual(len(h.submission.messages), 2)
        ids = [m[0].submit["session"] for m in h.submission.messages]
        self.assertEqual(len(set(ids)), 2)

    def test_submission_listener_requires_auth(self) -> None:
        """On 587/465 MAIL before AUTH gets 530 5.7.0."""
        h = Harness(listener=ListenerSpec("smtp", 587, submission=True))
        h.cmd("EHLO c.example")
        self.assertEqual(h.cmd("MAIL FROM:<a@b.example>"), ["530 5.7.0 Authentication required"])

    def test_helo_params_refused(self) -> None:
        """ESMTP parameters after plain HELO are refused (555)."""
        h = Harness()
        h.cmd("HELO c.example")
        self.assertEqual(h.cmd("MAIL FROM:<a@b.example> SIZE=10")[0][:3], "555")
        self.assertEqual(h.cmd("MAIL FROM:<a@b.example>")[0][:3], "250")
        h.send(b"RCPT TO:<b@c.example>\r\nDATA\r\nx\r\n.\r\n")
        self.assertEqual(h.submission.messages[0][0].submit["protocol"], "SMTP")


class PipeliningTests(unittest.TestCase):
    def test_replies_in_order_with_slow_policy(self) -> None:
        """Pipelined commands get replies in command order even when a check is slow (#8126)."""
        h = Harness()
        h.cmd("EHLO c.example")
        h.policy.hold.add("mail_from")
        h.policy.hold.add("rcpt_to")
        out = h.send(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nRCPT TO:<z@y.example>\r\n"
            b"DATA\r\nhello\r\n.\r\nNOOP\r\n"
        )
        self.assertEqual(out, [])
        self.assertEqual(h.transport.producerState, "paused")
        self.assertEqual(len(h.policy.pending), 1)  # only MAIL has been looked at
        replies: list[str] = []
        while h.policy.pending:
            h.policy.pending.pop(0).callback(None)
            replies += h.replies()
        self.assertEqual([r[:3] for r in replies], ["250", "250", "250", "354", "250", "250"])
        self.assertEqual(h.transport.producerState, "producing")
        self.assertEqual(len(h.submission.messages), 1)

    def test_waiting_client_is_never_paused(self) -> None:
        """A client that waits for each reply (no pipelining) is served without pausing and
        resuming its socket around every slow check: it costs system calls per command."""
        h = Harness()
        h.cmd("EHLO c.example")
        h.policy.hold.add("mail_from")
        h.send(b"MAIL FROM:<a@b.example>\r\n")
        self.assertEqual(len(h.policy.pending), 1)
        self.assertEqual(h.transport.producerState, "producing")
        h.policy.pending.pop(0).callback(None)
        self.assertEqual([r[:3] for r in h.replies()], ["250"])
        # Input arriving while the reply is outstanding does pause reading until it is sent.
        h.policy.hold.add("rcpt_to")
        h.send(b"RCPT TO:<x@y.example>\r\n")
        h.send(b"RSET\r\n")
        self.assertEqual(h.transport.producerState, "paused")
        h.policy.pending.pop(0).callback(None)
        self.assertEqual([r[:3] for r in h.replies()], ["250", "250"])
        self.assertEqual(h.transport.producerState, "producing")

    def test_message_end_does_not_pause_a_waiting_client(self) -> None:
        """The final dot with nothing after it leaves reading on while the message is
        stored: the client waits for its 250 (pausing would cost two system calls)."""
        h = Harness()
        h.cmd("EHLO c.example")
        h.submission.hold = True
        h.send(b"MAIL FROM:<alice@example.org>\r\n")
        h.send(b"RCPT TO:<bob@example.com>\r\n")
        h.send(b"DATA\r\n")
        h.send(b"Subject: hi\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(len(h.submission.pending), 1)
        self.assertEqual(h.transport.producerState, "producing")
        h.submission.pending.pop().callback(None)
        self.assertEqual(h.replies()[-1], "250 2.0.0 Ok: queued as Q1")

    def test_replies_in_order_with_slow_submission(self) -> None:
        """A command pipelined after the final dot is answered after the message's 250."""
        h = Harness()
        h.cmd("EHLO c.example")
        h.submission.hold = True
        out = h.transaction() + h.send(b"QUIT\r\n")
        self.assertEqual([x[:3] for x in out], ["250", "250", "354"])
        h.submission.pending.pop().callback(None)
        self.assertEqual(h.replies(), ["250 2.0.0 Ok: queued as Q1", "221 2.0.0 Bye"])

    def test_pending_input_is_bounded(self) -> None:
        """A client flooding while a check is outstanding is cut off, not buffered forever."""
        h = Harness()
        h.cmd("EHLO c.example")
        h.policy.hold.add("mail_from")
        h.cmd("MAIL FROM:<a@b.example>")
        out = []
        for _ in range(300):
            out += h.send(b"NOOP" * 256 + b"\r\n")
        self.assertTrue(h.closed)
        self.assertEqual(out, ["421 4.7.0 Too much pipelined input"])


class LimitTests(unittest.TestCase):
    def test_command_line_too_long(self) -> None:
        """An over-long command gets 500 5.5.2 and the session continues (no disconnect)."""
        h = Harness(overrides={"smtp.max_command_length": 512})
        h.cmd("EHLO c.example")
        self.assertEqual(
            h.send(b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n"),
            ["500 5.5.2 Line too long", "250 2.0.0 Ok"],
        )
        # Arriving in pieces without a line end: answered once, then discarded with bounded memory.
        out = []
        for _ in range(50):
            out += h.send(b"y" * 400)
        self.assertEqual(out, ["500 5.5.2 Line too long"])
        self.assertLess(len(h.proto._buf), 1024)
        self.assertEqual(h.send(b"zz\r\nNOOP\r\n"), ["250 2.0.0 Ok"])
        self.assertFalse(h.closed)

    def test_bare_lf_and_nul_in_commands(self) -> None:
        """Commands must end in CRLF and contain no NUL or CR: 500 5.5.2."""
        h = Harness()
        self.assertEqual(h.send(b"EHLO c.example\n")[0][:9], "500 5.5.2")
        self.assertEqual(h.send(b"NOOP\0x\r\n")[0][:9], "500 5.5.2")
        self.assertEqual(h.send(b"NOOP\rx\r\n")[0][:9], "500 5.5.2")

    def test_size_at_mail(self) -> None:
        """MAIL FROM with SIZE= above the limit gets 552 5.3.4 at once (RFC 1870)."""
        h = Harness(overrides={"smtp.max_message_size": 1000})
        h.cmd("EHLO c.example")
        self.assertEqual(
            h.cmd("MAIL FROM:<a@b.example> SIZE=1001"),
            ["552 5.3.4 Message size exceeds fixed maximum message size"],
        )
        self.assertEqual(h.cmd("MAIL FROM:<a@b.example> SIZE=1000")[0][:3], "250")

    def test_size_during_data(self) -> None:
        """A message that grows past the limit is read to the end, discarded, then 552 5.3.4."""
        h = Harness(overrides={"smtp.max_message_size": 1000})
        h.cmd("EHLO c.example")
        h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n")
        out = []
        for _ in range(100):
            out += h.send(b"x" * 70 + b"\r\n")
        self.assertEqual(out, [])
        self.assertLess(sum(len(p) for p in h.proto._reader._parts), 1100)
        self.assertEqual(
            h.send(b".\r\nNOOP\r\n"),
            ["552 5.3.4 Message size exceeds fixed maximum message size", "250 2.0.0 Ok"],
        )
        self.assertEqual(h.submission.messages, [])

    def test_data_line_too_long(self) -> None:
        """An endless line inside DATA is discarded as it comes and refused after the dot."""
        h = Harness(overrides={"smtp.max_data_line_length": 1000})
        h.cmd("EHLO c.example")
        h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n")
        for _ in range(100):
            h.send(b"z" * 999)
        self.assertLess(len(h.proto._reader._buf), 2000)
        self.assertEqual(h.send(b"\r\n.\r\n"), ["552 5.3.4 Message line too long"])
        self.assertEqual(h.submission.messages, [])

    def test_recipient_limit(self) -> None:
        """Recipients beyond the limit get 452 4.5.3; the accepted ones still get the mail."""
        h = Harness(overrides={"smtp.max_recipients": 3})
        h.cmd("EHLO c.example")
        h.cmd("MAIL FROM:<a@b.example>")
        codes = [h.cmd(f"RCPT TO:<r{i}@y.example>")[0][:9] for i in range(5)]
        self.assertEqual(codes, ["250 2.1.5"] * 3 + ["452 4.5.3"] * 2)

    def test_error_limit(self) -> None:
        """After too many errors the server answers 421 and closes (a hard error limit)."""
        h = Harness(overrides={"smtp.max_errors": 3})
        out = h.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
        self.assertEqual(
            out,
            ["500 5.5.1 Command unrecognized"] * 3
            + ["421 4.7.0 mx.example.com Error: too many errors"],
        )
        self.assertTrue(h.closed)

    def test_idle_timeout(self) -> None:
        """A silent client is told 421 4.4.2 and disconnected after the idle timeout."""
        h = Harness(overrides={"smtp.idle_timeout": 60})
        h.clock.advance(59)
        h.cmd("NOOP")
        h.clock.advance(59)
        self.assertFalse(h.closed)
        h.clock.advance(2)
        self.assertEqual(h.replies(), ["421 4.4.2 mx.example.com Error: timeout exceeded"])
        self.assertTrue(h.closed)

    def test_data_timeout(self) -> None:
        """A client that stalls inside DATA is dropped after the data timeout; nothing is spooled."""
        h = Harness(overrides={"smtp.idle_timeout": 600, "smtp.data_timeout": 30})
        h.cmd("EHLO c.example")
        h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\npartial\r\n")
        h.clock.advance(31)
        self.assertEqual(h.replies()[-1][:9], "421 4.4.2")
        self.assertTrue(h.closed)
        self.assertEqual(h.submission.messages, [])

    def test_connection_limits(self) -> None:
        """Connections over the total or per-IP limit get 421 4.7.0 at connect and are closed."""
        first = Harness(overrides={"smtp.max_connections_per_ip": 2, "smtp.max_connections": 3})
        f = first.factory
        second = Harness(factory=f, greet=False)
        self.assertEqual(second.connect()[0][:3], "220")
        third = Harness(factory=f, greet=False)
        self.assertEqual(
            third.connect(),
            [
                "421 4.7.0 mx.example.com Error: too many connections from your address, try again later"
            ],
        )
        self.assertTrue(third.closed)
        other = Harness(factory=f, greet=False, peer="192.0.2.99")
        self.assertEqual(other.connect()[0][:3], "220")
        fourth = Harness(factory=f, greet=False, peer="192.0.2.77")
        self.assertEqual(fourth.connect()[0][:9], "421 4.7.0")
        self.assertEqual(f.connections, 3)
        third.proto.connectionLost(None)
        self.assertEqual(f.connections, 3)  # a refused connection was never counted
        first.proto.connectionLost(None)
        self.assertEqual((f.connections, f.per_ip.counts), (2, {"192.0.2.10": 1, "192.0.2.99": 1}))
        again = Harness(factory=f, greet=False)
        self.assertEqual(again.connect()[0][:3], "220")

    def test_zero_connection_limits_mean_none(self) -> None:
        """0 for either connection limit means no limit, as access.max_connections_per_ip
        says for POP3 and IMAP: an administrator who sets it is not locked out of SMTP."""
        first = Harness(overrides={"smtp.max_connections_per_ip": 0, "smtp.max_connections": 0})
        for _ in range(5):
            self.assertEqual(Harness(factory=first.factory, greet=False).connect()[0][:3], "220")
        self.assertEqual(first.factory.connections, 6)

    def test_received_loop(self) -> None:
        """A message that already passed too many hops is refused 554 5.4.6 (RFC 5321 §6.3)."""
        h = Harness(overrides={"smtp.max_received_headers": 5})
        h.cmd("EHLO c.example")
        hops = b"".join(b"Received: from hop%d\r\n\tby x; date\r\n" % i for i in range(6))
        self.assertEqual(h.transaction(hops + b"\r\nbody\r\n")[-1][:9], "554 5.4.6")
        # The same count in the body is not a loop.
        self.assertEqual(h.transaction(b"Subject: x\r\n\r\n" + hops)[-1][:3], "250")


class MoreLimitTests(unittest.TestCase):
    def test_size_zero_means_unlimited(self) -> None:
        """With the size limit set to 0 (RFC 1870: no fixed maximum) big SIZE= values pass."""
        h = Harness(overrides={"smtp.max_message_size": 0})
        self.assertIn("250-SIZE 0", h.cmd("EHLO c.example"))
        self.assertEqual(h.cmd("MAIL FROM:<a@b.example> SIZE=99999999999")[0][:3], "250")

    def test_tls_handshake_timeout(self) -> None:
        """A client that says STARTTLS and never completes the handshake is cut off."""
        h = Harness(tls_ctx=object(), overrides={"smtp.tls_handshake_timeout": 30})
        h.cmd("EHLO c.example")
        self.assertEqual(h.cmd("STARTTLS"), ["220 2.0.0 Ready to start TLS"])
        self.assertIsNotNone(h.transport.tls_started)
        h.clock.advance(31)
        self.assertTrue(h.closed)

    def test_starttls_resets_state(self) -> None:
        """After STARTTLS nothing from before counts: MAIL needs a new EHLO, STARTTLS again is 503."""
        h = Harness(tls_ctx=object())
        h.cmd("EHLO c.example")
        self.assertEqual(
            h.send(b"STARTTLS\r\nMAIL FROM:<a@b.example>\r\n"), ["220 2.0.0 Ready to start TLS"]
        )
        self.assertEqual(
            h.cmd("MAIL FROM:<a@b.example>"), ["503 5.5.1 Error: send HELO/EHLO first"]
        )
        self.assertEqual(h.cmd("STARTTLS"), ["503 5.5.1 TLS already active"])
        self.assertNotIn("250-STARTTLS", h.cmd("EHLO c.example"))

    def test_starttls_unavailable(self) -> None:
        """Without a certificate STARTTLS is refused 454 4.7.0 and the session goes on in clear."""
        h = Harness()
        h.cmd("EHLO c.example")
        self.assertEqual(h.cmd("STARTTLS"), ["454 4.7.0 TLS not available"])
        self.assertEqual(h.cmd("NOOP"), ["250 2.0.0 Ok"])


class PolicyExtrasTests(unittest.TestCase):
    def test_protection_hooks(self) -> None:
        """A policy with Client IPs, per-session state and offences is told what it needs."""
        from zope.interface import implementer

        from cgtwist.interfaces import IClientAccess, ISessionWatch
        from tests.protocols.test_smtp_fakes import FakePolicy

        @implementer(IClientAccess, ISessionWatch)
        class Protected(FakePolicy):
            def __init__(self) -> None:
                super().__init__()
                self.events: list[tuple[str, str]] = []

            def is_client_ip(self, ip: str) -> bool:
                return ip == "192.0.2.10"

            def session_closed(self, session: object) -> None:
                self.events.append(("closed", session.session_id))  # type: ignore[attr-defined]

            def report_offence(self, ip: str, kind: str) -> bool:
                self.events.append(("offence", ip))
                return False

        h = Harness(greet=False, overrides={"smtp.max_errors": 2})
        policy = Protected()
        h.factory.policy = policy
        h.connect()
        self.assertTrue(h.proto.session.is_client_ip)
        h.send(b"FOO\r\nBAR\r\n")
        self.assertTrue(h.closed)
        h.proto.connectionLost(None)
        self.assertEqual(
            policy.events, [("offence", "192.0.2.10"), ("closed", h.proto.session.session_id)]
        )


class CapacityTests(unittest.TestCase):
    def test_full_spool_refused_at_mail(self) -> None:
        """When the spool is full MAIL FROM gets 452 4.3.1 and RSET/QUIT still work."""
        from twisted.internet import defer

        h = Harness()
        asked: list[int] = []

        def check_capacity(size: int) -> defer.Deferred[None]:
            asked.append(size)
            return defer.fail(MailError(452, "4.3.1", "Insufficient system storage"))

        h.submission.check_capacity = check_capacity  # type: ignore[attr-defined]
        h.cmd("EHLO c.example")
        self.assertEqual(
            h.cmd("MAIL FROM:<a@b.example> SIZE=500"), ["452 4.3.1 Insufficient system storage"]
        )
        self.assertEqual(asked, [500])
        self.assertEqual([c for c in h.policy.calls if c[0] == "mail_from"], [])
        self.assertEqual(h.cmd("RSET"), ["250 2.0.0 Ok"])
        self.assertEqual(h.cmd("QUIT"), ["221 2.0.0 Bye"])

    def test_full_spool_is_not_the_clients_error(self) -> None:
        """The server's own 452 4.3.1 (disk nearly full) never counts towards the error limit:
        a client retrying MAIL FROM is not cut off with 421 nor reported as an offender, and
        once space is free again its message goes through on the same connection."""
        from twisted.internet import defer

        offences: list[str] = []
        h = Harness(overrides={"smtp.max_errors": 3})
        from zope.interface import alsoProvides

        from cgtwist.interfaces import ISessionWatch

        alsoProvides(h.policy, ISessionWatch)
        h.policy.report_offence = lambda ip, kind: offences.append(kind)  # type: ignore[attr-defined]
        full = [True]

        def check_capacity(size: int) -> defer.Deferred[None]:
            if full[0]:
                return defer.fail(MailError(452, "4.3.1", "Insufficient system storage"))
            return defer.succeed(None)

        h.submission.check_capacity = check_capacity  # type: ignore[attr-defined]
        h.cmd("EHLO c.example")
        for _ in range(10):
            self.assertEqual(
                h.cmd("MAIL FROM:<a@b.example>"), ["452 4.3.1 Insufficient system storage"]
            )
        self.assertFalse(h.closed)
        self.assertEqual(offences, [])
        full[0] = False
        self.assertEqual(h.transaction()[-1][:9], "250 2.0.0")

    def test_client_errors_still_count(self) -> None:
        """Unknown recipients (5xx) are the client's errors: a harvest hits the limit."""
        h = Harness(overrides={"smtp.max_errors": 3})
        for i in range(3):
            h.policy.refuse[f"rcpt:u{i}@example.com"] = MailError(550, "5.1.1", "Unknown user")
        h.cmd("EHLO c.example")
        h.cmd("MAIL FROM:<a@b.example>")
        out = h.send(
            b"RCPT TO:<u0@example.com>\r\nRCPT TO:<u1@example.com>\r\nRCPT TO:<u2@example.com>\r\n"
        )
        self.assertEqual(out[-1], "421 4.7.0 mx.example.com Error: too many errors")
        self.assertTrue(h.closed)


class ShutdownTests(unittest.TestCase):
    def test_graceful_shutdown(self) -> None:
        """On stop, idle clients get 421 at once, a message in DATA is finished and accepted
        first, and new connections are refused; the factory reports when all are gone."""
        idle = Harness()
        f = idle.factory
        sending = Harness(factory=f, peer="192.0.2.11")
        sending.cmd("EHLO c.example")
        sending.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\nSubject: s\r\n")
        done = f.shutdown()
        self.assertEqual(idle.replies(), ["421 4.3.2 mx.example.com Service shutting down"])
        self.assertTrue(idle.closed)
        self.assertFalse(sending.closed)
        late = Harness(factory=f, greet=False, peer="192.0.2.12")
        self.assertEqual(late.connect()[0][:9], "421 4.3.2")
        self.assertEqual(
            sending.send(b"\r\nbody\r\n.\r\nNOOP\r\n"),
            ["250 2.0.0 Ok: queued as Q1", "421 4.3.2 mx.example.com Service shutting down"],
        )
        self.assertNoResult(done)
        idle.proto.connectionLost(None)
        sending.proto.connectionLost(None)
        self.successResultOf(done)


class DuplicateRecipientTests(unittest.TestCase):
    def test_duplicate_recipient_gets_one_copy(self) -> None:
        """RCPT TO the same address twice (any case) is accepted but delivered once."""
        h = Harness()
        h.cmd("EHLO c.example")
        out = h.send(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<BOB@EXAMPLE.COM>\r\n"
            b"DATA\r\nx\r\n.\r\n"
        )
        self.assertEqual([x[:3] for x in out], ["250", "250", "250", "354", "250"])
        self.assertEqual(
            [r.address for r in h.submission.messages[0][0].recipients], ["bob@example.com"]
        )


class BulkPipelineTests(unittest.TestCase):
    def test_many_pipelined_commands_in_one_read(self) -> None:
        """Thousands of commands in one TCP read are all answered, in order, exactly once."""
        h = Harness(overrides={"smtp.max_errors": 10**6})
        h.cmd("EHLO c.example")
        out = h.send(b"NOOP\r\nFOO\r\n" * 5000)
        self.assertEqual(len(out), 10000)
        self.assertEqual(out[:2], ["250 2.0.0 Ok", "500 5.5.1 Command unrecognized"])
        self.assertEqual(out[-2:], ["250 2.0.0 Ok", "500 5.5.1 Command unrecognized"])
        self.assertEqual(h.proto._buf, b"")


class TraceThroughProtocolTests(unittest.TestCase):
    def test_hostile_helo_cannot_inject_headers(self) -> None:
        """Whatever a client says in EHLO, the stored message has only our Received: added."""
        from email import message_from_bytes
        from email.policy import default

        for helo in [
            b"x) (y; Mon, 1 Jan 2001",
            b"a\x01b\x7fc\xff",
            b"=?UTF-8?Q?=0A?=Bcc: victim@example.com",
            b"x" * 255,
        ]:
            h = Harness()
            h.send(b"EHLO " + helo + b"\r\n")
            h.transaction(b"Subject: s\r\n\r\nbody\r\n")
            data = h.submission.messages[0][1]
            msg = message_from_bytes(data, policy=default)
            self.assertEqual(list(msg.keys()), ["Received", "Subject"], helo)
            received = data.split(b"\r\nSubject:")[0]
            self.assertEqual(received.count(b";"), 1, helo)
            self.assertNotIn(b"\x01", received)

    def test_ipv4_mapped_peer(self) -> None:
        """An IPv4 client on a dual-stack listener is seen as its IPv4 address."""
        from twisted.internet.address import IPv6Address

        from tests.protocols.test_smtp_fakes import TLSStringTransport

        h = Harness(greet=False)
        h.transport = TLSStringTransport(
            hostAddress=IPv6Address("TCP", "::", 25),
            peerAddress=IPv6Address("TCP", "::ffff:192.0.2.5", 4000),
        )
        h.connect()
        self.assertEqual(h.proto.session.peer_ip, "192.0.2.5")
        self.assertEqual(h.factory.per_ip.counts, {"192.0.2.5": 1})


class ExactLimitTests(unittest.TestCase):
    def test_command_length_counts_crlf(self) -> None:
        """With a 512-octet limit a 512-octet command (CRLF included) passes, 513 does not."""
        h = Harness(overrides={"smtp.max_command_length": 512})
        self.assertEqual(h.send(b"NOOP " + b"x" * 505 + b"\r\n"), ["250 2.0.0 Ok"])
        self.assertEqual(h.send(b"NOOP " + b"x" * 506 + b"\r\n"), ["500 5.5.2 Line too long"])
        for piece in (b"NOOP " + b"y" * 300, b"y" * 205, b"\r\n"):
            out = h.send(piece)
        self.assertEqual(out, ["250 2.0.0 Ok"])
