"""Mailbox names: modified UTF-7 and the name -> directory mapping never escape the account."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.mailstore import names
from cgtwist.mailstore.names import MailboxNameError


class ModifiedUTF7Tests(unittest.TestCase):
    def test_rfc3501_example(self) -> None:
        """A client's non-ASCII folder name (RFC 3501 §5.1.3 example) decodes and round-trips."""
        raw = b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        text = names.mutf7_decode(raw)
        self.assertEqual(text, "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e")
        self.assertEqual(names.mutf7_encode(text), raw.decode())

    def test_ampersand(self) -> None:
        """A folder called 'R&D' is written '&-' on the wire and on disk, as Dovecot does."""
        self.assertEqual(names.mutf7_encode("R&D"), "R&-D")
        self.assertEqual(names.mutf7_decode(b"R&-D"), "R&D")
        self.assertEqual(names.dir_name("R&D"), ".R&-D")

    def test_bad_sequences_refused(self) -> None:
        """Garbage modified UTF-7 from a client is refused, not half-decoded."""
        for bad in (b"&", b"&AC4", b"&!!-", b"caf\xc3\xa9", b"&AA-", b"a\x00b"):
            self.assertRaises(MailboxNameError, names.mutf7_decode, bad)

    def test_shifted_ascii_refused_from_clients(self) -> None:
        """'&AC4-' ('.') or '&AC8-' ('/') from a client cannot smuggle a dot or slash."""
        self.assertRaises(MailboxNameError, names.mutf7_decode, b"&AC4-")
        self.assertRaises(MailboxNameError, names.mutf7_decode, b"&AC8-")
        self.assertRaises(MailboxNameError, names.normalize, b"&AC4-&AC4-")

    @given(st.text(min_size=1, max_size=40))
    def test_roundtrip(self, text: str) -> None:
        """Any text survives encode/decode (fuzzed)."""
        text = "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)
        self.assertEqual(names.mutf7_decode(names.mutf7_encode(text), strict=False), text)


class FolderPathTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.md = os.path.join(self.base, "a", "Maildir")
        os.makedirs(self.md)
        os.makedirs(os.path.join(self.base, "adm", "Maildir"))

    def test_traversal_refused(self) -> None:
        """Names that try to leave the Maildir are refused: '..', '../other', '/etc', '.hidden',
        NUL, CR/LF, wildcards, '~root', empty levels, decoded '.'/'..' components."""
        for bad in [
            "..",
            "../other",
            "a/../../b",
            "/etc",
            "/abs",
            ".hidden",
            "a/.hidden",
            ".",
            "INBOX/../../etc",
            "~root",
            "a\x00b",
            "a\r\nb",
            "%",
            "*",
            "a//b",
            "",
            "x" * 300,
            "../adm/Maildir",
            "a/..",
            "\\..\\x",
        ]:
            self.assertRaises(MailboxNameError, names.folder_path, self.md, bad)
        # the same through the wire form
        for bad in [b"&AC4-", b"&AC4AL-", b"..", b"&AC8-etc"]:
            self.assertRaises(MailboxNameError, names.folder_path, self.md, bad)

    def test_dots_and_slashes_inside_names_are_encoded(self) -> None:
        """A folder 'v1.2' gets its own directory; it cannot become the child 'v1/2'."""
        self.assertNotEqual(names.folder_path(self.md, "v1.2"), names.folder_path(self.md, "v1/2"))
        self.assertEqual(os.path.basename(names.folder_path(self.md, "v1.2")), ".v1&AC4-2")
        self.assertEqual(names.name_from_dir(".v1&AC4-2"), "v1.2")
        self.assertEqual(names.name_from_dir(".v1.2"), "v1/2")

    def test_inbox(self) -> None:
        """INBOX in any case is the Maildir root; INBOX/x is a normal Maildir++ folder."""
        self.assertEqual(names.folder_path(self.md, "inbox"), self.md)
        self.assertEqual(os.path.basename(names.folder_path(self.md, "Inbox/Sub")), ".INBOX.Sub")

    def test_paths_stay_inside(self) -> None:
        """Every accepted name maps below the Maildir, never into the account 'adm' next door."""
        for ok in ["Sent", "a b", "R&D", "\u65e5\u672c", "x/y/z", "adm", "Maildir"]:
            p = names.folder_path(self.md, ok)
            self.assertEqual(os.path.dirname(p), self.md)

    def test_symlink_escape_refused(self) -> None:
        """A folder directory that is a symlink out of the Maildir is refused."""
        os.symlink(os.path.join(self.base, "adm", "Maildir"), os.path.join(self.md, ".Evil"))
        self.assertRaises(MailboxNameError, names.folder_path, self.md, "Evil")

    def test_unknown_directories_ignored(self) -> None:
        """Directories that are not canonical folder names are never listed."""
        for entry in ["..", ".", "tmp", ".a..b", ".&AC4-", ".~x", ".a.", ".a%"]:
            self.assertIsNone(names.name_from_dir(entry), entry)
