"""IMAP SORT and THREAD commands (RFC 5256, RFC 5957 SORT=DISPLAY) and their UID forms, as a
mixin of the selected state.

Owns the command's course: arguments through cgtwist.protocols.imap.sort, the search part
through imap_search's compiled predicate, then matching and key collection on the reactor in
bounded batches (cgtwist.protocols.imap.scan, as SEARCH: large messages read in the
mailstore's threads when BODY/TEXT needs them; keys come from the cached headers),
and the final sort or threading in a mailstore thread when the folder is large. The orders
themselves are imap_sort's and imap_thread's pure functions.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

from twisted.internet import defer

from cgtwist.protocols.imap import esearch as imap_esearch
from cgtwist.protocols.imap import messagetext as imap_messagetext
from cgtwist.protocols.imap import parse as imap_parse
from cgtwist.protocols.imap import scan as imap_scan
from cgtwist.protocols.imap import search as imap_search
from cgtwist.protocols.imap import sort as imap_sort
from cgtwist.protocols.imap import thread as imap_thread
from cgtwist.protocols.imap.commands import CommandTable

T = TypeVar("T")
# Above this many messages the final sort or threading runs in a mailstore thread: sorting
# 10,000 keys costs ~10 ms, threading them ~100 ms, too long for the reactor.
_ORDER_IN_THREAD = 1000


class SortCommands:
    """SORT, UID SORT, THREAD and UID THREAD; mixed into CgIMAP4Server."""

    mbox: Any
    account: Any
    clock: Any
    log: Any
    _closed: bool
    peer_ip: str
    account_name: str
    sendUntaggedResponse: Callable[..., None]
    sendPositiveResponse: Callable[..., None]
    sendNegativeResponse: Callable[..., None]
    sendBadResponse: Callable[..., None]
    _fail: Callable[[bytes, str], Any]
    _keep_updated: Callable[..., bytes]  # SearchCommands': CONTEXT=SORT (RFC 5267)
    # Run by CgIMAP4Server._special_command in the selected state; named here so that the
    # command in another state is "not valid in this state", not "unknown".
    sort_commands = CommandTable()
    sort_commands.add("select", "SORT", None)
    sort_commands.add("select", "THREAD", None)

    def do_SORT_raw(
        self, tag: bytes, segments: list[bytes], literals: list[Any], uid: bool
    ) -> None:
        """RFC 5256 §3: SORT [RETURN (options)] (criteria) charset search-key... ; with RETURN
        the answer is an ESEARCH (ESORT, RFC 5267 §4.2: MIN and MAX are the first and last
        in sort order, ALL is in sort order) or a PARTIAL range of it (RFC 9394)."""
        tokens = self._sort_tokens(tag, segments, literals, uid)
        if tokens is None:
            return
        try:
            ret, tokens = imap_esearch.split_return(tokens)
            if ret is not None and ret.save:
                raise imap_parse.ParseError("SAVE is not offered with SORT")
            if ret is not None and ret.update and ret.partial is not None:
                raise imap_parse.ParseError("UPDATE is not offered with PARTIAL")
            if len(tokens) < 3:
                raise imap_parse.ParseError("Missing arguments")
            criteria = imap_sort.parse_criteria(tokens[0])
            imap_sort.check_charset(tokens[1])
            pred, texts = self._sort_search(tokens[2:])
        except imap_parse.ParseError as e:
            self._refuse(tag, e)
            return

        def key(
            text: imap_messagetext.MessageText, seq: int, number: int
        ) -> tuple[int, tuple[imap_sort.Key, ...], int]:
            return number, imap_sort.sort_keys(text, criteria), text.msg.getUID()

        # An updating sort is brought up to date from the MODSEQ it started at.
        start_modseq = getattr(self.mbox, "highest_modseq", None)
        by_uid: dict[int, tuple[imap_sort.Key, ...]] = {}

        def order(rows: list[tuple[int, tuple[imap_sort.Key, ...], int]]) -> Any:
            if ret is not None and ret.update:
                by_uid.update((u, k) for _n, k, u in rows)
            pairs = [(n, k) for n, k, _u in rows]
            return self._off_reactor(len(pairs), imap_sort.ordered, pairs, criteria)

        def show(numbers: list[int]) -> None:
            code = b""
            if ret is not None:
                self.sendUntaggedResponse(imap_esearch.response(tag, uid, ret, numbers))
                if ret.update:
                    code = self._keep_updated(
                        tag, uid, ret, pred, texts, start_modseq, list(by_uid), criteria, by_uid
                    )
            else:
                self.sendUntaggedResponse(b"SORT" + b"".join(b" %d" % n for n in numbers))
            self.sendPositiveResponse(tag, code + b"SORT completed")

        d = self._collect(pred, texts, uid, key)
        d.addCallback(order).addCallback(show).addErrback(self._fail(tag, "SORT"))

    def do_THREAD_raw(
        self, tag: bytes, segments: list[bytes], literals: list[Any], uid: bool
    ) -> None:
        """RFC 5256 §3: THREAD algorithm charset search-key..."""
        tokens = self._sort_tokens(tag, segments, literals, uid)
        if tokens is None:
            return
        try:
            algorithm = imap_sort.parse_algorithm(tokens[0])
            imap_sort.check_charset(tokens[1])
            pred, texts = self._sort_search(tokens[2:])
        except imap_parse.ParseError as e:
            self._refuse(tag, e)
            return
        build = imap_thread.references if algorithm == "REFERENCES" else imap_thread.ordered_subject

        def key(
            text: imap_messagetext.MessageText, seq: int, number: int
        ) -> imap_thread.ThreadMessage:
            return imap_sort.thread_message(text, number, seq)

        def threads(msgs: list[imap_thread.ThreadMessage]) -> bytes:
            return imap_thread.render(build(msgs))

        def order(msgs: list[imap_thread.ThreadMessage]) -> defer.Deferred[bytes]:
            return self._off_reactor(len(msgs), threads, msgs)

        def show(lists: bytes) -> None:
            self.sendUntaggedResponse(b"THREAD " + lists if lists else b"THREAD")
            self.sendPositiveResponse(tag, b"THREAD completed")

        d = self._collect(pred, texts, uid, key)
        d.addCallback(order).addCallback(show).addErrback(self._fail(tag, "THREAD"))

    # -- the shared course --------------------------------------------------------------------
    def _sort_tokens(
        self, tag: bytes, segments: list[bytes], literals: list[Any], uid: bool
    ) -> Optional[list[imap_parse.Token]]:
        """The arguments after the command name as tokens; BAD (and None) when there are
        fewer than three or they do not parse."""
        head = segments[0].split(b" ", 3 if uid else 2)
        first = head[-1] if len(head) == (4 if uid else 3) else b""
        try:
            tokens = imap_parse.tokenize(
                [first] + segments[1:], [x if isinstance(x, bytes) else b"" for x in literals]
            )
        except imap_parse.ParseError as e:
            self._refuse(tag, e)
            return None
        if len(tokens) < 3:  # criteria or algorithm, charset, at least one search key
            self._refuse(tag, imap_parse.ParseError("Missing arguments"))
            return None
        return tokens

    def _refuse(self, tag: bytes, e: imap_parse.ParseError) -> None:
        """BAD for arguments that do not parse, NO [BADCHARSET] for an unknown charset
        (RFC 5256 §3); one log line either way, so an administrator sees what a client sent."""
        self.log.info(
            "imap: SORT/THREAD refused for {account} from {ip}: {why}",
            account=self.account_name,
            ip=self.peer_ip,
            why=str(e)[:200],
        )
        if isinstance(e, imap_search.BadCharset):
            self.sendNegativeResponse(tag, b"[BADCHARSET (US-ASCII UTF-8)] Unsupported charset")
        else:
            self.sendBadResponse(tag, str(e)[:200].encode())

    @staticmethod
    def _sort_search(tokens: list[imap_parse.Token]) -> tuple[imap_search.Predicate, set[str]]:
        _charset, pred = imap_search.compile_search(tokens)
        return pred, imap_search.text_needed(tokens)

    def _off_reactor(self, count: int, fn: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        """``fn(*args)`` in a mailstore thread when ``count`` messages make it long, else now."""
        runner = getattr(self.account, "run", None)
        if runner is not None and count > _ORDER_IN_THREAD:
            offloaded: defer.Deferred[T] = runner(fn, *args)
            return offloaded
        return defer.maybeDeferred(fn, *args)

    def _collect(
        self,
        pred: imap_search.Predicate,
        texts: set[str],
        uid: bool,
        key: Callable[[imap_messagetext.MessageText, int, int], T],
    ) -> defer.Deferred[list[T]]:
        """``key(text, seq, number)`` of every message the predicate matches, in mailbox
        order, in SEARCH's bounded batches (``number`` is the UID for UID SORT/THREAD)."""
        return imap_scan.collect(
            self.mbox,
            getattr(self.account, "run", None),
            self.clock,
            lambda: self._closed,
            pred,
            texts,
            lambda text, seq, u: key(text, seq, u if uid else seq),
        )
