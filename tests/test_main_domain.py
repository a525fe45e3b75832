"""The main domain is recorded at first start; later runs that do not name one use it."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def admin(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("CGTWIST_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "cgtwist.cli", "--base-dir", base, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


class MainDomainTests(unittest.TestCase):
    def test_cli_without_main_domain_uses_the_recorded_one(self) -> None:
        """After 'twistd cgtwist --main-domain example.test', 'cgtwist-admin --base-dir spool'
        works in example.test instead of creating a second main domain named after the host."""
        base = self.mktemp()
        r = admin(base, "--main-domain", "example.test", "init")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = admin(base, "account", "add", "alice", "--password", "alice-secret-1")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = admin(base, "domain", "list")
        self.assertEqual(r.stdout.split(), ["example.test", "[main]"])
        r = admin(base, "account", "list")
        self.assertIn("alice@example.test", r.stdout)
