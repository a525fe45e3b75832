"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): results a session keeps up to date.

Pure: a ``SearchContext`` holds one ``SEARCH`` or ``SORT RETURN (UPDATE ...)``'s predicate and
result (as UIDs; for SORT also each message's sort keys and the order) and turns what changed
in the mailbox into the untagged ``ESEARCH`` lines (ADDTO/REMOVEFROM) the client is owed.
Matching the changed messages again is cgtwist.protocols.imap.updates'; when the lines go out
is the session's (cgtwist.protocols.imap.server).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

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
    texts: frozenset[str] = frozenset()  # the BODY/TEXT parts ``pred`` reads (search.text_needed)
    # SORT (CONTEXT=SORT): the criteria, each result UID's sort keys, and the result in sort
    # order as ranks (imap_sort.rank, ties in UID order as RFC 5256 §3 and Dovecot have them),
    # kept sorted: a change inserts or removes with bisect, never sorts the whole result anew.
    criteria: Optional[list[imap_sort.Criterion]] = None
    keys: dict[int, tuple[imap_sort.Key, ...]] = field(default_factory=dict)
    _ranked: list[tuple[Any, ...]] = field(default_factory=list)

    def sorted_by(
        self, criteria: list[imap_sort.Criterion], keys: dict[int, tuple[imap_sort.Key, ...]]
    ) -> None:
        """Make this a SORT's context: ``keys`` are the sort keys of the UIDs in ``result``."""
        self.criteria, self.keys = criteria, dict(keys)
        self._ranked = sorted(imap_sort.rank(u, k, criteria) for u, k in self.keys.items())

    @property
    def order(self) -> list[int]:
        """(SORT) The result's UIDs in sort order."""
        return [r[-1] for r in self._ranked]

    def _rank_of(self, uid: int) -> tuple[Any, ...]:
        assert self.criteria is not None
        return imap_sort.rank(uid, self.keys[uid], self.criteria)

    def _add_sorted(self, uid: int, keys: tuple[imap_sort.Key, ...]) -> None:
        self.keys[uid] = keys
        bisect.insort(self._ranked, self._rank_of(uid))

    def _remove_sorted(self, uid: int) -> None:
        if uid not in self.keys:
            return
        r = self._rank_of(uid)
        i = bisect.bisect_left(self._ranked, r)
        if i < len(self._ranked) and self._ranked[i] == r:
            del self._ranked[i]
        del self.keys[uid]

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
                self._remove_sorted(u)
        numbers = sorted(gone) if self.uid else sorted(s for s in map(old_seq, gone) if s)
        lines = [self._head() + b" REMOVEFROM (0 %s)" % imap_esearch.sequence_set(numbers)]
        return lines + self._counts(seq_of)

    def changed(
        self,
        checked: Iterable[int],
        matched: Mapping[int, Optional[tuple[imap_sort.Key, ...]]],
        seq_of: Callable[[int], Optional[int]],
    ) -> list[bytes]:
        """ADDTO/REMOVEFROM for messages whose flags changed or that are new: ``checked`` are
        the UIDs matched again (cgtwist.protocols.imap.updates), ``matched`` those that match
        now, with their sort keys for a SORT. A message no longer in the view (``seq_of``
        None) is left to the expunge that removes it."""
        added: list[int] = []
        removed: list[int] = []
        number: dict[int, int] = {}
        for uid in checked:
            seq = seq_of(uid)
            if seq is None:
                continue
            number[uid] = uid if self.uid else seq
            if uid in matched and uid not in self.result:
                added.append(uid)
                self.result.add(uid)
                if self.criteria is not None:
                    keys = matched[uid]
                    assert keys is not None
                    self._add_sorted(uid, keys)
            elif uid not in matched and uid in self.result:
                removed.append(number[uid])
                self.result.discard(uid)
                if self.criteria is not None:
                    self._remove_sorted(uid)
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
        lines = []
        if removed:
            lines.append(
                self._head() + b" REMOVEFROM (0 %s)" % imap_esearch.sequence_set(sorted(removed))
            )
        if added:
            at = sorted((bisect.bisect_left(self._ranked, self._rank_of(u)), u) for u in added)
            pairs = [b"%d %d" % (i + 1, number[u]) for i, u in at]
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
