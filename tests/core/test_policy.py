"""BasicPolicy: recipients are routed, unknown users refused, relaying only when allowed."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface import implementer

from cgtwist.core.policy import BasicPolicy
from cgtwist.errors import MailError
from cgtwist.interfaces import IRouter
from cgtwist.settings import SettingsHolder
from cgtwist.types import Envelope, Route, SessionInfo


@implementer(IRouter)
class FakeRouter:
    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.asked: list[tuple[str, str]] = []

    def route(self, address: str, kind: str = "mail") -> Any:
        self.asked.append((address, kind))
        r = self.routes[address]
        if isinstance(r, Exception):
            return defer.fail(r)
        return defer.succeed(r)


ROUTES = {
    "alice@ours.example": Route("LOCAL", "alice@ours.example", "alice@ours.example"),
    "list@ours.example": Route("LIST", "list@ours.example", "list@ours.example"),
    "prog@pipe": Route("PIPE", "prog", "prog"),
    "null@ours.example": Route("NULL", "", ""),
    "ghost@ours.example": Route("ERROR", "", "ghost@ours.example", error="5.1.1 unknown user"),
    "loop@ours.example": Route(
        "ERROR", "", "loop@ours.example", error="5.4.6 routing loop detected"
    ),
    "bob@ext.example": Route("SMTP", "ext.example", "bob@ext.example"),
    "bob@partner.example": Route("SMTP", "partner.example", "bob@partner.example", relay=True),
    "tmp@ours.example": MailError(451, "4.3.5", "router table broken"),
    "crash@ours.example": RuntimeError("bug"),
    "perm@ours.example": MailError(550, "5.1.3", "bad address syntax"),
}


def session(**kw: Any) -> SessionInfo:
    return SessionInfo(
        session_id="s1",
        peer_ip="203.0.113.9",
        peer_port=1,
        local_ip="198.51.100.1",
        local_port=25,
        **kw,
    )


class BasicPolicyTests(unittest.TestCase):
    def setUp(self) -> None:
        self.router = FakeRouter(ROUTES)
        self.policy = BasicPolicy(self.router, SettingsHolder())

    def rcpt(self, address: str, **kw: Any) -> Any:
        return self.successResultOf(self.policy.rcpt_to(session(**kw), "s@x.example", address, {}))

    def refused(self, address: str, **kw: Any) -> MailError:
        f = self.failureResultOf(
            self.policy.rcpt_to(session(**kw), "s@x.example", address, {}), MailError
        )
        return f.value  # type: ignore[return-value]

    def test_local_routes_accepted(self) -> None:
        """Mail for local accounts, lists, programs and the null sink is accepted from anyone."""
        for a in ["alice@ours.example", "list@ours.example", "prog@pipe", "null@ours.example"]:
            self.assertEqual(self.rcpt(a), a)
        self.assertEqual(self.router.asked[0], ("alice@ours.example", "mail"))

    def test_unknown_user(self) -> None:
        """An unknown local user gets 550 5.1.1 with the Router's text."""
        e = self.refused("ghost@ours.example")
        self.assertEqual(e.reply(), "550 5.1.1 unknown user")
        self.assertEqual(self.refused("loop@ours.example").enhanced, "5.4.6")

    def test_relay_denied_for_strangers(self) -> None:
        """An unauthenticated stranger cannot relay to another domain: 554 5.7.1."""
        self.assertEqual(self.refused("bob@ext.example").reply(), "554 5.7.1 Relaying denied")

    def test_relay_allowed(self) -> None:
        """Authenticated users, Client IPs and Relay: records may send to other domains."""
        self.assertEqual(
            self.rcpt("bob@ext.example", account="alice@ours.example"), "bob@ext.example"
        )
        self.assertEqual(self.rcpt("bob@ext.example", is_client_ip=True), "bob@ext.example")
        self.assertEqual(self.rcpt("bob@partner.example"), "bob@partner.example")

    def test_router_failures(self) -> None:
        """Router trouble is a temporary 451 4.3.0 (the sender retries), never a bounce."""
        self.assertEqual(self.refused("tmp@ours.example").code, 451)
        e = self.refused("crash@ours.example")
        self.assertEqual((e.code, e.enhanced), (451, "4.3.0"))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.refused("perm@ours.example").code, 550)

    def test_other_hooks_accept(self) -> None:
        """Connect, HELO, MAIL FROM and trace headers accept in the baseline policy."""
        s = session()
        self.assertIsNone(self.successResultOf(self.policy.connect(s)))
        self.assertIsNone(self.successResultOf(self.policy.helo(s, "x")))
        self.assertIsNone(self.successResultOf(self.policy.mail_from(s, "", {})))
        self.assertEqual(
            self.successResultOf(self.policy.trace_headers(s, Envelope(sender=""))), []
        )


class InterfaceTests(unittest.TestCase):
    def test_provides_ipolicy(self) -> None:
        """BasicPolicy fulfils the IPolicy contract the SMTP receiver and wrappers rely on."""
        from zope.interface.verify import verifyObject

        from cgtwist.interfaces import IPolicy

        self.assertTrue(verifyObject(IPolicy, BasicPolicy(FakeRouter({}), SettingsHolder())))


class FakeAccounts:
    """Just enough IAccountStore for the relay check: services per account."""

    def __init__(self, services: dict[str, Any]) -> None:
        self.services = services

    def get_account(self, name: str, domain: str) -> Any:
        from cgtwist.types import Account

        s = self.services.get(f"{name}@{domain}")
        if isinstance(s, Exception):
            return defer.fail(s)
        return defer.succeed(None if s is None else Account(name, domain, services=frozenset(s)))


class AccountRelayTests(unittest.TestCase):
    """The Relay and Roaming services (COMMUNIGATE.md a.6) decide authenticated relaying."""

    def setUp(self) -> None:
        self.accounts = FakeAccounts(
            {
                "full@ours.example": {"mail", "relay", "roaming"},
                "norelay@ours.example": {"mail", "roaming"},
                "home@ours.example": {"mail", "relay"},
                "broken@ours.example": RuntimeError("db down"),
            }
        )
        self.policy = BasicPolicy(FakeRouter(ROUTES), SettingsHolder(), accounts=self.accounts)  # type: ignore[arg-type]

    def result(self, account: str, client: bool = False, rcpt: str = "bob@ext.example") -> Any:
        d = self.policy.rcpt_to(
            session(account=account, is_client_ip=client), "s@x.example", rcpt, {}
        )
        out: list[Any] = []
        d.addBoth(out.append)
        return out[0]

    def test_relay_service_required(self) -> None:
        """A user whose Relay service is off cannot send to other domains, but still locally."""
        self.assertEqual(self.result("full@ours.example"), "bob@ext.example")
        self.assertEqual(
            self.result("norelay@ours.example").value.reply(), "554 5.7.1 Relaying denied"
        )
        self.assertEqual(
            self.result("norelay@ours.example", rcpt="alice@ours.example"), "alice@ours.example"
        )

    def test_roaming_off_restricts_to_client_ips(self) -> None:
        """Roaming off: the account relays from a Client IP only."""
        self.assertEqual(self.result("home@ours.example").value.code, 554)
        self.assertEqual(self.result("home@ours.example", client=True), "bob@ext.example")

    def test_store_failure_is_temporary(self) -> None:
        """If the account store fails during the check the client is told to retry (451)."""
        self.assertEqual(self.result("broken@ours.example").value.code, 451)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.result("gone@ours.example").value.code, 554)
