"""README.md, .ci/run and etc/: what a first-time administrator copies must do what CI does."""

from __future__ import annotations

import os
import re

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


class ReadmeTests(unittest.TestCase):
    def test_readme_test_command_is_what_ci_runs(self) -> None:
        """The README's test command runs the script .ci/run runs after its apt step, and that
        script runs the static checks and PostgreSQL as well as pytest, so a user who follows
        the README runs the whole suite (it used to be pytest alone)."""
        readme = read("README.md")
        command = sh_blocks(readme)[1].strip()
        self.assertTrue(command.endswith("&& tests/run.sh"), command)
        ci = read(".ci", "run")
        ci_packages = re.search(r"apt-get install -y -qq ([^>\n]+)", ci)
        readme_packages = re.search(r"apt-get install -y ([^&]+)&&", command)
        assert ci_packages is not None and readme_packages is not None
        self.assertEqual(ci_packages.group(1).split(), readme_packages.group(1).split())
        self.assertIn("exec tests/run.sh", ci)
        script = read("tests", "run.sh")
        for step in (
            ".venv/bin/pip install -q '.[test,postgres]'",
            ".venv/bin/ruff check cgtwist tests",
            ".venv/bin/mypy",
            ".venv/bin/lint-imports",
            "pg_throwaway.sh start",
            ".venv/bin/python -m pytest",
        ):
            self.assertIn(step, script)
        self.assertTrue(os.access(os.path.join(ROOT, "tests", "run.sh"), os.X_OK))

    def test_readme_says_what_root_binds_and_how_to_get_the_tour_ports(self) -> None:
        readme = read("README.md")
        self.assertIn("on every address (0.0.0.0)", readme)
        self.assertIn("--unprivileged-ports", readme)

    def test_service_and_daemon_example_use_the_venv_twistd_the_install_creates(self) -> None:
        """The unit's ExecStart and the README's daemon example name the twistd inside the
        virtual environment the README's install commands create, not /usr/local/bin."""
        unit = read("etc", "cgtwist.service")
        exec_start = re.search(r"^ExecStart=\+?(\S+)", unit, re.M)
        assert exec_start is not None
        venv = os.path.dirname(os.path.dirname(exec_start.group(1)))
        readme = read("README.md")
        self.assertIn(f"python3 -m venv {venv} && {venv}/bin/pip install .", readme)
        self.assertIn("UMask=0077", unit)
        daemon = [b for b in sh_blocks(readme) if "--pidfile" in b]
        self.assertTrue(daemon and all(".venv/bin/twistd" in b for b in daemon), daemon)

    def test_sample_config_is_absolute_and_documents_the_new_keys(self) -> None:
        conf = read("etc", "cgtwist.conf")
        self.assertIn('base_dir = "/var/spool/cgtwist"', conf)
        for key in ("# umask = ", "# max_size = ", "# keep = ", "# daily = "):
            self.assertIn(key, conf)
