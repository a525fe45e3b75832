"""IMAP SEARCH (RFC 3501 §6.4.4), its ESEARCH forms (RFC 4731, RFC 9051 §6.4.4), SEARCHRES
``$`` (RFC 5182) and updating searches (CONTEXT=SEARCH, CANCELUPDATE: RFC 5267 §4).

Owns the command's course as a mixin of the selected state: the query compiled by
cgtwist.protocols.imap.search, matched in bounded batches by cgtwist.protocols.imap.scan,
answered as SEARCH or ESEARCH, saved for ``$``, and kept up to date on request (the
contexts are cgtwist.protocols.imap.context's; SORT RETURN (UPDATE) in sortcmds uses the same
``_keep_updated``). Split from ``cgtwist.protocols.imap.messages``, which keeps the commands
that read or change messages (FETCH, STORE, COPY, MOVE, EXPUNGE).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.mail import imap4
from twisted.python.failure import Failure

from cgtwist.protocols.imap import context as imap_context
from cgtwist.protocols.imap import esearch as imap_esearch
from cgtwist.protocols.imap import parse as imap_parse
from cgtwist.protocols.imap import scan as imap_scan
from cgtwist.protocols.imap import search as imap_search
from cgtwist.protocols.imap import sort as imap_sort
from cgtwist.protocols.imap.commands import CommandTable
from cgtwist.protocols.imap.mailboxes import MailboxCommands

# The matches of a search: sequence numbers, UIDs and (with a MODSEQ key) MODSEQs.
Found = tuple[list[int], list[int], list[int]]


def _results(modseq: bool) -> Callable[[imap_search.Facts, list[int], int], list[Found]]:
    """The matches of one share of a column search as three lists; MODSEQs only when
    the search has a MODSEQ key (nothing else shows them)."""

    def key(facts: imap_search.Facts, found: list[int], first: int) -> list[Found]:
        base = first + 1
        seqs = [base + i for i in found]
        if len(found) * 4 < len(facts):  # a few matches: their UIDs alone
            uids = [facts.uid(i) for i in found]
        else:
            uids = list(map(facts.uids().__getitem__, found))
        modseqs = list(map(facts.modseqs().__getitem__, found)) if modseq else []
        return [(seqs, uids, modseqs)]

    return key


def _joined(shares: list[Found]) -> Found:
    if len(shares) == 1:
        return shares[0]
    out: Found = ([], [], [])
    for share in shares:
        for whole, part in zip(out, share, strict=True):
            whole.extend(part)
    return out


def _rows(result: list[tuple[int, int, int]]) -> Found:
    """The walk's (seq, UID, MODSEQ) per match as the three lists."""
    if not result:
        return [], [], []
    seqs, uids, modseqs = zip(*result, strict=True)
    return list(seqs), list(uids), list(modseqs)


class SearchCommands(MailboxCommands):
    """SEARCH and CANCELUPDATE; mixed into CgIMAP4Server before imap4.IMAP4Server."""

    search_saved: list[int]  # SEARCHRES ``$`` (RFC 5182): UIDs, emptied at each SELECT
    search_commands = CommandTable()

    # -- SEARCH -----------------------------------------------------------------------------------
    def do_SEARCH_raw(
        self, tag: bytes, segments: list[bytes], literals: list[Any], uid: bool
    ) -> None:
        head = segments[0].split(b" ", 3 if uid else 2)
        first = head[-1] if len(head) == (4 if uid else 3) else b""
        ret: Optional[imap_esearch.Return] = None
        try:
            tokens = imap_parse.tokenize(
                [first] + segments[1:], [x if isinstance(x, bytes) else b"" for x in literals]
            )
            ret, tokens = imap_esearch.split_return(tokens)
            if ret is None and self.rev2:
                ret = imap_esearch.ALL  # RFC 9051 §6.4.4: answered with ESEARCH, not SEARCH
            used: set[bytes] = set()
            query = imap_search.compile_query(tokens, saved=frozenset(self.search_saved), used=used)
            pred = query.pred
            texts = imap_search.text_needed(tokens)
        except imap_search.BadCharset:
            self._search_failed(ret)
            self.sendNegativeResponse(tag, b"[BADCHARSET (US-ASCII UTF-8)] Unsupported charset")
            return
        except imap_parse.ParseError as e:
            self._search_failed(ret)
            self.sendBadResponse(tag, str(e)[:200].encode())
            return
        with_modseq = b"MODSEQ" in used
        d: Optional[defer.Deferred[Found]] = None
        if query.column is not None:
            by_column = imap_scan.collect_columns(
                self.mbox, self.clock, lambda: self._closed, query.column, _results(with_modseq)
            )
            d = None if by_column is None else by_column.addCallback(_joined)
        if d is None:
            d = imap_scan.collect(
                self.mbox,
                getattr(self.account, "run", None),
                self.clock,
                lambda: self._closed,
                pred,
                texts,
                lambda text, seq, u: (seq, u, getattr(text.msg, "modseq", 0) or 0),
            ).addCallback(_rows)
        if with_modseq:
            self._enable_condstore()  # RFC 7162 §3.1: CONDSTORE-enabling
        # An updating search is brought up to date from the MODSEQ it started at.
        start_modseq = getattr(self.mbox, "highest_modseq", None)

        def show(result: Found) -> None:
            seqs, uids = result[0], result[1]
            modseqs = [m or 0 for m in result[2]] if with_modseq else None
            numbers = uids if uid else seqs
            if ret is None:
                # RFC 7162 §3.1.5: the highest MODSEQ of the matches after the numbers.
                tail = b" (MODSEQ %d)" % max(modseqs) if modseqs else b""
                words = " ".join(map(str, numbers)).encode("ascii")  # str(): no format parse
                self.sendUntaggedResponse((b"SEARCH " + words if words else b"SEARCH") + tail)
                self.sendPositiveResponse(tag, b"SEARCH completed")
                return
            if ret.save:
                # RFC 5182 §2.1: ``$`` names messages, whatever numbers the search returned.
                self.search_saved = ret.saved(uids)
            if ret.answers:
                self.sendUntaggedResponse(imap_esearch.response(tag, uid, ret, numbers, modseqs))
            code = b""
            if ret.update:
                code = self._keep_updated(tag, uid, ret, pred, texts, start_modseq, uids)
            self.sendPositiveResponse(
                tag, code + b"SEARCH completed" + (b", result saved" if ret.save else b"")
            )

        def failed(f: Failure) -> None:
            self._search_failed(ret)
            self._fail(tag, "SEARCH")(f)

        d.addCallback(show).addErrback(failed)

    def _keep_updated(
        self,
        tag: bytes,
        uid: bool,
        ret: imap_esearch.Return,
        pred: imap_search.Predicate,
        texts: set[str],
        modseq: Optional[int],
        uids: list[int],
        criteria: Optional[list[imap_sort.Criterion]] = None,
        keys: Optional[dict[int, tuple[imap_sort.Key, ...]]] = None,
    ) -> bytes:
        """Keep the result of ``SEARCH`` or ``SORT RETURN (UPDATE)`` up to date (RFC 5267
        §4.2), up to ``imap.max_search_updates`` per session; beyond it, or in a mailbox
        without MODSEQ to tell changes by, the tagged OK says ``[NOUPDATE "tag"]``. A SORT
        brings its ``criteria`` and each UID's sort ``keys``."""
        limit = self.settings.current.imap.max_search_updates
        contexts = self.search_contexts
        ctx = imap_context.SearchContext(
            tag, uid, ret, pred, modseq or 0, set(uids), texts=frozenset(texts)
        )
        if criteria is not None:
            ctx.sorted_by(criteria, keys or {})
        if modseq is None or (tag not in contexts and len(contexts) >= limit):
            self.log.info(
                "imap: SEARCH UPDATE refused for {account} from {ip}: {n} kept already",
                account=self.account_name,
                ip=self.peer_ip,
                n=len(contexts),
            )
            return b"[NOUPDATE %s] " % ctx.quoted_tag()
        contexts[tag] = ctx
        return b""

    def do_CANCELUPDATE(self, tag: bytes, line: bytes) -> None:
        """CANCELUPDATE "tag"... (RFC 5267 §4.3): those searches are no longer kept up to
        date; a tag that names none is no error."""
        try:
            tokens = imap_parse.tokenize([line or b""], [])
        except imap_parse.ParseError as e:
            self.sendBadResponse(tag, str(e)[:200].encode())
            return
        if not tokens or any(isinstance(t, list) for t in tokens):
            self.sendBadResponse(tag, b"CANCELUPDATE takes search tags")
            return
        for t in tokens:
            assert isinstance(t, bytes)
            self.search_contexts.pop(bytes(t), None)
        self.sendPositiveResponse(tag, b"CANCELUPDATE completed")

    search_commands.add("select", "CANCELUPDATE", do_CANCELUPDATE, imap4.IMAP4Server.arg_line)

    def _search_failed(self, ret: Optional[imap_esearch.Return]) -> None:
        """RFC 5182 §2.1: a failed SEARCH that was to save its result leaves ``$`` empty."""
        if ret is not None and ret.save:
            self.search_saved = []
