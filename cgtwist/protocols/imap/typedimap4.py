"""Typed doorways to the unannotated parts of ``twisted.mail.imap4`` the IMAP server uses.

The same idea as ``cgtwist.typedtwisted``, for the IMAP listener alone (so nothing below the
protocols imports ``twisted.mail``): under ``mypy --strict`` a call to an unannotated function
is an error in a typed module, and a ``# type: ignore`` at each call would hide every other
mistake on its line. Each name here binds one Twisted callable to the signature cgtwist relies
on, once; mypy checks the binding against Twisted's inferred signature.

Nothing here changes behaviour: each name *is* the Twisted callable or class (``IMAP4Server``
and ``FetchParser`` are Twisted's own classes at run time; the subclasses below exist only for
the type checker and declare the signatures of the inherited methods the server calls).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence, Union, cast

from twisted.mail import imap4

Span = tuple[Optional[int], Optional[int]]
"""One range of a message set: (first, last); None is ``*``, the largest number in use."""


class _MessageSetConstructor(Protocol):
    def __call__(
        self, start: Union[int, Sequence[Span]] = ..., end: Optional[int] = ...
    ) -> imap4.MessageSet: ...


message_set: _MessageSetConstructor = imap4.MessageSet
"""``MessageSet()`` (empty), ``MessageSet(first, last)`` or ``MessageSet([(first, last), ...])``
(one merge of many ranges, not one per ``add``)."""

quote: Callable[[bytes], bytes] = imap4._quote
"""A quoted string (RFC 3501 §4.3): ``"`` and ``\\`` escaped, quotes around."""

collapse_nested_lists: Callable[[Sequence[object]], bytes] = imap4.collapseNestedLists
"""Nested lists of bytes, str, ints, None (NIL) and literals as one parenthesised IMAP value."""

# Twisted's argument parsers, called on the server from its ArgumentParsers part (at run time
# ``self`` is the CgIMAP4Server, an IMAP4Server; the type checker sees only the part).
plist_parser = cast(Callable[[object, bytes], object], imap4.IMAP4Server.arg_plist)
"""Twisted's parenthesised-list argument parser: (list, rest) or a Deferred while a literal
is read."""

flaglist_parser = cast(Callable[[object, bytes], object], imap4.IMAP4Server.arg_flaglist)
"""Twisted's flag-list argument parser: (flags, rest) or a Deferred."""


if TYPE_CHECKING:

    class IMAP4Server(imap4.IMAP4Server):
        def __init__(
            self,
            chal: Optional[dict[bytes, object]] = None,
            contextFactory: Optional[object] = None,
            scheduler: Optional[Callable[..., object]] = None,
        ) -> None: ...
        def lookupCommand(self, cmd: bytes) -> Optional[tuple[object, ...]]: ...

    class FetchParser(imap4._FetchParser):
        result: list[object]

        def __init__(self) -> None: ...
        def parseString(self, s: bytes) -> None: ...

else:
    IMAP4Server = imap4.IMAP4Server
    FetchParser = imap4._FetchParser
