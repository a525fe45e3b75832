"""Keyword letters (Dovecot's a..z in ``dovecot-keywords``): one allocator for every writer.

IMAP STORE/APPEND/COPY (``Folder``) and LOCAL delivery's rule Mark (``mark_new``) allocate
letters for new keywords in the same file; these tests interleave them, and check that a
message never shows a keyword it was not given."""

from __future__ import annotations

import fcntl
import os
import shutil
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
