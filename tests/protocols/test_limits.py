"""Per-IP connection counting shared by POP3 and IMAP."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.protocols.limits import PerIPConnections, UserIPSessions
from cgtwist.settings import Settings, SettingsHolder


class PerIPTests(unittest.TestCase):
    def test_limit_is_read_at_each_connection(self) -> None:
        """A lowered limit applies to the next connection; closing frees a slot; 0 = no limit."""
        holder = SettingsHolder(Settings({"access.max_connections_per_ip": 2}))
        c = PerIPConnections(holder)
        self.assertTrue(c.opened("192.0.2.1"))
        self.assertTrue(c.opened("192.0.2.1"))
        self.assertFalse(c.opened("192.0.2.1"))
        self.assertTrue(c.opened("192.0.2.2"))
        c.closed("192.0.2.1")
        c.closed("192.0.2.1")
        self.assertTrue(c.opened("192.0.2.1"))
        holder.replace(Settings({"access.max_connections_per_ip": 0}))
        self.assertTrue(all(c.opened("192.0.2.3") for _ in range(50)))
        for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
            c.closed(ip)
        for _ in range(50):
            c.closed("192.0.2.3")
        self.assertEqual(c.counts, {})

    def test_exempt_ips_are_counted_but_never_refused(self) -> None:
        """Client IPs pass the cap (a NAT office is one address); others are refused."""
        holder = SettingsHolder(Settings({"access.max_connections_per_ip": 1}))
        c = PerIPConnections(holder, exempt=lambda ip: ip == "10.0.0.1")
        self.assertTrue(all(c.opened("10.0.0.1") for _ in range(5)))
        self.assertTrue(c.opened("192.0.2.1"))
        self.assertFalse(c.opened("192.0.2.1"))
        self.assertEqual(c.counts["10.0.0.1"], 5)


class UserIPSessionsTests(unittest.TestCase):
    def test_sessions_per_account_and_ip(self) -> None:
        """auth.max_userip_connections counts per (account, IP): other accounts and other IPs
        have their own; a logout gives its place back once, however often it is called."""
        holder = SettingsHolder(Settings({"auth.max_userip_connections": 2}))
        sessions = UserIPSessions(holder)
        logouts: list[str] = []
        first = sessions.admit("Alice@example.test", "192.0.2.1", lambda: logouts.append("a"))
        second = sessions.admit("alice@example.test", "192.0.2.1", lambda: logouts.append("b"))
        assert first is not None and second is not None
        self.assertIsNone(sessions.admit("alice@example.test", "192.0.2.1", lambda: None))
        self.assertIsNotNone(sessions.admit("bob@example.test", "192.0.2.1", lambda: None))
        self.assertIsNotNone(sessions.admit("alice@example.test", "192.0.2.2", lambda: None))
        first()
        first()
        self.assertEqual(logouts, ["a", "a"])
        self.assertIsNotNone(sessions.admit("alice@example.test", "192.0.2.1", lambda: None))
        self.assertIsNone(sessions.admit("alice@example.test", "192.0.2.1", lambda: None))
        holder.replace(Settings({"auth.max_userip_connections": 0}))
        self.assertIsNotNone(sessions.admit("alice@example.test", "192.0.2.1", lambda: None))
