"""IMAP mailbox selection: SELECT and EXAMINE with their response codes, QRESYNC's
resynchronisation, CLOSE, UNSELECT and CHECK.

Owns entering and leaving the selected state (RFC 3501 §6.3.1, §6.3.2, §6.4.1, §6.4.2,
UNSELECT RFC 3691) and what CONDSTORE/QRESYNC (RFC 7162 §3.1.2, §3.2.5) and IMAP4rev2 (RFC
9051 §6.3.2) change about it, as a mixin for CgIMAP4Server. Split from
``cgtwist.protocols.imap.mailboxes``, which keeps the commands about folders (LIST, STATUS,
CREATE, APPEND...) and the helpers both use (name encoding, ``_open``, ``_fail``); the
messages of the selected mailbox are ``cgtwist.protocols.imap.messages``'.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.protocols.imap import condstore as imap_condstore
from cgtwist.protocols.imap import esearch as imap_esearch
from cgtwist.protocols.imap import fetch as imap_fetch
from cgtwist.protocols.imap import streamer as imap_streamer
from cgtwist.protocols.imap import typedimap4
from cgtwist.protocols.imap.arguments import ArgumentParsers
from cgtwist.protocols.imap.commands import CommandTable
from cgtwist.protocols.imap.mailboxes import MailboxCommands


class SelectionCommands(MailboxCommands):
    """Selecting and leaving a mailbox; mixed into CgIMAP4Server before imap4.IMAP4Server."""

    selection_commands = CommandTable()
    _astr = ArgumentParsers.arg_astring

    # -- SELECT / EXAMINE / CLOSE / UNSELECT ---------------------------------------------------
    def _select(
        self,
        tag: bytes,
        name: bytes,
        params: Optional[imap_condstore.SelectParams],
        rw: int,
        cmd: bytes,
    ) -> None:
        params = params or imap_condstore.SelectParams()
        if params.qresync is not None and not self.qresync_on:
            # RFC 7162 §3.2.5: QRESYNC before ENABLE QRESYNC is an error; nothing changes.
            self.sendBadResponse(tag, b"QRESYNC parameter without ENABLE QRESYNC")
            return
        box_name = self._mailbox_arg(name)
        if (self.qresync_on or self.rev2) and self.state == "select":
            # RFC 7162 §3.2.11, RFC 9051 §6.3.2: the client learns where the old mailbox's
            # responses end.
            self.sendPositiveResponse(None, b"[CLOSED] Previous mailbox closed")
        if params.condstore:
            self.enabled.add(b"CONDSTORE")
        self._release_mailbox()
        self._unsolicited.clear()  # updates of the mailbox we leave are moot
        self.state = "auth"  # RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected
        self.search_saved = []  # RFC 5182 §2.1: SELECT and EXAMINE empty ``$``

        def got(box: Any) -> None:
            if box is None:
                self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
                return
            if "\\noselect" in [f.lower() for f in getattr(box, "list_attributes", [])]:
                self.sendNegativeResponse(tag, b"[CANNOT] Mailbox cannot be selected")
                return
            flags = b" ".join(f.encode() for f in box.getFlags())
            self.sendUntaggedResponse(b"FLAGS (%s)" % flags)
            self.sendUntaggedResponse(b"%d EXISTS" % box.getMessageCount())
            if self.rev2:
                # RFC 9051 §6.3.2: a LIST of the mailbox instead of RECENT and UNSEEN.
                self._send_selected_list(box)
            else:
                self.sendUntaggedResponse(b"%d RECENT" % box.getRecentCount())
                first_unseen = getattr(box, "first_unseen", None)
                seq = first_unseen() if first_unseen else None
                if seq:
                    self.sendPositiveResponse(None, b"[UNSEEN %d] First unseen" % seq)
            self.sendPositiveResponse(None, b"[UIDVALIDITY %d] UIDs valid" % box.getUIDValidity())
            self.sendPositiveResponse(None, b"[UIDNEXT %d] Predicted next UID" % box.getUIDNext())
            self._send_highestmodseq(box)  # RFC 7162 §3.1.2.1: on every SELECT/EXAMINE
            writable = box.isWriteable()
            perm = getattr(box, "permanent_flags", None)
            permanent = perm() if (perm and writable) else []
            self.sendPositiveResponse(
                None, b"[PERMANENTFLAGS (%s)] Limited" % b" ".join(f.encode() for f in permanent)
            )
            box.addListener(self)
            self.mbox = box
            self.state = "select"
            done = b"[%s] %s completed" % (b"READ-WRITE" if writable else b"READ-ONLY", cmd)
            if params.qresync is None:
                self.sendPositiveResponse(tag, done)
                return
            d = self._resync(params.qresync)
            d.addCallback(lambda _: self.sendPositiveResponse(tag, done))
            d.addErrback(self._resync_broken)

        self._open(box_name, bool(rw)).addCallback(got).addErrback(self._fail(tag, cmd.decode()))

    def _send_selected_list(self, box: object) -> None:
        """RFC 9051 §6.3.2: SELECT/EXAMINE answer a LIST of the mailbox with its attributes,
        under its name as the server spells it (INBOX in capitals)."""
        name = getattr(box, "name", None)
        lister = getattr(self.account, "listMailboxes", None)
        rows = lister("", name) if isinstance(name, str) and lister is not None else []
        attrs = " ".join(rows[0][1].getFlags()) if rows else ""
        delim = rows[0][1].getHierarchicalDelimiter() if rows else "/"
        self.sendUntaggedResponse(
            b"LIST (%s) %s %s"
            % (
                attrs.encode("ascii"),
                typedimap4.quote(delim.encode()),
                self._mailbox_out(name or ""),
            )
        )

    def _resync(self, q: imap_condstore.Qresync) -> defer.Deferred[None]:
        """QRESYNC's SELECT (RFC 7162 §3.2.5.1): with the client's UIDVALIDITY, the UIDs
        expunged since its MODSEQ (``VANISHED (EARLIER)``, from the tombstones, or every UID
        the mailbox lacks when they do not reach back that far) and a FETCH of each message
        changed since, all before the tagged OK. The FETCH lines, one per message of a large
        mailbox at worst, go through the streamer: paced by the client's reading, a reactor
        turn at a time. Fires when they are written."""
        box = self.mbox
        if q.uidvalidity != box.getUIDValidity():
            return defer.succeed(None)
        present = box.uids
        since = getattr(box, "vanished_since", None)
        gone = since(q.modseq) if since is not None else None
        if gone is not None:
            text = imap_esearch.sequence_set(imap_condstore.uids_in(q.known_uids, gone))
        else:
            text = imap_condstore.range_set(
                imap_condstore.missing(sorted(present), box.getUIDNext(), q.known_uids)
            )
        if text:
            self.sendUntaggedResponse(b"VANISHED (EARLIER) " + text)
        wanted = set(imap_condstore.uids_in(q.known_uids, present)) if q.known_uids else None
        self._streamer = imap_streamer.Streamer(
            self, _changed_since(box, q.modseq, wanted, not self.rev2)
        )
        d = self._streamer.start()

        def written(_: object) -> None:
            self._streamer = None

        return d.addCallback(written)

    def _resync_broken(self, failure: Failure) -> None:
        """The FETCH lines of a QRESYNC SELECT failed midway: the client has half of them, so
        the connection closes (as a FETCH that fails midway does)."""
        self._streamer = None
        self.log.failure(
            "imap: QRESYNC SELECT failed midway; closing {ip}", failure, ip=self.peer_ip
        )
        self.transport.loseConnection()

    _sel = ArgumentParsers.opt_select_params
    selection_commands.add("auth select", "SELECT", _select, _astr, _sel, 1, b"SELECT")
    selection_commands.add("auth select", "EXAMINE", _select, _astr, _sel, 0, b"EXAMINE")

    def do_CLOSE(self, tag: bytes) -> None:
        """CLOSE (RFC 3501 §6.4.2): silent expunge when writable, then leave the mailbox."""
        box = self.mbox
        d = defer.maybeDeferred(box.expunge) if box.isWriteable() else defer.succeed([])
        # RFC 7162 §3.2.11: no responses (VANISHED or EXPUNGE) for CLOSE's own expunges.

        def done(_: Any) -> None:
            self._release_mailbox()
            self._unsolicited.clear()
            self.state = "auth"
            self.sendPositiveResponse(tag, b"CLOSE completed")

        d.addCallback(done).addErrback(self._fail(tag, "CLOSE"))

    selection_commands.add("select", "CLOSE", do_CLOSE)

    def do_UNSELECT(self, tag: bytes) -> None:
        """UNSELECT (RFC 3691): leave the mailbox without expunging."""
        self._release_mailbox()
        self._unsolicited.clear()
        self.state = "auth"
        self.sendPositiveResponse(tag, b"UNSELECT completed")

    selection_commands.add("select", "UNSELECT", do_UNSELECT)

    def do_CHECK(self, tag: bytes) -> None:
        self.sendPositiveResponse(tag, b"CHECK completed")

    selection_commands.add("select", "CHECK", do_CHECK)


def _changed_since(
    box: Any, modseq: int, wanted: Optional[set[int]], recent: bool = True
) -> Iterator[bytes]:
    """The FETCH (UID FLAGS MODSEQ) response of each message of ``box`` changed after
    ``modseq`` (among ``wanted`` UIDs when given), for the streamer; an empty chunk now and
    then over unchanged messages, so a long mailbox still yields the reactor. \\Recent only
    with ``recent`` (not for IMAP4rev2)."""
    skipped = 0
    for seq, msg in box.message_rows():
        m = getattr(msg, "modseq", 0) or 0
        if m > modseq and (wanted is None or msg.getUID() in wanted):
            flags = imap_fetch.flag_words(msg.getFlags(), recent)
            yield b"* %d FETCH (UID %d FLAGS (%s) MODSEQ (%d))\r\n" % (seq, msg.getUID(), flags, m)
        else:
            skipped += 1
            if skipped % 1000 == 0:
                yield b""
