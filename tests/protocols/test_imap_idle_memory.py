"""What an idling IMAP session holds: sessions on a large folder share its lists."""

from __future__ import annotations

import gc
import os
import tracemalloc

from twisted.trial import unittest

from tests.protocols.test_imap_support import MESSAGE, Client, World

USER = "alice@example.com"


def drop_into_new(world: World, n: int) -> None:
    """A message in the INBOX's new/, as an MDA writes it."""
    md = world.realm.account(USER).path
    name = f"1700000000.idlemem{n}.test"
    with open(os.path.join(md, "tmp", name), "wb") as f:
        f.write(MESSAGE)
    os.rename(os.path.join(md, "tmp", name), os.path.join(md, "new", name))


class IdleSessionMemoryTests(unittest.TestCase):
    MESSAGES = 5000
    SESSIONS = 20

    def test_idling_sessions_share_the_folders_uid_list(self) -> None:
        """Sessions idling on a 5,000-message INBOX hold a few kB each, not each a copy of
        the folder's UID list (40 kB at 5,000 messages, 80 kB at 10,000: 10,000 IDLE
        connections would need gigabytes), and they still do after a delivery was pushed
        to them and after another session's EXPUNGE reached them."""
        world = World({"auth": {"max_userip_connections": 0}})
        for i in range(self.MESSAGES):
            drop_into_new(world, i)
        worker = Client(world)
        worker.login()
        worker.select()
        self.assertIn(b"S OK", worker.send(b"S STORE 1 +FLAGS.SILENT (\\Deleted)\r\n"))
        gc.collect()
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        base = tracemalloc.get_traced_memory()[0]
        idlers = []
        for _ in range(self.SESSIONS):
            c = Client(world)
            c.login()
            self.assertIn(b"%d EXISTS" % self.MESSAGES, c.select())
            self.assertTrue(c.send(b"I IDLE\r\n").startswith(b"+"))
            idlers.append(c)
        drop_into_new(world, self.MESSAGES)
        world.notifier.mailbox_changed(USER, "INBOX")
        for c in idlers:
            self.assertIn(b"* %d EXISTS" % (self.MESSAGES + 1), c.take())
        self.assertIn(b"E OK", worker.send(b"E EXPUNGE\r\n"))
        for c in idlers:
            self.assertIn(b"* 1 EXPUNGE", c.take())
        gc.collect()
        per_session = (tracemalloc.get_traced_memory()[0] - base) / self.SESSIONS
        self.assertLess(per_session, 20_000)
        for c in idlers:
            self.assertIn(b"I OK", c.send(b"DONE\r\n"))
            self.assertIn(b"F OK", c.send(b"F FETCH %d UID\r\n" % self.MESSAGES))
