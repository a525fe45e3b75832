"""The crash harness's clean-up of run-time files on a crash state (tests/crash/engine.py)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.trial import unittest

from tests.crash.engine import _clear_run_files


class ClearRunFilesTests(unittest.TestCase):
    def test_a_pid_file_name_leading_to_a_socket_is_noted_and_removed(self) -> None:
        """After e2fsck on ext4 without a journal, the name twistd.pid can lead to the
        control socket's inode (the old pid file's inode, freed and reused before the name's
        removal reached the disk). Opening it gives ENXIO; the replay notes it and goes on
        instead of failing the run."""
        base = tempfile.mkdtemp(prefix="cgtw-run-")  # short: a socket path has 108 octets
        self.addCleanup(shutil.rmtree, base, True)
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.bind(os.path.join(base, "twistd.pid"))
        notes = _clear_run_files(base)
        self.assertEqual(len(notes), 1)
        self.assertIn("not a regular file", notes[0])
        self.assertEqual(os.listdir(base), [])
