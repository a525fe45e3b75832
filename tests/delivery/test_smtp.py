"""Outbound SMTP delivery against loopback sinks: per-recipient results, MX order, DNS
failures, timeouts, STARTTLS, smarthost, connection reuse and what goes on the wire."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from cgtwist.delivery.smtp import SMTPDelivery
from cgtwist.delivery.smtp_targets import mx_targets
from cgtwist.errors import DNSPermanentError, DNSTemporaryError
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, Recipient
from tests.certs import self_signed, server_tls
from tests.delivery.test_smtp_support import (
    Behaviour,
    FakeResolver,
    Net,
    SinkFactory,
)

MESSAGE = b"From: a@src.test\r\nTo: b@dst.test\r\nSubject: hi\r\n\r\nHello\r\n"


def rcpts(*addrs: str, domain: str = "dst.test") -> list[Recipient]:
    return [Recipient(address=a, route=f"SMTP({domain})") for a in addrs]


class _Base(unittest.TestCase):
    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.clock = task.Clock()
        self.net = Net(reactor)
        self.factories: list[SinkFactory] = []
        self.attempts: list[Any] = []
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(self.net.close(self.factories)))
        return defer.Deferred.fromCoroutine(self.net.start())

    def sink(self, ip: str = "127.0.0.1", **kw: Any) -> SinkFactory:
        f = SinkFactory(Behaviour(**kw))
        self.net.add(ip, f)
        self.factories.append(f)
        return f

    def agent(self, resolver: Any, **settings: Any) -> SMTPDelivery:
        values = {"smtp.connection_reuse_time": 0}
        values.update(settings)
        holder = SettingsHolder(Settings(values))
        return SMTPDelivery(
            resolver,
            holder,
            "out.test",
            self.clock,
            connect=self.net.connect,
            on_attempt=lambda m, a: self.attempts.append(a),
            rng=random.Random(7),
        )

    def resolver(self, **mx_hosts: str) -> FakeResolver:
        return FakeResolver(
            mx={"dst.test": [(10, "mx.dst.test")]}, a={"mx.dst.test": ["127.0.0.1"]}
        )


class PerRecipientResults(_Base):
    async def test_accepting_sink_gets_one_transaction_for_all_recipients(self) -> None:
        """Two recipients at one domain are delivered in one transaction and both marked
        delivered with the server's reply as detail."""
        f = self.sink()
        rs = await self.agent(self.resolver()).deliver(
            "m1", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test", "y@dst.test")
        )
        self.assertEqual([r.state for r in rs], ["delivered", "delivered"])
        self.assertIn("250 2.0.0 Ok: queued", rs[0].detail)
        self.assertIn("mx.dst.test[127.0.0.1]", rs[0].detail)
        self.assertEqual(len(f.log.messages), 1)
        self.assertEqual(f.log.messages[0], MESSAGE)
        mails = [c for c in f.log.commands if c.startswith("MAIL")]
        self.assertEqual(len(mails), 1)
        self.assertTrue(mails[0].startswith("MAIL FROM:<a@src.test>"))

    async def test_rcpt_4xx_pending_5xx_failed_others_delivered(self) -> None:
        """A 450 at RCPT leaves that recipient for retry, a 550 fails it, and the message still
        reaches the accepted recipient."""
        replies = {
            "soft@dst.test": "450 4.2.1 Try later",
            "hard@dst.test": "550 5.1.1 No such user",
        }
        f = self.sink(rcpt=lambda a: replies.get(a, "250 2.1.5 Ok"))
        rs = await self.agent(self.resolver()).deliver(
            "m2",
            Envelope("a@src.test"),
            MESSAGE,
            rcpts("soft@dst.test", "hard@dst.test", "ok@dst.test"),
        )
        self.assertEqual([r.state for r in rs], ["pending", "failed", "delivered"])
        self.assertIn("550 5.1.1 No such user", rs[1].detail)
        self.assertIn("450 4.2.1", rs[0].detail)
        self.assertEqual(len(f.log.messages), 1)

    async def test_all_rcpts_refused_sends_no_data(self) -> None:
        """When every recipient is refused no DATA is sent and the session is reset."""
        f = self.sink(rcpt=lambda a: "550 5.1.1 No such user")
        rs = await self.agent(self.resolver()).deliver(
            "m3", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "failed")
        self.assertNotIn("DATA", f.log.commands)
        self.assertEqual(f.log.messages, [])

    async def test_data_end_4xx_is_pending(self) -> None:
        """A 451 after the final dot means retry later, for every accepted recipient."""
        self.sink(data_end="451 4.3.0 Local error")
        rs = await self.agent(self.resolver()).deliver(
            "m4", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test", "y@dst.test")
        )
        self.assertEqual([r.state for r in rs], ["pending", "pending"])
        self.assertIn("451 4.3.0", rs[0].detail)

    async def test_data_end_5xx_is_failed(self) -> None:
        """A 554 after the final dot is a permanent failure for the accepted recipients only."""
        self.sink(
            data_end="554 5.6.0 Content rejected",
            rcpt=lambda a: "550 5.1.1 unknown" if a.startswith("no") else "250 Ok",
        )
        rs = await self.agent(self.resolver()).deliver(
            "m5", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test", "no@dst.test")
        )
        self.assertEqual([r.state for r in rs], ["failed", "failed"])
        self.assertIn("554 5.6.0", rs[0].detail)
        self.assertIn("550 5.1.1", rs[1].detail)

    async def test_disconnect_after_final_dot_is_pending(self) -> None:
        """A server that drops the connection after the final dot has not taken the message:
        the recipients stay pending (a possible duplicate is accepted, RFC 5321 §6.1)."""
        f = self.sink(disconnect_after_dot=True)
        rs = await self.agent(self.resolver()).deliver(
            "m6", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "pending")
        self.assertEqual(len(f.log.messages), 1)
        self.assertIn("connection lost", rs[0].detail)

    async def test_pipelining_gives_the_same_per_recipient_results(self) -> None:
        """With PIPELINING offered the commands go in one group and the results per recipient
        are the same as without it."""
        f = self.sink(
            extensions=("PIPELINING", "8BITMIME"),
            rcpt=lambda a: "550 5.1.1 unknown" if a.startswith("no") else "250 Ok",
        )
        rs = await self.agent(self.resolver()).deliver(
            "m7", Envelope("a@src.test"), MESSAGE, rcpts("no@dst.test", "x@dst.test")
        )
        self.assertEqual([r.state for r in rs], ["failed", "delivered"])
        self.assertEqual(f.log.messages, [MESSAGE])

    async def test_pipelining_with_every_rcpt_refused_sends_no_message(self) -> None:
        """Pipelined DATA after only refused recipients never transmits the message."""
        f = self.sink(extensions=("PIPELINING",), rcpt=lambda a: "550 5.1.1 unknown")
        rs = await self.agent(self.resolver()).deliver(
            "m8", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "failed")
        self.assertTrue(all(m.strip() == b"" for m in f.log.messages))

    async def test_too_many_recipients_continue_in_next_transaction(self) -> None:
        """A server taking only 2 recipients per message gets the rest in further transactions
        on the same connection (RFC 5321 §4.5.3.1.10), so nobody waits for a retry."""
        f = self.sink(max_rcpts=2)
        addrs = [f"u{i}@dst.test" for i in range(5)]
        rs = await self.agent(self.resolver()).deliver(
            "m31", Envelope("a@src.test"), MESSAGE, rcpts(*addrs)
        )
        self.assertEqual([r.state for r in rs], ["delivered"] * 5)
        self.assertEqual(f.log.connections, 1)
        self.assertEqual(len(f.log.messages), 3)

    async def test_unsafe_addresses_never_reach_the_wire(self) -> None:
        """A recipient containing CR/LF or '>' (a command injection) fails and nothing of it
        is sent; the other recipients are still delivered."""
        f = self.sink()
        bad = Recipient("x@dst.test>\r\nRCPT TO:<evil@dst.test", route="SMTP(dst.test)")
        rs = await self.agent(self.resolver()).deliver(
            "m32", Envelope("a@src.test"), MESSAGE, [bad, *rcpts("ok@dst.test")]
        )
        self.assertEqual([r.state for r in rs], ["failed", "delivered"])
        self.assertFalse(any("evil" in c for c in f.log.commands))

    async def test_utf8_address_needs_smtputf8(self) -> None:
        """An internationalised address fails with 5.6.7 when the next hop lacks SMTPUTF8, and
        is sent with the SMTPUTF8 parameter when it has it."""
        f = self.sink(extensions=("8BITMIME",))
        rs = await self.agent(self.resolver()).deliver(
            "m33", Envelope("a@src.test"), MESSAGE, rcpts("jürgen@dst.test")
        )
        self.assertEqual(rs[0].state, "failed")
        self.assertTrue(rs[0].detail.startswith("5.6.7"))
        self.assertEqual(f.log.messages, [])
        f2 = self.sink("127.0.0.7", extensions=("SMTPUTF8", "8BITMIME"))
        res = FakeResolver(
            mx={"dst.test": [(10, "mx2.dst.test")]}, a={"mx2.dst.test": ["127.0.0.7"]}
        )
        rs = await self.agent(res).deliver(
            "m34", Envelope("a@src.test"), MESSAGE, rcpts("jürgen@dst.test")
        )
        self.assertEqual(rs[0].state, "delivered")
        self.assertIn("SMTPUTF8", [c for c in f2.log.commands if c.startswith("MAIL")][0])


class WireFormat(_Base):
    async def test_dot_stuffing_and_crlf_on_the_wire(self) -> None:
        """Lines starting with a dot are doubled on the wire and bare LFs become CRLF, so a
        body line '.' can never end the message early."""
        f = self.sink()
        body = b"Subject: dots\n\n.\n.leading dot\nmiddle . dot\n..two\nlast"
        rs = await self.agent(self.resolver()).deliver(
            "m9", Envelope("a@src.test"), body, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(
            f.log.messages[0],
            b"Subject: dots\r\n\r\n..\r\n..leading dot\r\nmiddle . dot\r\n...two\r\nlast\r\n",
        )

    async def test_size_and_dsn_parameters_sent_when_offered(self) -> None:
        """SIZE, RET, ENVID, NOTIFY and ORCPT are passed on when the server offers SIZE and DSN."""
        f = self.sink(extensions=("SIZE 100000", "DSN"))
        env = Envelope("a@src.test", params={"RET": "HDRS", "ENVID": "abc+2Bdef"})
        r = Recipient(
            "x@dst.test",
            route="SMTP(dst.test)",
            notify="FAILURE,DELAY",
            orcpt="rfc822;x+40orig.test",
        )
        await self.agent(self.resolver()).deliver("m10", env, MESSAGE, [r])
        mail = [c for c in f.log.commands if c.startswith("MAIL")][0]
        self.assertIn(f"SIZE={len(MESSAGE)}", mail)
        self.assertIn("RET=HDRS", mail)
        self.assertIn("ENVID=abc+2Bdef", mail)
        rcpt = [c for c in f.log.commands if c.startswith("RCPT")][0]
        self.assertIn("NOTIFY=FAILURE,DELAY", rcpt)
        self.assertIn("ORCPT=rfc822;x+40orig.test", rcpt)

    async def test_success_notify_marked_when_passed_on(self) -> None:
        """A NOTIFY=SUCCESS recipient delivered to a DSN-capable server is marked so that we
        send no success report of our own; without DSN there it is not marked."""
        from cgtwist.delivery.bounce import DSN_PASSED

        self.sink(extensions=("DSN",))
        r = Recipient("x@dst.test", route="SMTP(dst.test)", notify="SUCCESS")
        rs = await self.agent(self.resolver()).deliver("m36", Envelope("a@src.test"), MESSAGE, [r])
        self.assertTrue(rs[0].detail.endswith(DSN_PASSED))
        self.sink("127.0.0.8", extensions=())
        res = FakeResolver(mx={"dst.test": [(10, "mx8")]}, a={"mx8": ["127.0.0.8"]})
        r = Recipient("x@dst.test", route="SMTP(dst.test)", notify="SUCCESS")
        rs = await self.agent(res).deliver("m37", Envelope("a@src.test"), MESSAGE, [r])
        self.assertEqual(rs[0].state, "delivered")
        self.assertFalse(rs[0].detail.endswith(DSN_PASSED))

    async def test_dsn_parameters_not_sent_without_extension(self) -> None:
        """A server that does not offer DSN never sees NOTIFY or RET (RFC 3461 §4)."""
        f = self.sink(extensions=())
        env = Envelope("a@src.test", params={"RET": "FULL"})
        r = Recipient("x@dst.test", route="SMTP(dst.test)", notify="SUCCESS")
        await self.agent(self.resolver()).deliver("m11", env, MESSAGE, [r])
        self.assertFalse(any("NOTIFY" in c or "RET=" in c for c in f.log.commands))

    async def test_message_larger_than_advertised_size_fails_without_sending(self) -> None:
        """A message over the server's SIZE limit fails at once with 5.3.4 and is not sent."""
        f = self.sink(extensions=("SIZE 10",))
        rs = await self.agent(self.resolver()).deliver(
            "m12", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "failed")
        self.assertIn("5.3.4", rs[0].detail)
        self.assertFalse(any(c.startswith("MAIL") for c in f.log.commands))


class Timeouts(_Base):
    async def test_stall_after_final_dot_times_out_as_pending(self) -> None:
        """A server that never answers the final dot is given up on after the DATA-end
        timeout (configurable) and the recipient is retried later, not lost or delivered."""
        f = self.sink(stall_after_dot=True)
        dot: defer.Deferred[None] = defer.Deferred()
        f.log.dot_seen.append(dot)
        d = self.agent(self.resolver(), **{"smtp.timeout_data_end": 42}).deliver(
            "m13", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        await dot
        # Let the client read anything in flight, then move the clock to just before the limit.
        self.clock.advance(41)
        self.assertFalse(d.called)
        self.clock.advance(1)
        rs = await d
        self.assertEqual(rs[0].state, "pending")
        self.assertIn("timeout", rs[0].detail)

    async def test_shutdown_aborts_a_stalled_session_as_pending(self) -> None:
        """SIGTERM while a remote host stalls: the session is dropped at once and the recipient
        stays queued for after the restart, so the stop is not held up for minutes."""
        f = self.sink(stall_after_dot=True)
        dot: defer.Deferred[None] = defer.Deferred()
        f.log.dot_seen.append(dot)
        agent = self.agent(self.resolver())
        d = agent.deliver("m13b", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        await dot
        self.assertFalse(d.called)
        agent.abort_all()
        rs = await d
        self.assertEqual(rs[0].state, "pending")
        later = await agent.deliver("m13c", Envelope("a@src.test"), MESSAGE, rcpts("y@dst.test"))
        self.assertEqual(later[0].state, "pending")
        self.assertIn("shutting down", later[0].detail)

    async def test_stalled_greeting_moves_to_next_mx(self) -> None:
        """A host that never sends its greeting is abandoned after the greeting timeout and
        the next MX gets the message."""
        self.sink("127.0.0.2", greeting="")
        good = self.sink("127.0.0.1")
        res = FakeResolver(
            mx={"dst.test": [(10, "slow.dst.test"), (20, "mx.dst.test")]},
            a={"slow.dst.test": ["127.0.0.2"], "mx.dst.test": ["127.0.0.1"]},
        )
        stalled = self.factories[0]
        d = self.agent(res, **{"smtp.timeout_greeting": 30}).deliver(
            "m14", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        # Wait until the client is connected and waiting for the greeting (its timer is set).
        while stalled.log.connections == 0 or not self.clock.getDelayedCalls():
            await task.deferLater(self.reactor, 0.01, lambda: None)
        self.clock.advance(29)
        self.assertEqual(len(good.log.messages), 0)
        self.clock.advance(1)
        rs = await d
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(len(good.log.messages), 1)


class MXSelection(_Base):
    async def test_preference_order_and_fallback(self) -> None:
        """MX hosts are tried lowest preference first; a refused connection and a 421
        greeting move on to the next host, which gets the message."""
        self.sink("127.0.0.3", greeting="421 4.3.2 busy")
        good = self.sink("127.0.0.1")
        res = FakeResolver(
            mx={"dst.test": [(30, "c.dst.test"), (10, "a.dst.test"), (20, "b.dst.test")]},
            a={
                "a.dst.test": ["127.0.0.2"],
                "b.dst.test": ["127.0.0.3"],
                "c.dst.test": ["127.0.0.1"],
            },
        )
        rs = await self.agent(res).deliver(
            "m15", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(self.net.connects, ["127.0.0.2", "127.0.0.3", "127.0.0.1"])
        self.assertEqual(len(good.log.messages), 1)
        self.assertEqual([a.host for a in self.attempts], ["b.dst.test", "c.dst.test"])

    async def test_all_hosts_down_is_pending(self) -> None:
        """When no MX host answers, the recipients are kept for a later retry."""
        res = FakeResolver(mx={"dst.test": [(10, "a.dst.test")]}, a={"a.dst.test": ["127.0.0.2"]})
        rs = await self.agent(res).deliver(
            "m16", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "pending")
        self.assertIn("4.4.1", rs[0].detail)

    async def test_equal_preference_is_randomised(self) -> None:
        """Hosts of equal preference are tried in varying order, but never before a host of
        lower preference (RFC 5321 §5.1)."""
        res = FakeResolver(
            mx={"dst.test": [(10, "a"), (10, "b"), (10, "c"), (5, "first")]},
            a={h: ["127.0.0.9"] for h in ("a", "b", "c", "first")},
        )
        orders = set()
        for seed in range(12):
            hosts = [t.host async for t in mx_targets(res, "dst.test", random.Random(seed))]
            self.assertEqual(hosts[0], "first")
            self.assertEqual(sorted(hosts[1:]), ["a", "b", "c"])
            orders.add(tuple(hosts))
        self.assertGreater(len(orders), 1)

    async def test_nxdomain_is_permanent(self) -> None:
        """A recipient domain that does not exist fails at once with 5.1.2."""
        res = FakeResolver(mx={"dst.test": DNSPermanentError})
        rs = await self.agent(res).deliver(
            "m17", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "failed")
        self.assertTrue(rs[0].detail.startswith("5.1.2"))

    async def test_servfail_is_temporary(self) -> None:
        """A DNS failure (SERVFAIL/timeout) never bounces: the recipient stays pending."""
        res = FakeResolver(mx={"dst.test": DNSTemporaryError})
        rs = await self.agent(res).deliver(
            "m18", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "pending")
        self.assertTrue(rs[0].detail.startswith("4.4.3"))

    async def test_mx_host_address_servfail_is_temporary(self) -> None:
        """When the only MX host's address cannot be looked up now, the delivery is deferred."""
        res = FakeResolver(
            mx={"dst.test": [(10, "mx.dst.test")]},
            a={"mx.dst.test": DNSTemporaryError},
            aaaa={"mx.dst.test": DNSTemporaryError},
        )
        rs = await self.agent(res).deliver(
            "m19", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "pending")

    async def test_implicit_mx_uses_the_domain_address(self) -> None:
        """A domain without MX records gets mail at its own A record (RFC 5321 §5.1)."""
        f = self.sink()
        res = FakeResolver(mx={"dst.test": []}, a={"dst.test": ["127.0.0.1"]})
        rs = await self.agent(res).deliver(
            "m20", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(len(f.log.messages), 1)

    async def test_no_mx_and_no_address_is_permanent(self) -> None:
        """A domain with neither MX nor address records cannot receive mail: 5.4.4."""
        res = FakeResolver(mx={"dst.test": []}, a={"dst.test": []})
        rs = await self.agent(res).deliver(
            "m21", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "failed")
        self.assertTrue(rs[0].detail.startswith("5.4.4"))

    async def test_ipv6_only_when_no_ipv4(self) -> None:
        """A host with IPv4 addresses is reached over IPv4 without an AAAA lookup; a host with
        only IPv6 addresses is reached over IPv6."""
        self.sink("127.0.0.1")
        self.sink("2001:db8::25")
        res = FakeResolver(
            mx={"dst.test": [(10, "v4"), (20, "v6")], "other.test": [(10, "v6")]},
            a={"v4": ["127.0.0.1"], "v6": []},
            aaaa={"v6": ["2001:db8::25"]},
        )
        rs = await self.agent(res).deliver(
            "m38", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "delivered")
        self.assertNotIn(("AAAA", "v4"), res.queries)
        rs = await self.agent(res).deliver(
            "m39", Envelope("a@src.test"), MESSAGE, rcpts("x@other.test", domain="other.test")
        )
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(self.net.connects, ["127.0.0.1", "2001:db8::25"])

    async def test_null_mx_is_permanent(self) -> None:
        """A null MX (RFC 7505) fails the recipient at once with 5.1.10."""
        res = FakeResolver(mx={"dst.test": [(0, ".")]})
        rs = await self.agent(res).deliver(
            "m22", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "failed")
        self.assertTrue(rs[0].detail.startswith("5.1.10"))

    async def test_address_literal_queue_connects_directly(self) -> None:
        """A queue named [127.0.0.1] connects to that address without DNS."""
        f = self.sink()
        res = FakeResolver()
        r = Recipient("x@[127.0.0.1]", route="SMTP([127.0.0.1])")
        rs = await self.agent(res).deliver("m23", Envelope("a@src.test"), MESSAGE, [r])
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(res.queries, [])
        self.assertEqual(len(f.log.messages), 1)


class TLSAndRelay(_Base):
    async def test_starttls_used_when_offered(self) -> None:
        """When the MX offers STARTTLS the message travels encrypted (TLS 1.2 or newer) even
        with a self-signed certificate (opportunistic, RFC 3207), and the attempt records it."""
        f = self.sink(extensions=("STARTTLS", "PIPELINING"), tls=server_tls("mx.test"))
        rs = await self.agent(self.resolver()).deliver(
            "m24", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(f.log.tls_messages, 1)
        self.assertIn("STARTTLS", f.log.commands)
        self.assertEqual(sum(1 for c in f.log.commands if c.startswith("EHLO")), 2)
        self.assertIn(self.attempts[-1].tls, ("TLSv1.2", "TLSv1.3"))

    async def test_large_message_over_tls(self) -> None:
        """A 3 MB message with dot lines arrives intact over STARTTLS (written in blocks as the
        connection drains)."""
        f = self.sink(extensions=("STARTTLS",), tls=server_tls("mx.test"))
        body = b"Subject: big\r\n\r\n" + b"".join(
            b".%07d ............................\r\n" % i for i in range(80000)
        )
        rs = await self.agent(self.resolver()).deliver(
            "m35", Envelope("a@src.test"), body, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "delivered", rs[0].detail)
        self.assertEqual(f.log.tls_messages, 1)
        wire = f.log.messages[0]
        self.assertEqual(wire.replace(b"\r\n..", b"\r\n."), body)

    async def test_broken_tls_falls_back_to_plaintext(self) -> None:
        """An MX whose TLS is broken still gets the mail: the client retries that address once
        without STARTTLS (opportunistic TLS must not make a domain unreachable)."""
        f = self.sink(extensions=("STARTTLS",), tls_garbage=True)
        rs = await self.agent(self.resolver()).deliver(
            "m29", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(f.log.connections, 2)
        self.assertEqual(f.log.commands.count("STARTTLS"), 1)
        self.assertEqual(len(f.log.messages), 1)

    async def test_starttls_not_used_when_disabled(self) -> None:
        """With opportunistic TLS switched off the client never sends STARTTLS."""
        f = self.sink(extensions=("STARTTLS",), tls=server_tls("mx.test"))
        rs = await self.agent(self.resolver(), **{"smtp.opportunistic_tls": False}).deliver(
            "m25", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test")
        )
        self.assertEqual(rs[0].state, "delivered")
        self.assertNotIn("STARTTLS", f.log.commands)

    async def test_relayhost_with_auth_refuses_without_tls(self) -> None:
        """A smarthost with a login that does not offer STARTTLS never receives the password;
        the delivery is deferred."""
        f = self.sink("127.0.0.5", extensions=("AUTH PLAIN",))
        rs = await self.agent(
            FakeResolver(),
            **{
                "smtp.relayhost": "[127.0.0.5]:2525",
                "smtp.relayhost_auth": {"user": "u", "password": "secret"},
            },
        ).deliver("m26", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        self.assertEqual(rs[0].state, "pending")
        self.assertFalse(any(c.startswith("AUTH") for c in f.log.commands))

    async def test_relayhost_verified_tls_then_auth(self) -> None:
        """A smarthost whose certificate we trust gets AUTH PLAIN inside TLS and the message;
        MX lookups are not made."""
        from twisted.internet import ssl

        cert, _key = self_signed("relay.test")
        f = self.sink(
            "127.0.0.6", extensions=("STARTTLS", "AUTH PLAIN LOGIN"), tls=server_tls("relay.test")
        )
        res = FakeResolver(a={"relay.test": ["127.0.0.6"]})
        agent = self.agent(
            res,
            **{
                "smtp.relayhost": "relay.test:587",
                "smtp.relayhost_auth": {"user": "u", "password": "pw"},
            },
        )
        agent.tls_verified_options = lambda host: ssl.optionsForClientTLS(
            host, trustRoot=ssl.Certificate.loadPEM(cert)
        )
        rs = await agent.deliver("m27", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(f.log.tls_messages, 1)
        auth = [c for c in f.log.commands if c.startswith("AUTH")]
        self.assertEqual(auth, ["AUTH PLAIN AHUAcHc="])
        self.assertNotIn(("MX", "dst.test"), res.queries)

    async def test_relayhost_untrusted_certificate_is_refused(self) -> None:
        """A smarthost whose certificate does not verify never gets the login or the message."""
        f = self.sink(
            "127.0.0.6", extensions=("STARTTLS", "AUTH PLAIN"), tls=server_tls("relay.test")
        )
        res = FakeResolver(a={"relay.test": ["127.0.0.6"]})
        other, _ = self_signed("other.test")
        from twisted.internet import ssl

        agent = self.agent(
            res,
            **{
                "smtp.relayhost": "relay.test:587",
                "smtp.relayhost_auth": {"user": "u", "password": "pw"},
            },
        )
        agent.tls_verified_options = lambda host: ssl.optionsForClientTLS(
            host, trustRoot=ssl.Certificate.loadPEM(other)
        )
        rs = await agent.deliver("m28", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        self.assertEqual(rs[0].state, "pending")
        self.assertFalse(any(c.startswith("AUTH") for c in f.log.commands))
        self.assertEqual(f.log.messages, [])


class ConnectionReuse(_Base):
    async def test_second_message_reuses_the_connection(self) -> None:
        """Two messages to the same domain in quick succession share one connection."""
        f = self.sink()
        agent = self.agent(self.resolver(), **{"smtp.connection_reuse_time": 30})
        rs1 = await agent.deliver("r1", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        rs2 = await agent.deliver(
            "r2", Envelope("b@src.test"), MESSAGE + b"2\r\n", rcpts("y@dst.test")
        )
        self.assertEqual([rs1[0].state, rs2[0].state], ["delivered", "delivered"])
        self.assertEqual(f.log.connections, 1)
        self.assertEqual(len(f.log.messages), 2)
        # The second message's result and history name the same host and address.
        self.assertIn("mx.dst.test[127.0.0.1]", rs2[0].detail)
        self.assertEqual(
            [(a.host, a.ip) for a in self.attempts], [("mx.dst.test", "127.0.0.1")] * 2
        )
        agent.close_idle()

    async def test_delivery_line_says_which_use_of_the_connection(self) -> None:
        """The delivery line says ``conn_use=N``, the Nth message on that connection (as
        Postfix's), so an administrator sees whether reuse works: 1, then 2 on the reused one."""
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.sink()
        agent = self.agent(self.resolver(), **{"smtp.connection_reuse_time": 30})
        await agent.deliver("u1", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        await agent.deliver("u2", Envelope("a@src.test"), MESSAGE, rcpts("y@dst.test"))
        lines = [formatEvent(e) for e in events if "status=" in str(e.get("log_format", ""))]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("conn_use=1 status=delivered", lines[0])
        self.assertIn("conn_use=2 status=delivered", lines[1])
        agent.close_idle()

    async def test_idle_connection_expires(self) -> None:
        """An idle kept connection is closed with QUIT after the reuse time."""
        f = self.sink()
        agent = self.agent(self.resolver(), **{"smtp.connection_reuse_time": 5})
        await agent.deliver("r3", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        self.assertNotIn("QUIT", f.log.commands)
        self.clock.advance(5)
        await f.log.protocols[0].lost
        self.assertIn("QUIT", f.log.commands)

    async def test_idle_connection_outlives_the_reply_deadlines(self) -> None:
        """A kept connection is not cut by the reply deadlines of the transaction it carried
        (the longest, 600 s for the final dot, passes while it idles): the next message goes
        on it, and a reply deadline still applies to that message."""
        f = self.sink()
        agent = self.agent(self.resolver(), **{"smtp.connection_reuse_time": 1000})
        await agent.deliver("r6", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        self.clock.advance(700)
        rs = await agent.deliver("r7", Envelope("a@src.test"), MESSAGE, rcpts("y@dst.test"))
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(f.log.connections, 1)
        self.assertEqual(len(f.log.messages), 2)
        agent.close_idle()

    async def test_dead_idle_connection_falls_back_to_new_one(self) -> None:
        """If the kept connection was closed by the server, the next message opens a new one."""
        f = self.sink()
        agent = self.agent(self.resolver(), **{"smtp.connection_reuse_time": 30})
        await agent.deliver("r4", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        f.log.protocols[0].transport.loseConnection()
        await f.log.protocols[0].lost
        await self.net.clients[0][1]
        rs = await agent.deliver("r5", Envelope("a@src.test"), MESSAGE, rcpts("y@dst.test"))
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(f.log.connections, 2)
        agent.close_idle()


class RemotePort(_Base):
    async def test_default_connect_uses_configured_remote_port(self) -> None:
        """Without a custom connector the agent connects to the MX address on the port from
        'smtp.remote_port', so MX records can point at loopback sinks."""
        f = SinkFactory(Behaviour())
        port = self.reactor.listenTCP(0, f, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        holder = SettingsHolder(
            Settings({"smtp.remote_port": port.getHost().port, "smtp.connection_reuse_time": 0})
        )
        agent = SMTPDelivery(self.resolver(), holder, "out.test", self.reactor)
        rs = await agent.deliver("p1", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        self.assertEqual(rs[0].state, "delivered")
        self.assertEqual(len(f.log.messages), 1)
        for p in f.log.protocols:
            await p.lost

    async def test_no_factory_lines_per_connection(self) -> None:
        """An outbound connection writes no "Starting factory" / "Stopping factory" lines: two
        lines of noise per connection for the administrator (and 7 % of the log writes of an
        outbound run, #17 lever 4), while the delivery line says what happened."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        f = SinkFactory(Behaviour())
        f.noisy = False  # the test's own listener: only the agent's lines count
        port = self.reactor.listenTCP(0, f, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        holder = SettingsHolder(
            Settings({"smtp.remote_port": port.getHost().port, "smtp.connection_reuse_time": 0})
        )
        agent = SMTPDelivery(self.resolver(), holder, "out.test", self.reactor)
        rs = await agent.deliver("p2", Envelope("a@src.test"), MESSAGE, rcpts("x@dst.test"))
        self.assertEqual(rs[0].state, "delivered")
        for p in f.log.protocols:
            await p.lost
        texts = [str(e.get("log_format", "")) for e in events]
        self.assertFalse([t for t in texts if "factory" in t.lower()], texts)
        self.assertTrue(any("status=" in t for t in texts), texts)
