"""Every Maildir writer makes its new names durable before the operation is acknowledged.

Checked with a recording fake of the os calls (tests/mailstore/oslog.py): what a power cut at
the moment of the acknowledgement would keep. Issue 21: the new/ -> cur/ move at SELECT, APPEND,
COPY, MOVE, flag renames in cur/, EXPUNGE and the uidlist, folder CREATE/RENAME/DELETE.
"""

from __future__ import annotations

import os

from cgtwist.mailstore import uidlist
from tests.mailstore.oslog import OsLog
from tests.mailstore.test_mailstore import StoreTestBase, deliver, msg


class SelectMoveTests(StoreTestBase):
    def test_move_to_cur_durable_before_new_name_goes(self) -> None:
        """A read-write SELECT moves new mail into cur/: each message's cur/ name is durable
        before its new/ name is removed, and the removals are durable before SELECT is
        answered, with one fsync of cur/ and one of new/ for the whole batch (issue 21 item 6:
        10 messages durable in new/ ended in lost+found after a SELECT and a power cut)."""
        for i in range(10):
            deliver(self.md, msg(f"m{i}"))
        log = OsLog(self)
        box = self.select()
        log.mark("selected")
        self.assertEqual(box.getMessageCount(), 10)
        self.assertEqual(os.listdir(os.path.join(self.md, "new")), [])
        end = log.at("selected")
        new_ino = os.stat(os.path.join(self.md, "new")).st_ino
        cur_ino = os.stat(os.path.join(self.md, "cur")).st_ino
        gone = [(i, e) for i, e in enumerate(log.events) if e[0] == "unname" and e[2] == new_ino]
        self.assertEqual(len(gone), 10)
        for name in os.listdir(os.path.join(self.md, "cur")):
            made = log.last_name(os.path.join(self.md, "cur", name))
            ino = log.events[made][4]
            removed = next(i for i, e in gone if e[4] == ino)
            self.assertTrue(any(e == ("fsync", "dir", cur_ino) for e in log.events[made:removed]),
                            f"{name} left new/ before its cur/ name was durable")
        last_removal = max(i for i, _ in gone)
        self.assertIn(("fsync", "dir", new_ino), log.events[last_removal:end])
        syncs = [e for e in log.events[:end] if e[0] == "fsync" and e[2] in (new_ino, cur_ino)]
        self.assertEqual(len(syncs), 2)

    def test_move_cut_short_resumes(self) -> None:
        """After a cut between the link into cur/ and the unlink from new/, the next SELECT
        finds one message (not two, not a new UID) and removes the leftover new/ name."""
        name = deliver(self.md, msg("x"))
        box = self.select()
        uid = box.getUID(1)
        box.close()
        (cur,) = os.listdir(os.path.join(self.md, "cur"))
        os.link(os.path.join(self.md, "cur", cur), os.path.join(self.md, "new", name))
        box = self.select(account=self.reopen())
        self.assertEqual((box.getMessageCount(), box.getUID(1)), (1, uid))
        self.assertEqual(os.listdir(os.path.join(self.md, "new")), [])
        self.assertEqual(os.listdir(os.path.join(self.md, "cur")), [cur])

    def test_other_file_with_same_key_left_alone(self) -> None:
        """A different file in new/ under the key of one in cur/ is never linked over it nor
        removed (maildir names are unique; this is another program's mistake)."""
        name = deliver(self.md, msg("x"))
        self.select().close()
        with open(os.path.join(self.md, "new", name), "wb") as f:
            f.write(msg("other"))
        box = self.select(account=self.reopen())
        self.assertEqual(box.getMessageCount(), 1)
        self.assertEqual(os.listdir(os.path.join(self.md, "new")), [name])

    def test_uidlist_durable_before_uids_reach_client(self) -> None:
        """The uidlist naming the moved messages' UIDs is durable when SELECT is answered."""
        deliver(self.md, msg("x"))
        log = OsLog(self)
        self.select()
        log.mark("selected")
        self.assertTrue(log.durable_by(os.path.join(self.md, uidlist.UIDLIST_FILE), log.at("selected")))
