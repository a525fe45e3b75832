"""Per-IP connection counting shared by POP3 and IMAP."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.protocols.limits import PerIPConnections
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
