"""The IMAP APPEND command (RFC 3501 §6.3.11, MULTIAPPEND RFC 3502, UIDPLUS RFC 4315, BINARY
literal8 RFC 3516 §4.4).

Owns taking messages in from a client: the parsed request (cgtwist.protocols.imap.append) to
one all-or-nothing store in the target mailbox, binary parts re-encoded in a thread first, the
literals' temporary files closed whatever happens, and APPENDUID. Split from
``cgtwist.protocols.imap.mailboxes`` (folders), whose helpers (``_open``, ``_fail``,
``_close_other``, name decoding) it uses; the mailstore writes the files.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.mail import imap4
from twisted.python.failure import Failure

from cgtwist.protocols.imap import append as imap_append
from cgtwist.protocols.imap import binary as imap_binary
from cgtwist.protocols.imap import esearch as imap_esearch
from cgtwist.protocols.imap import parse as imap_parse
from cgtwist.protocols.imap.commands import CommandTable
from cgtwist.protocols.imap.mailboxes import MailboxCommands


def _binary_message(data: Any) -> bytes:
    """(thread) A literal8 APPEND message with its binary parts as base64."""
    if not isinstance(data, bytes):
        data.seek(0)
        data = data.read()
    return imap_binary.binary_to_base64(data)


class AppendCommand(MailboxCommands):
    """APPEND; mixed into CgIMAP4Server before imap4.IMAP4Server."""

    append_commands = CommandTable()

    # -- APPEND (RFC 3501 §6.3.11, MULTIAPPEND RFC 3502, UIDPLUS RFC 4315) -------------------
    def do_APPEND_raw(self, tag: bytes, segments: list[bytes], literals: list[Any]) -> None:
        """Store every message of the command in one mailstore operation: all of them or,
        on any failure, none (RFC 3502 §6.3.11); APPENDUID names the new UIDs in order."""

        def close_all(result: Any = None) -> Any:
            for lit in literals:
                if not isinstance(lit, bytes):
                    lit.close()
            return result

        first = segments[0].split(b" ", 2)
        try:
            req = imap_append.parse([first[2] if len(first) > 2 else b""] + segments[1:], literals)
        except imap_parse.ParseError as e:
            close_all()
            self.sendBadResponse(tag, str(e)[:200].encode())
            return
        try:
            target = self._mailbox_arg(req.mailbox)
        except imap4.IllegalMailboxEncoding:
            close_all()
            self.sendNegativeResponse(tag, b"Illegal mailbox name")
            return

        def got(box: Any, datas: list[Any]) -> Any:
            if box is None:
                self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
                return None
            items = [(data, m.flags, m.date) for data, m in zip(datas, req.messages, strict=True)]
            many = getattr(box, "append_all", None)
            if many is not None:
                d = defer.maybeDeferred(many, items)
            elif len(items) == 1:  # a mailbox without the batch: one message only
                d = defer.maybeDeferred(box.addMessage, *items[0]).addCallback(lambda uid: [uid])
            else:
                raise imap4.MailboxException("[CANNOT] This mailbox takes one message per APPEND")

            def ok(uids: Any) -> None:
                self._close_other(box)
                if uids and all(isinstance(u, int) and u > 0 for u in uids):
                    self.sendPositiveResponse(
                        tag,
                        b"[APPENDUID %d %s] APPEND completed"
                        % (box.getUIDValidity(), imap_esearch.sequence_set(list(uids))),
                    )
                else:
                    self.sendPositiveResponse(tag, b"APPEND completed")

            def failed(f: Failure) -> Failure:
                self._close_other(box)
                return f

            return d.addCallbacks(ok, failed)

        # A literal8 message (RFC 3516 §4.4) may hold binary parts: re-encoded as base64
        # before it is stored, in a thread (the whole message is read and scanned).
        runner = getattr(self.account, "run", None) or defer.maybeDeferred
        prepared = defer.gatherResults(
            [
                runner(_binary_message, m.data) if m.binary else defer.succeed(m.data)
                for m in req.messages
            ],
            consumeErrors=True,
        )
        prepared.addErrback(
            lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f
        )
        d = prepared.addCallback(lambda datas: self._open(target, True).addCallback(got, datas))
        d.addBoth(close_all)
        d.addErrback(self._fail(tag, "APPEND"))

    # APPEND runs from the raw command (CgIMAP4Server._special_command); these entries only
    # tell the state check that APPEND exists (BAD "not valid in this state" before login).
    append_commands.add("auth select", "APPEND", do_APPEND_raw)
