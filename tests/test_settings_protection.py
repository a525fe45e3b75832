"""Protection, AUTH-penalty and Router settings are checked before they are stored."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist import settings
from cgtwist.settings import validate


class ValidateTests(unittest.TestCase):
    def refused(self, key: str, value: object) -> str:
        with self.assertRaises(ValueError) as cm:
            settings.validate(key, value)
        return str(cm.exception)

    def test_address_list_names_the_line(self) -> None:
        """A typo in the Client IPs is refused with its line, so the admin can find it."""
        text = "10.0.0.0/8   ; office\n192.0.2.1-192.0.2.9\n10.0.0.300\n"
        self.assertIn("line 3", self.refused("clients.ips", text))
        self.assertIn("line 2", self.refused("protection.blacklist.ips", ["127.0.0.1", "nonsense"]))
        self.assertEqual(
            settings.validate("clients.ips", "10.0.0.0/8 ; office\n::1"), "10.0.0.0/8 ; office\n::1"
        )
        self.assertIn("must be text", self.refused("auth.trusted_ips", 5))

    def test_sender_blacklist(self) -> None:
        """Sender blacklist entries must be addresses or domains; a bad line is named."""
        self.assertEqual(
            settings.validate("protection.blacklist.senders", "spam.test\n*.bad.test, x@y.test"),
            "spam.test\n*.bad.test, x@y.test",
        )
        self.assertIn(
            "line 2", self.refused("protection.blacklist.senders", "ok.test\nwith space.test")
        )

    def test_modes_actions_zones(self) -> None:
        """Modes, SPF actions, RBL zones and listener overrides only take known words."""
        self.assertIn("nonclients", self.refused("protection.spf.mode", "sometimes"))
        self.assertIn(
            "unknown SPF result", self.refused("protection.spf.actions", {"bogus": "tag"})
        )
        self.assertIn("action for fail", self.refused("protection.spf.actions", {"fail": "drop"}))
        self.assertIn("entry 2", self.refused("protection.rbl.zones", ["zen.test", "bad zone"]))
        self.assertIn("return codes", self.refused("protection.rbl.zones", ["zen.test=127.0.0.x"]))
        self.assertEqual(
            validate("protection.rbl.zones", ["zen.test=127.0.0.2-127.0.0.9"]),
            ["zen.test=127.0.0.2-127.0.0.9"],
        )
        self.assertIn(
            "unknown check", self.refused("protection.listeners", {"25": {"dkim": "all"}})
        )
        self.assertIn("554", self.refused("protection.rbl.code", 250))
        self.assertIn("reject, tag", self.refused("protection.rbl.action", "quarantine"))
        self.assertEqual(validate("protection.rbl.action", "tag"), "tag")

    def test_timeouts_and_delays(self) -> None:
        """Short fractional timeouts are allowed; AUTH delays must be sane numbers."""
        self.assertEqual(settings.validate("protection.reverse_connect.timeout", 0.5), 0.5)
        self.assertIn("positive", self.refused("protection.spf.timeout", 0))
        self.assertEqual(settings.validate("auth.fail_delays", [0.05, 0.1]), [0.05, 0.1])
        self.assertIn("delay", self.refused("auth.fail_delays", [1, "x"]))
        self.assertIn("non-empty", self.refused("auth.fail_delays", []))

    def test_account_budget(self) -> None:
        """The per-account budget's delays and growth are bounded numbers; counts are integers."""
        self.assertEqual(settings.validate("auth.account_delay", 0.5), 0.5)
        self.assertEqual(settings.validate("auth.account_delay_growth", 1), 1)
        self.assertIn("from 1 to 10", self.refused("auth.account_delay_growth", 0.5))
        self.assertIn("from 0 to 300", self.refused("auth.account_max_delay", 3600))
        self.assertIn("from 0 to 300", self.refused("auth.account_delay", True))
        self.assertIn("non-negative integer", self.refused("auth.account_max_failures", -1))
        self.assertIn("non-negative integer", self.refused("auth.account_lock_time", 1.5))
        self.assertIn("non-negative integer", self.refused("auth.max_userip_connections", "10"))

    def test_router_table_line_numbers(self) -> None:
        """A broken Router table is refused with the line of the bad record."""
        good = "; comment\n<postmaster@*> = postmaster\n"
        self.assertEqual(settings.validate("router.table", good), good)
        self.assertIn(
            "router.table: line 3",
            self.refused("router.table", "; c\n<a@b> = c\nthis is not a record\n"),
        )
        self.assertIn("table text", self.refused("router.table", 5))

    def test_spf_results_shared(self) -> None:
        """The SPF checker and the settings agree on the result names (RFC 7208 §2.6)."""
        from cgtwist.checks.spf import RESULTS
        from cgtwist.settings_protection import SPF_RESULTS

        self.assertEqual(RESULTS, SPF_RESULTS)
