"""Mailbox names: the IMAP modified UTF-7 codec and the only mapping from a folder name to its Maildir++ directory.

Pure: validates names and computes paths, never touches the disk except through
``cgtwist.paths.inside`` (which resolves symlinks). Folder names use ``/`` as the hierarchy
delimiter; INBOX is the Maildir root, ``A/B`` is the directory ``.A.B``. Each component is
encoded with an allow-list (printable ASCII except ``. / \\ & ~``; everything else becomes a
modified UTF-7 shift sequence), so no name can produce ``..``, a ``/`` or a path outside the
account's Maildir (RELIABILITY.md a8, CVE-2021-40525, CVE-2022-22931).
"""

from __future__ import annotations

import base64
import os
import re
from typing import Union

from cgtwist import paths
from cgtwist.errors import InvalidName

DELIMITER = "/"
INBOX = "INBOX"
MAX_NAME_CHARS = 200  # IMAP name, decoded
_MAX_DIR_BYTES = 250  # on-disk directory name; NAME_MAX is 255

# Characters kept literally on disk; everything else is shifted into base64 (RFC 3501 §5.1.3).
_LITERAL = frozenset(chr(c) for c in range(0x20, 0x7F)) - set("./\\&~")
_B64_RE = re.compile(r"^[A-Za-z0-9+,]*$")


class MailboxNameError(InvalidName):
    """A mailbox name that is malformed or would leave the account's Maildir."""


# ---------------------------------------------------------------------------------------------
# Modified UTF-7 (RFC 3501 §5.1.3)


def _b64enc(text: str) -> str:
    raw = text.encode("utf-16-be")
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def _b64dec(chunk: str) -> str:
    if not chunk or not _B64_RE.match(chunk):
        raise MailboxNameError("bad modified UTF-7 shift sequence")
    if len(chunk) % 4 == 1:
        raise MailboxNameError("bad modified UTF-7 shift sequence")
    raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
    if len(raw) % 2:
        raise MailboxNameError("bad modified UTF-7 shift sequence")
    try:
        return raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise MailboxNameError("bad UTF-16 in modified UTF-7") from None


_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


def mutf7_encode(text: str, literal: frozenset[str] = _PRINTABLE) -> str:
    """Encode ``text`` as modified UTF-7; characters outside ``literal`` are shifted, ``&`` is ``&-``."""
    out: list[str] = []
    run: list[str] = []
    for ch in text:
        if ch in literal and ch != "&":
            if run:
                out.append("&" + _b64enc("".join(run)) + "-")
                run = []
            out.append(ch)
        elif ch == "&":
            if run:
                out.append("&" + _b64enc("".join(run)) + "-")
                run = []
            out.append("&-")
        else:
            run.append(ch)
    if run:
        out.append("&" + _b64enc("".join(run)) + "-")
    return "".join(out)


def mutf7_decode(data: Union[bytes, str], strict: bool = True) -> str:
    """Decode modified UTF-7. ``strict`` (client input) also refuses shifted printable ASCII.

    Raises MailboxNameError for 8-bit octets, an unterminated ``&`` or bad base64.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise MailboxNameError("8-bit octets in mailbox name") from None
    else:
        text = data
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "&":
            if not (0x20 <= ord(ch) < 0x7F):
                raise MailboxNameError("non-printable or non-ASCII character in mailbox name")
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise MailboxNameError("unterminated modified UTF-7 shift")
        if end == i + 1:
            out.append("&")
        else:
            decoded = _b64dec(text[i + 1 : end])
            if strict and any(0x20 <= ord(c) < 0x7F for c in decoded):
                raise MailboxNameError("printable ASCII must not be shifted in modified UTF-7")
            out.append(decoded)
        i = end + 1
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Folder names


def normalize(name: Union[str, bytes]) -> str:
    """Validate an IMAP folder name and return its canonical form (INBOX upper-cased).

    ``bytes`` are modified UTF-7 from the wire and decoded strictly; ``str`` is taken as already
    decoded (Twisted's IMAP4Server decodes before calling the account). Refuses empty names and
    components, ``.``/``..``, leading ``.`` or ``~``, control characters, NUL, ``*``/``%``,
    a trailing or doubled delimiter, and names too long for the file system.
    """
    if isinstance(name, bytes):
        name = mutf7_decode(name, strict=True)
    if not isinstance(name, str) or not name:
        raise MailboxNameError("empty mailbox name")
    if len(name) > MAX_NAME_CHARS:
        raise MailboxNameError("mailbox name too long")
    parts = name.split(DELIMITER)
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    for part in parts:
        if not part:
            raise MailboxNameError("empty hierarchy level in mailbox name")
        if part in (".", "..") or part[0] in ".~":
            raise MailboxNameError("mailbox name component may not start with '.' or '~'")
        for ch in part:
            o = ord(ch)
            if (
                o < 0x20
                or o == 0x7F
                or ch in "*%\\"
                or 0xD800 <= o <= 0xDFFF
                or o in (0xFEFF, 0xFFFE)
            ):
                raise MailboxNameError("forbidden character in mailbox name")
        if part != part.strip():
            raise MailboxNameError("mailbox name component may not begin or end with a space")
    canon = DELIMITER.join(parts)
    if canon != INBOX and len(dir_name(canon)) > _MAX_DIR_BYTES:
        raise MailboxNameError("mailbox name too long")
    return canon


def dir_name(canon: str) -> str:
    """The Maildir++ directory name (``.A.B``) of a canonical non-INBOX folder name."""
    return "." + ".".join(mutf7_encode(p, _LITERAL) for p in canon.split(DELIMITER))


def folder_path(maildir: str, name: Union[str, bytes]) -> str:
    """The directory of folder ``name`` inside the account's ``maildir``, containment-checked.

    INBOX is ``maildir`` itself. Raises MailboxNameError for any unsafe name.
    """
    canon = normalize(name)
    if canon == INBOX:
        return maildir
    path = os.path.join(maildir, dir_name(canon))
    try:
        return paths.inside(maildir, path)
    except InvalidName:
        raise MailboxNameError("mailbox path escapes the account") from None


def name_from_dir(entry: str) -> str | None:
    """The folder name of an on-disk Maildir++ directory entry (``.A.B`` -> ``A/B``), or None
    when the entry is not a valid folder directory (then it is ignored, never listed)."""
    if not entry.startswith(".") or entry in (".", ".."):
        return None
    try:
        parts = [mutf7_decode(p, strict=False) for p in entry[1:].split(".")]
        canon = normalize(DELIMITER.join(parts))
    except (MailboxNameError, ValueError):
        return None
    if canon == INBOX or dir_name(canon) != entry:
        return None
    return canon


def is_inbox(canon: str) -> bool:
    return canon == INBOX


def parent_names(canon: str) -> list[str]:
    """All ancestors of ``canon``: ``A/B/C`` -> ``["A", "A/B"]``."""
    parts = canon.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]
