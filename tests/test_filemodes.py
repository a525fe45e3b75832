"""cgtwist.filemodes: what already exists in the base directory loses the bits the umask forbids."""

from __future__ import annotations

import os
import stat

from twisted.trial import unittest

from cgtwist import filemodes


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class TightenTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        for d in ("Domains/example.test/alice/Maildir/new", "Queue/incoming", "tls"):
            os.makedirs(os.path.join(self.base, d))
        for f in (
            "cgtwist.db",
            "cgtwist.db-wal",
            "tls/key.pem",
            "Domains/example.test/alice/Maildir/new/1.msg",
        ):
            with open(os.path.join(self.base, f), "w") as out:
                out.write("x")
        for root, dirs, files in os.walk(self.base):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        os.chmod(self.base, 0o755)

    def test_private_files_and_account_directories_are_tightened(self) -> None:
        """The store, its WAL, the TLS key, the base directory and the domain and account
        directories (whose names list the accounts) become 0600/0700; each change is
        reported with its old and new mode."""
        changed = filemodes.tighten_base(self.base, 0o077)
        j = lambda *p: os.path.join(self.base, *p)  # noqa: E731
        for path in (j("cgtwist.db"), j("cgtwist.db-wal"), j("tls", "key.pem")):
            self.assertEqual(mode(path), 0o600, path)
        for path in (
            self.base,
            j("tls"),
            j("Queue"),
            j("Queue", "incoming"),
            j("Domains"),
            j("Domains", "example.test"),
            j("Domains", "example.test", "alice"),
        ):
            self.assertEqual(mode(path), 0o700, path)
        self.assertIn((j("cgtwist.db"), 0o644, 0o600), changed)
        self.assertIn((j("Domains", "example.test", "alice"), 0o755, 0o700), changed)
        # Messages are not walked: the account directory above them is closed already.
        self.assertEqual(mode(j("Domains/example.test/alice/Maildir/new/1.msg")), 0o644)
        self.assertEqual(filemodes.tighten_base(self.base, 0o077), [])

    def test_never_widens_and_skips_symlinks(self) -> None:
        """A mode already tighter than the umask stays; a symlink is not followed."""
        os.chmod(os.path.join(self.base, "cgtwist.db"), 0o400)
        outside = os.path.abspath(self.mktemp())
        with open(outside, "w") as out:
            out.write("x")
        os.chmod(outside, 0o644)
        os.symlink(outside, os.path.join(self.base, "cgtwist.ports"))
        filemodes.tighten_base(self.base, 0o027)
        self.assertEqual(mode(os.path.join(self.base, "cgtwist.db")), 0o400)
        self.assertEqual(mode(outside), 0o644)
        self.assertEqual(mode(os.path.join(self.base, "tls", "key.pem")), 0o640)

    def test_log_paths_are_the_file_and_its_rotated_copies(self) -> None:
        log = os.path.join(self.base, "cgtwist.log")
        for name in ("cgtwist.log", "cgtwist.log.1", "cgtwist.log.2", "other.log"):
            open(os.path.join(self.base, name), "w").close()
        self.assertEqual(filemodes.log_paths(log), [log, log + ".1", log + ".2"])
