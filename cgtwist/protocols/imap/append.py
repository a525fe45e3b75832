"""The arguments of APPEND: one or more messages (MULTIAPPEND, RFC 3502), each with its own
flags and date, sent as a literal or a literal8 (BINARY, RFC 3516 §4.4).

Pure: the command's text segments and literals in, an ``AppendRequest`` or ``ParseError``
(BAD) out. The literals were read and capped by cgtwist.protocols.imap.framing; storing the
messages is the mailstore's job, answering the client cgtwist.protocols.imap.appendcmd's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from cgtwist.protocols.imap.parse import ParseError, append_arguments, literal_at_end, tokenize


@dataclass(frozen=True)
class AppendMessage:
    """One message of an APPEND: flags, internal date (epoch), the literal (a file or bytes),
    and whether it came as a literal8 ``~{n}`` (binary content allowed)."""

    flags: list[str]
    date: Optional[float]
    data: Any
    binary: bool


@dataclass(frozen=True)
class AppendRequest:
    mailbox: bytes
    messages: list[AppendMessage]


def strip_literal8(before: bytes) -> tuple[bytes, bool]:
    """The text before a literal's ``{``, without the ``~`` of a literal8; and whether it had
    one (RFC 3516 §4.1 literal8)."""
    if before.endswith(b"~"):
        return before[:-1], True
    return before, False


def parse(pieces: list[bytes], literals: list[Any]) -> AppendRequest:
    """``mailbox 1*([flags] [date] literal)`` (RFC 3502 §6.3.11): ``pieces`` are the text
    around the literals (``pieces[0]`` starts after ``APPEND``); a literal before any message
    can only be the mailbox name."""
    if len(pieces) != len(literals) + 1:
        raise ParseError("Literal mismatch")
    mailbox: Optional[bytes] = None
    messages: list[AppendMessage] = []
    for i, text in enumerate(pieces):
        lit = literals[i] if i < len(literals) else None
        binary = False
        if lit is not None:
            spec = literal_at_end(text)
            if spec is None:
                raise ParseError("Literal mismatch")
            text, binary = strip_literal8(text[: spec.start])
        tokens = tokenize([text], [])
        if mailbox is None:
            if tokens:
                first = tokens.pop(0)
                if isinstance(first, list):
                    raise ParseError("Expected a mailbox name")
                mailbox = bytes(first)
            elif lit is not None and isinstance(lit, bytes) and not binary:
                mailbox = lit
                continue
            else:
                raise ParseError("Missing mailbox")
        if lit is None:
            if tokens:
                raise ParseError("Junk after the last APPEND message")
            break
        flags, date = append_arguments(tokens)
        messages.append(AppendMessage(flags, date, lit, binary))
    if not messages:
        raise ParseError("APPEND needs a message literal")
    return AppendRequest(mailbox or b"", messages)
