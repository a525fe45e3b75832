"""Tests for the one Maildir save path (cgtwist.mailstore.maildir.MessageSave, MaildirWriter):
what LOCAL delivery, APPEND and COPY all go through."""

from __future__ import annotations

import errno
import os
import threading
import time

from twisted.trial import unittest

from cgtwist import durable
from cgtwist.mailstore import maildir as md


class MessageSaveTests(unittest.TestCase):
    def setUp(self) -> None:
        self.path = os.path.join(os.path.abspath(self.mktemp()), "Maildir")
        md.ensure(self.path)

    def listing(self) -> dict[str, list[str]]:
        return {s: sorted(os.listdir(os.path.join(self.path, s))) for s in md.SUBDIRS}

    def test_abort_leaves_nothing(self) -> None:
        """A save given up (the client went away mid-APPEND) leaves no file in any folder."""
        save = md.MessageSave.open(self.path)
        save.write(b"Subject: half\r\n")
        save.abort()
        self.assertEqual(self.listing(), {"cur": [], "new": [], "tmp": []})

    def test_commit_names_by_kind(self) -> None:
        """APPEND names cur/ files with their flags; LOCAL's new/ names carry the size."""
        save = md.MessageSave.open(self.path, to_new=False, letters="SF")
        save.write([b"Subject: a\r\n", b"\r\nbody\r\n"])
        name = save.commit()
        self.assertEqual(name, md.join_name(save.key, "FS"))
        sized = md.MessageSave.open(self.path, sized=True)
        sized.write(b"12345")
        self.assertEqual(sized.commit(), f"{sized.key},S=5")
        self.assertEqual(self.listing()["tmp"], [])

    def test_failed_directory_fsync_withdraws(self) -> None:
        """EIO from the directory fsync removes the name again (CommitFailed, withdrawn), for
        APPEND's saves as for LOCAL's: a retry stores the message once."""

        def eio(path: str) -> None:
            raise OSError(errno.EIO, "Input/output error")

        save = md.MessageSave.open(self.path, to_new=False)
        save.write(b"Subject: x\r\n\r\n")
        with self.assertRaises(md.CommitFailed) as cm:
            save.commit(eio)
        self.assertTrue(cm.exception.withdrawn)
        self.assertEqual(self.listing(), {"cur": [], "new": [], "tmp": []})

    def test_link_from_keeps_inode_and_fsyncs_it(self) -> None:
        """COPY links the source file (same inode, no bytes copied) and fsyncs it after the
        link, so its link count is durable."""
        src = md.MessageSave.open(self.path, to_new=False)
        src.write(b"Subject: c\r\n\r\n")
        src_path = os.path.join(self.path, "cur", src.commit())
        synced: list[int] = []
        real = os.fsync
        self.patch(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd)))
        key, name = md.deliver(self.path, src_path, "S")
        copy = os.path.join(self.path, "cur", name)
        self.assertEqual(os.stat(copy).st_ino, os.stat(src_path).st_ino)
        self.assertIn(os.stat(copy).st_ino, synced)
        self.assertTrue(name.startswith(key))


class MaildirWriterTests(unittest.TestCase):
    def test_concurrent_deliveries_share_directory_fsyncs(self) -> None:
        """Threads delivering into one Maildir at once share the fsyncs of new/ (group
        commit): fewer directory fsyncs than messages, every message durable and unique."""
        path = os.path.join(os.path.abspath(self.mktemp()), "Maildir")
        md.ensure(path)
        count = [0]
        real = durable.fsync_dir
        syncs = durable.DirSyncs()
        writer = md.MaildirWriter("h", syncs=syncs)

        def slow(p: str) -> None:
            count[0] += 1
            if count[0] == 1:  # the first fsync runs until the other 11 wait for the next
                ds = syncs._syncs[p]
                deadline = time.monotonic() + 60
                while ds.waiting < 11 and time.monotonic() < deadline:
                    time.sleep(0.001)
            real(p)

        self.patch(durable, "fsync_dir", slow)
        names: list[str] = []
        threads = [
            threading.Thread(target=lambda i=i: names.append(writer.deliver(path, [b"%d" % i])))
            for i in range(12)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(set(names)), 12)
        self.assertEqual(sorted(os.listdir(os.path.join(path, "new"))), sorted(names))
        self.assertEqual(count[0], 2)


class NewDirectoryTests(unittest.TestCase):
    def test_the_file_system_is_synced_before_a_new_maildir_is_made(self) -> None:
        """A new account's Maildir (domain, account, Maildir, cur/new/tmp) is made only after
        a sync of the file system: an inode freed by an earlier unlink that no directory fsync
        made durable (a replaced state file) can become the new directory, and after a power
        cut e2fsck cleared the new account's entry as a second link to it (tests/crash,
        account scenario). An existing Maildir costs no sync."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        calls: list[str] = []
        real_mkdir = os.mkdir
        self.patch(md, "sync_filesystem", lambda p: calls.append(f"sync {p}"))

        def mkdir(p: str, *a: object, **kw: object) -> None:
            calls.append(f"mkdir {os.path.relpath(p, base)}")
            real_mkdir(p, *a, **kw)  # type: ignore[arg-type]

        self.patch(os, "mkdir", mkdir)
        path = os.path.join(base, "Domains", "example.com", "bob", "Maildir")
        self.assertTrue(md.ensure(path))
        self.assertEqual(calls[0], f"sync {base}")
        self.assertEqual(sum(c.startswith("sync") for c in calls), 1)
        self.assertEqual(len(calls), 1 + 4 + 3)
        del calls[:]
        self.assertFalse(md.ensure(path))
        self.assertEqual(calls, [])
