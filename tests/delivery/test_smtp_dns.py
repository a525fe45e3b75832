"""Outbound SMTP with the real resolver against a loopback DNS server and a loopback sink:
MX records pointing at 127.0.0.1 and the port from 'smtp.remote_port'."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.delivery.smtp import SMTPDelivery
from cgtwist.dns import Resolver
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, Recipient
from tests.delivery.test_smtp_support import Behaviour, SinkFactory
from tests.dnsserver import DNSTestServer

MESSAGE = b"Subject: via dns\r\n\r\nhello\r\n"


class RealResolver(unittest.TestCase):
    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.dns = DNSTestServer(
            {
                "dst.test": ["MX 10 mx.dst.test"],
                "mx.dst.test": ["A 127.0.0.1"],
                "bare.test": ["A 127.0.0.1"],
                "broken.test": ["MX 10 mx.dst.test"],
            }
        )
        self.dns.set_behaviour("broken.test", "servfail")
        address = self.dns.listen(reactor)
        self.addCleanup(self.dns.stop)
        self.resolver = Resolver([address], timeout=2.0, reactor=reactor)
        self.addCleanup(self.resolver.stop)
        self.sink = SinkFactory(Behaviour())
        port = reactor.listenTCP(0, self.sink, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        holder = SettingsHolder(
            Settings({"smtp.remote_port": port.getHost().port, "smtp.connection_reuse_time": 0})
        )
        self.agent = SMTPDelivery(self.resolver, holder, "out.test", reactor)

    async def wait_closed(self) -> None:
        for p in self.sink.log.protocols:
            await p.lost

    async def deliver(self, domain: str) -> Recipient:
        r = Recipient(f"x@{domain}", route=f"SMTP({domain})")
        rs = await self.agent.deliver("d1", Envelope("a@src.test"), MESSAGE, [r])
        await self.wait_closed()
        return rs[0]

    async def test_mx_lookup_and_delivery(self) -> None:
        """The MX record leads to the loopback sink and the message is delivered there."""
        r = await self.deliver("dst.test")
        self.assertEqual(r.state, "delivered", r.detail)
        self.assertEqual(self.sink.log.messages, [MESSAGE])
        self.assertEqual(self.dns.count("dst.test", "MX"), 1)

    async def test_implicit_mx(self) -> None:
        """A domain with only an A record receives its mail at that address."""
        r = await self.deliver("bare.test")
        self.assertEqual(r.state, "delivered", r.detail)

    async def test_nxdomain_fails(self) -> None:
        """A domain unknown to DNS fails permanently with 5.1.2 and nothing is sent."""
        r = await self.deliver("nowhere.test")
        self.assertEqual(r.state, "failed")
        self.assertTrue(r.detail.startswith("5.1.2"), r.detail)
        self.assertEqual(self.sink.log.connections, 0)

    async def test_servfail_defers(self) -> None:
        """SERVFAIL for the MX lookup leaves the recipient pending."""
        r = await self.deliver("broken.test")
        self.assertEqual(r.state, "pending")
        self.assertTrue(r.detail.startswith("4.4.3"), r.detail)
