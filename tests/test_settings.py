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
        self.assertRaises(
            ValueError, settings.validate, "listeners", [{"protocol": "ftp", "port": 21}]
        )
        self.assertRaises(
            ValueError,
            settings.validate,
            "listeners",
            [{"protocol": "smtp", "port": 25}, {"protocol": "imap", "port": 25}],
        )
        self.assertEqual(settings.validate("smtp.max_recipients", 7), 7)
        # A typo must not fork a thousand processes.
        self.assertRaises(ValueError, settings.validate, "smtp.workers", 1000)
        self.assertEqual(settings.validate("smtp.workers", 2), 2)
        self.assertRaises(ValueError, settings.validate, "smtp.delivery_workers", 1000)
        self.assertRaises(ValueError, settings.validate, "imap.workers", 65)
        self.assertRaises(ValueError, settings.validate, "imap.workers", -1)
        self.assertEqual(settings.validate("imap.workers", 2), 2)
        self.assertRaises(ValueError, settings.validate, "smtp.delivery_worker_stall", -1)
        self.assertEqual(settings.validate("smtp.delivery_worker_stall", 0), 0)
        # A stop that outlasts the init system's patience ends in SIGKILL.
        self.assertRaises(ValueError, settings.validate, "server.shutdown_grace", 3600)
        self.assertRaises(ValueError, settings.validate, "server.shutdown_grace", 1.5)
        self.assertEqual(settings.validate("server.shutdown_grace", 0), 0)

    def test_retry_schedule_entries_are_seconds(self) -> None:
        """A retry schedule entry that is not a number of seconds is refused when set: the
        queue would skip it without a word, so the schedule would not be the one typed."""
        e = self.assertRaises(ValueError, settings.validate, "queue.retry_schedule", [60, "1h"])
        self.assertEqual(
            str(e), "queue.retry_schedule: each entry must be a number of seconds, not '1h'"
        )
        self.assertRaises(ValueError, settings.validate, "queue.retry_schedule", [60, -5])
        self.assertEqual(settings.validate("queue.retry_schedule", [30, 90.5]), [30, 90.5])

    def test_text_settings_must_be_text(self) -> None:
        """A number where a host name, a path or the Router table is expected is refused."""
        for key in ("smtp.relayhost", "smtp.relayhost_ca_file", "pipe.app_dir"):
            e = self.assertRaises(ValueError, settings.validate, key, 5)
            self.assertEqual(str(e), f"{key} must be a string")

    def test_listener_entries_are_checked_key_by_key(self) -> None:
        """A listener entry with a key nothing reads, an https protocol (http with tls
        implicit is HTTPS), an http listener with STARTTLS, a non-IP address, a string for a
        flag or submission on IMAP is refused, naming it."""
        ok = {"protocol": "smtp", "address": "127.0.0.1", "port": 2525}
        self.assertEqual(settings.validate("listeners", [ok]), [ok])
        for bad, why in (
            (dict(ok, protocol="https"), "HTTPS is http with tls implicit"),
            (dict(ok, protocol="http", tls="starttls"), "HTTP has no STARTTLS"),
            (dict(ok, adress="::1"), "unknown listener key 'adress'"),
            (dict(ok, address="localhost"), "must be an IP address"),
            (dict(ok, submission="false"), "submission must be true or false"),
            (dict(ok, protocol="imap", submission=True), "smtp listeners only"),
            ("smtp:25", "a listener is an object"),
        ):
            e = self.assertRaises(ValueError, settings.validate, "listeners", [bad])
            self.assertIn(why, str(e))

    def test_account_and_domain_settings_are_exactly_the_known_ones(self) -> None:
        """Only the keys of cgtwist.account_settings.known are accepted, with their type."""
        self.assertIs(settings.validate_scoped("account", "admin", True), True)
        e = self.assertRaises(ValueError, settings.validate_scoped, "account", "nonsense.key", 1)
        self.assertEqual(
            str(e),
            "unknown account setting 'nonsense.key' (known: admin, domain_admin, "
            "mail.max_message_size, password.min_classes, password.min_length, "
            "quota.grace, quota.max_folders, quota.messages, quota.storage, rules.allowed, "
            "smtp.send_as)",
        )
        self.assertRaises(ValueError, settings.validate_scoped, "account", "admin", 1)
        # smtp.send_as (read by cgtwist.core.senders) is checked as the server setting is
        self.assertEqual(
            settings.validate_scoped("account", "smtp.send_as", "*@lists.example.com"),
            "*@lists.example.com",
        )
        self.assertRaises(
            ValueError, settings.validate_scoped, "account", "smtp.send_as", "not an address"
        )
        e = self.assertRaises(
            ValueError, settings.validate_scoped, "domain", "smtp.max_recipients", 5
        )
        self.assertIn("a server setting", str(e))

    def test_describe_changes_names_each_changed_key_and_hides_secrets(self) -> None:
        """What the server logs when it applies a reload: changed keys only, secrets hidden,
        long values cut."""
        old = settings.Settings({"smtp.max_recipients": 5, "router.table": "; " + "x" * 500})
        new = settings.Settings(
            {
                "smtp.max_recipients": 7,
                "router.table": "; " + "x" * 500,
                "smtp.relayhost_auth": {"user": "u", "password": "hunter2"},
            }
        )
        changes = settings.describe_changes(old, new)
        self.assertEqual(
            changes,
            [("smtp.max_recipients", "5", "7"), ("smtp.relayhost_auth", "null", "(hidden)")],
        )
        cut = settings.describe_changes(
            settings.Settings(), new.__class__({"router.table": "; " + "y" * 500})
        )
        self.assertEqual(len(cut[0][2]), 120)
        self.assertTrue(cut[0][2].endswith("..."))

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


class TypedSettingsTests(unittest.TestCase):
    """One frozen dataclass per section, checked once when built, read as attributes."""

    def test_sections_are_read_as_typed_attributes(self) -> None:
        """An override reaches the attribute the code reads; the rest keep their defaults."""
        s = settings.Settings({"smtp.max_recipients": 5, "protection.rbl.code": 450})
        self.assertEqual(s.smtp.max_recipients, 5)
        self.assertEqual(s.protection.rbl.code, 450)
        self.assertEqual(s.smtp.max_errors, 10)
        self.assertEqual(s.protection.mode("spf"), "nonclients")
        self.assertEqual(s.queue.concurrency("LOCAL"), 32)
        self.assertEqual(s.queue.concurrency("PIPE"), 10)  # queue.default_concurrency
        self.assertEqual(s.queue.destination_concurrency_of("LOCAL"), 20)
        self.assertEqual(s.queue.destination_concurrency_of("SMTP"), 5)
        self.assertRaises(AttributeError, setattr, s.smtp, "max_recipients", 6)

    def test_names_come_from_the_fields(self) -> None:
        """Every name the store and the CLI use maps to a field, with its default and
        description; node and secret settings are marked on their fields."""
        self.assertEqual(
            settings.NODE_SETTINGS,
            frozenset(
                {
                    "listeners",
                    "smtp.workers",
                    "smtp.delivery_workers",
                    "imap.workers",
                    "pipe.app_dir",
                }
            ),
        )
        self.assertEqual(
            settings.SECRET_SETTINGS, frozenset({"smtp.relayhost_auth", "web.metrics_token"})
        )
        s = settings.Settings()
        for name, spec in settings.SPECS.items():
            self.assertEqual(s[name], spec.default, name)
            self.assertTrue(spec.doc, name)
            self.assertEqual(settings.DEFAULTS[name], (spec.default, spec.doc))
        self.assertEqual(
            settings.SPECS["protection.reverse_connect.timeout"].path[:2],
            ("protection", "reverse_connect"),
        )
        self.assertEqual(len(s), len(settings.SPECS))

    def test_a_bad_stored_value_is_not_used_and_named(self) -> None:
        """A value that fails its check (a database edited by hand, an older version) or an
        unknown name is not used: the default stands in and ``problems`` gives the reason."""
        s = settings.Settings(
            {"smtp.max_recipients": "ten", "protection.rbl.mode": "sometimes", "no.such": 1}
        )
        self.assertEqual(s.smtp.max_recipients, 100)
        self.assertEqual(s.protection.rbl.mode, "nonclients")
        self.assertEqual(
            s.problems["smtp.max_recipients"], "smtp.max_recipients must be a non-negative integer"
        )
        self.assertIn("sometimes", s.problems["protection.rbl.mode"])
        self.assertIn("unknown setting 'no.such'", s.problems["no.such"])
        self.assertEqual(s.overrides["smtp.max_recipients"], "ten")

    def test_defaults_are_not_shared(self) -> None:
        """A list read from one Settings and changed does not change another's default."""
        a, b = settings.Settings(), settings.Settings()
        a.queue.retry_schedule.append(1)
        self.assertEqual(b.queue.retry_schedule, [60, 300, 900, 1800, 3600])
