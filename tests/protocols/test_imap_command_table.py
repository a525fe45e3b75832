"""The IMAP command table (cgtwist.protocols.imap.commands) and how CgIMAP4Server looks it up."""

from __future__ import annotations

from twisted.mail import imap4
from twisted.trial import unittest

from cgtwist.protocols.imap.appendcmd import AppendCommand
from cgtwist.protocols.imap.commands import CommandTable
from cgtwist.protocols.imap.login import LoginMixin
from cgtwist.protocols.imap.mailboxes import MailboxCommands
from cgtwist.protocols.imap.messages import MessageCommands
from cgtwist.protocols.imap.searchcmds import SearchCommands
from cgtwist.protocols.imap.selection import SelectionCommands
from cgtwist.protocols.imap.server import CgIMAP4Server
from cgtwist.protocols.imap.sortcmds import SortCommands
from cgtwist.protocols.imap.unsolicited import UnsolicitedResponses
from tests.protocols.test_imap_support import Client, World


class CommandTableTests(unittest.TestCase):
    def test_add_lookup_and_layering(self) -> None:
        """Entries are found per state and case-insensitively; a later table wins."""

        def a() -> None: ...
        def b() -> None: ...

        base = CommandTable()
        base.add("auth select", "list", a, 1)
        top = CommandTable(base)
        top.add("select", "LIST", b)
        self.assertEqual(base.lookup("select", "LIST"), (a, 1))
        self.assertEqual(top.lookup("auth", "List"), (a, 1))
        self.assertEqual(top.lookup("select", "LIST"), (b,))
        self.assertIsNone(top.lookup("unauth", "LIST"))
        with self.assertRaises(ValueError):
            top.add("selected", "LIST", b)

    def test_parts_declare_no_twisted_attributes(self) -> None:
        """No part re-binds Twisted's ``<state>_<COMMAND>`` attributes: their commands are in
        the table, which the server reads first."""
        parts = (
            LoginMixin,
            MailboxCommands,
            SelectionCommands,
            AppendCommand,
            UnsolicitedResponses,
            MessageCommands,
            SearchCommands,
            SortCommands,
            CgIMAP4Server,
        )
        for part in parts:
            own = [
                name
                for name in vars(part)
                if name.split("_", 1)[0] in ("unauth", "auth", "select", "logout")
                and name.split("_", 1)[-1].isupper()
            ]
            self.assertEqual(own, [], part)

    def test_server_uses_the_table_then_twisted(self) -> None:
        """Our LIST, LOGOUT and IDLE are found in their states; CAPABILITY, which we leave to
        Twisted, still is; a command of another state is "not valid in this state"."""
        c = Client(World(), tls="implicit")
        server = c.proto
        server.state = "auth"
        self.assertIs(server.lookupCommand(b"list"), CgIMAP4Server.commands.lookup("auth", "LIST"))
        self.assertIs(server.lookupCommand(b"IDLE"), CgIMAP4Server.commands.lookup("auth", "IDLE"))
        self.assertEqual(server.lookupCommand(b"CAPABILITY"), imap4.IMAP4Server.auth_CAPABILITY)
        self.assertIsNone(server.lookupCommand(b"FETCH"))
        self.assertTrue(server.lookupCommandAnyState(b"FETCH"))
        self.assertFalse(server.lookupCommandAnyState(b"FROB"))
        server.state = "unauth"
        self.assertIn(
            b"a BAD Command not valid in this state", c.send(b"a SORT (DATE) UTF-8 ALL\r\n")
        )
