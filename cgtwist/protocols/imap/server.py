"""The IMAP listener: CgIMAP4Server (a Twisted IMAP4Server, IMAP4rev1 and, after ENABLE
IMAP4rev2, RFC 9051's IMAP4rev2) and IMAPFactory.

Owns one connection's life: greeting and capabilities (never advertising what is not
implemented), one command at a time with input paused while it runs, NO [SERVERBUG] instead of
tracebacks, timeouts on the passed-in clock (imap.preauth_timeout, imap.idle_timeout also
during IDLE), and connections per IP. The parts: framing (lines and literals under limits),
login (STARTTLS and authentication), mailboxes, selection, appendcmd, messages, searchcmds and
sortcmds (commands), unsolicited (what changed in the mailbox, in RFC 3501 §7.4.1's order,
and IDLE). It never decides
about accounts (the cred portal does) and never touches Maildir files (the mailstore does).
"""

from __future__ import annotations

import re
from collections import deque
from typing import IO, Any, Callable, Optional, cast

from twisted.internet import defer, interfaces
from twisted.mail import imap4
from twisted.python.failure import Failure

from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.interfaces import IAuthPenalty
from cgtwist.logs import Logger
from cgtwist.protocols.imap import context as imap_context
from cgtwist.protocols.imap import parse as imap_parse
from cgtwist.protocols.imap import quota as imap_quota
from cgtwist.protocols.imap import typedimap4
from cgtwist.protocols.imap import updates as imap_updates
from cgtwist.protocols.imap.appendcmd import AppendCommand
from cgtwist.protocols.imap.commands import CommandEntry, CommandTable
from cgtwist.protocols.imap.framing import FramingMixin, _Pending
from cgtwist.protocols.imap.login import LoginMixin
from cgtwist.protocols.imap.mailboxes import MailboxCommands
from cgtwist.protocols.imap.messages import MessageCommands
from cgtwist.protocols.imap.searchcmds import SearchCommands
from cgtwist.protocols.imap.selection import SelectionCommands
from cgtwist.protocols.imap.sortcmds import SortCommands
from cgtwist.protocols.imap.unsolicited import UnsolicitedResponses
from cgtwist.protocols.limits import AccessFactory
from cgtwist.runtime.fastwrite import write_now
from cgtwist.settings import SettingsHolder
from cgtwist.types import ListenerSpec

_HOLD_MAX = 256 * 1024  # octets of a command's responses held for its tagged reply
_COMMAND_RE = re.compile(rb"\A[A-Za-z][A-Za-z0-9]{0,31}\Z")
# RFC 5256 SORT and THREAD, RFC 5957 SORT=DISPLAY (cgtwist.protocols.imap.sortcmds).
_SORT_CAPS = [b"SORT", b"SORT=DISPLAY", b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT"]
# RFC 5267 ESORT (SORT RETURN) and RFC 9394 PARTIAL (SEARCH and SORT RETURN (PARTIAL n:m)).
_RESULT_CAPS = [b"ESORT", b"PARTIAL", b"CONTEXT=SEARCH", b"CONTEXT=SORT"]
# A command without literals, and every session between commands, holds this one empty queue
# (maxlen 0: nothing can be put in it) instead of a deque of its own: an idling session kept
# its last command's emptied deque, 760 bytes of every IDLE connection.
_NO_LITERALS: deque[tuple[Any, bytes]] = deque(maxlen=0)
# (session class, state, command name) -> the entry lookupCommand found: the tables and
# Twisted's attributes are fixed once the class is built, and a name was looked up (decoded,
# upper-cased, two tables, the name's pattern) at every command. Only names that found an
# entry are kept, and at most _FOUND_MAX of them (the names reach it upper-cased: a few
# dozen commands in four states).
_FOUND: dict[tuple[type, str, bytes], CommandEntry] = {}
_FOUND_MAX = 512


class CgIMAP4Server(
    FramingMixin,
    LoginMixin,
    SortCommands,
    MessageCommands,
    SearchCommands,
    SelectionCommands,
    AppendCommand,
    UnsolicitedResponses,
    typedimap4.IMAP4Server,
):
    """IMAP4rev1 server with cgtwist's extensions, limits and policies."""

    IDENT = b"cgtwist IMAP4rev1 server ready"
    log = Logger()
    factory: Optional[IMAPFactory] = None
    # Every part's commands; a later table wins, as the parts' attributes would in the MRO.
    commands = CommandTable(
        MailboxCommands.mailbox_commands,
        SelectionCommands.selection_commands,
        AppendCommand.append_commands,
        UnsolicitedResponses.idle_commands,
        MessageCommands.message_commands,
        SearchCommands.search_commands,
        SortCommands.sort_commands,
        imap_quota.commands,
        LoginMixin.login_commands,
    )

    def __init__(
        self,
        listener: ListenerSpec,
        settings: SettingsHolder,
        portal: Any,
        tls: Callable[[], Any],
        hostname: str,
        clock: Any,
        penalty: Optional[IAuthPenalty] = None,
    ) -> None:
        super().__init__(chal={}, contextFactory=None, scheduler=None)
        self.listener = listener
        self.settings = settings
        self.portal = portal
        self._tls = tls
        self.hostname = hostname
        self.clock = clock
        self.penalty: IAuthPenalty = (
            penalty if penalty is not None else AuthPenalty(clock, settings)
        )
        self.peer_ip = ""
        self.secure = False
        self.account_name = ""
        self._inbuf = bytearray()
        self._held: list[bytes] = []  # output for the next sendLine (hold_output)
        self._held_size = 0
        self._in_loop = False
        self._paused = False
        self._discarding = False
        self._closed = False
        self._cmd: Optional[_Pending] = None
        self._literal_left = 0
        self._literal_sink: Optional[IO[bytes]] = None
        self._literal_queue = _NO_LITERALS
        self._busy_tag: Optional[bytes] = None
        self._busy_name = b""
        self._idle_tag: Optional[bytes] = None
        self._sasl_tag: Optional[bytes] = None
        self._unsolicited: list[bytes] = []  # untagged lines other than the mailbox view's
        self._failures = 0
        self._counted = False
        self._bye_after_command = False
        self._bye_line = b"* BYE Server shutting down"  # what shutdown() says
        self._delayed: list[Any] = []
        self.enabled: set[bytes] = set()
        self.search_saved: list[int] = []
        # CONTEXT=SEARCH (RFC 5267): updating searches by tag, for the selected mailbox only.
        self.search_contexts: dict[bytes, imap_context.SearchContext] = {}
        self.context_updates = imap_updates.ContextUpdates(
            self.search_contexts,
            lambda: getattr(self.account, "run", None),
            clock,
            lambda: self._closed,
        )
        self.uid_arguments = False

    # -- time -------------------------------------------------------------------------------
    def callLater(self, period: float, func: Callable[..., Any]) -> Any:  # TimeoutMixin hook
        return self.clock.callLater(period, func)

    def _later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        call = self.clock.callLater(delay, self._run_later, fn, args)
        self._delayed.append(call)

    def _run_later(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._delayed = [c for c in self._delayed if c.active()]
        if not self._closed:
            fn(*args)

    # -- connection -------------------------------------------------------------------------
    def connectionMade(self) -> None:
        self.tags = {}
        peer = self.transport.getPeer()
        self.peer_ip = getattr(peer, "host", "") or ""
        self.secure = (
            self.listener.tls == "implicit"
            or interfaces.ISSLTransport(self.transport, None) is not None
        )
        self.canStartTLS = interfaces.ITLSTransport(self.transport, None) is not None
        # Replies are small and strictly request/response: without TCP_NODELAY, Nagle's
        # algorithm plus the client's delayed ACK can hold a reply back for ~40 ms.
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            try:
                nodelay(True)
            except Exception:
                pass
        if self.factory is not None and self.factory.stopping:
            self.sendLine(b"* BYE Server shutting down")
            self._closed_by_us()
            return
        self._counted = self.factory is not None
        if self.factory is not None and not self.factory.connection_opened(self.peer_ip):
            self.log.warn("imap: too many connections from {ip}", ip=self.peer_ip)
            self.sendLine(b"* BYE Too many connections from your address")
            self._closed = True
            self.transport.loseConnection()
            return
        self.setTimeout(self.settings.current.imap.preauth_timeout)
        # RFC 3501 §7.1.1 greeting; never PREAUTH (RELIABILITY b-E 31).
        self.sendPositiveResponse(
            message=b"[CAPABILITY " + b" ".join(self.listCapabilities()) + b"] " + self.IDENT
        )

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        self._closed = True
        self.setTimeout(None)
        for call in self._delayed:
            if call.active():
                call.cancel()
        self._delayed = []
        self._stop_streaming()
        self._release_mailbox()
        self._abort_command()
        if self.factory is not None and self._counted:
            self._counted = False
            self.factory.connection_closed(self.peer_ip)
        if self.factory is not None:
            self.factory.forget(self)
        if self._onLogout:
            self._onLogout()
            self._onLogout = None

    def shutdown(self) -> None:
        """Server stopping: BYE now, or after the running command's tagged reply."""
        if self._closed:
            return
        if self._busy_tag is not None and self._idle_tag is None:
            self._bye_after_command = True
            return
        self._bye(self._bye_line)

    def end_session(self, reason: str) -> None:
        """The account's owner ended this session (WebUser's active sessions): ``* BYE
        reason`` now, or after the running command's tagged reply, as at shutdown (RFC 3501
        §7.1.5: the server may close with BYE at any time)."""
        if self._closed:
            return
        self.log.info(
            "imap: session of {account} from {ip} ended: {reason}",
            account=self.account_name,
            ip=self.peer_ip,
            reason=reason,
        )
        self._bye_line = b"* BYE " + reason.encode("utf-8", "replace")
        self.shutdown()

    def _bye(self, line: bytes) -> None:
        self._release_mailbox()
        self.state = "logout"
        self._unsolicited.clear()  # RFC 3501 §7.1.5: nothing follows BYE
        self.sendLine(line)
        self._closed_by_us()

    def timeoutConnection(self) -> None:
        self.log.info(
            "imap: idle timeout for {ip} {account}", ip=self.peer_ip, account=self.account_name
        )
        self.sendLine(b"* BYE Autologout; idle for too long")
        self._release_mailbox()
        self.state = "timeout"
        if self._streamer is not None:  # a reader that stopped reading: do not wait for it
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _release_mailbox(self) -> None:
        self.search_contexts.clear()  # RFC 5267 §4.2: they belong to the mailbox
        if self.mbox is not None:
            mbox, self.mbox = self.mbox, None
            try:
                mbox.removeListener(self)
            except Exception:
                pass
            if getattr(mbox, "closed", False) is True:
                return  # the mailstore's view closes with its last listener: nothing to ask
            closeable = cast(Any, imap4.ICloseableMailbox(mbox, None))
            if closeable is not None:
                defer.maybeDeferred(closeable.close).addErrback(
                    lambda f: self.log.failure("closing mailbox failed", f)
                )

    # -- capabilities -----------------------------------------------------------------------
    def listCapabilities(self) -> list[bytes]:
        caps = [
            b"IMAP4rev1",
            b"IMAP4rev2",  # RFC 9051 §6.3.1: after ENABLE IMAP4rev2 (MailboxCommands.rev2)
            b"LITERAL+",
            b"SASL-IR",
            b"ID",
            b"ENABLE",
            b"IDLE",
            b"NAMESPACE",
            b"UIDPLUS",
            b"MOVE",
            b"UNSELECT",
            b"SPECIAL-USE",
            b"CREATE-SPECIAL-USE",  # RFC 6154 §5.1
            b"CHILDREN",
            *_SORT_CAPS,
            b"ESEARCH",
            b"SEARCHRES",
            *_RESULT_CAPS,
            b"LIST-EXTENDED",
            b"LIST-STATUS",
            b"STATUS=SIZE",
            b"MULTIAPPEND",
            b"BINARY",
            b"CONDSTORE",  # RFC 7162 §3.1
            b"QRESYNC",  # RFC 7162 §3.2
            # RFC 7889: the APPEND literal cap, as set now (imap.max_literal).
            b"APPENDLIMIT=%d" % self.settings.current.imap.max_literal,
            *imap_quota.CAPABILITIES,  # RFC 9208
        ]
        if self.state == "unauth":
            if self._can_starttls():
                caps.append(b"STARTTLS")
            if self.plaintext_allowed():
                caps.append(b"AUTH=PLAIN")
            else:
                caps.append(b"LOGINDISABLED")
        return caps

    def capabilities(self) -> dict[bytes, Any]:
        return {c: None for c in self.listCapabilities()[1:]}

    def _dispatch(self, cmd: _Pending) -> None:
        """Run one complete command; input stays paused until its tagged reply."""
        text = b" ".join(cmd.segments) if len(cmd.segments) > 1 else cmd.segments[0]
        # A line cannot nest deeper than it has "(": counted in C, so nearly every command
        # skips the walk in Python over its octets.
        if (
            text.count(b"(") > imap_parse.MAX_DEPTH
            and imap_parse.nesting_depth(text) > imap_parse.MAX_DEPTH
        ):
            self._abort_command()
            self.sendBadResponse(cmd.tag, b"Too deeply nested")
            return
        self._busy_tag = cmd.tag
        self._busy_name = cmd.name
        self._pause()
        # LOGOUT owes the client nothing from the disk (RFC 3501 §6.1.3: BYE and OK): a
        # rescan would only make it wait behind the folder's disk work (other sessions'
        # STOREs, a flush's fsync), as Dovecot does not.
        refresh = (
            getattr(self.mbox, "refresh_now", None)
            if self.state == "select" and cmd.name != b"LOGOUT"
            else None
        )
        if refresh is None:
            self._run(cmd)
            return
        # The mailstore wants a rescan at the start of each selected-state command; mostly
        # the folder is as last seen (refresh_now says so with None) and the command runs now.
        try:
            d: Optional[defer.Deferred[None]] = refresh()
        except Exception:
            self.log.failure("imap: mailbox refresh failed")
            d = None
        if d is None:
            if not self._closed:
                self._run_selected(cmd)
            return
        d.addErrback(lambda f: self.log.failure("imap: mailbox refresh failed", f))
        d.addCallback(lambda _: None if self._closed else self._run_selected(cmd))

    def _run_selected(self, cmd: _Pending) -> None:
        # Keywords another session created go out before this command can show them.
        self._announce_keywords()
        self._run(cmd)

    def _run(self, cmd: _Pending) -> None:
        try:
            special = self._special_command(cmd)
            if special:
                pass
            elif len(cmd.segments) == 1:
                # No literal (nearly every command): the line as it is, no lists to build.
                self.parse_command(cmd.segments[0])
            else:
                segs = [self._normalise_literal(s) for s in cmd.segments]
                pairs = list(zip(cmd.literals, segs[1:], strict=True))
                if pairs:
                    self._literal_queue = deque(pairs)
                self.parse_command(segs[0])
        except Exception:
            self.log.failure("imap: command {cmd} failed", cmd=cmd.name)
            self._server_bug(cmd.tag)
        finally:
            self._literal_queue = _NO_LITERALS

    def _special_command(self, cmd: _Pending) -> bool:
        """Commands that take the raw segments and literals rather than Twisted's parsers."""
        if self.state == "select" and cmd.name in (b"SEARCH", b"UID SEARCH"):
            self.do_SEARCH_raw(cmd.tag, cmd.segments, list(cmd.literals), cmd.name != b"SEARCH")
            return True
        if self.state == "select" and cmd.name in (b"SORT", b"UID SORT"):
            self.do_SORT_raw(cmd.tag, cmd.segments, list(cmd.literals), cmd.name != b"SORT")
            return True
        if self.state == "select" and cmd.name in (b"THREAD", b"UID THREAD"):
            self.do_THREAD_raw(cmd.tag, cmd.segments, list(cmd.literals), cmd.name != b"THREAD")
            return True
        if cmd.name == b"LIST" and self.state in ("auth", "select"):
            return self.do_LIST_raw(cmd.tag, cmd.segments, list(cmd.literals))
        if cmd.name == b"APPEND" and self.state in ("auth", "select"):
            self.do_APPEND_raw(cmd.tag, cmd.segments, list(cmd.literals))
            return True
        if cmd.name == b"ID" and self.state != "logout":
            self.do_ID_raw(cmd.tag, cmd.segments, list(cmd.literals))
            return True
        return False

    def parse_command(self, line: bytes) -> None:
        tag, _, rest = line.partition(b" ")
        cmd, _, args = rest.partition(b" ")
        if not cmd:
            self.sendBadResponse(tag, b"Missing command")
            return
        try:
            self.dispatchCommand(tag, cmd.upper(), args)
        except imap4.IllegalClientResponse as e:
            self.sendBadResponse(tag, b"Illegal syntax: " + str(e)[:200].encode("utf-8", "replace"))
        except imap4.IllegalOperation as e:
            self.sendNegativeResponse(
                tag, b"Illegal operation: " + str(e)[:200].encode("utf-8", "replace")
            )
        except imap4.IllegalMailboxEncoding:
            self.sendNegativeResponse(tag, b"Illegal mailbox name")

    def dispatchCommand(
        self, tag: bytes, cmd: bytes, rest: Optional[bytes], uid: Optional[int] = None
    ) -> None:
        f = _FOUND.get((type(self), self.state, cmd))  # served before: its name was checked
        if f is not None:
            self.run_entry(tag, f, rest, uid)
            return
        if not _COMMAND_RE.match(cmd):
            self.sendBadResponse(tag, b"Unknown command")
            return
        f = self.lookupCommand(cmd)
        if f:
            self.run_entry(tag, f, rest, uid)
        elif self.lookupCommandAnyState(cmd):
            self.sendBadResponse(tag, b"Command not valid in this state")
        else:
            self.sendBadResponse(tag, b"Unknown command")

    def lookupCommandAnyState(self, cmd: bytes) -> bool:
        name = cmd.decode("ascii", "replace").upper()
        return any(
            self.commands.lookup(s, name) or getattr(self, f"{s}_{name}", None)
            for s in ("unauth", "auth", "select")
        )

    def lookupCommand(self, cmd: bytes) -> Optional[CommandEntry]:
        """Our command table first, then Twisted's ``<state>_<COMMAND>`` attributes; an
        entry found is kept in ``_FOUND`` for the next command of that name."""
        key = (type(self), self.state, cmd)
        entry = _FOUND.get(key)
        if entry is not None:
            return entry
        name = cmd.decode("ascii", "replace").upper()
        entry = self.commands.lookup(self.state, name)
        if entry is None:
            entry = super().lookupCommand(cmd)
        if entry is not None and len(_FOUND) < _FOUND_MAX and _COMMAND_RE.match(cmd):
            _FOUND[key] = entry
        return entry

    def _IMAP4Server__ebDispatch(self, failure: Failure, tag: bytes) -> None:
        """Argument-parser errors: BAD for syntax, NO [SERVERBUG] for our own bugs."""
        if isinstance(failure.value, imap4.IllegalClientResponse):
            self.sendBadResponse(
                tag, b"Illegal syntax: " + str(failure.value)[:200].encode("utf-8", "replace")
            )
        elif isinstance(failure.value, imap4.IllegalOperation):
            self.sendNegativeResponse(tag, b"Illegal operation")
        elif isinstance(failure.value, imap4.IllegalMailboxEncoding):
            self.sendNegativeResponse(tag, b"Illegal mailbox name")
        else:
            self.log.failure("imap: command failed", failure)
            self._server_bug(tag)

    def _server_bug(self, tag: bytes) -> None:
        """RFC 5530 SERVERBUG: the client sees a clean NO, the log keeps the traceback."""
        if self._busy_tag == tag:  # never a second reply to a command already answered
            self.sendNegativeResponse(tag, b"[SERVERBUG] Internal error, try again later")

    # -- responses --------------------------------------------------------------------------
    def sendLine(self, line: bytes) -> None:
        """Straight to the socket when nothing is queued before it (plain TCP; cgtwist.
        runtime.fastwrite), else through the transport: saves two epoll_ctl calls and a
        reactor turn per response line on a connection without TLS. Output held back
        (``hold_output``) goes first, in the same write."""
        if self._held:
            self._held.append(line + self.delimiter)
            self._write_held()
            return
        write_now(self.transport, line + self.delimiter)

    def hold_output(self, data: bytes) -> None:
        """Keep ``data`` (the end of FETCH's responses, STORE's FETCH lines) for the next
        line, the command's tagged reply, which always follows: they go in one send, as
        Dovecot corks a command's output, and the client wakes once for them, not twice.
        Past ``_HOLD_MAX`` octets what is held goes out at once."""
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size >= _HOLD_MAX:
            self._write_held()

    def _write_held(self) -> None:
        held, self._held, self._held_size = self._held, [], 0
        if self.transport is None:  # the connection is gone: nobody to tell
            return
        write_now(self.transport, held[0] if len(held) == 1 else b"".join(held))

    def _respond(self, state: bytes, tag: Optional[bytes], message: Optional[bytes]) -> None:
        if self._closed and self.transport is None:
            return
        is_final = tag is not None and tag != b"*" and tag == self._busy_tag
        if not tag:
            tag = b"*"
        line = b" ".join((tag, state, message)) if message else b" ".join((tag, state))
        if not is_final:
            self.sendLine(line)
            return
        if self._flush_unsolicited():
            # Updating searches are being matched (cgtwist.protocols.imap.updates): their
            # ADDTO/REMOVEFROM go before this reply, which waits (input stays paused); what
            # the command holds for it goes now.
            if self._held:
                self._write_held()
            d = self.context_updates.when_ready()
            d.addCallback(lambda _: self._final_reply(line, flush=True))
            return
        self._final_reply(line)

    def _final_reply(self, line: bytes, flush: bool = False) -> None:
        """The command's tagged reply; then the next command may run."""
        if self._closed:
            return
        if flush:
            self._flush_unsolicited(start=False)
        self.sendLine(line)
        self._busy_tag = None
        self._busy_name = b""
        if self._bye_after_command:
            self._bye(self._bye_line)
            return
        self._resume()

    def sendNegativeResponse(self, tag: Optional[bytes] = None, message: Any = b"") -> None:
        if isinstance(message, str):  # Twisted passes str in a few places
            message = message.encode("utf-8", "replace")
        self._respond(b"NO", tag, message)

    def sendUntaggedResponse(self, message: bytes, isAsync: Optional[bool] = None) -> None:
        if isAsync:
            self.unsolicited(message)
        else:
            self._respond(message, None, None)

    def do_LOGOUT(self, tag: bytes) -> None:
        """RFC 3501 §6.1.3: BYE, OK, close; nothing pipelined after LOGOUT is run. The
        session leaves its mailbox after the answer is sent: the client owes that no wait
        (in the logout state nothing more is told about the mailbox)."""
        self.state = "logout"
        self._unsolicited.clear()
        self.hold_output(b"* BYE Logging out\r\n")  # BYE and OK in one send
        self._inbuf.clear()
        self.sendPositiveResponse(tag, b"LOGOUT completed")
        self._closed_by_us()
        self._release_mailbox()

    commands.add("unauth auth select logout", "LOGOUT", do_LOGOUT)


class IMAPFactory(AccessFactory):
    """Builds CgIMAP4Server connections for one listener (set-up, per-IP counts and the
    shutdown drain: AccessFactory; each session says ``* BYE`` at shutdown, RFC 3501
    §7.1.5)."""

    protocol = CgIMAP4Server  # type: ignore[assignment]
    penalty: IAuthPenalty
    live: set[CgIMAP4Server]
