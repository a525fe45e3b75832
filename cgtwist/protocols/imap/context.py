"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): results a session keeps up to date.

Pure: a ``SearchContext`` holds one ``SEARCH`` or ``SORT RETURN (UPDATE ...)``'s predicate and
result (as UIDs; for SORT also each message's sort keys and the order) and turns what changed
in the mailbox into the untagged ``ESEARCH`` lines (ADDTO/REMOVEFROM) the client is owed. Which messages changed (MODSEQ above the context's, or expunged) and when the lines go
out is the protocol's (cgtwist.protocols.imap.server); matching is imap_search's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from cgtwist.protocols.imap import esearch as imap_esearch
from cgtwist.protocols.imap import search as imap_search
from cgtwist.protocols.imap import sort as imap_sort

_COUNTS = frozenset((b"MIN", b"MAX", b"COUNT"))


@dataclass
class SearchContext:
    """One updating search: ``tag`` names it (CANCELUPDATE), ``uid`` whether its numbers are
    UIDs, ``result`` the UIDs that match now, ``modseq`` the HIGHESTMODSEQ it was last
    brought up to."""

    tag: bytes
    uid: bool
    ret: imap_esearch.Return
    pred: imap_search.Predicate
    modseq: int
    result: set[int] = field(default_factory=set)
    # SORT (CONTEXT=SORT): the criteria, each result UID's sort keys and the UIDs in order.
    criteria: Optional[list[imap_sort.Criterion]] = None
    keys: dict[int, tuple[imap_sort.Key, ...]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)

    def _reorder(self) -> None:
        """(SORT) The result in sort order, ties in mailbox (UID) order (RFC 5256 §3)."""
        assert self.criteria is not None
        rows = [(u, self.keys[u]) for u in sorted(self.result)]
        self.order = imap_sort.ordered(rows, self.criteria)

    def quoted_tag(self) -> bytes:
        return b'"' + self.tag.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'

    def _head(self) -> bytes:
        return b"ESEARCH (TAG " + self.quoted_tag() + b")" + (b" UID" if self.uid else b"")

    def expunged(
        self,
        uids: Iterable[int],
        old_seq: Callable[[int], Optional[int]],
        seq_of: Callable[[int], Optional[int]],
    ) -> list[bytes]:
        """REMOVEFROM for the matching messages among ``uids`` about to be reported expunged
        (``old_seq`` gives their numbers before that, RFC 5267 §4.3; ``seq_of`` the numbers
        of the others after it)."""
        gone = [u for u in uids if u in self.result]
        if not gone:
            return []
        self.result.difference_update(gone)
        if self.criteria is not None:
            for u in gone:
                self.keys.pop(u, None)
            self._reorder()
        numbers = sorted(gone) if self.uid else sorted(s for s in map(old_seq, gone) if s)
        lines = [self._head() + b" REMOVEFROM (0 %s)" % imap_esearch.sequence_set(numbers)]
        return lines + self._counts(seq_of)

    def changed(
        self,
        rows: Iterable[tuple[int, int, imap_search.MessageText]],
        count: int,
        top_uid: int,
        seq_of: Callable[[int], Optional[int]],
    ) -> list[bytes]:
        """ADDTO/REMOVEFROM for messages whose flags changed or that are new: ``rows`` are
        (seq, uid, text) of those, ``count``/``top_uid`` the mailbox's for ``*``."""
        ctx = imap_search.Context(0, 0, count, top_uid)
        added: list[int] = []
        removed: list[int] = []
        number: dict[int, int] = {}
        for seq, uid, text in rows:
            ctx.seq, ctx.uid = seq, uid
            number[uid] = uid if self.uid else seq
            match = self.pred(text, ctx)
            if match and uid not in self.result:
                added.append(uid)
                self.result.add(uid)
                if self.criteria is not None:
                    self.keys[uid] = imap_sort.sort_keys(text, self.criteria)
            elif not match and uid in self.result:
                removed.append(number[uid])
                self.result.discard(uid)
                self.keys.pop(uid, None)
        if self.criteria is not None and (added or removed):
            return self._sorted_lines(added, removed, number, seq_of)
        added = [number[u] for u in added]
        lines = []
        if removed:
            lines.append(
                self._head() + b" REMOVEFROM (0 %s)" % imap_esearch.sequence_set(sorted(removed))
            )
        if added:
            lines.append(self._head() + b" ADDTO (0 %s)" % imap_esearch.sequence_set(sorted(added)))
        if lines:
            lines += self._counts(seq_of)
        return lines

    def _sorted_lines(
        self,
        added: list[int],
        removed: list[int],
        number: dict[int, int],
        seq_of: Callable[[int], Optional[int]],
    ) -> list[bytes]:
        """(SORT) REMOVEFROM for the messages that left, then ADDTO with the position of each
        new one in the updated order (RFC 5267 §4.3: positions count from 1)."""
        self._reorder()
        lines = []
        if removed:
            lines.append(
                self._head() + b" REMOVEFROM (0 %s)" % imap_esearch.sequence_set(sorted(removed))
            )
        if added:
            new = set(added)
            pairs = [b"%d %d" % (i + 1, number[u]) for i, u in enumerate(self.order) if u in new]
            lines.append(self._head() + b" ADDTO (" + b" ".join(pairs) + b")")
        return lines + self._counts(seq_of)

    def _counts(self, seq_of: Callable[[int], Optional[int]]) -> list[bytes]:
        """MIN, MAX and COUNT anew when the search asked for them (RFC 5267 §4.3)."""
        wanted = self.ret.options & _COUNTS
        if not wanted:
            return []
        if self.criteria is not None:
            # ESORT: MIN and MAX are the first and last in sort order (RFC 5267 §4.2).
            nums = [u if self.uid else seq_of(u) for u in self.order]
            numbers = [n for n in nums if n is not None]
        else:
            numbers = (
                sorted(self.result)
                if self.uid
                else sorted(s for s in map(seq_of, self.result) if s is not None)
            )
        only = imap_esearch.Return(frozenset(wanted))
        body = imap_esearch.response(self.tag, self.uid, only, numbers)
        return [body]
