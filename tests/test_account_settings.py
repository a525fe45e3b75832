"""cgtwist.account_settings: the typed schema, inheritance server -> domain -> account, and
the password policy's reasons."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist import account_settings, settings
from cgtwist.account_settings import PasswordPolicy, effective, password_refusal


class EffectiveTests(unittest.TestCase):
    def test_each_value_comes_from_the_nearest_level_that_sets_it(self) -> None:
        server = settings.Settings(
            {"account_defaults.mail.max_message_size": 5000, "rules.allowed": "Filter Only"}
        )
        eff = effective(
            server,
            {"mail.max_message_size": 1000, "password.min_length": 8},
            {"password.min_length": 12, "admin": True},
            server.overrides,
        )
        self.assertEqual(eff.values.mail.max_message_size, 1000)
        self.assertEqual(eff.values.password.min_length, 12)
        self.assertEqual(eff.values.password.min_classes, 0)
        self.assertEqual(eff.rules_allowed, "Filter Only")
        self.assertTrue(eff.admin)
        self.assertEqual(
            eff.sources,
            {
                "admin": (True, "account"),
                "domain_admin": (False, "default"),
                "smtp.send_as": ("", "default"),
                "rules.allowed": ("Filter Only", "server"),
                "mail.max_message_size": (1000, "domain"),
                "password.min_length": (12, "account"),
                "password.min_classes": (0, "default"),
                "quota.max_folders": (0, "default"),
                "quota.storage": (0, "default"),
                "quota.messages": (0, "default"),
                "quota.grace": (86400, "default"),
            },
        )

    def test_server_account_defaults_apply_when_nobody_below_sets_one(self) -> None:
        server = settings.Settings({"account_defaults.mail.max_message_size": 5000})
        eff = effective(server, {}, {}, server.overrides)
        self.assertEqual(eff.sources["mail.max_message_size"], (5000, "server"))
        self.assertEqual(eff.sources["password.min_length"], (0, "default"))

    def test_a_bad_stored_value_is_passed_over_and_named(self) -> None:
        problems: dict[str, str] = {}
        eff = effective(
            settings.Settings(), {"mail.max_message_size": "big"}, {}, problems=problems
        )
        self.assertEqual(eff.sources["mail.max_message_size"], (0, "default"))
        self.assertIn("domain:mail.max_message_size", problems)

    def test_scoped_validation_refuses_unknown_keys_and_bad_values(self) -> None:
        self.assertEqual(settings.validate_scoped("domain", "mail.max_message_size", 1000), 1000)
        self.assertRaises(
            ValueError, settings.validate_scoped, "domain", "mail.max_message_size", -1
        )
        e = self.assertRaises(
            ValueError, settings.validate_scoped, "account", "password.min_classes", 5
        )
        self.assertIn("4 character classes", str(e))
        e = self.assertRaises(ValueError, settings.validate_scoped, "domain", "admin", True)
        self.assertIn("unknown domain setting 'admin'", str(e))
        e = self.assertRaises(
            ValueError,
            settings.validate_scoped,
            "domain",
            "account_defaults.mail.max_message_size",
            1,
        )
        self.assertIn("here: mail.max_message_size", str(e))
        # the server's Account Defaults are ordinary server settings
        self.assertEqual(settings.validate("account_defaults.password.min_length", 10), 10)

    def test_storage_takes_size_suffixes(self) -> None:
        """quota.storage takes octets or K/M/G/T (powers of 1024), at every level, and keeps
        the number; anything else is refused with the reason."""
        self.assertEqual(settings.validate_scoped("account", "quota.storage", "500M"), 500 << 20)
        self.assertEqual(settings.validate_scoped("domain", "quota.storage", "2g"), 2 << 30)
        self.assertEqual(settings.validate_scoped("domain", "quota.storage", "512KB"), 512 << 10)
        self.assertEqual(settings.validate_scoped("domain", "quota.storage", 1000), 1000)
        server = settings.Settings({"account_defaults.quota.storage": "1G"})
        self.assertEqual(server.account_defaults.quota.storage, 1 << 30)
        for bad in ("lots", "1.5G", "-1K", "K", ""):
            e = self.assertRaises(
                ValueError, settings.validate_scoped, "account", "quota.storage", bad
            )
            self.assertIn("a size in octets", str(e))
        self.assertRaises(ValueError, settings.validate_scoped, "account", "quota.storage", -5)
        eff = effective(settings.Settings(), {"quota.storage": "10M"}, {"quota.grace": 60})
        self.assertEqual(eff.values.quota.storage, 10 << 20)
        self.assertEqual(eff.values.quota.grace, 60)

    def test_exceeded(self) -> None:
        """What fits up to the limit exactly; a change that adds nothing always fits."""
        q = account_settings.QuotaLimits(storage=1000, messages=3)
        self.assertEqual(q.exceeded(900, 1, 100, 1), "")
        self.assertEqual(q.exceeded(900, 1, 101, 1), "STORAGE")
        self.assertEqual(q.exceeded(10, 3, 1, 1), "MESSAGE")
        self.assertEqual(q.exceeded(5000, 9, 0, 0), "")
        self.assertEqual(account_settings.QuotaLimits().exceeded(10**15, 10**9, 1, 1), "")

    def test_every_typed_key_has_a_server_default_setting(self) -> None:
        for name in account_settings.TYPED:
            self.assertIn(account_settings.SERVER_PREFIX + name, settings.SPECS)


class PasswordPolicyTests(unittest.TestCase):
    def test_reasons(self) -> None:
        policy = PasswordPolicy(min_length=8, min_classes=3)
        self.assertIn("too short: at least 8", password_refusal(policy, "aB1"))
        self.assertIn("too simple: mix at least 3", password_refusal(policy, "abcdefgh12"))
        self.assertEqual(password_refusal(policy, "abcdEFGH12"), "")
        self.assertEqual(password_refusal(PasswordPolicy(), "x"), "")
