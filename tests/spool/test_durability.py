"""The spool under power loss: the order of its durable steps, checked on every crash state.

Each test records the spool's file-system calls (``fsmodel.FsRecorder``) and asserts what must
hold after a power cut at any point: no name of a message is removed before the fsync that
makes its new name durable, no pool name survives beside a ``.msg`` on the same inode, every new
directory is named durably, and a finished message is never delivered again after a restart.
"""

from __future__ import annotations

import os

from cgtwist.spool.spool import Spool
from tests.queue.helpers import SyncClock, SyncPool
from tests.spool.fsmodel import FsRecorder
from tests.spool.test_spool import DATA, SpoolTestBase, envelope


def sync_spool(base: str, incoming: bool = False) -> Spool:
    return Spool(base, SyncClock(), threadpool=SyncPool(), incoming=incoming)  # type: ignore[arg-type]


class DurabilityTests(SpoolTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.incoming = os.path.join(self.qdir, "incoming")
        self.free = os.path.join(self.qdir, "free")
        self.server = sync_spool(self.base)
        self.worker = sync_spool(self.base, incoming=True)

    def test_a_recycled_file_never_keeps_its_pool_name_beside_a_msg(self) -> None:
        """A new message written over a pool file: after its 250, no crash state names the
        inode both in Queue/free/ and as a .msg (the pool name would be handed out again and
        the next message would overwrite this one: "header names another message id")."""
        old = self.successResultOf(self.server.store(envelope(1), DATA))
        self.successResultOf(self.server.remove(old))
        self.assertEqual(os.listdir(self.free), [old])
        rec = FsRecorder(self, [self.qdir, self.incoming, self.free])
        token = rec.token(os.path.join(self.free, old))
        new = self.successResultOf(self.server.store(envelope(1), DATA))
        self.assertEqual(rec.token(os.path.join(self.qdir, new + ".msg")), token)  # reused
        for i in range(-1, len(rec.ops)):
            for state in rec.crash_states(i):
                pool = [n for n, t in state[self.free].items() if t == token]
                msgs = [n for n, t in state[self.qdir].items() if t == token and n.endswith(".msg")]
                self.assertFalse(pool and msgs, f"after {rec.ops[i] if i >= 0 else 'start'}: "
                                 f"pool name {pool} and {msgs} on one inode")

    def test_recovery_drops_a_pool_name_that_shares_a_messages_inode(self) -> None:
        """After a cut that kept both names of an inode (e2fsck: "ref count is 1, should be
        2"), recovery deletes the pool name, so the next message does not overwrite the
        spooled one, which is delivered intact."""
        kept = self.successResultOf(self.server.store(envelope(1), DATA))
        os.link(os.path.join(self.qdir, kept + ".msg"), os.path.join(self.free, "0000000000000001-1-1"))
        restarted = sync_spool(self.base)
        self.assertEqual(self.successResultOf(restarted.recover()), [kept])
        self.successResultOf(restarted.store(envelope(2), b"Subject: other\r\n\r\nother\r\n"))
        env, data = self.successResultOf(restarted.load(kept))
        self.assertEqual((env, data), (envelope(1), DATA))
        self.assertEqual(os.listdir(os.path.join(self.qdir, "corrupt")), [])
        self.assertEqual(os.listdir(self.free), [])

    def test_every_new_spool_directory_is_named_durably(self) -> None:
        """A new base directory: each directory the spool creates (Queue/, corrupt/,
        incoming/, free/) is fsynced in its parent before the spool is used."""
        fresh = os.path.join(self.base, "fresh")
        os.mkdir(fresh)
        rec = FsRecorder(self, [])
        sync_spool(fresh)
        made = [op[1] for op in rec.ops if op[0] == "mkdir"]
        self.assertEqual(sorted(os.path.relpath(d, fresh) for d in made),
                         ["Queue", "Queue/corrupt", "Queue/free", "Queue/incoming"])
        for d in made:
            rec.index("fsync", os.path.dirname(d), start=rec.index("mkdir", d))
