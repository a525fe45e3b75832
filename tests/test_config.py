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
        cfg = config.parse(
            '[server]\nbase_dir = "../spool"\n', "/etc/cgtwist/cgtwist.conf", "/etc/cgtwist"
        )
        self.assertEqual(cfg.base_dir, "/etc/spool")

    def test_relative_base_dir_on_the_command_line_is_relative_to_the_current_directory(
        self,
    ) -> None:
        """``--config /etc/cgtwist/cgtwist.conf --base-dir spool`` run in /srv means /srv/spool:
        a path typed on the command line is read where it was typed, not in /etc/cgtwist."""
        here = os.getcwd()
        cfg = config.parse(
            '[server]\nbase_dir = "../x"\n',
            "/etc/cgtwist/cgtwist.conf",
            "/etc/cgtwist",
            {"base_dir": "spool"},
        )
        self.assertEqual(cfg.base_dir, os.path.join(here, "spool"))
        self.assertEqual(cfg.database_url, "sqlite:///" + os.path.join(here, "spool", "cgtwist.db"))

    def test_relative_base_dir_override_through_load(self) -> None:
        """The same through ``load`` with a real file in another folder."""
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "cgtwist.conf")
        with open(path, "w") as f:
            f.write('[server]\nmain_domain = "example.com"\n')
        cfg = config.load(path, {"base_dir": "spool"})
        self.assertEqual(cfg.base_dir, os.path.join(os.getcwd(), "spool"))

    def test_syntax_error_gives_file_and_line(self) -> None:
        """A TOML syntax error reads ``FILE:LINE: problem``, like every other config error."""
        e = self.assertRaises(ConfigError, config.parse, "[server]\nbase_dir = \n", "c.conf", "/")
        self.assertRegex(str(e), r"^c\.conf:2: \S")
        self.assertNotIn("column", str(e))

    def test_unknown_key_names_file_line_and_key(self) -> None:
        """A typo gives one line with file:line and section.key, not a traceback."""
        text = '[server]\nbase_dir = "x"\nmain_domian = "a.test"\n'
        e = self.assertRaises(ConfigError, config.parse, text, "/etc/c.conf", "/etc")
        self.assertEqual(str(e), "/etc/c.conf:3: server.main_domian: unknown key")

    def test_wrong_type_is_reported(self) -> None:
        text = '[database]\npool_max = "four"\n'
        e = self.assertRaises(ConfigError, config.parse, text, "c.conf", "/")
        self.assertIn("c.conf:2: database.pool_max: must be a int", str(e))

    def test_database_timeout(self) -> None:
        """[database] timeout is each store call's deadline: 10 s by default, a positive number
        of seconds up to an hour, anything else refused naming the key."""
        self.assertEqual(config.parse("", "c.conf", "/").database_timeout, 10.0)
        self.assertEqual(
            config.parse("[database]\ntimeout = 2.5\n", "c.conf", "/").database_timeout, 2.5
        )
        for bad in ("0", "-1", "7200", '"soon"'):
            e = self.assertRaises(
                ConfigError, config.parse, f"[database]\ntimeout = {bad}\n", "c.conf", "/"
            )
            self.assertIn("database.timeout", str(e))

    def test_syntax_error_names_the_file(self) -> None:
        e = self.assertRaises(ConfigError, config.parse, "[server\n", "c.conf", "/")
        self.assertTrue(str(e).startswith("c.conf:1: "), str(e))

    def test_certificate_without_key_is_refused(self) -> None:
        e = self.assertRaises(
            ConfigError, config.parse, '[tls]\ncertificate = "c.pem"\n', "c.conf", "/"
        )
        self.assertIn("tls.key", str(e))

    def test_bad_main_domain_is_refused(self) -> None:
        e = self.assertRaises(
            ConfigError, config.parse, '[server]\nmain_domain = "../etc"\n', "c.conf", "/"
        )
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

    def test_sample_config_base_dir_does_not_depend_on_where_it_is_installed(self) -> None:
        """Installed as /etc/cgtwist/cgtwist.conf, the sample's base directory is the usual
        /var/spool/cgtwist (a relative one became /etc/spool)."""
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(here, "etc", "cgtwist.conf")) as f:
            text = f.read()
        cfg = config.parse(
            text, "/etc/cgtwist/cgtwist.conf", "/etc/cgtwist", {"main_domain": "example.com"}
        )
        self.assertEqual(cfg.base_dir, "/var/spool/cgtwist")

    def test_unreadable_file(self) -> None:
        e = self.assertRaises(ConfigError, config.load, "/nonexistent/cgtwist.conf")
        self.assertIn("/nonexistent/cgtwist.conf: cannot read", str(e))

    def test_umask_and_log_rotation_settings(self) -> None:
        """[server] umask (default 0077) and [log] max_size/keep/daily are read and checked:
        a mask that lets others write, a tiny size or keeping no file is refused."""
        cfg = config.parse("", "<defaults>", "/srv")
        self.assertEqual(
            (cfg.umask, cfg.log_max_size, cfg.log_keep, cfg.log_daily), (0o077, 10485760, 10, False)
        )
        cfg = config.parse(
            '[server]\numask = "027"\n[log]\nmax_size = 0\nkeep = 3\ndaily = true\n', "c.conf", "/"
        )
        self.assertEqual(
            (cfg.umask, cfg.log_max_size, cfg.log_keep, cfg.log_daily), (0o027, 0, 3, True)
        )
        for text, where in (
            ('[server]\numask = "0020"\n', "c.conf:2: server.umask: "),
            ('[server]\numask = "77"\n', "c.conf:2: server.umask: "),
            ("[log]\nmax_size = 100\n", "c.conf:2: log.max_size: "),
            ("[log]\nkeep = 0\n", "c.conf:2: log.keep: "),
        ):
            e = self.assertRaises(ConfigError, config.parse, text, "c.conf", "/")
            self.assertTrue(str(e).startswith(where), str(e))

    def test_runtime_setting(self) -> None:
        """[server] runtime is tuned by default, may be plain, and anything else is refused
        with a one-line error naming the file, line and key."""
        self.assertEqual(config.parse("", "<defaults>", "/srv").runtime, "tuned")
        cfg = config.parse('[server]\nruntime = "plain"\n', "c.conf", "/")
        self.assertEqual(cfg.runtime, "plain")
        for text in ('[server]\nruntime = "fast"\n', "[server]\nruntime = 1\n"):
            e = self.assertRaises(ConfigError, config.parse, text, "c.conf", "/")
            self.assertTrue(str(e).startswith("c.conf:2: server.runtime: "), str(e))
            self.assertNotIn("\n", str(e))


class TapOptionsTests(unittest.TestCase):
    def test_unprivileged_ports_flag(self) -> None:
        """``twistd cgtwist --unprivileged-ports`` gives the tour's ports even as root (the
        standard ones on 0.0.0.0 otherwise); without it the config file decides."""
        from cgtwist import tap

        base = os.path.abspath(self.mktemp())
        options = tap.Options()
        options.parseOptions(["--base-dir", base, "--main-domain", "example.test", "-u"])
        self.assertIs(options.cfg.unprivileged_ports, True)
        options = tap.Options()
        options.parseOptions(["--base-dir", base, "--main-domain", "example.test"])
        self.assertIsNone(options.cfg.unprivileged_ports)
