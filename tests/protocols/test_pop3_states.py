"""POP3 commands by state (RFC 1939 §3): the AUTHORIZATION commands are the server's, the
TRANSACTION ones the logged-in session's Maildrop (cgtwist.protocols.pop3.maildrop)."""

from __future__ import annotations

from cgtwist.protocols.pop3.maildrop import Maildrop
from tests.protocols.test_pop3 import POP3TestBase


class StateTests(POP3TestBase):
    plain_ok = True

    def test_commands_answer_in_their_state_only(self) -> None:
        """A command of the other state is "not valid in this state", an unknown one
        "Unknown command", before and after login; CAPA works in both."""
        proto, tr = self.connect()
        for cmd in sorted(Maildrop.COMMANDS - {"QUIT", "NOOP"}):
            self.assertEqual(
                self.send(proto, tr, cmd.encode() + b" 1"),
                b"-ERR Command not valid in this state\r\n",
                cmd,
            )
        self.assertEqual(self.send(proto, tr, b"FROB"), b"-ERR Unknown command\r\n")
        self.assertTrue(self.send(proto, tr, b"CAPA").startswith(b"+OK Capability list"))
        self.login(proto, tr)
        self.assertIsNotNone(proto.maildrop)
        for cmd in (b"USER alice", b"PASS x", b"STLS", b"AUTH PLAIN", b"APOP a b"):
            self.assertEqual(
                self.send(proto, tr, cmd), b"-ERR Command not valid in this state\r\n", cmd
            )
        self.assertEqual(self.send(proto, tr, b"FROB"), b"-ERR Unknown command\r\n")
        self.assertTrue(self.send(proto, tr, b"CAPA").startswith(b"+OK Capability list"))
        self.assertTrue(self.send(proto, tr, b"STAT").startswith(b"+OK 2 "))
        self.assertTrue(self.send(proto, tr, b"QUIT").startswith(b"+OK Logging out"))
        self.assertEqual(proto.state, "UPDATE")
        self.assertTrue(tr.disconnecting)

    def test_handler_lookup(self) -> None:
        """The maildrop serves exactly its commands."""
        proto, tr = self.connect()
        self.login(proto, tr)
        maildrop = proto.maildrop
        assert maildrop is not None
        for cmd in Maildrop.COMMANDS:
            self.assertTrue(callable(maildrop.handler(cmd)), cmd)
        for cmd in ("CAPA", "USER", "handler", "__INIT__", ""):
            self.assertIsNone(maildrop.handler(cmd))
