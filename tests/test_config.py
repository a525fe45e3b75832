"""Bootstrap configuration: defaults, overrides and one-line errors naming file, line and key."""

from __future__ import annotations

import os

from twisted.trial import unittest

from cgtwist import config
from cgtwist.errors import ConfigError


class ConfigTests(unittest.TestCase):
    def test_defaults_put_everything_in_the_base_directory(self) -> None:
        """With no file, the database and the generated certificate live in the base dir."""
        cfg = config.parse("", "<defaults>", "/srv", {"main_domain": "Example.TEST"})
        self.assertEqual(cfg.base_dir, "/srv/spool")
        self.assertEqual(cfg.database_url, "sqlite:////srv/spool/cgtwist.db")
        self.assertEqual(cfg.certificate, "/srv/spool/tls/cert.pem")
        self.assertTrue(cfg.generated_certificate)
        self.assertEqual(cfg.main_domain, "example.test")

    def test_relative_paths_are_relative_to_the_file(self) -> None:
        """An admin's relative base_dir in /etc/cgtwist/cgtwist.conf means /etc/cgtwist/..."""
        cfg = config.parse('[server]\nbase_dir = "../spool"\n', "/etc/cgtwist/cgtwist.conf", "/etc/cgtwist")
        self.assertEqual(cfg.base_dir, "/etc/spool")

    def test_unknown_key_names_file_line_and_key(self) -> None:
        """A typo gives one line with file:line and section.key, not a traceback."""
        text = '[server]\nbase_dir = "x"\nmain_domian = "a.test"\n'
        e = self.assertRaises(ConfigError, config.parse, text, "/etc/c.conf", "/etc")
        self.assertEqual(str(e), "/etc/c.conf:3: server.main_domian: unknown key")

    def test_wrong_type_is_reported(self) -> None:
        text = "[database]\npool_max = \"four\"\n"
        e = self.assertRaises(ConfigError, config.parse, text, "c.conf", "/")
        self.assertIn("c.conf:2: database.pool_max: must be a int", str(e))

    def test_syntax_error_names_the_file(self) -> None:
        e = self.assertRaises(ConfigError, config.parse, "[server\n", "c.conf", "/")
        self.assertTrue(str(e).startswith("c.conf: "))

    def test_certificate_without_key_is_refused(self) -> None:
        e = self.assertRaises(ConfigError, config.parse, '[tls]\ncertificate = "c.pem"\n', "c.conf", "/")
        self.assertIn("tls.key", str(e))

    def test_bad_main_domain_is_refused(self) -> None:
        e = self.assertRaises(ConfigError, config.parse, '[server]\nmain_domain = "../etc"\n', "c.conf", "/")
        self.assertIn("server.main_domain", str(e))

    def test_node_names_this_server_in_a_cluster(self) -> None:
        """``[server] node`` picks the node settings; without it a server is node "default"."""
        self.assertEqual(config.parse("", "<defaults>", "/srv").node, config.DEFAULT_NODE)
        cfg = config.parse('[server]\nnode = "mx-2"\n', "c.conf", "/srv")
        self.assertEqual(cfg.node, "mx-2")

    def test_bad_node_name_is_refused(self) -> None:
        """A node name that is not a DNS label is one line naming file, line and key."""
        for bad in ("MX1", "-mx", "mx_1", "", "a" * 64, "mx 1"):
            with self.assertRaises(ConfigError) as cm:
                config.parse(f'[server]\nnode = "{bad}"\n', "c.conf", "/srv")
            self.assertIn("c.conf:2: server.node", str(cm.exception))

    def test_overrides_win_over_the_file(self) -> None:
        cfg = config.parse('[server]\nbase_dir = "a"\n', "c.conf", "/x", {"base_dir": "/b"})
        self.assertEqual(cfg.base_dir, "/b")

    def test_sample_config_in_etc_parses(self) -> None:
        """The documented sample file must itself be valid."""
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cfg = config.load(os.path.join(here, "etc", "cgtwist.conf"), {"main_domain": "example.com"})
        self.assertEqual(cfg.log_level, "info")

    def test_unreadable_file(self) -> None:
        e = self.assertRaises(ConfigError, config.load, "/nonexistent/cgtwist.conf")
        self.assertIn("/nonexistent/cgtwist.conf: cannot read", str(e))
