"""Keyword letters (Dovecot's a..z in ``dovecot-keywords``): one allocator for every writer.

IMAP STORE/APPEND/COPY (``Folder``) and LOCAL delivery's rule Mark (``mark_new``) allocate
letters for new keywords in the same file; these tests interleave them, and check that a
message never shows a keyword it was not given."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from cgtwist.delivery.local import LocalDelivery
from cgtwist.mailstore import maildir as md
from cgtwist.mailstore.folder import Folder
from cgtwist.types import Account, Envelope, LocalDecision
from tests.delivery.test_local import FakeNotifier, FakeStore, rcpt
from tests.mailstore.oslog import OsLog

WAIT = 60.0  # a deadline for the other writer to get going, never reached unless broken


def message(subject: str) -> bytes:
    return f"From: a@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


class KeywordRaceTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="cgtwist-keywords-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.inbox = os.path.join(self.base, "Domains", "example.com", "bob", "Maildir")
        self.agent = LocalDelivery(
            self.base, FakeStore("bob@example.com"), FakeNotifier(), reactor=reactor, hostname="mx"
        )
        self.env = Envelope(sender="alice@example.org", recipients=[])
        self.decision = LocalDecision()

        def rules(account: Account, envelope: Envelope, data: bytes) -> LocalDecision:
            return self.decision

        self.agent.rules = rules

    def folder(self) -> Folder:
        """The INBOX as an IMAP session sees it, its disk work in threads."""
        return Folder(
            self.inbox, "bob@example.com", "INBOX", lambda f, *a: threads.deferToThread(f, *a)
        )

    @defer.inlineCallbacks
    def flags_by_subject(self) -> Any:
        """Each message's flags as a fresh process (a restarted server) reads them."""
        folder = self.folder()
        yield folder.refresh()
        out = {}
        for e in folder.entries.values():
            with open(e.path(self.inbox), "rb") as f:
                subject = next(ln for ln in f.read().split(b"\r\n") if ln.startswith(b"Subject:"))
            out[subject[9:].decode()] = sorted(folder.flags_of(e))
        return out

    @defer.inlineCallbacks
    def test_local_mark_and_imap_store_interleaved_keep_both_keywords(self) -> None:
        """A rule's Mark Junk (LOCAL) and an IMAP STORE +FLAGS Work on another message, each
        a new keyword, run at once: the STORE's allocation starts while LOCAL has read the
        keyword map and not yet written it. Both keywords keep their own letter; neither
        message shows the other's keyword, now or after a restart."""
        yield self.agent.deliver("m0", self.env, message("stored"), [rcpt("bob@example.com")])
        folder = self.folder()
        yield folder.refresh()
        (uid,) = folder.uids

        started = threading.Event()  # LOCAL has read the map and waits for the STORE
        store_going = threading.Event()  # the STORE finished, or waits for the keyword lock
        store_result: list[Any] = []
        real_read, real_flock = md.read_keywords, fcntl.flock

        def flock(fd: int, op: int) -> None:
            if started.is_set():  # the STORE asks for the lock LOCAL holds
                store_going.set()
            real_flock(fd, op)

        def store() -> None:
            d = folder.set_flags([uid], ["Work"], 1)
            d.addBoth(lambda r: (store_result.append(r), store_going.set()))

        def read_keywords(path: str) -> dict[int, str]:
            keywords = real_read(path)
            if threading.current_thread() is not threading.main_thread() and not started.is_set():
                started.set()  # LOCAL's read, the first one in a thread
                reactor.callFromThread(store)
                store_going.wait(WAIT)
            return keywords

        self.patch(md, "read_keywords", read_keywords)
        self.patch(fcntl, "flock", flock)
        self.decision = LocalDecision(flags=("Junk",))
        rs = yield self.agent.deliver("m1", self.env, message("marked"), [rcpt("bob@example.com")])
        self.assertEqual(rs[0].state, "delivered")
        while not store_result:  # the STORE, behind LOCAL's allocation
            yield threads.deferToThread(store_going.wait, WAIT)
        self.assertIsInstance(store_result[0], dict, store_result[0])
        self.assertEqual(store_result[0], {uid: frozenset({"Work"})})
        self.assertEqual(sorted(real_read(self.inbox).values()), ["Junk", "Work"])
        yield folder.refresh(force=True)
        self.assertEqual(sorted(folder.flags_of(folder.entries[uid])), ["Work"])
        flags = yield self.flags_by_subject()
        self.assertEqual(flags, {"stored": ["Work"], "marked": ["Junk"]})

    @defer.inlineCallbacks
    def test_the_map_is_durable_before_a_message_carries_its_letter(self) -> None:
        """A power cut or kill -9 at any point leaves no message named with a letter the map
        on disk lacks: for LOCAL's Mark and for IMAP's STORE, dovecot-keywords is durable
        (renamed into place, its folder fsynced) before any cur/ name carrying a letter is
        made. A cut between the two leaves a keyword no message carries, nothing worse."""
        yield self.agent.deliver("m0", self.env, message("stored"), [rcpt("bob@example.com")])
        folder = self.folder()
        yield folder.refresh()
        log = OsLog(self)
        self.decision = LocalDecision(flags=("Junk",))
        yield self.agent.deliver("m1", self.env, message("marked"), [rcpt("bob@example.com")])
        yield folder.set_flags(list(folder.uids[:1]), ["Work"], 1)
        cur = os.stat(os.path.join(self.inbox, "cur")).st_ino
        carrying = [
            i
            for i, e in log.names_made()
            if e[2] == cur and any(c.islower() for c in md.split_name(e[3])[1])
        ]
        self.assertEqual(len(carrying), 2)  # the marked message and the STORE'd one
        for i in carrying:
            self.assertTrue(log.durable_by(os.path.join(self.inbox, md.KEYWORDS_FILE), i))


class KeywordLockAcrossProcessesTests(unittest.TestCase):
    def test_an_allocation_waits_for_another_process(self) -> None:
        """Another process holding the folder's keyword lock (as a second server process
        would while it allocates) holds this process's allocation back; what it wrote is kept
        and the new keyword takes the next letter."""
        path = tempfile.mkdtemp(prefix="cgtwist-keywords-")
        self.addCleanup(shutil.rmtree, path, True)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.addCleanup(child.wait, WAIT)
        self.addCleanup(child.kill)
        assert child.stdout is not None and child.stdin is not None
        self.assertEqual(child.stdout.readline(), b"held\n")
        asked = threading.Event()
        real_flock = fcntl.flock

        def flock(fd: int, op: int) -> None:
            asked.set()
            real_flock(fd, op)

        self.patch(fcntl, "flock", flock)
        got: list[dict[int, str]] = []
        t = threading.Thread(target=lambda: got.append(md.allocate_keywords(path, ["Mine"])))
        t.start()
        self.assertTrue(asked.wait(WAIT))
        self.assertEqual(got, [])  # still waiting: the other process holds the lock
        child.stdin.write(b"go\n")
        child.stdin.close()
        t.join(WAIT)
        self.assertEqual(got, [{0: "Theirs", 1: "Mine"}])
        self.assertEqual(md.read_keywords(path), {0: "Theirs", 1: "Mine"})
        self.assertEqual(child.wait(WAIT), 0)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = """
import sys
from cgtwist.mailstore import maildir as md
path = sys.argv[1]
with md.lock_keywords(path):
    print("held", flush=True)
    sys.stdin.readline()
    md.write_keywords(path, {**md.read_keywords(path), 0: "Theirs"})
"""
