"""Bringing one session's updating searches (CONTEXT=SEARCH/SORT, RFC 5267 §4.3) up to date
without holding the reactor.

Owns the matching of the messages that changed since each kept search was last brought up to
date (their MODSEQ rose: flags changed, new mail): the same bounded batches and off-reactor
reads of large messages for BODY/TEXT as SEARCH itself (``imap_scan.match``), one match at a
time per session. What it found is kept until the session asks for the lines (``lines``),
so that sequence numbers are those of the view as the client knows it when they go out. It
never writes to the transport and never decides when lines may be sent: the session
(cgtwist.protocols.imap.server) does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.logs import Logger
from cgtwist.protocols.imap import context as imap_context
from cgtwist.protocols.imap import messagetext as imap_messagetext
from cgtwist.protocols.imap import scan as imap_scan
from cgtwist.protocols.imap import sort as imap_sort

log = Logger()


@dataclass(frozen=True)
class _Found:
    """One context's re-match: the UIDs looked at, and those that match -> sort keys."""

    ctx: imap_context.SearchContext
    box: Any
    checked: list[int]
    matched: dict[int, Optional[tuple[imap_sort.Key, ...]]]


def _keyed(
    criteria: Optional[list[imap_sort.Criterion]],
) -> Callable[[imap_messagetext.MessageText, int, int], tuple[int, Optional[tuple[Any, ...]]]]:
    """A match's result for one message: its UID and, for a SORT, its sort keys."""

    def key(
        text: imap_messagetext.MessageText, seq: int, uid: int
    ) -> tuple[int, Optional[tuple[Any, ...]]]:
        return uid, imap_sort.sort_keys(text, criteria) if criteria else None

    return key


class ContextUpdates:
    """The updating searches of one session: ``contexts`` (the session's dict, by tag),
    ``runner`` for blocking reads (None: never offload), ``clock`` for the batches' turns,
    ``gone()`` true once the client has left (the work stops)."""

    def __init__(
        self,
        contexts: dict[bytes, imap_context.SearchContext],
        runner: Callable[[], Optional[Callable[..., defer.Deferred[Any]]]],
        clock: Any,
        gone: Callable[[], bool],
    ) -> None:
        self.contexts = contexts
        self._runner = runner
        self._clock = clock
        self._gone = gone
        self._found: list[_Found] = []
        self._waiters: list[defer.Deferred[None]] = []
        self.running = False

    def lines(self, box: Any) -> list[bytes]:
        """The ESEARCH ADDTO/REMOVEFROM lines (without ``* ``) of the matches finished so far,
        numbered as ``box``'s view is now; results for a context since cancelled, or for
        another mailbox, are dropped."""
        found, self._found = self._found, []
        out: list[bytes] = []
        for f in found:
            if f.box is box and self.contexts.get(f.ctx.tag) is f.ctx:
                out += f.ctx.changed(f.checked, f.matched, box.seq_of)
        return out

    def start(self, box: Any) -> bool:
        """Start matching what changed in ``box`` since the stale contexts were last brought
        up to date, unless a match is running; True while one is (``when_ready``)."""
        if self.running:
            return True
        high = getattr(box, "highest_modseq", None)
        if high is None:
            return False
        stale = [(c, c.modseq) for c in self.contexts.values() if c.modseq < high]
        if not stale:
            return False
        since = min(m for _c, m in stale)
        rows = [
            (seq, msg)
            for seq, msg in box.message_rows()
            if (getattr(msg, "modseq", 0) or 0) > since
        ]
        count = box.getMessageCount()
        top = box.getUID(count) if count else 0
        for ctx, _m in stale:
            ctx.modseq = high  # a change after this is matched by the next update
        self.running = True
        d = self._match_all(box, stale, rows, count, top)
        d.addErrback(self._failed)
        d.addBoth(self._done)
        return True

    def when_ready(self) -> defer.Deferred[None]:
        """Fires when the running match has finished (at once when none is running)."""
        d: defer.Deferred[None] = defer.Deferred()
        if not self.running:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    @defer.inlineCallbacks
    def _match_all(
        self,
        box: Any,
        stale: list[tuple[imap_context.SearchContext, int]],
        rows: list[tuple[int, Any]],
        count: int,
        top: int,
    ) -> Any:
        for ctx, modseq in stale:
            mine = [(s, m) for s, m in rows if (getattr(m, "modseq", 0) or 0) > modseq]
            found = yield imap_scan.match(
                mine,
                count,
                top,
                self._runner(),
                self._clock,
                self._gone,
                ctx.pred,
                ctx.texts,
                _keyed(ctx.criteria),
            )
            self._found.append(_Found(ctx, box, [m.getUID() for _s, m in mine], dict(found)))

    def _failed(self, f: Failure) -> None:
        log.failure("imap: bringing an updating search up to date failed", f)

    def _done(self, _: object) -> None:
        self.running = False
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
