"""The per-command shortcuts of the mailstore's read paths give what the general forms give:
a message's path as ``os.path.join`` makes it, its text with CRLF line ends as
``maildir.to_crlf`` makes it, whatever mix of line ends the file has, and its whole file
read in one step whatever size the index says."""

from __future__ import annotations

import os

from twisted.trial import unittest

from cgtwist.mailstore import maildir, scan
from cgtwist.mailstore.filemeta import Meta
from cgtwist.mailstore.message import _read_file, _to_crlf


class ReadPathTests(unittest.TestCase):
    def test_child_is_os_path_join(self) -> None:
        for folder in (
            "/var/mail/a/Maildir",
            "/var/mail/a/Maildir/.Sent",
            "rel/dir",
            "/",
            "",
            "x/",
        ):
            for names in (("cur",), ("new", "1700000000.M1P2.host,S=10:2,FS"), ("cur", "k:2,")):
                self.assertEqual(scan._child(folder, *names), os.path.join(folder, *names))

    def test_entry_path(self) -> None:
        meta = Meta(10, 0.0, True, 5, 5, 1, {})
        e = scan.Entry(1, "k", "cur", "k:2,S", "S", meta)
        self.assertEqual(e.path("/m/Maildir"), "/m/Maildir/cur/k:2,S")

    def test_to_crlf_same_as_maildir(self) -> None:
        for data in (
            b"",
            b"a\nb\n",
            b"a\r\nb\r\n",
            b"a\r\nb\nc",
            b"no line end",
            b"\n\n\r\n\r\r\n",
            b"bare\rcr\n",
            b"x" * 1000 + b"\n",
        ):
            self.assertEqual(_to_crlf(data), maildir.to_crlf(data), data)

    def test_read_file_whole_whatever_the_hint(self) -> None:
        path = self.mktemp()
        for size in (0, 1, 100, 70000, (1 << 20) + 5, 3 << 20):
            data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            with open(path, "wb") as f:
                f.write(data)
            for hint in (0, size - 1, size, size + 1, 2 * size + 7):
                self.assertEqual(_read_file(path, max(hint, 0)), data, (size, hint))
        self.assertRaises(FileNotFoundError, _read_file, path + ".gone", 10)
