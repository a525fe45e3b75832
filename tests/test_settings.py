"""Dynamic settings: defaults, validation of administrator input, listener parsing."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist import settings


class SettingsTests(unittest.TestCase):
    def test_overrides_merge_over_defaults(self) -> None:
        s = settings.Settings({"smtp.max_recipients": 5})
        self.assertEqual(s["smtp.max_recipients"], 5)
        self.assertEqual(s["smtp.max_errors"], settings.DEFAULTS["smtp.max_errors"][0])

    def test_unprivileged_defaults_use_high_ports_on_loopback(self) -> None:
        """A non-root user gets 2525/2587/2465/... on 127.0.0.1 instead of failing to bind 25."""
        specs = settings.Settings().listeners(privileged=False)
        self.assertEqual(sorted(s.port for s in specs), [2110, 2143, 2465, 2525, 2587, 2993, 2995])
        self.assertTrue(all(s.address == "127.0.0.1" for s in specs))
        sub = [s for s in specs if s.submission]
        self.assertEqual({s.port for s in sub}, {2587, 2465})

    def test_privileged_defaults_are_the_standard_ports(self) -> None:
        specs = settings.Settings().listeners(privileged=True)
        self.assertEqual(sorted(s.port for s in specs), [25, 110, 143, 465, 587, 993, 995])
        implicit = {s.port for s in specs if s.tls == "implicit"}
        self.assertEqual(implicit, {465, 993, 995})

    def test_validation_refuses_bad_values(self) -> None:
        self.assertRaises(ValueError, settings.validate, "no.such.key", 1)
        self.assertRaises(ValueError, settings.validate, "smtp.max_recipients", -1)
        self.assertRaises(ValueError, settings.validate, "smtp.max_recipients", "ten")
        self.assertRaises(ValueError, settings.validate, "auth.allow_plaintext", 1)
        self.assertRaises(ValueError, settings.validate, "listeners", [{"protocol": "ftp", "port": 21}])
        self.assertRaises(ValueError, settings.validate, "listeners",
                          [{"protocol": "smtp", "port": 25}, {"protocol": "imap", "port": 25}])
        self.assertEqual(settings.validate("smtp.max_recipients", 7), 7)
        # A typo must not fork a thousand processes.
        self.assertRaises(ValueError, settings.validate, "smtp.workers", 1000)
        self.assertEqual(settings.validate("smtp.workers", 2), 2)
        # A stop that outlasts the init system's patience ends in SIGKILL.
        self.assertRaises(ValueError, settings.validate, "server.shutdown_grace", 3600)
        self.assertRaises(ValueError, settings.validate, "server.shutdown_grace", 1.5)
        self.assertEqual(settings.validate("server.shutdown_grace", 0), 0)

    def test_holder_tells_observers(self) -> None:
        holder = settings.SettingsHolder()
        seen = []
        holder.subscribe(seen.append)
        new = settings.Settings({"smtp.max_errors": 3})
        holder.replace(new)
        self.assertEqual(seen, [new])
        self.assertEqual(holder.current["smtp.max_errors"], 3)

    def test_cli_values_are_json_or_words(self) -> None:
        self.assertEqual(settings.parse_cli_value("10"), 10)
        self.assertEqual(settings.parse_cli_value("true"), True)
        self.assertEqual(settings.parse_cli_value("hello"), "hello")
