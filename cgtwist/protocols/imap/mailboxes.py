"""IMAP mailbox-level commands: what Twisted's IMAP4Server lacks or gets wrong about folders.

Owns the authenticated-state commands about folders as a mixin for CgIMAP4Server: LIST with
CHILDREN and SPECIAL-USE attributes, LSUB, STATUS, CREATE/DELETE/RENAME/(UN)SUBSCRIBE through
the account, ID, ENABLE and NAMESPACE, and what ENABLE IMAP4rev2 changes about them (``rev2``:
UTF-8 names, RFC 9051); and the helpers every command part uses (mailbox names on the wire,
opening a mailbox, the errback that answers NO, expunge responses). Selecting a mailbox is
cgtwist.protocols.imap.selection's, APPEND cgtwist.protocols.imap.appendcmd's, the argument
parsers cgtwist.protocols.imap.arguments', message-level commands
cgtwist.protocols.imap.messages', connection handling cgtwist.protocols.imap.server's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Union, cast

from twisted.internet import defer
from twisted.mail import imap4
from twisted.python.failure import Failure

from cgtwist.logs import Logger
from cgtwist.protocols.imap import condstore as imap_condstore
from cgtwist.protocols.imap import context as imap_context
from cgtwist.protocols.imap import list as imap_list
from cgtwist.protocols.imap import parse as imap_parse
from cgtwist.protocols.imap import streamer as imap_streamer
from cgtwist.protocols.imap import typedimap4
from cgtwist.protocols.imap.arguments import ArgumentParsers
from cgtwist.protocols.imap.commands import CommandTable

log = Logger()

_ID_FIELDS = 30  # RFC 2971 §3.3
# RFC 5161 ENABLE: what a session can turn on (QRESYNC implies CONDSTORE), as ENABLED names
# it; IMAP4rev2 switches the session to RFC 9051 (MailboxCommands.rev2).
_ENABLEABLE = {b"CONDSTORE": b"CONDSTORE", b"QRESYNC": b"QRESYNC", b"IMAP4REV2": b"IMAP4rev2"}


def _mutf7(name: str) -> bytes:
    """A mailbox name for the wire: modified UTF-7 (RFC 3501 §5.1.3), quoted."""
    return typedimap4.quote(name.encode("imap4-utf-7"))


def _decode_name(raw: bytes, utf8: bool = False) -> Any:
    """A mailbox name or pattern from the wire as str (modified UTF-7, or UTF-8 once
    IMAP4rev2 is on); undecodable input is passed on as is (the account then refuses it)."""
    try:
        return raw.decode("utf-8") if utf8 else raw.decode("imap4-utf-7")
    except Exception:
        return raw


class MailboxCommands(ArgumentParsers):
    """Mailbox-level commands; mixed into CgIMAP4Server before imap4.IMAP4Server."""

    mailbox_commands = CommandTable()
    log = log

    # Provided by the protocol class.
    account: Any
    account_name: str
    settings: Any
    mbox: Any
    state: str
    clock: Any
    transport: Any
    enabled: set[bytes]
    search_saved: list[int]
    search_contexts: dict[bytes, imap_context.SearchContext]
    _streamer: Optional[imap_streamer.Streamer] = None  # the responses being written, if any
    uid_arguments: bool
    peer_ip: str
    _idle_tag: Optional[bytes]
    _closed: bool
    _unsolicited: list[bytes]

    if TYPE_CHECKING:

        def sendPositiveResponse(
            self, tag: Optional[bytes] = None, message: bytes = b""
        ) -> None: ...
        def sendNegativeResponse(self, tag: Optional[bytes] = None, message: Any = b"") -> None: ...
        def sendBadResponse(self, tag: Optional[bytes] = None, message: bytes = b"") -> None: ...
        def sendUntaggedResponse(self, message: bytes, isAsync: Optional[bool] = None) -> None: ...
        def _server_bug(self, tag: bytes) -> None: ...
        def _release_mailbox(self) -> None: ...
        def _announce_keywords(self) -> None: ...
        def dispatchCommand(
            self, tag: bytes, cmd: bytes, rest: Optional[bytes], uid: Optional[int] = None
        ) -> None: ...

    # -- helpers -----------------------------------------------------------------------------
    def _fail(self, tag: bytes, what: str) -> Any:
        """An errback: NO with the mailstore's text for refusals, NO [SERVERBUG] for bugs."""

        def eb(failure: Failure) -> None:
            if isinstance(failure.value, imap4.ReadOnlyMailbox):
                self.sendNegativeResponse(tag, b"[READ-ONLY] Mailbox is read-only")
            elif isinstance(failure.value, imap4.MailboxException):
                self.sendNegativeResponse(tag, str(failure.value)[:200].encode("utf-8", "replace"))
            else:
                self.log.failure("imap: {what} failed", failure, what=what)
                self._server_bug(tag)

        return eb

    def _open(self, name: Union[str, bytes], rw: bool = True) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self.account.select, name, rw)

    def _close_other(self, box: Any) -> None:
        """Close a mailbox opened only for one command (APPEND, COPY target, STATUS)."""
        if box is not None and box is not self.mbox:
            closeable = cast(Any, imap4.ICloseableMailbox(box, None))
            if closeable is not None:
                defer.maybeDeferred(closeable.close).addErrback(
                    lambda f: self.log.failure("closing mailbox failed", f)
                )

    def _send_expunges(self, seqs: list[int], uids_before: Optional[list[int]] = None) -> None:
        """EXPUNGE responses for ``seqs`` (each valid in turn: highest first, so every one is
        also a number of the view before them); with QRESYNC enabled one ``VANISHED`` of
        their UIDs instead (RFC 7162 §3.2.10), ``uids_before`` being the view's UIDs then."""
        if uids_before is not None:
            self._contexts_expunged(seqs, uids_before)
        if self.qresync_on and uids_before is not None:
            if seqs:
                uids = [uids_before[s - 1] for s in seqs]
                self.sendUntaggedResponse(imap_condstore.vanished(uids, False))
            return
        for seq in seqs:
            self.sendUntaggedResponse(b"%d EXPUNGE" % seq)

    def _uids_now(self) -> Optional[list[int]]:
        """The view's UIDs in sequence order when QRESYNC or an updating search will need
        them to name expunges."""
        wanted = self.qresync_on or self.search_contexts
        return list(self.mbox.uids) if wanted and self.mbox is not None else None

    def _contexts_expunged(self, seqs: list[int], before: list[int]) -> None:
        """REMOVEFROM for updating searches that held messages about to be reported
        expunged, numbered as before (RFC 5267 §4.3)."""
        if not self.search_contexts or not seqs:
            return
        seq_of = {before[s - 1]: s for s in seqs}
        for ctx in self.search_contexts.values():
            for line in ctx.expunged(seq_of, seq_of.get, self.mbox.seq_of):
                self.sendUntaggedResponse(line)

    # -- CONDSTORE / QRESYNC state (RFC 7162 §3.1, §3.2.3) ---------------------------------------
    @property
    def condstore_on(self) -> bool:
        return bool(self.enabled & {b"CONDSTORE", b"QRESYNC"})

    @property
    def qresync_on(self) -> bool:
        return b"QRESYNC" in self.enabled

    # -- IMAP4rev2 (RFC 9051) ----------------------------------------------------------------
    @property
    def rev2(self) -> bool:
        """``ENABLE IMAP4rev2`` was given: RFC 9051's rules from then on (RFC 9051 §6.3.1);
        an IMAP4rev1 session never sees any of them."""
        return b"IMAP4REV2" in self.enabled

    def _mailbox_arg(self, raw: bytes) -> Union[str, bytes]:
        """A mailbox name from the wire for the account: modified UTF-7 bytes (the account
        decodes them) for IMAP4rev1, UTF-8 text for IMAP4rev2, where ``&`` is a character
        like any other (RFC 9051 §5.1). Not UTF-8: ``NO Illegal mailbox name``."""
        if not self.rev2:
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise imap4.IllegalMailboxEncoding("mailbox name is not UTF-8") from None

    def _mailbox_out(self, name: str) -> bytes:
        """A mailbox name for a response, quoted: modified UTF-7 for IMAP4rev1 (RFC 3501
        §5.1.3), UTF-8 for IMAP4rev2 (RFC 9051 §5.1, quoted strings carry UTF-8)."""
        return typedimap4.quote(name.encode("utf-8")) if self.rev2 else _mutf7(name)

    def _enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 §3.1): from now on MODSEQ goes with every
        FETCH of flags; the first one with a mailbox selected is told its HIGHESTMODSEQ."""
        if self.condstore_on:
            return
        self.enabled.add(b"CONDSTORE")
        if self.state == "select" and self.mbox is not None:
            self._send_highestmodseq(self.mbox)

    def _send_highestmodseq(self, box: object) -> None:
        """``OK [HIGHESTMODSEQ n]``, or ``OK [NOMODSEQ]`` for a mailbox without MODSEQ
        (RFC 7162 §3.1.2.1, §3.1.2.2)."""
        high = getattr(box, "highest_modseq", None)
        if high is None:
            self.sendPositiveResponse(None, b"[NOMODSEQ] No MODSEQ in this mailbox")
        else:
            self.sendPositiveResponse(None, b"[HIGHESTMODSEQ %d] Highest" % high)

    # -- ID (RFC 2971), ENABLE (RFC 5161), NAMESPACE (RFC 2342) -------------------------------
    def do_ID_raw(self, tag: bytes, segments: list[bytes], literals: list[Any]) -> None:
        first = segments[0].split(b" ", 2)
        try:
            tokens = imap_parse.tokenize(
                [first[2] if len(first) > 2 else b""] + segments[1:],
                [x if isinstance(x, bytes) else b"" for x in literals],
            )
        except imap_parse.ParseError as e:
            self.sendBadResponse(tag, str(e).encode())
            return
        if len(tokens) != 1 or (not isinstance(tokens[0], list) and tokens[0].upper() != b"NIL"):
            self.sendBadResponse(tag, b"ID takes a parenthesised list or NIL")
            return
        fields = tokens[0] if isinstance(tokens[0], list) else []
        if (
            len(fields) % 2
            or len(fields) > 2 * _ID_FIELDS
            or any(isinstance(x, list) for x in fields)
        ):
            self.sendBadResponse(tag, b"Invalid ID parameter list")
            return
        words = [cast(bytes, f) for f in fields]
        client = {
            words[i].decode("utf-8", "replace")[:30]: words[i + 1].decode("utf-8", "replace")[:1024]
            for i in range(0, len(words), 2)
        }
        if client:
            self.log.info("imap: client id {client} from {ip}", client=client, ip=self.peer_ip)
        self.sendUntaggedResponse(b'ID ("name" "cgtwist" "vendor" "cgtwist")')
        self.sendPositiveResponse(tag, b"ID completed")

    def do_ENABLE(self, tag: bytes, line: bytes) -> None:
        """RFC 5161: turn on CONDSTORE and QRESYNC (RFC 7162 §3.2.3: QRESYNC implies
        CONDSTORE); ENABLED lists those of the names this command turned on, nothing else."""
        names = line.split()
        if not names:
            self.sendBadResponse(tag, b"ENABLE needs capability names")
            return
        turned_on: list[bytes] = []
        for name in names:
            word = name.upper()
            if word in _ENABLEABLE and word not in self.enabled and word not in turned_on:
                turned_on.append(word)
        self.enabled.update(turned_on)
        self.sendUntaggedResponse(b" ".join([b"ENABLED", *(_ENABLEABLE[w] for w in turned_on)]))
        self.sendPositiveResponse(tag, b"ENABLE completed")

    mailbox_commands.add("auth", "ENABLE", do_ENABLE, imap4.IMAP4Server.arg_line)

    def do_NAMESPACE(self, tag: bytes) -> None:
        personal = other = shared = None
        np = cast(Any, imap4.INamespacePresenter(self.account, None))
        if np is not None:
            personal = np.getPersonalNamespaces()
            other = np.getUserNamespaces()
            shared = np.getSharedNamespaces()
        # RFC 2342 §5: personal, other users', shared (Twisted sends shared twice).
        self.sendUntaggedResponse(
            b"NAMESPACE " + typedimap4.collapse_nested_lists([personal, other, shared])
        )
        self.sendPositiveResponse(tag, b"NAMESPACE completed")

    mailbox_commands.add("auth select", "NAMESPACE", do_NAMESPACE)

    # -- mailbox management -------------------------------------------------------------------
    def _account_call(self, tag: bytes, what: str, ok: bytes, fn: Any, *args: Any) -> None:
        d = defer.maybeDeferred(fn, *args)
        d.addCallback(lambda _: self.sendPositiveResponse(tag, ok))
        d.addErrback(self._fail(tag, what))

    def do_CREATE(self, tag: bytes, name: bytes, use: tuple[str, ...] = ()) -> None:
        """CREATE, with RFC 6154's ``(USE (...))`` special-use attributes when given (the
        account refuses those it cannot assign: ``NO [USEATTR]``)."""
        mailbox = self._mailbox_arg(name)
        if use:
            self._account_call(
                tag, "CREATE", b"CREATE completed", self.account.create, mailbox, use
            )
        else:
            self._account_call(tag, "CREATE", b"CREATE completed", self.account.create, mailbox)

    def do_DELETE(self, tag: bytes, name: bytes) -> None:
        self._account_call(
            tag, "DELETE", b"DELETE completed", self.account.delete, self._mailbox_arg(name)
        )

    def do_RENAME(self, tag: bytes, old: bytes, new: bytes) -> None:
        self._account_call(
            tag,
            "RENAME",
            b"RENAME completed",
            self.account.rename,
            self._mailbox_arg(old),
            self._mailbox_arg(new),
        )

    def do_SUBSCRIBE(self, tag: bytes, name: bytes) -> None:
        self._account_call(
            tag,
            "SUBSCRIBE",
            b"SUBSCRIBE completed",
            self.account.subscribe,
            self._mailbox_arg(name),
        )

    def do_UNSUBSCRIBE(self, tag: bytes, name: bytes) -> None:
        self._account_call(
            tag,
            "UNSUBSCRIBE",
            b"UNSUBSCRIBE completed",
            self.account.unsubscribe,
            self._mailbox_arg(name),
        )

    _astr = ArgumentParsers.arg_astring
    mailbox_commands.add(
        "auth select", "CREATE", do_CREATE, _astr, ArgumentParsers.opt_create_params
    )
    mailbox_commands.add("auth select", "DELETE", do_DELETE, _astr)
    mailbox_commands.add("auth select", "RENAME", do_RENAME, _astr, _astr)
    mailbox_commands.add("auth select", "SUBSCRIBE", do_SUBSCRIBE, _astr)
    mailbox_commands.add("auth select", "UNSUBSCRIBE", do_UNSUBSCRIBE, _astr)

    def _list(self, tag: bytes, ref: bytes, pattern: bytes, sub: int, cmd: bytes) -> None:
        if not pattern:
            # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and root.
            self.sendUntaggedResponse(cmd + b' (\\Noselect) "/" ""')
            self.sendPositiveResponse(tag, cmd + b" completed")
            return
        limit = self.settings.current.imap.max_list_pattern
        if len(ref) + len(pattern) > limit:
            self.log.info(
                "imap: {cmd} pattern of {n} octets refused for {account} from {ip}",
                cmd=cmd.decode(),
                n=len(ref) + len(pattern),
                account=self.account_name,
                ip=self.peer_ip,
            )
            self.sendBadResponse(tag, b"Reference and pattern longer than %d octets" % limit)
            return
        # The wire form is modified UTF-7 (RFC 3501 §5.1.3), UTF-8 for IMAP4rev2 (RFC 9051
        # §5.1); the account matches decoded names.
        lister = self.account.listSubscribed if sub else self.account.listMailboxes
        d = defer.maybeDeferred(
            lister, _decode_name(ref, self.rev2), _decode_name(pattern, self.rev2)
        )

        def show(rows: list[tuple[str, Any]]) -> None:
            for name, info in rows:
                attrs = [a for a in info.getFlags()]
                if sub:  # RFC 3501 §6.3.9: LSUB carries no CHILDREN/SPECIAL-USE semantics
                    attrs = [a for a in attrs if a.lower() == "\\noselect"]
                delim = info.getHierarchicalDelimiter()
                self.sendUntaggedResponse(
                    b"%s (%s) %s %s"
                    % (
                        cmd,
                        " ".join(attrs).encode("ascii"),
                        typedimap4.quote(delim.encode()),
                        self._mailbox_out(name),
                    )
                )
            self.sendPositiveResponse(tag, cmd + b" completed")

        d.addCallback(show)
        d.addErrback(self._fail(tag, cmd.decode()))

    def do_LIST_raw(self, tag: bytes, segments: list[bytes], literals: list[Any]) -> bool:
        """LIST in the RFC 5258 syntax (selection options, several patterns, RETURN); False
        for the RFC 3501 form, which Twisted's argument parsers then read."""
        first = segments[0].split(b" ", 2)
        try:
            tokens = imap_parse.tokenize(
                [first[2] if len(first) > 2 else b""] + segments[1:],
                [x if isinstance(x, bytes) else b"" for x in literals],
            )
            if not imap_list.is_extended(tokens):
                return False
            req = imap_list.parse(tokens)
        except imap_parse.ParseError as e:
            self.sendBadResponse(tag, str(e)[:200].encode())
            return True
        if self.rev2 and b"RECENT" in req.status:
            self.sendBadResponse(tag, b"No STATUS RECENT in IMAP4rev2")  # RFC 9051 §6.3.11
            return True
        limit = self.settings.current.imap.max_list_pattern
        if len(req.ref) + sum(len(p) for p in req.patterns) > limit:
            self.log.info(
                "imap: LIST patterns of {n} octets refused for {account} from {ip}",
                n=len(req.ref) + sum(len(p) for p in req.patterns),
                account=self.account_name,
                ip=self.peer_ip,
            )
            self.sendBadResponse(tag, b"Reference and patterns longer than %d octets" % limit)
            return True
        lister = getattr(self.account, "list_extended", None)
        if lister is None:
            self.sendBadResponse(tag, b"Extended LIST is not available")
            return True
        d = defer.maybeDeferred(
            lister,
            _decode_name(req.ref, self.rev2),
            [_decode_name(p, self.rev2) for p in req.patterns if p],
            subscribed=req.subscribed,
            recursive=req.recursive,
            special_use=req.special_use,
            mark_subscribed=b"SUBSCRIBED" in req.returns,
        )

        def show(rows: list[tuple[str, Any]]) -> defer.Deferred[None]:
            if b"" in req.patterns and not req.selection:
                # RFC 3501 §6.3.8's delimiter query, also inside a pattern list.
                self.sendUntaggedResponse(b'LIST (\\Noselect) "/" ""')
            return defer.ensureDeferred(self._list_rows(rows, req.status))

        d.addCallback(show)
        d.addCallback(lambda _: self.sendPositiveResponse(tag, b"LIST completed"))
        d.addErrback(self._fail(tag, "LIST"))
        return True

    async def _list_rows(self, rows: list[tuple[str, Any]], items: tuple[bytes, ...]) -> None:
        """The LIST rows, each selectable one followed by its STATUS when RETURN (STATUS)
        asked for it (RFC 5819 §2); a mailbox that cannot be opened now (deleted meanwhile)
        gets no STATUS, which is no error."""
        wanted = [i.decode() for i in items]
        for name, info in rows:
            attrs = info.getFlags()
            delim = info.getHierarchicalDelimiter()
            self.sendUntaggedResponse(
                b"LIST (%s) %s %s%s"
                % (
                    " ".join(attrs).encode("ascii"),
                    typedimap4.quote(delim.encode()),
                    self._mailbox_out(name),
                    imap_list.childinfo(getattr(info, "childinfo", None)),
                )
            )
            if not items or {a.lower() for a in attrs} & {"\\noselect", "\\nonexistent"}:
                continue
            try:
                box = await self._open(name.encode("imap4-utf-7"), False)
                if box is None:
                    continue
                try:
                    status = await defer.maybeDeferred(box.requestStatus, wanted)
                finally:
                    self._close_other(box)
                status = self._with_appendlimit(status, wanted)
            except imap4.MailboxException:
                continue
            if self._closed:
                return
            self.sendUntaggedResponse(
                b"STATUS %s (%s)" % (self._mailbox_out(name), imap_list.status_body(items, status))
            )

    mailbox_commands.add("auth select", "LIST", _list, _astr, _astr, 0, b"LIST")
    mailbox_commands.add("auth select", "LSUB", _list, _astr, _astr, 1, b"LSUB")

    def do_STATUS(self, tag: bytes, name: bytes, items: list[Any]) -> None:
        wanted = []
        for item in items:
            if not isinstance(item, bytes) or item.upper() not in imap_list.STATUS_ITEMS:
                self.sendBadResponse(tag, b"Unknown STATUS item")
                return
            wanted.append(item.upper().decode())
        if not wanted:
            self.sendBadResponse(tag, b"STATUS needs items")
            return
        if self.rev2 and "RECENT" in wanted:
            # RFC 9051 §6.3.11: IMAP4rev2 has no \Recent, so no RECENT status item.
            self.sendBadResponse(tag, b"No STATUS RECENT in IMAP4rev2")
            return
        box_name = self._mailbox_arg(name)
        if "HIGHESTMODSEQ" in wanted:
            self._enable_condstore()  # RFC 7162 §3.1: a CONDSTORE-enabling command

        def got(box: Any) -> Any:
            if box is None:
                self.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
                return None
            d = defer.maybeDeferred(box.requestStatus, wanted)

            def show(status: dict[str, int]) -> None:
                self._close_other(box)
                status = self._with_appendlimit(status, wanted)
                body = b" ".join(b"%s %d" % (k.encode(), status[k]) for k in wanted if k in status)
                self.sendUntaggedResponse(b"STATUS " + typedimap4.quote(name) + b" (" + body + b")")
                self.sendPositiveResponse(tag, b"STATUS completed")

            return d.addCallback(show)

        self._open(box_name, False).addCallback(got).addErrback(self._fail(tag, "STATUS"))

    def _with_appendlimit(self, status: dict[str, int], wanted: list[str]) -> dict[str, int]:
        """RFC 7889 §4: STATUS APPENDLIMIT is the largest message APPEND takes, the same for
        every mailbox (imap.max_literal, as CAPABILITY APPENDLIMIT= says)."""
        if "APPENDLIMIT" in wanted:
            status = dict(status, APPENDLIMIT=self.settings.current.imap.max_literal)
        return status

    mailbox_commands.add("auth select", "STATUS", do_STATUS, _astr, ArgumentParsers.arg_plist)
