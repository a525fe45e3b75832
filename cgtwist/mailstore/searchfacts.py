"""A selected mailbox's indexed facts as columns, for SEARCH over the whole mailbox.

Owns answering "this fact of every message" from the folder's index alone: UIDs, sizes,
INTERNALDATEs, MODSEQs, flags (lower-cased, \\Recent for this session included), the cached
header fields and values derived from them. SEARCH compiles the keys that need nothing else
into one pass per column (cgtwist.protocols.imap.search), where a message object per message
and a call per key and message cost some fifteen thousand instructions a message; what the
columns cannot answer (BODY, TEXT, a header field the index does not keep) goes through
``row``, one message at a time as before. Never opens a message file, never writes.
"""

from __future__ import annotations

from typing import AbstractSet, Callable, Optional, Sequence

from cgtwist.mailstore import filemeta
from cgtwist.mailstore.folder import Folder
from cgtwist.mailstore.message import MaildirMessage
from cgtwist.mailstore.scan import Entry

_RECENT = frozenset({"\\recent"})


class SearchFacts:
    """The facts of ``entries`` (a view's messages in sequence order, as of one command):
    each column a list in that order, built when first asked for."""

    def __init__(self, folder: Folder, entries: Sequence[Entry], recent: AbstractSet[int]) -> None:
        self._folder = folder
        self._entries = entries
        self._recent = recent  # UIDs \\Recent for this session
        self._uids: Optional[list[int]] = None
        self._letters: Optional[list[str]] = None

    def __len__(self) -> int:
        return len(self._entries)

    def part(self, start: int, end: int) -> SearchFacts:
        """The facts of messages ``start`` to ``end`` (indexes), for one reactor turn's share."""
        if start <= 0 and end >= len(self._entries):
            return self
        return SearchFacts(self._folder, self._entries[start:end], self._recent)

    def uids(self) -> list[int]:
        if self._uids is None:
            self._uids = [e.uid for e in self._entries]
        return self._uids

    def uid(self, i: int) -> int:
        return self._entries[i].uid

    def sizes(self) -> list[int]:
        """RFC822.SIZE of each message."""
        return [e.meta.size for e in self._entries]

    def dates(self) -> list[float]:
        """INTERNALDATE of each message, as epoch seconds."""
        return [e.meta.date for e in self._entries]

    def modseqs(self) -> list[int]:
        return [e.modseq for e in self._entries]

    def flag_test(self, test: Callable[[frozenset[str]], bool]) -> list[bool]:
        """``test`` of each message's flags lower-cased, ``\\recent`` included where this
        session has it (as ``MaildirMessage.search_flags``): asked once per distinct flag
        state, not once per message."""
        if self._letters is None:
            self._letters = [e.letters for e in self._entries]
        letters = self._letters
        one_each = dict(zip(letters, self._entries, strict=True))  # a message per state
        low = self._folder.lower_flags_of
        answer = {ls: test(low(e)) for ls, e in one_each.items()}
        out = list(map(answer.__getitem__, letters))
        recent = self._recent
        if recent and (mine := [i for i, u in enumerate(self.uids()) if u in recent]):
            with_recent = {ls: test(low(e) | _RECENT) for ls, e in one_each.items()}
            for i in mine:
                out[i] = with_recent[letters[i]]
        return out

    def header(self, name: str) -> Optional[list[Optional[str]]]:
        """Each message's value of the header field ``name`` (lower-case) as the index keeps
        it, None for a message without it; None for a field the index does not keep (the
        file would have to be read)."""
        if name not in filemeta.CACHED_HEADERS:
            return None
        return [e.meta.headers.get(name) for e in self._entries]

    def derived(self, name: str) -> list[Optional[str]]:
        """The value ``MaildirMessage.memo_text(name, ...)`` kept for each message, None where
        none is kept yet (``row`` then computes and keeps it)."""
        return [e.meta.extra.get(name) for e in self._entries]

    def row(self, i: int) -> MaildirMessage:
        """The message at index ``i`` (sequence number ``i + 1``), for what the columns do
        not answer."""
        e = self._entries[i]
        return MaildirMessage(self._folder, e, self._folder.flags_of(e), e.uid in self._recent)
