"""IMAP message-level commands: FETCH streamed with back-pressure, STORE, COPY/MOVE and
EXPUNGE/UID EXPUNGE, over the mailstore's ``MaildirMailbox`` extras.

Owns the selected-state commands as a mixin (RFC 3501 §6.4, RFC 4315 UIDPLUS, RFC 6851 MOVE):
the mailbox supplies ``resolve``, ``expunge_uids``, ``copy_uids`` and ``move_uids`` (what
others changed reaches the client through the view's ``sync``, cgtwist.protocols.imap.server);
the response wire form comes from cgtwist.protocols.imap.fetch. SEARCH is
cgtwist.protocols.imap.searchcmds', SORT and THREAD cgtwist.protocols.imap.sortcmds'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence

from twisted.internet import defer
from twisted.mail import imap4
from twisted.python.failure import Failure

from cgtwist.protocols.imap import binary as imap_binary
from cgtwist.protocols.imap import condstore as imap_condstore
from cgtwist.protocols.imap import esearch as imap_esearch
from cgtwist.protocols.imap import fetch as imap_fetch
from cgtwist.protocols.imap import parse as imap_parse
from cgtwist.protocols.imap import typedimap4
from cgtwist.protocols.imap.arguments import flag_list
from cgtwist.protocols.imap.commands import CommandEntry, CommandTable
from cgtwist.protocols.imap.mailboxes import MailboxCommands
from cgtwist.protocols.imap.streamer import STREAM_BURST, Streamer
from cgtwist.runtime.fastwrite import write_now
from cgtwist.typedtwisted import current_failure

_STORE_MODES = {b"FLAGS": 0, b"+FLAGS": 1, b"-FLAGS": -1}
# SEARCH (like SORT and THREAD) matches in bounded batches per reactor turn: imap_scan.
# FETCH items answered from the index: an expunged message still has them (RFC 2180 §4.1.2).
_INDEX_ITEMS = frozenset(("uid", "flags", "internaldate", "rfc822size", "modseq"))
# FETCH of BODY[<part>] or a multipart's BODYSTRUCTURE reads and parses the whole message:
# above this size that happens in an I/O thread while the response waits.
_FETCH_OFFLOAD = 1 << 20
# A FETCH of at most this many messages and octets, of items rendered whole
# (imap_fetch.renderable), is answered at once, without a Streamer: one burst either way.
_DIRECT_MESSAGES = 64
_DIRECT_OCTETS = STREAM_BURST
# Rendered responses of these items go to the Streamer up to this many in one chunk.
_BATCHED_ITEMS = _INDEX_ITEMS | {"envelope"}
_BATCH = 32


class MessageCommands(MailboxCommands):
    """Message-level commands; mixed into CgIMAP4Server before imap4.IMAP4Server."""

    search_saved: list[int]  # SEARCHRES ``$`` (RFC 5182): UIDs, emptied at each SELECT
    # The last FETCH's items and what they ask for (_query_facts); set by the first FETCH.
    _facts_key: tuple[object, ...] = ()
    _facts: Optional[imap_fetch.QueryFacts] = None
    # The Renderer of those items (_renderer), and for which (UID FETCH or not, IMAP4rev2).
    _render_for: tuple[object, ...] = ()
    _render: Optional[imap_fetch.Renderer] = None
    _astr = MailboxCommands.arg_astring
    message_commands = CommandTable()

    if TYPE_CHECKING:

        def lookupCommand(self, cmd: bytes) -> Optional[CommandEntry]: ...
        def _IMAP4Server__ebDispatch(self, failure: Failure, tag: bytes) -> None: ...
        def hold_output(self, data: bytes) -> None: ...

    # -- EXPUNGE ------------------------------------------------------------------------------
    def do_EXPUNGE(self, tag: bytes) -> None:
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        before = self._uids_now()
        d = defer.maybeDeferred(self.mbox.expunge)
        d.addCallback(self._expunged, tag, b"EXPUNGE completed", before)
        d.addErrback(self._fail(tag, "EXPUNGE"))

    def _expunged(
        self, seqs: list[int], tag: bytes, text: bytes, before: Optional[list[int]]
    ) -> None:
        self._send_expunges(seqs, before)
        self.sendPositiveResponse(tag, self._modseq_code() + text)

    def _modseq_code(self) -> bytes:
        """``[HIGHESTMODSEQ n] `` for the tagged OK of a command that expunged, once
        CONDSTORE is on (RFC 7162 §3.1.10, §3.2.10), else nothing."""
        high = getattr(self.mbox, "highest_modseq", None) if self.condstore_on else None
        return b"" if high is None else b"[HIGHESTMODSEQ %d] " % high

    message_commands.add("select", "EXPUNGE", do_EXPUNGE)

    def _uids_of(self, messages: imap4.MessageSet, uid: bool) -> list[int]:
        resolve = getattr(self.mbox, "resolve", None)
        if resolve is not None:
            return [u for _s, u in resolve(messages, uid)]
        return [m.getUID() for _s, m in self.mbox.fetch(messages, uid)]

    def do_UID_EXPUNGE(self, tag: bytes, messages: imap4.MessageSet) -> None:
        """UID EXPUNGE (RFC 4315 §2.1): only the named \\Deleted messages go."""
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        before = self._uids_now()
        d = defer.maybeDeferred(self.mbox.expunge_uids, self._uids_of(messages, True))
        d.addCallback(self._expunged, tag, b"UID EXPUNGE completed", before)
        d.addErrback(self._fail(tag, "UID EXPUNGE"))

    # -- UID dispatch ---------------------------------------------------------------------------
    def do_UID(self, tag: bytes, command: bytes, line: bytes) -> None:
        command = command.upper()
        # The sequence-set parser reads ``$`` (RFC 5182) as UIDs while a UID command's
        # arguments are parsed (Twisted parses the set before anything can wait).
        self.uid_arguments = True
        try:
            if command == b"EXPUNGE":
                seqset, rest = self.arg_seqset(line)
                if rest:
                    raise imap4.IllegalClientResponse("Too many arguments")
                self.do_UID_EXPUNGE(tag, seqset)
                return
            if command not in (b"COPY", b"FETCH", b"STORE", b"MOVE"):
                raise imap4.IllegalClientResponse("Unknown UID command")
            self._dispatch_now(tag, command, line)
        finally:
            self.uid_arguments = False

    def _dispatch_now(self, tag: bytes, command: bytes, line: bytes) -> None:
        """UID FETCH, STORE, COPY or MOVE as any command is run (``run_entry``): this runs
        inside UID's own handler, so an error of theirs goes to the dispatch errback."""
        entry = self.lookupCommand(command)
        if not entry:
            self.dispatchCommand(tag, command, line, uid=1)  # its usual answers
            return
        self.run_entry(tag, entry, line, 1)

    message_commands.add(
        "select", "UID", do_UID, imap4.IMAP4Server.arg_atom, imap4.IMAP4Server.arg_line
    )

    # -- STORE (RFC 3501 §6.4.6; CONDSTORE's UNCHANGEDSINCE, RFC 7162 §3.1.3) -----------------
    def store_command(
        self,
        tag: bytes,
        messages: imap4.MessageSet,
        unchanged_since: Optional[int],
        mode: bytes,
        flags: list[bytes],
        uid: int = 0,
    ) -> None:
        mode = mode.upper()
        silent = mode.endswith(b".SILENT")
        base = mode[:-7] if silent else mode
        if base not in _STORE_MODES:
            self.sendBadResponse(tag, b"Invalid STORE data item")
            return
        try:
            flags_checked = flag_list(flags)
        except imap4.IllegalClientResponse as e:
            self.sendBadResponse(tag, str(e).encode())
            return
        if not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        box = self.mbox
        if unchanged_since is not None:
            self._enable_condstore()
        condstore = self.condstore_on
        high_before = getattr(box, "highest_modseq", 0) or 0
        refused: set[int] = set()
        if unchanged_since is None:
            d = defer.maybeDeferred(
                box.store, messages, flags_checked, _STORE_MODES[base], uid=bool(uid)
            )
        else:
            d = defer.maybeDeferred(
                box.store,
                messages,
                flags_checked,
                _STORE_MODES[base],
                uid=bool(uid),
                unchanged_since=unchanged_since,
                refused=refused,
            )

        def done(result: dict[int, list[str]]) -> None:
            self._announce_keywords()  # a keyword this STORE created, before any FETCH shows it
            modseq_of = getattr(box, "modseq_of", None) if condstore else None
            for seq, now in sorted(result.items()):
                u = box.getUID(seq)
                modseq = modseq_of(u) if modseq_of is not None else None
                items = []
                if not silent:
                    items.append(b"FLAGS (%s)" % imap_fetch.flag_words(now, not self.rev2))
                if uid:
                    items.append(b"UID %d" % u)
                # RFC 7162 §3.1.3: with CONDSTORE on, MODSEQ goes with every message this
                # STORE changed, .SILENT or not.
                if modseq is not None and (not silent or modseq > high_before):
                    items.append(b"MODSEQ (%d)" % modseq)
                if not silent or (modseq is not None and modseq > high_before):
                    # Held for the tagged reply below: one send for the whole answer.
                    self.hold_output(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items)))
            if refused:
                numbers = (
                    sorted(refused)
                    if uid
                    else sorted(s for s in (box.seq_of(u) for u in refused) if s is not None)
                )
                self.sendPositiveResponse(
                    tag,
                    b"[MODIFIED %s] Conditional STORE failed" % imap_esearch.sequence_set(numbers),
                )
                return
            self.sendPositiveResponse(tag, b"STORE completed")

        d.addCallback(done).addErrback(self._fail(tag, "STORE"))

    message_commands.add(
        "select",
        "STORE",
        store_command,
        MailboxCommands.arg_seqset,
        MailboxCommands.opt_store_modifiers,
        imap4.IMAP4Server.arg_atom,
        MailboxCommands.arg_flaglist,
    )

    # -- COPY / MOVE (RFC 4315 COPYUID, RFC 6851) ------------------------------------------------
    def _transfer(
        self, tag: bytes, messages: imap4.MessageSet, name: bytes, uid: int, move: bool
    ) -> None:
        what = b"MOVE" if move else b"COPY"
        target = self._mailbox_arg(name)  # NO for a name that is not UTF-8 in IMAP4rev2
        if move and not self.mbox.isWriteable():
            self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            return
        uids = self._uids_of(messages, bool(uid))
        before = self._uids_now() if move else None

        def got(dest: Any) -> Any:
            if dest is None:
                self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
                return None
            if move:
                d = defer.maybeDeferred(self.mbox.move_uids, uids, dest)
            else:
                d = defer.maybeDeferred(self.mbox.copy_uids, uids, dest)

            def done(result: tuple[Any, ...]) -> None:
                self._close_other(dest)
                src, new = list(result[0]), list(result[1])
                code = b""
                if src:
                    code = b"[COPYUID %d %s %s] " % (
                        dest.getUIDValidity(),
                        imap_esearch.sequence_set(src),
                        imap_esearch.sequence_set(new),
                    )
                if move:
                    if code:  # RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs
                        self.sendPositiveResponse(None, code + b"Moved")
                    self._send_expunges(list(result[2]), before)
                    self.sendPositiveResponse(tag, self._modseq_code() + what + b" completed")
                else:
                    self.sendPositiveResponse(tag, code + what + b" completed")

            return d.addCallback(done)

        self._open(target, True).addCallback(got).addErrback(self._fail(tag, what.decode()))

    def do_COPY(self, tag: bytes, messages: imap4.MessageSet, name: bytes, uid: int = 0) -> None:
        self._transfer(tag, messages, name, uid, False)

    def do_MOVE(self, tag: bytes, messages: imap4.MessageSet, name: bytes, uid: int = 0) -> None:
        self._transfer(tag, messages, name, uid, True)

    message_commands.add("select", "COPY", do_COPY, MailboxCommands.arg_seqset, _astr)
    message_commands.add("select", "MOVE", do_MOVE, MailboxCommands.arg_seqset, _astr)

    # -- FETCH --------------------------------------------------------------------------------------
    def fetch_command(
        self,
        tag: bytes,
        messages: imap4.MessageSet,
        query: list[Any],
        modifiers: Optional[imap_condstore.FetchModifiers] = None,
        uid: int = 0,
    ) -> None:
        if not query:
            self.sendBadResponse(tag, b"FETCH needs data items")
            return
        box = self.mbox
        changedsince = modifiers.changedsince if modifiers is not None else None
        if modifiers is not None and modifiers.vanished and not (uid and self.qresync_on):
            # RFC 7162 §3.2.6: VANISHED only in UID FETCH, once QRESYNC is enabled.
            self.sendBadResponse(tag, b"VANISHED needs UID FETCH and ENABLE QRESYNC")
            return
        facts = self._query_facts(query)
        has_modseq = "modseq" in facts.types
        if has_modseq or changedsince is not None:
            self._enable_condstore()  # RFC 7162 §3.1: CONDSTORE-enabling
            if not has_modseq:
                query = [*query, imap_condstore.ModseqItem()]  # RFC 7162 §3.1.4.1
                facts = imap_fetch.query_facts(query)
        if modifiers is not None and modifiers.vanished and changedsince is not None:
            self._send_vanished_earlier(messages, changedsince)
        seen: set[int] = set()

        def changed(rows: Iterable[tuple[int, object]]) -> Iterable[tuple[int, object]]:
            if changedsince is None:
                return rows
            return [
                (seq, msg) for seq, msg in rows if (getattr(msg, "modseq", 0) or 0) > changedsince
            ]

        def mark_seen(rows: Any) -> Any:
            rows = list(rows)
            if not (facts.sets_seen and box.isWriteable()):
                return rows
            unseen = [seq for seq, msg in rows if "\\Seen" not in msg.getFlags()]
            if not unseen:
                return rows
            seen.update(unseen)
            ms = typedimap4.message_set([(s, s) for s in unseen])  # one merge, not one per add()
            d = defer.maybeDeferred(box.store, ms, ["\\Seen"], 1, uid=False)
            return d.addCallback(lambda _: list(box.fetch(messages, bool(uid))))

        runner = getattr(self.account, "run", None)
        heavy = runner is not None and facts.parse
        gone: list[int] = []
        unknown_cte: list[int] = []

        binary = not facts.types.isdisjoint(("binary", "binarysize"))
        # The everyday items are rendered whole per message (imap_fetch.render).
        render = self._renderer(query, facts, bool(uid)) if facts.renderable else None
        # Responses of the index's items (and ENVELOPE) are cheap: several go in one chunk.
        batch_max = _BATCH if facts.types <= _BATCHED_ITEMS else 1

        def responses(rows: list[tuple[int, Any]]) -> Iterator[Any]:
            batch: list[bytes] = []
            size = 0
            for seq, msg in rows:
                if render is not None and not (heavy and msg.getSize() > _FETCH_OFFLOAD):
                    try:
                        data = render(seq, msg, seq in seen)
                    except Exception:
                        self.log.failure("imap: cannot fetch message {seq}", seq=seq)
                        continue
                    if data is not None:
                        # As _safe_fetch: a message whose file went (expunged elsewhere) is
                        # not answered with empty text.
                        if getattr(msg, "vanished", False) and len(data) <= imap_fetch.CHUNK:
                            gone.append(seq)
                            continue
                        batch.append(data)
                        size += len(data)
                        if len(batch) >= batch_max or size >= imap_fetch.CHUNK:
                            yield b"".join(batch)
                            batch, size = [], 0
                        continue
                if batch:
                    yield b"".join(batch)
                    batch, size = [], 0
                pre: Optional[dict[Any, Any]] = None
                if heavy and runner is not None and msg.getSize() > _FETCH_OFFLOAD:
                    # Read and parse a large message in a thread; the streamer waits for it.
                    pre = {}
                    yield runner(imap_fetch.precompute, msg, query).addCallback(pre.update)
                elif binary:
                    # A small message (bounded work): decoded first, so an unknown encoding is
                    # known before any of its response is written.
                    pre = imap_fetch.precompute(msg, query)
                if pre and imap_fetch.unknown_cte(pre):
                    self.log.info(
                        "imap: BINARY of message {seq}: unknown transfer encoding", seq=seq
                    )
                    unknown_cte.append(seq)
                    continue
                yield from self._safe_fetch(
                    seq, msg, query, bool(uid), seq in seen, gone, pre, unknown_cte
                )
            if batch:
                yield b"".join(batch)

        def stream(rows: list[tuple[int, Any]]) -> Optional[defer.Deferred[None]]:
            """The Streamer's Deferred, or None for a FETCH small enough to answer at once
            (``_answer_rendered``: no Streamer, the answer held for the tagged reply)."""
            if not facts.types <= _INDEX_ITEMS:
                # Another session expunged these and their files are gone: answer for the rest,
                # then NO (RFC 2180 §4.1.3, RFC 5530 EXPUNGEISSUED); the EXPUNGE follows later.
                kept = []
                for seq, msg in rows:  # one look at each: ``expunged`` asks the folder
                    if getattr(msg, "expunged", False):
                        gone.append(seq)
                    else:
                        kept.append((seq, msg))
                rows = kept
            if (
                render is not None
                and len(rows) <= _DIRECT_MESSAGES
                and (
                    rows[0][1].getSize()
                    if len(rows) == 1
                    else sum(msg.getSize() for _seq, msg in rows)
                )
                <= _DIRECT_OCTETS
            ):
                try:
                    self._answer_rendered(rows, render, seen, gone, query, bool(uid))
                except Exception:
                    return defer.fail()  # as the Streamer's failure: broken() closes
                return None
            self._streamer = Streamer(self, responses(rows), self.hold_output)
            return self._streamer.start()

        def done(_: Any) -> None:
            self._streamer = None
            if unknown_cte:
                self.sendNegativeResponse(
                    tag, b"[UNKNOWN-CTE] Cannot decode the Content-Transfer-Encoding of a part"
                )
            elif gone:
                self.sendNegativeResponse(
                    tag, b"[EXPUNGEISSUED] Some of the requested messages no longer exist"
                )
            else:
                self.sendPositiveResponse(tag, b"FETCH completed")

        def broken(failure: Failure) -> None:
            self._streamer = None
            self.log.failure("imap: FETCH failed midway; closing {ip}", failure, ip=self.peer_ip)
            self.transport.loseConnection()

        def go(rows: Any) -> None:
            if rows is None:
                return
            d = stream(rows)
            if d is None:
                done(None)
            else:
                d.addCallbacks(done, broken)

        # The mailstore answers at once (and most FETCHes set no \Seen): no Deferred until
        # something has to wait.
        try:
            rows = box.fetch(messages, bool(uid))
            # A list first: isinstance of Deferred is an ABC check (Deferred is an Awaitable).
            fetched_later = not isinstance(rows, list) and isinstance(rows, defer.Deferred)
            plain = changedsince is None and not facts.sets_seen and isinstance(rows, list)
            if not fetched_later and not plain:  # plain: nothing to filter or mark
                rows = mark_seen(changed(rows))  # a Deferred only when \Seen is stored
        except Exception:
            self._fail(tag, "FETCH")(current_failure())
            return
        if isinstance(rows, list) or not isinstance(rows, defer.Deferred):
            go(rows)
            return
        if fetched_later:
            rows.addCallback(changed)
            rows.addCallback(mark_seen)
        rows.addErrback(self._fail(tag, "FETCH"))
        rows.addCallback(go)

    def _query_facts(self, query: Sequence[imap_fetch.FetchItem]) -> imap_fetch.QueryFacts:
        """``imap_fetch.query_facts``, kept for the session's last FETCH items (parsed items
        are never changed: the same list of them, or equal ones, has the same facts)."""
        key = tuple(query)
        if self._facts is None or key != self._facts_key:
            self._facts_key, self._facts = key, imap_fetch.query_facts(query)
        return self._facts

    def _renderer(
        self, query: Sequence[imap_fetch.FetchItem], facts: imap_fetch.QueryFacts, uid: bool
    ) -> imap_fetch.Renderer:
        """A Renderer of ``query`` (its items as ``_query_facts`` last saw them), kept for
        the session's next FETCH of the same items: a mail client fetching message after
        message sends the same items each time."""
        key = (facts, uid, self.rev2)
        render = self._render
        if render is None or key != self._render_for or facts is not self._facts:
            render = imap_fetch.Renderer(query, uid, not self.rev2, facts.types)
            if facts is self._facts:
                self._render, self._render_for = render, key
        return render

    def _answer_rendered(
        self,
        rows: Sequence[tuple[int, imap_fetch.RenderedMessage]],
        render: imap_fetch.Renderer,
        seen: set[int],
        gone: list[int],
        query: list[imap_fetch.FetchItem],
        uid: bool,
    ) -> None:
        """A small FETCH's responses (a few messages of the Renderer's items, together at
        most ``_DIRECT_OCTETS``: no BODY[] over ``WHOLE``, nothing for a thread) held for
        the tagged reply, as the Streamer's one burst would be, without a Streamer, its
        Deferred and its turn of the reactor, nor a generator: a mail client's UID FETCH
        of one message. The answers are ``responses``' own: a message that cannot be
        rendered is logged and left out, one whose file went is put in ``gone``; a failure
        midway is raised after what was made goes out, as the Streamer reports it."""
        out: list[bytes] = []
        try:
            for seq, msg in rows:
                try:
                    data = render(seq, msg, seq in seen)
                except Exception:
                    self.log.failure("imap: cannot fetch message {seq}", seq=seq)
                    continue
                if data is None:  # BODY[] over WHOLE: never under _DIRECT_OCTETS
                    out.extend(self._safe_fetch(seq, msg, query, uid, seq in seen, gone))
                    continue
                if getattr(msg, "vanished", False) and len(data) <= imap_fetch.CHUNK:
                    gone.append(seq)
                    continue
                out.append(data)
        except Exception:
            if out:  # what was made goes out before the failure, as the Streamer's would
                write_now(self.transport, b"".join(out))
            raise
        if out:
            self.hold_output(out[0] if len(out) == 1 else b"".join(out))

    def _safe_fetch(
        self,
        seq: int,
        msg: Any,
        query: list[Any],
        uid: bool,
        seen: bool,
        gone: list[int],
        pre: Optional[dict[Any, Any]] = None,
        unknown_cte: Optional[list[int]] = None,
    ) -> Iterator[bytes]:
        """One message's response; an error before any of it is written drops just that message,
        and so does its file vanishing (expunged elsewhere, the index not yet told): that
        message goes into ``gone`` rather than out with empty text."""
        gen = imap_fetch.fetch_response(seq, msg, query, uid, seen, pre, recent=not self.rev2)
        held: list[bytes] = []
        size = 0
        try:
            for chunk in gen:
                held.append(chunk)
                size += len(chunk)
                if size > imap_fetch.CHUNK:
                    break
            else:
                if getattr(msg, "vanished", False):
                    gone.append(seq)
                    return
                yield b"".join(held)
                return
        except imap_binary.UnknownCTE as e:
            # RFC 3516 §4.3: the command fails with NO [UNKNOWN-CTE]; the others are answered.
            self.log.info(
                "imap: BINARY of message {seq}: unknown transfer encoding {cte!r}",
                seq=seq,
                cte=str(e)[:40],
            )
            if unknown_cte is not None:
                unknown_cte.append(seq)
            return
        except Exception:
            self.log.failure("imap: cannot fetch message {seq}", seq=seq)
            return
        yield b"".join(held)
        yield from gen

    message_commands.add(
        "select",
        "FETCH",
        fetch_command,
        MailboxCommands.arg_seqset,
        MailboxCommands.arg_fetchatt,
        MailboxCommands.opt_fetch_modifiers,
    )

    def _send_vanished_earlier(self, messages: imap4.MessageSet, since: int) -> None:
        """``VANISHED (EARLIER)`` for the UIDs of ``messages`` expunged after ``since``
        (UID FETCH ... (CHANGEDSINCE n VANISHED), RFC 7162 §3.2.6)."""
        box = self.mbox
        big = float("inf")
        ranges: list[imap_parse.Range] = [
            (
                None if lo is None or lo == big else int(lo),
                None if hi is None or hi == big else int(hi),
            )
            for lo, hi in messages.ranges
        ]
        gone = box.vanished_since(since) if hasattr(box, "vanished_since") else None
        if gone is not None:
            text = imap_esearch.sequence_set(imap_condstore.uids_in(ranges, gone))
        else:
            present = sorted(box.folder.uids) if hasattr(box, "folder") else sorted(box.uids)
            text = imap_condstore.range_set(
                imap_condstore.missing(present, box.getUIDNext(), ranges)
            )
        if text:
            self.sendUntaggedResponse(b"VANISHED (EARLIER) " + text)

    def _stop_streaming(self) -> None:
        if self._streamer is not None:
            self._streamer.stopProducing()
            self._streamer = None
