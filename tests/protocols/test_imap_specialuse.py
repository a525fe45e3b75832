"""CREATE-SPECIAL-USE (RFC 6154 §5.1): CREATE with USE, what LIST reports from then on, the
attribute following RENAME and going with DELETE, the refusals, and both IMAP revisions."""

from __future__ import annotations

import os
from typing import Any

from twisted.trial import unittest

from cgtwist.mailstore import specialuse
from cgtwist.protocols.imap import createparams
from cgtwist.protocols.imap.parse import ParseError
from tests.protocols.test_imap_support import Client, World, session


def _lists(out: bytes) -> list[bytes]:
    return [x for x in out.split(b"\r\n") if x.startswith(b"* LIST")]


def _ok(c: Client, command: bytes) -> bytes:
    out = c.send(b"T " + command + b"\r\n")
    assert b"T OK" in out, (command, out)
    return out


def _listed(c: Client, command: bytes = b'LIST "" "*"') -> dict[bytes, bytes]:
    """Mailbox name (as on the wire, unquoted) to its attribute list."""
    out: dict[bytes, bytes] = {}
    for row in _lists(_ok(c, command)):
        attrs, _, rest = row[len(b"* LIST (") :].partition(b") ")
        out[rest.split(b" ", 1)[1].strip(b'"')] = attrs
    return out


class ParseTests(unittest.TestCase):
    def test_create_params(self) -> None:
        """RFC 4466 create-params with RFC 6154's USE: attributes as written, an empty list
        allowed; anything else is a syntax error."""
        self.assertEqual(createparams.parse(b"(USE (\\Archive))"), ("\\Archive",))
        self.assertEqual(createparams.parse(b"(use (\\Sent \\junk))"), ("\\Sent", "\\junk"))
        self.assertEqual(createparams.parse(b"(USE ())"), ())
        for bad in (
            b"USE (\\Archive)",
            b"()",
            b"(USE)",
            b"(USE \\Archive)",
            b"(USE (Archive))",
            b"(USE (\\Archive) USE (\\Sent))",
            b"(USE (\\Archive) FOO)",
            b"(FOO (\\Archive))",
            b"(USE (\\Archive  \\Sent))",
            b"(USE ((\\Archive)))",
            b"(USE (\\Archive)) x",
        ):
            self.assertRaises(ParseError, createparams.parse, bad)

    def test_attributes_honoured(self) -> None:
        """The five RFC 6154 attributes of real folders, in RFC spelling; \\All and \\Flagged
        (virtual mailboxes) and unknown ones refused."""
        self.assertEqual(
            specialuse.canonical(["\\archive", "\\SENT", "\\Archive"]), ("\\Archive", "\\Sent")
        )
        for bad in ("\\All", "\\Flagged", "\\Important", "\\Inbox"):
            self.assertRaises(specialuse.UseAttrError, specialuse.canonical, [bad])


class CreateSpecialUseTests(unittest.TestCase):
    def setUp(self) -> None:
        self.world = World()
        self.c = session(self.world, select=False)

    def test_advertised(self) -> None:
        """CREATE-SPECIAL-USE is in the capability list beside SPECIAL-USE."""
        out = self.c.send(b"C1 CAPABILITY\r\n")
        self.assertIn(b" SPECIAL-USE CREATE-SPECIAL-USE ", out)

    def test_create_with_use_is_listed(self) -> None:
        """The folder is created and LIST, LIST (SPECIAL-USE) and LIST RETURN (SPECIAL-USE)
        report its attribute, to this session and to another one of the account; the
        default four keep theirs."""
        _ok(self.c, b"CREATE Archive (USE (\\Archive))")
        self.assertEqual(_listed(self.c)[b"Archive"], b"\\HasNoChildren \\Archive")
        only = _listed(self.c, b'LIST (SPECIAL-USE) "" "*"')
        self.assertEqual(
            only,
            {
                b"Archive": b"\\HasNoChildren \\Archive",
                b"Drafts": b"\\HasNoChildren \\Drafts",
                b"Junk": b"\\HasNoChildren \\Junk",
                b"Sent": b"\\HasNoChildren \\Sent",
                b"Trash": b"\\HasNoChildren \\Trash",
            },
        )
        ret = _listed(self.c, b'LIST "" "A*" RETURN (SPECIAL-USE)')
        self.assertEqual(ret, {b"Archive": b"\\HasNoChildren \\Archive"})
        other = session(self.world, select=False)
        self.assertEqual(_listed(other)[b"Archive"], b"\\HasNoChildren \\Archive")
        self.assertIn(b"T OK", other.send(b"T SELECT Archive\r\n"))

    def test_several_attributes_and_a_literal_name(self) -> None:
        """A folder may take several attributes; the name may be a literal; an empty USE
        list creates a plain folder."""
        out = self.c.send(b"C1 CREATE {4+}\r\nKeep (USE (\\archive \\ARCHIVE))\r\n")
        self.assertIn(b"C1 OK", out)
        _ok(self.c, b"DELETE Junk")
        for taken in (b"\\Archive", b"\\Trash"):  # Keep's, Trash's
            out = self.c.send(b'N1 CREATE "Spam box" (USE (\\Junk ' + taken + b"))\r\n")
            self.assertIn(b"N1 NO [USEATTR]", out)
        self.assertNotIn(b"Spam box", _listed(self.c))
        _ok(self.c, b"DELETE Sent")
        _ok(self.c, b'CREATE "Spam box" (USE (\\Junk \\Sent))')
        _ok(self.c, b"CREATE Plain (USE ())")
        rows = _listed(self.c)
        self.assertEqual(rows[b"Keep"], b"\\HasNoChildren \\Archive")
        self.assertEqual(rows[b"Plain"], b"\\HasNoChildren")
        self.assertEqual(rows[b"Spam box"], b"\\HasNoChildren \\Junk \\Sent")

    def test_refusals_create_nothing(self) -> None:
        """\\All and \\Flagged (virtual mailboxes cgtwist has not), an unknown attribute
        and one another folder holds are NO [USEATTR]; a malformed parameter list is BAD;
        no folder is made by any of them."""
        for command in (
            b"CREATE New (USE (\\All))",
            b"CREATE New (USE (\\Flagged))",
            b"CREATE New (USE (\\Bogus))",
            b"CREATE New (USE (\\Sent))",
            b"CREATE New/Sub (USE (\\Archive \\Drafts))",
        ):
            out = self.c.send(b"N1 " + command + b"\r\n")
            self.assertIn(b"N1 NO [USEATTR] ", out, command)
        for command in (b"CREATE New (FOO)", b"CREATE New (USE)", b"CREATE New USE (\\Sent)"):
            out = self.c.send(b"B1 " + command + b"\r\n")
            self.assertIn(b"B1 BAD ", out, command)
        self.assertEqual(_lists(_ok(self.c, b'LIST "" "New*"')), [])
        path = self.world.realm.accounts["alice@example.com"].path
        self.assertFalse(any(e.startswith(".New") for e in os.listdir(path)))

    def test_rename_carries_delete_drops(self) -> None:
        """RENAME moves the attribute (a sub-folder's too, and a default one's); DELETE
        drops it, so a folder created again under the name has none and the attribute is
        free for another folder."""
        _ok(self.c, b"CREATE Box/Old (USE (\\Archive))")
        _ok(self.c, b"RENAME Box Shelf")
        rows = _listed(self.c)
        self.assertEqual(rows[b"Shelf/Old"], b"\\HasNoChildren \\Archive")
        self.assertNotIn(b"\\Archive", rows[b"Shelf"])
        _ok(self.c, b'RENAME Sent "Sent Items"')
        rows = _listed(self.c)
        self.assertEqual(rows[b"Sent Items"], b"\\HasNoChildren \\Sent")
        self.assertNotIn(b"Sent", rows)
        _ok(self.c, b"DELETE Shelf/Old")
        _ok(self.c, b"CREATE Shelf/Old")
        self.assertEqual(_listed(self.c)[b"Shelf/Old"], b"\\HasNoChildren")
        _ok(self.c, b"CREATE Archives (USE (\\Archive))")
        self.assertEqual(_listed(self.c)[b"Archives"], b"\\HasNoChildren \\Archive")

    def test_kept_across_restart(self) -> None:
        """A new server process (new notifier, new account objects over the same Maildir)
        still reports the attributes given, moved and dropped; the file holding them was
        replaced whole."""
        _ok(self.c, b"CREATE Archive (USE (\\Archive))")
        _ok(self.c, b'RENAME Trash "Deleted Items"')
        _ok(self.c, b"DELETE Junk")
        path = self.world.realm.accounts["alice@example.com"].path
        self.assertFalse(any(e.endswith(".tmp") for e in os.listdir(path)))
        restarted = World()
        restarted.realm.base = self.world.tmp
        c = session(restarted, select=False)
        rows = _listed(c)
        self.assertEqual(rows[b"Archive"], b"\\HasNoChildren \\Archive")
        self.assertEqual(rows[b"Deleted Items"], b"\\HasNoChildren \\Trash")
        # Provisioning at the restart does not make Trash again beside its renamed folder;
        # Junk, deleted, comes back as a default folder with its attribute.
        self.assertNotIn(b"Trash", rows)
        self.assertEqual(rows[b"Junk"], b"\\HasNoChildren \\Junk")

    def test_parent_listed_noselect_has_no_attribute(self) -> None:
        """A special-use folder deleted while it has a sub-folder stays as a \\Noselect
        parent: LIST must not name it \\Sent any more (a client would file sent mail into
        a name it cannot select). It did before (the attribute went by name only)."""
        _ok(self.c, b"CREATE Sent/2025")
        _ok(self.c, b"DELETE Sent")
        rows = _listed(self.c)
        self.assertEqual(rows[b"Sent"], b"\\Noselect \\HasChildren")
        self.assertEqual(_lists(_ok(self.c, b'LIST (SPECIAL-USE) "" "Sent"')), [])

    def test_failed_write_removes_the_folder(self) -> None:
        """When the attributes cannot be written the CREATE fails and the folder it made is
        taken back: no folder without the use the client asked for."""
        real = specialuse.save

        def full(path: str, entries: Any) -> None:
            raise OSError(28, "No space left on device")

        specialuse.save = full  # type: ignore[assignment]
        try:
            out = self.c.send(b"C1 CREATE Archive/2026 (USE (\\Archive))\r\n")
        finally:
            specialuse.save = real  # type: ignore[assignment]
        self.assertIn(b"C1 NO", out)
        self.assertEqual(_lists(_ok(self.c, b'LIST "" "Arch*"')), [])
        self.flushLoggedErrors(OSError)
        _ok(self.c, b"CREATE Archive (USE (\\Archive))")  # the attribute was not kept taken


class RevisionTests(unittest.TestCase):
    def test_utf8_and_modified_utf7_names(self) -> None:
        """An IMAP4rev2 session creates with a UTF-8 name, an IMAP4rev1 one with modified
        UTF-7; each sees both folders with their attributes in its own encoding."""
        w = World()
        rev1 = session(w, select=False)
        rev2 = session(w, select=False)
        self.assertIn(b"* ENABLED IMAP4rev2", rev2.send(b"E1 ENABLE IMAP4rev2\r\n"))
        _ok(rev2, 'CREATE "Archiv/Jänner" (USE (\\Archive))'.encode())
        _ok(rev1, b"DELETE Junk")
        _ok(rev1, b'CREATE "Entw&APw-rfe" (USE (\\Junk))')
        self.assertIn(b"NO [USEATTR]", rev1.send(b'T CREATE "&AOQ-" (USE (\\Archive))\r\n'))
        rows1 = _listed(rev1, b'LIST (SPECIAL-USE) "" "*"')
        self.assertEqual(rows1[b"Archiv/J&AOQ-nner"], b"\\HasNoChildren \\Archive")
        rows2 = _listed(rev2, b'LIST "" "*" RETURN (SPECIAL-USE)')
        self.assertEqual(rows2["Archiv/Jänner".encode()], b"\\HasNoChildren \\Archive")
        self.assertEqual(rows2["Entwürfe".encode()], b"\\HasNoChildren \\Junk")
        _ok(rev2, 'RENAME "Archiv/Jänner" "Archiv/Février"'.encode())
        rows1 = _listed(rev1)
        self.assertEqual(rows1[b"Archiv/F&AOk-vrier"], b"\\HasNoChildren \\Archive")
