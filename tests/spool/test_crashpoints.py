"""Real-process tests of the crash points: SIGKILL at each step of the spool commit, then
recovery shows exactly what a client that got (or did not get) its 250 must find."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

from twisted.trial import unittest

from cgtwist import crashpoint
from tests.crashchild import run

STORE = r"""
import sys
from twisted.internet import reactor
from cgtwist.spool.spool import Spool
from cgtwist.types import Envelope, Recipient
spool = Spool(sys.argv[1], reactor)
def go():
    d = spool.store(Envelope("a@example.org", [Recipient("b@example.com")]), b"Subject: x\r\n\r\nhi\r\n")
    d.addCallback(lambda msg_id: print("STORED", msg_id, flush=True))
    d.addBoth(lambda _: reactor.stop())
reactor.callWhenRunning(go)
reactor.run()
"""


class CrashpointTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="cgtwist-crash-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.qdir = os.path.join(self.base, "Queue")

    def names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.qdir) if "." in n)

    def recover(self) -> list[str]:
        from cgtwist.spool.spool import Spool
        from tests.queue.helpers import SyncClock, SyncPool

        spool = Spool(self.base, SyncClock(), threadpool=SyncPool())  # type: ignore[arg-type]
        return self.successResultOf(spool.recover())

    def test_unset_is_harmless(self) -> None:
        """Without CGTWIST_CRASHPOINT the crash points do nothing and the message is stored."""
        p = run(STORE, self.base, "")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("STORED", p.stdout)
        self.assertEqual(len(self.recover()), 1)

    def test_killed_before_fsync_or_rename(self) -> None:
        """Killed before the file is complete and renamed: no 250 was given, and after restart
        the message does not exist (its .tmp is removed)."""
        for point in (crashpoint.SPOOL_BEFORE_FSYNC, crashpoint.SPOOL_BEFORE_RENAME):
            p = run(STORE, self.base, point)
            self.assertEqual(p.returncode, -signal.SIGKILL, point)
            self.assertNotIn("STORED", p.stdout)
            self.assertEqual([n[-4:] for n in self.names()], [".tmp"], point)
            self.assertEqual(self.recover(), [])
            self.assertEqual(self.names(), [])

    def test_killed_after_rename(self) -> None:
        """Killed after the rename but before the 250: the message is kept and delivered after
        restart (the client may send it again: at-least-once)."""
        p = run(STORE, self.base, crashpoint.SPOOL_AFTER_RENAME)
        self.assertEqual(p.returncode, -signal.SIGKILL)
        self.assertNotIn("STORED", p.stdout)
        ids = self.recover()
        self.assertEqual(len(ids), 1)
        self.assertEqual(self.names(), [ids[0] + ".msg"])


STORE_IN_PLACE = r"""
import sys
from twisted.internet import reactor
from cgtwist.spool.spool import Spool
from cgtwist.types import Envelope, Recipient
spool = Spool(sys.argv[1], reactor, incoming=True)
spool._recycler.refill()  # the reserve an SMTP worker fills once open (Spool.reserve)
def go():
    d = spool.store(Envelope("a@example.org", [Recipient("b@example.com")]), b"Subject: x\r\n\r\nhi\r\n")
    d.addCallback(lambda msg_id: print("STORED", msg_id, flush=True))
    d.addBoth(lambda _: reactor.stop())
reactor.callWhenRunning(go)
reactor.run()
"""


class InPlaceCrashpointTests(unittest.TestCase):
    """An SMTP worker's commit in place: the message is whole in its ``.rsv`` file before
    the fsync, so a process killed between its last write and the fsync's return leaves a
    message that recovery delivers although no 250 was given (RFC 5321's at-least-once:
    the client, which saw no reply, may send it again; at most two copies, as for a kill
    after the commit). Only a power cut there can lose it, and then nobody was told 250."""

    setUp_base = CrashpointTests.setUp
    names = CrashpointTests.names
    recover = CrashpointTests.recover

    def setUp(self) -> None:
        self.setUp_base()
        free = os.path.join(self.qdir, "free")
        os.makedirs(free)
        for i in range(2):
            with open(os.path.join(free, f"{i + 1:016d}-1-{i + 1}"), "wb") as f:
                f.write(b"an old message's bytes")

    def incoming(self) -> list[str]:
        return sorted(os.listdir(os.path.join(self.qdir, "incoming")))

    def test_killed_before_the_fsync_of_a_commit_in_place(self) -> None:
        p = run(STORE_IN_PLACE, self.base, crashpoint.SPOOL_BEFORE_FSYNC)
        self.assertEqual(p.returncode, -signal.SIGKILL)
        self.assertNotIn("STORED", p.stdout)
        self.assertEqual([n[-4:] for n in self.incoming()], [".rsv", ".rsv"])
        ids = self.recover()
        self.assertEqual(len(ids), 1)  # the whole one; the unused reserve is deleted
        self.assertEqual(self.incoming(), [])
        self.assertEqual(self.names(), [ids[0] + ".msg"])

    def test_killed_after_a_commit_in_place(self) -> None:
        p = run(STORE_IN_PLACE, self.base, crashpoint.SPOOL_AFTER_RENAME)
        self.assertEqual(p.returncode, -signal.SIGKILL)
        self.assertNotIn("STORED", p.stdout)
        ids = self.recover()
        self.assertEqual(len(ids), 1)
        self.assertEqual(self.names(), [ids[0] + ".msg"])
