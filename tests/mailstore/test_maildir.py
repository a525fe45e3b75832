"""Maildir file names, flags and message measurement (the on-disk format other clients read)."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.mailstore import filemeta, maildir
from tests.mailstore.oslog import OsLog


class FileNameTests(unittest.TestCase):
    @given(
        st.text(
            alphabet=st.characters(
                blacklist_characters=":/\x00", min_codepoint=33, max_codepoint=126
            ),
            min_size=1,
            max_size=40,
        ),
        st.sets(st.sampled_from("DFPRSTabcz")),
    )
    def test_flags_roundtrip(self, key: str, letters: set[str]) -> None:
        """Any key with any set of info letters reads back as written, letters sorted (maildir(5))."""
        name = maildir.join_name(key, letters)
        self.assertEqual(maildir.split_name(name), (key, "".join(sorted(letters))))

    @given(st.text(max_size=60))
    def test_split_never_fails(self, name: str) -> None:
        """Whatever file name another program left in cur/, parsing it does not raise (fuzzed)."""
        key, letters = maildir.split_name(name)
        self.assertTrue(name.startswith(key))

    def test_dovecot_names(self) -> None:
        """Dovecot's S=/W= fields stay in the key; its extra info fields are not flags."""
        self.assertEqual(
            maildir.split_name("1035478339.27041_118.foo.org,S=1000,W=1030:2,S"),
            ("1035478339.27041_118.foo.org,S=1000,W=1030", "S"),
        )
        self.assertEqual(maildir.split_name("k:2,FS,xyz"), ("k", "FS"))
        self.assertEqual(maildir.split_name("k:1,experimental"), ("k", ""))

    def test_flag_names(self) -> None:
        """System flags are case-insensitive; keywords keep their case."""
        self.assertEqual(maildir.canonical_flag("\\SEEN"), "\\Seen")
        self.assertEqual(maildir.canonical_flag("$forwarded"), "$Forwarded")
        self.assertEqual(maildir.canonical_flag("$Junk"), "$Junk")


class MeasureTests(unittest.TestCase):
    def write(self, data: bytes) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_crlf_message(self) -> None:
        """A CRLF message: size is the file size, body offset after the blank line."""
        data = b"Subject: x\r\nFrom: a@b\r\n\r\nbody\r\nmore\r\n"
        m = filemeta.measure(self.write(data))
        self.assertEqual(
            (m.size, m.crlf, m.body_offset, m.body_size, m.body_lines),
            (len(data), True, data.index(b"body"), 12, 2),
        )
        self.assertEqual(m.headers, {"subject": "x", "from": "a@b"})

    def test_mixed_and_folded(self) -> None:
        """Bare LF counts as CRLF; folded headers keep their folding; no body is fine."""
        m = filemeta.measure(self.write(b"Subject: a\n  b\nTo: x\n"))
        self.assertEqual(m.size, len(b"Subject: a\r\n  b\r\nTo: x\r\n"))
        self.assertFalse(m.crlf)
        self.assertEqual(m.headers["subject"], "a\r\n  b")
        self.assertEqual(m.body_size, 0)

    @given(st.binary(max_size=300))
    def test_measure_matches_served_bytes(self, data: bytes) -> None:
        """For any bytes, the size we announce equals the CRLF-normalised bytes we send."""
        path = self.write(data)
        m = filemeta.measure(path)
        self.assertEqual(m.size, len(maildir.to_crlf(data)))
        body = maildir.to_crlf(data[filemeta.split_header(data) :])
        self.assertEqual(m.body_size, len(body))
        lines = 0 if not body else len(body.split(b"\r\n")) - (1 if body.endswith(b"\r\n") else 0)
        self.assertEqual(m.body_lines, lines)
        os.unlink(path)

    @given(st.binary(max_size=200), st.integers(1, 9))
    def test_measure_in_pieces(self, data: bytes, chunk: int) -> None:
        """Reading in small pieces (CRLF and the blank line split across them) gives the same
        facts as reading the whole file."""
        path = self.write(data)
        self.assertEqual(filemeta.measure(path, chunk_size=chunk), filemeta.measure(path))
        os.unlink(path)

    def test_deliver_is_atomic_and_sets_date(self) -> None:
        """deliver() leaves nothing in tmp/, keeps the bytes and sets the INTERNALDATE."""
        md = os.path.abspath(self.mktemp())
        maildir.ensure(md)
        key, fname = maildir.deliver(md, b"Subject: x\r\n\r\ny\r\n", "SF", mtime=1000000000.0)
        self.assertEqual(os.listdir(os.path.join(md, "tmp")), [])
        self.assertEqual(fname, key + ":2,FS")
        path = os.path.join(md, "cur", fname)
        self.assertEqual(os.stat(path).st_mtime, 1000000000.0)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"Subject: x\r\n\r\ny\r\n")


class TmpCleanupTests(unittest.TestCase):
    def test_old_tmp_files_removed(self) -> None:
        """Files abandoned in tmp/ for over 36 hours go; a delivery in progress stays."""
        md = os.path.abspath(self.mktemp())
        maildir.ensure(md)
        old, fresh = os.path.join(md, "tmp", "old"), os.path.join(md, "tmp", "fresh")
        for p in (old, fresh):
            with open(p, "wb") as f:
                f.write(b"x")
        os.utime(old, (1000, 1000))
        self.assertEqual(maildir.clean_tmp(md), 1)
        self.assertEqual(os.listdir(os.path.join(md, "tmp")), ["fresh"])


class DurableDirectoryTests(unittest.TestCase):
    def test_new_directories_fsynced_in_their_parents(self) -> None:
        """Every directory ``ensure`` makes (domain, account, Maildir, cur/new/tmp, a .Folder)
        is fsynced in its parent before it returns, so mail delivered into it cannot end in
        lost+found after a power cut (issue 21 item 7)."""
        base = self.mktemp()
        os.mkdir(base)
        log = OsLog(self)
        inbox = os.path.join(base, "Domains", "example.com", "bob", "Maildir")
        self.assertTrue(maildir.ensure(inbox))
        self.assertTrue(maildir.ensure(os.path.join(inbox, ".Archive")))
        log.mark("done")
        made = log.names_made()
        self.assertEqual(len(made), 4 + 3 + 1 + 3)
        for i, e in made:
            self.assertTrue(log.name_durable_at(i, log.at("done")), e)
        self.assertFalse(maildir.ensure(inbox))


class HeaderFieldTests(unittest.TestCase):
    def test_one_parser_for_first_and_every_instance(self) -> None:
        """parse_headers (cached metadata: first instance) and header_instances (SEARCH HEADER:
        every instance) read a header block the same way: folding kept, bad lines skipped,
        the obsolete 'Subject :' read as Subject (RFC 5322 §4.5.3), as FETCH HEADER.FIELDS
        and Dovecot read it."""
        from cgtwist.mailstore.message import header_instances

        block = (
            b"Received: a\r\n\tfolded\r\nX-Bad line\r\n continued\r\nSubject : no\r\n"
            b"received: b\r\nSubject: hi\r\n\r\nbody: not a field\r\n"
        )
        self.assertEqual(
            filemeta.parse_headers(block), {"received": "a\r\n\tfolded", "subject": "no"}
        )
        self.assertEqual(header_instances(block, "received"), ["a\r\n\tfolded", "b"])
        self.assertEqual(header_instances(block, "subject"), ["no", "hi"])
        self.assertEqual(header_instances(block, "body"), [])
