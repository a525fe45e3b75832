"""IMAP unsolicited responses: what changed in the selected mailbox, told at the right time.

Owns, as a mixin for CgIMAP4Server, rendering a mailbox view's updates (EXPUNGE or, with
QRESYNC, VANISHED; FLAGS and PERMANENTFLAGS; EXISTS and RECENT; FETCH FLAGS with MODSEQ under
CONDSTORE: RFC 7162 §3.1, §3.2.10) and other untagged lines queued for the client, sent
before a command's tagged reply and never an EXPUNGE during FETCH, STORE or SEARCH (RFC 3501
§7.4.1), the updating searches' lines (cgtwist.protocols.imap.updates) before them, and IDLE
(RFC 2177), during which they go out at once. Split from ``cgtwist.protocols.imap.server``,
which keeps the connection and the command loop and calls ``_flush_unsolicited`` before
each tagged reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from cgtwist.protocols.imap import condstore as imap_condstore
from cgtwist.protocols.imap import fetch as imap_fetch
from cgtwist.protocols.imap import updates as imap_updates
from cgtwist.protocols.imap.commands import CommandTable
from cgtwist.protocols.imap.mailboxes import MailboxCommands

# RFC 3501 §7.4.1: no EXPUNGE response while these run (their UID forms may have one).
_HOLD_EXPUNGE = frozenset((b"FETCH", b"STORE", b"SEARCH", b"SORT", b"THREAD"))


class UnsolicitedResponses(MailboxCommands):
    """Unsolicited responses and IDLE; mixed into CgIMAP4Server before imap4.IMAP4Server."""

    idle_commands = CommandTable()

    # Provided by the protocol class.
    _busy_tag: Optional[bytes]
    _busy_name: bytes
    context_updates: imap_updates.ContextUpdates

    if TYPE_CHECKING:

        def sendLine(self, line: bytes) -> None: ...
        def sendContinuationRequest(self, msg: Optional[bytes] = b"") -> None: ...
        def _pause(self) -> None: ...
        def _resume(self) -> None: ...

    def unsolicited(self, line: bytes) -> None:
        """Queue an unsolicited response (not the mailbox view's: that is synced); sent at once
        during IDLE, else before the next tagged reply."""
        self._unsolicited.append(line)
        if self._idle_tag is not None:
            self._flush_unsolicited()

    def _flush_unsolicited(self, start: bool = True) -> bool:
        """Tell the client what changed: the selected mailbox's view first, then the updating
        searches' results found so far, then the rest. With ``start``, begin matching the
        messages changed since the updating searches were last brought up to date; True
        while that runs (``context_updates.when_ready``; during IDLE its lines follow)."""
        if self.state == "logout":  # RFC 3501 §7.1.5: nothing after BYE
            self._unsolicited.clear()
            return False
        matching = False
        if self.state == "select" and self.mbox is not None:
            sync = getattr(self.mbox, "sync", None)
            if sync is not None:
                allowed = self._busy_name not in _HOLD_EXPUNGE
                before = (
                    self._uids_now()
                    if allowed and getattr(self.mbox, "pending_expunges", False)
                    else None
                )
                up = sync(allowed)
                if up or before is not None:  # most commands are owed nothing
                    self._send_updates(up, before)
                if self.search_contexts:  # updating searches' lines exist only with them
                    for line in self.context_updates.lines(self.mbox):
                        self.sendLine(b"* " + line)
                if start and self.search_contexts:
                    matching = self.context_updates.start(self.mbox)
        while self._unsolicited:
            self.sendLine(b"* " + self._unsolicited.pop(0))
        if matching and self._idle_tag is not None:
            self.context_updates.when_ready().addCallback(lambda _: self._idle_results())
        return matching

    def _idle_results(self) -> None:
        """During IDLE, the updating searches' lines as soon as they are matched (RFC 2177),
        and a match of what changed meanwhile (it ends once nothing has)."""
        if self._idle_tag is not None and not self._closed:
            self._flush_unsolicited()

    def _send_updates(self, up: Any, before: Optional[list[int]] = None) -> None:
        """Render a view's ``Updates`` (cgtwist.mailstore.mailbox) in their order; with
        QRESYNC on, expunges as one VANISHED of their UIDs (``before``: the view's UIDs
        before them, RFC 7162 §3.2.10), and with CONDSTORE on each FETCH carries MODSEQ
        (RFC 7162 §3.1: every unsolicited FETCH) and, with QRESYNC, the UID."""
        if before is not None:
            self._contexts_expunged(up.expunged, before)
        if self.qresync_on and before is not None:
            if up.expunged:
                self.sendLine(
                    b"* " + imap_condstore.vanished([before[s - 1] for s in up.expunged], False)
                )
        else:
            for seq in up.expunged:
                self.sendLine(b"* %d EXPUNGE" % seq)
        if up.flags is not None:
            self._send_flags(up.flags, up.permanent)
        if up.exists is not None:
            self.sendLine(b"* %d EXISTS" % up.exists)
            if up.recent is not None and not self.rev2:  # RFC 9051: no RECENT response
                self.sendLine(b"* %d RECENT" % up.recent)
        modseq_of = getattr(self.mbox, "modseq_of", None) if self.condstore_on else None
        for seq, flags in up.fetch_flags:
            words = imap_fetch.flag_words(flags, not self.rev2)
            extra = b""
            if modseq_of is not None:
                u = self.mbox.getUID(seq)
                if self.qresync_on:
                    extra += b" UID %d" % u
                extra += b" MODSEQ (%d)" % (modseq_of(u) or 0)
            self.sendLine(b"* %d FETCH (FLAGS (%s)%s)" % (seq, words, extra))

    def _send_flags(self, flags: list[str], permanent: Optional[list[str]]) -> None:
        self.sendLine(b"* FLAGS (%s)" % b" ".join(f.encode() for f in flags))
        if permanent is not None:
            self.sendLine(
                b"* OK [PERMANENTFLAGS (%s)] Limited" % b" ".join(f.encode() for f in permanent)
            )

    def _announce_keywords(self) -> None:
        """A new FLAGS list if keywords were added since the client's last one."""
        announce = getattr(self.mbox, "announce_keywords", None) if self.state == "select" else None
        kw = announce() if announce is not None else None
        if kw is not None:
            self._send_flags(*kw)

    # -- IDLE (RFC 2177) ----------------------------------------------------------------------
    def do_IDLE(self, tag: bytes) -> None:
        self._idle_tag = tag
        self.sendContinuationRequest(b"idling")
        self._flush_unsolicited()
        self._resume()

    idle_commands.add("auth select", "IDLE", do_IDLE)

    def _idle_line(self, line: bytes) -> None:
        tag, self._idle_tag = self._idle_tag, None
        assert tag is not None
        self._busy_tag = tag
        self._pause()
        if line.strip().upper() == b"DONE":
            self.sendPositiveResponse(tag, b"IDLE terminated")
        else:
            self.sendBadResponse(tag, b"Expected DONE")

    # The mailbox view's listener call: something changed. Outside IDLE the client hears of it
    # before its next tagged reply; during IDLE at once (RFC 2177).
    def viewChanged(self) -> None:
        if self._idle_tag is not None:
            self._flush_unsolicited()

    def modeChanged(self, writeable: bool) -> None:
        self.unsolicited(b"OK [READ-WRITE]" if writeable else b"OK [READ-ONLY]")
