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
from tests.spool.test_spool import SpoolTestBase


def sync_spool(base: str, incoming: bool = False) -> Spool:
    return Spool(base, SyncClock(), threadpool=SyncPool(), incoming=incoming)  # type: ignore[arg-type]


class DurabilityTests(SpoolTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.incoming = os.path.join(self.qdir, "incoming")
        self.free = os.path.join(self.qdir, "free")
        self.server = sync_spool(self.base)
        self.worker = sync_spool(self.base, incoming=True)

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
