"""A message of new/ that is already in cur/ under its key (a move another process cut short)
stays one message when a read-write session moves new/ into cur/."""

from __future__ import annotations

import os

from tests.mailstore.test_mailstore import StoreTestBase, deliver, msg


class MoveCutShortTests(StoreTestBase):
    def _names(self, sub: str) -> list[str]:
        return sorted(os.listdir(os.path.join(self.md, sub)))

    def test_link_in_cur_appeared_since_the_last_look(self) -> None:
        """The folder knows the message in new/ (only EXAMINEd so far); another program
        linked it into cur/ and stopped before removing its new/ name. The move keeps the
        one file under its cur/ name, with the UID it had."""
        fname = deliver(self.md, msg("one"))
        box = self.select(rw=False)
        (uid,) = self.uids(box)
        os.link(os.path.join(self.md, "new", fname), os.path.join(self.md, "cur", fname + ":2,"))
        rw = self.select()
        self.assertEqual(self.uids(rw), [uid])
        self.assertEqual(self._names("new"), [])
        self.assertEqual(self._names("cur"), [fname + ":2,"])

    def test_known_message_of_cur_linked_back_into_new(self) -> None:
        """A known message of cur/ whose file shows up in new/ again under its key (the same
        file) is not a new message: its new/ name goes and it keeps its flags and UID."""
        deliver(self.md, msg("one"))
        box = self.select()
        (uid,) = self.uids(box)
        (cur,) = self._names("cur")
        key = cur.split(":", 1)[0]
        os.link(os.path.join(self.md, "cur", cur), os.path.join(self.md, "new", key))
        other = self.select()
        self.assertEqual(self.uids(other), [uid])
        self.assertEqual(self._names("new"), [])
        self.assertEqual(self._names("cur"), [cur])
