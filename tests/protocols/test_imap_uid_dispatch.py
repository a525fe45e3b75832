"""UID FETCH, STORE, COPY and MOVE parse their arguments without Twisted's Deferred per
argument and answer exactly as that chain did: the same data, the same BAD for bad syntax,
a literal argument read from the queue, NO [SERVERBUG] when the handler fails."""

from __future__ import annotations

import re
from typing import Any

from twisted.trial import unittest

from cgtwist.protocols.imap import fetch as imap_fetch
from cgtwist.protocols.imap import messages as imap_messages
from tests.protocols.test_imap_support import MESSAGE, MULTIPART, World, session

COMMANDS = [
    b"a UID FETCH 1:* (FLAGS RFC822.SIZE)\r\n",
    b"b UID FETCH 2 (BODY.PEEK[1] BODY.PEEK[HEADER.FIELDS (Subject)])\r\n",
    b"c UID FETCH 1 (FLAGS) (CHANGEDSINCE 1)\r\n",
    b"d UID FETCH x FLAGS\r\n",
    b"e UID FETCH 1\r\n",
    b"f UID FETCH 1 (NONSENSE)\r\n",
    b"g UID STORE 1 +FLAGS (\\Flagged)\r\n",
    b"h UID STORE 1 -FLAGS.SILENT (\\Flagged) junk\r\n",
    b"i UID STORE 1 BADMODE (\\Seen)\r\n",
    b"j UID STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)\r\n",
    b"k UID STORE 1:2 +FLAGS (\\Seen\r\n",
    b"l UID COPY 1 {5}\r\nTrash\r\n",
    b"m UID COPY 1 Nowhere\r\n",
    b"n UID MOVE 2 Trash\r\n",
    b"o UID COPY 1\r\n",
    b"p UID EXPUNGE 1\r\n",
]


class UidDispatchTests(unittest.TestCase):
    def replies(self) -> list[bytes]:
        c = session(World(), MESSAGE, MULTIPART)
        c.send(b"t CREATE Trash\r\n")
        # Trash's UIDVALIDITY comes from the clock: the same in both runs once masked.
        return [re.sub(rb"COPYUID \d+", b"COPYUID v", c.send(cmd)) for cmd in COMMANDS]

    def test_same_replies_as_twisteds_chain(self) -> None:
        """Every reply, the errors' included, is what Twisted's dispatchCommand gives."""
        mine = self.replies()

        def through_twisted(self: Any, tag: bytes, command: bytes, line: bytes) -> None:
            self.dispatchCommand(tag, command, line, uid=1)

        self.patch(imap_messages.MessageCommands, "_dispatch_now", through_twisted)
        self.assertEqual(mine, self.replies())
        self.assertIn(b"* 1 FETCH (UID 1 FLAGS", mine[0])
        self.assertIn(b"d BAD", mine[3])
        self.assertIn(b"h BAD Illegal syntax", mine[7])
        self.assertIn(b"l OK [COPYUID", mine[11])
        self.assertIn(b"m NO [TRYCREATE]", mine[12])

    def test_handler_failure_is_serverbug(self) -> None:
        """A bug in the handler answers NO [SERVERBUG] (logged), never a traceback or
        silence, and the session goes on."""

        def broken(*args: Any, **kw: Any) -> bool:
            raise ValueError("bug")

        self.patch(imap_fetch, "needs_parse", broken)  # called in the handler itself
        c = session(World(), MESSAGE)
        out = c.send(b"a UID FETCH 1 FLAGS\r\n")
        self.assertIn(b"a NO [SERVERBUG]", out)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertIn(b"b OK", c.send(b"b NOOP\r\n"))
