"""Matching a search predicate over the selected mailbox without holding the reactor.

Owns the one loop SEARCH, SORT and THREAD share: the messages in mailbox order, at most
``BATCH`` messages, ``BATCH_BYTES`` of message text or ``TURN`` seconds per reactor turn; a
message larger than ``OFFLOAD`` whose BODY/TEXT must be decoded is read and decoded in the
mailstore's threads first and matched on the reactor at the start of a turn (matching in I/O
threads was measured ten times slower with four searching clients: GIL hand-offs at every file
read). It never parses commands and never writes responses.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Optional, Sequence, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from cgtwist.protocols.imap import fetch as imap_fetch
from cgtwist.protocols.imap import messagetext as imap_messagetext
from cgtwist.protocols.imap import search as imap_search
from cgtwist.protocols.imap import typedimap4

T = TypeVar("T")
BATCH = 200  # messages matched in one reactor turn at most
BATCH_BYTES = 4 << 20  # message text read for BODY/TEXT in one turn at most
TURN = 0.01  # seconds of matching in one reactor turn before yielding
OFFLOAD = 1 << 20  # a message this large is read and decoded for BODY/TEXT in a thread
COLUMN_BATCH = 5000  # messages matched from the index's columns in one reactor turn at most


def _reader(msg: Any) -> Callable[[], bytes]:
    return lambda: imap_fetch.read_raw(msg)


def collect(
    box: Any,
    runner: Optional[Callable[..., defer.Deferred[Any]]],
    clock: Any,
    gone: Callable[[], bool],
    pred: imap_search.Predicate,
    texts: set[str],
    key: Callable[[imap_messagetext.MessageText, int, int], T],
) -> defer.Deferred[list[T]]:
    """``key(text, seq, uid)`` of every message of ``box`` that ``pred`` matches, in mailbox
    order. ``runner`` runs blocking work in a thread (None: never offload); ``gone()`` true
    stops the work (the client went away); ``texts`` names the BODY/TEXT parts needed."""

    def run(rows: Any) -> defer.Deferred[list[T]]:
        if not isinstance(rows, Sequence):
            rows = list(rows)
        top_uid = rows[-1][1].getUID() if rows else 0
        return match(rows, box.getMessageCount(), top_uid, runner, clock, gone, pred, texts, key)

    rows = getattr(box, "message_rows", None)  # the mailstore's: one message at a time
    if rows is not None:
        d = defer.maybeDeferred(rows)
    else:
        d = defer.maybeDeferred(box.fetch, typedimap4.message_set(1, None), False)
    return d.addCallback(run)


def collect_columns(
    box: object,
    clock: IReactorTime,
    gone: Callable[[], bool],
    column: imap_search.Column,
    key: Callable[[imap_search.Facts, list[int], int], list[T]],
) -> Optional[defer.Deferred[list[T]]]:
    """``collect`` for a search whose every key the folder's index answers: the mailbox's
    facts as columns (``box.search_facts()``), ``COLUMN_BATCH`` messages a reactor turn,
    no message object per message. ``key(facts, indexes, first)`` makes the results of the
    matching ``indexes`` of one turn's ``facts`` (sequence numbers ``first + 1`` on). None
    when the mailbox has no such facts, or the search asks for one the index does not keep
    (NotIndexed): ``collect`` then matches message by message."""
    facts_of = getattr(box, "search_facts", None)
    if facts_of is None:
        return None
    facts: imap_search.Facts = facts_of()
    total = len(facts)
    top_uid = facts.uid(total - 1) if total else 0
    done: defer.Deferred[list[T]] = defer.Deferred()
    found: list[T] = []

    def turn(start: int) -> bool:
        part = facts.part(start, start + COLUMN_BATCH)
        truth = column(imap_search.Span(part, start, total, top_uid))
        found.extend(key(part, list(itertools.compress(range(len(truth)), truth)), start))
        return start + COLUMN_BATCH < total

    try:
        more = turn(0)  # NotIndexed shows here, before anything is answered
    except imap_search.NotIndexed:
        return None
    except Exception:
        return defer.fail()

    def later(start: int) -> None:
        if gone():
            return
        try:
            more = turn(start)
        except Exception:
            done.errback()
            return
        if more:
            clock.callLater(0, later, start + COLUMN_BATCH)
        else:
            done.callback(found)

    if more:
        clock.callLater(0, later, COLUMN_BATCH)
    else:
        done.callback(found)
    return done


def match(
    rows: Sequence[tuple[int, Any]],
    count: int,
    top_uid: int,
    runner: Optional[Callable[..., defer.Deferred[Any]]],
    clock: Any,
    gone: Callable[[], bool],
    pred: imap_search.Predicate,
    texts: set[str] | frozenset[str],
    key: Callable[[imap_messagetext.MessageText, int, int], T],
) -> defer.Deferred[list[T]]:
    """``key(text, seq, uid)`` of each of ``rows`` ((seq, message), in mailbox order) that
    ``pred`` matches, in bounded batches per reactor turn; ``count`` and ``top_uid`` are the
    mailbox's, for ``*``. ``collect`` over a whole mailbox, and an updating search (CONTEXT=
    SEARCH) over the messages that changed."""
    done: defer.Deferred[list[T]] = defer.Deferred()
    found: list[T] = []

    def batch(start: int, prepared: Optional[imap_messagetext.MessageText] = None) -> None:
        i, read = start, 0
        end = min(len(rows), start + BATCH)
        try:
            ctx = imap_search.Context(0, 0, count, top_uid)
            deadline = clock.seconds() + TURN
            while i < end and read < BATCH_BYTES and clock.seconds() <= deadline:
                seq, msg = rows[i]
                text = prepared or imap_messagetext.MessageText(msg, _reader(msg))
                if prepared is None and texts and runner is not None and msg.getSize() > OFFLOAD:
                    d = runner(text.prepare, texts)
                    d.addCallbacks(lambda _, i=i, t=text: batch(i, t), done.errback)
                    return
                prepared = None
                i += 1
                ctx.seq = seq
                ctx.uid = msg.getUID()
                if pred(text, ctx):
                    found.append(key(text, seq, ctx.uid))
                read += text.bytes_read
        except Exception:
            done.errback()
            return
        if i < len(rows):
            if gone():
                return
            clock.callLater(0, batch, i)
        else:
            done.callback(found)

    batch(0)
    return done
