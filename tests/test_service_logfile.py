"""cgtwist.service start-up: twistd's --logfile is taken over as root, for the --uid user."""

from __future__ import annotations

import os
import stat

from twisted.internet.task import Clock
from twisted.python.logfile import LogFile
from twisted.trial import unittest

from cgtwist import config
from cgtwist.logs import RotatingLogFile
from cgtwist.service import CgtwistService


class LogFileTakeOverTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.dir, "base"))
        self.cfg = config.parse(
            "[log]\nmax_size = 65536\nkeep = 3\n",
            "c.conf",
            self.dir,
            {"base_dir": os.path.join(self.dir, "base"), "main_domain": "example.test"},
        )
        self.path = os.path.join(self.dir, "cgtwist.log")

    def take_over(self) -> RotatingLogFile:
        twistd_file = LogFile.fromFullPath(self.path)
        service = CgtwistService(self.cfg, Clock())
        rotating, _changed = service._rotating(twistd_file)
        self.addCleanup(rotating.close)
        return rotating

    def test_settings_and_mode(self) -> None:
        """The replacement rotates as [log] says, and a 0644 log file becomes 0600."""
        with open(self.path, "w") as f:
            f.write("old\n")
        os.chmod(self.path, 0o644)
        rotating = self.take_over()
        self.assertEqual((rotating.rotateLength, rotating.maxRotatedFiles), (65536, 3))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_log_files_go_to_the_base_directory_owner_as_root(self) -> None:
        """Run as root with a base directory owned by the --uid user, the log file and its
        rotated copies become that user's, so it can rotate them after root is dropped."""
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root")
        os.chown(os.path.join(self.dir, "base"), 4321, 4322)
        with open(self.path + ".1", "w") as f:
            f.write("old\n")
        self.take_over()
        for path in (self.path, self.path + ".1"):
            st = os.stat(path)
            self.assertEqual((st.st_uid, st.st_gid), (4321, 4322), path)
