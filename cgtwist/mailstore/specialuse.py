"""An account's special-use attributes (RFC 6154): which folder is \\Sent, \\Archive, ...

Owns the attribute set the server honours, the account's map from folder to attributes and
its file (``specialuse`` in the Maildir, one ``<modified UTF-7 name> TAB <attr> ...`` line per
folder, replaced atomically). An account without the file has the defaults its Maildir was
provisioned with (Sent, Drafts, Trash, Junk); the first change writes the whole map, so from
then on a renamed or deleted default keeps or loses its attribute like any other folder.

One attribute belongs to at most one folder. Clients pick *the* Sent or Trash folder by its
attribute (Thunderbird, Apple Mail and K-9 each take one and ignore the rest), so a second
claimant would make which folder receives sent copies or deleted mail depend on the client;
CREATE refuses it with ``[USEATTR]`` instead and RENAME or DELETE moves or frees it. A
folder may hold several attributes. No I/O here but ``load`` and ``save`` (blocking, small).
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

from cgtwist.mailstore import maildir, names
from cgtwist.mailstore.names import MailboxNameError

FILE = "specialuse"

# RFC 6154 special-use folders created for every new account (name: attribute).
DEFAULTS = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}

# What CREATE (USE (...)) may assign: folders that hold real messages. \All and \Flagged name
# virtual mailboxes (every message, every flagged message) that cgtwist does not have, so
# RFC 6154 §5.1 lets the server refuse them; anything else is unknown.
HONOURED = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")
VIRTUAL = ("\\All", "\\Flagged")
_CANONICAL = {a.lower(): a for a in HONOURED + VIRTUAL}


class UseAttrError(ValueError):
    """The attribute cannot be assigned; the text is for the client (``NO [USEATTR]``)."""


def canonical(attrs: Iterable[str]) -> tuple[str, ...]:
    """The attributes as RFC 6154 spells them, each once, in the order given; UseAttrError
    for one the server cannot honour (virtual or unknown). Attributes are atoms: case does
    not matter."""
    out: list[str] = []
    for raw in attrs:
        attr = _CANONICAL.get(raw.lower())
        if attr is None:
            shown = raw if len(raw) <= 40 and raw.isascii() and raw.isprintable() else "that"
            raise UseAttrError(f"Unknown special-use attribute {shown}")
        if attr in VIRTUAL:
            raise UseAttrError(f"{attr} is a virtual mailbox, which this server does not have")
        if attr not in out:
            out.append(attr)
    return tuple(out)


class SpecialUseMap:
    """Folder name (canonical, as ``names.normalize`` gives it) to its attributes, shared by
    every session of the account in this process. Changing it does not write it: the
    account calls ``save`` (in a thread) with a ``snapshot``."""

    def __init__(self, entries: dict[str, tuple[str, ...]]) -> None:
        self._by_name = {n: a for n, a in entries.items() if a}
        self._creating: set[str] = set()
        self.changed: set[str] = set()  # names changed here since the last ``take_changes``

    def take_changes(self) -> set[str]:
        """The names changed here since the last call (for ``merge_save``)."""
        out, self.changed = self.changed, set()
        return out

    def replace(self, other: SpecialUseMap) -> None:
        """Take ``other``'s entries (the file as another process wrote it), in place: the
        sessions hold this object."""
        self._by_name = dict(other._by_name)

    def begin(self, name: str) -> None:
        """``name`` is being created with its attributes: they are taken until ``end``."""
        self._creating.add(name)

    def end(self, name: str) -> None:
        self._creating.discard(name)

    def creating(self, name: Optional[str]) -> bool:
        return name in self._creating

    def of(self, name: str) -> tuple[str, ...]:
        return self._by_name.get(name, ())

    def holder(self, attr: str) -> Optional[str]:
        """The folder holding ``attr``, if any (existing or not: the caller checks)."""
        for name, attrs in self._by_name.items():
            if attr in attrs:
                return name
        return None

    def assign(self, name: str, attrs: Iterable[str]) -> None:
        """Give ``name`` exactly ``attrs`` (none: drop it), taking them from any holder."""
        attrs = tuple(attrs)
        for other in list(self._by_name):
            if other != name:
                self._set(other, tuple(a for a in self._by_name[other] if a not in attrs))
        self._set(name, attrs)

    def drop(self, name: str) -> bool:
        """Forget ``name``'s attributes; True when it had any."""
        self.changed.add(name)
        return self._by_name.pop(name, None) is not None

    def rename(self, old: str, new: str) -> bool:
        """Move ``old``'s attributes to ``new`` (whatever ``new`` had is dropped: a folder
        that did not exist); True when anything changed."""
        attrs = self._by_name.pop(old, ())
        self.changed.add(old)
        changed = bool(attrs) or new in self._by_name
        self._set(new, attrs)
        return changed

    def snapshot(self) -> dict[str, tuple[str, ...]]:
        return dict(self._by_name)

    def _set(self, name: str, attrs: tuple[str, ...]) -> None:
        if attrs != self._by_name.get(name, ()):
            self.changed.add(name)
        if attrs:
            self._by_name[name] = attrs
        else:
            self._by_name.pop(name, None)


def load(path: str) -> SpecialUseMap:
    """(blocking) The map of the account whose Maildir is ``path``: its file, or the
    defaults without one. A line that cannot be read (bad name, attribute not honoured) is
    skipped, so a hand-edited file never stops a login."""
    try:
        with open(os.path.join(path, FILE), "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return SpecialUseMap({n: (a,) for n, a in DEFAULTS.items()})
    except OSError:
        lines = []
    entries: dict[str, tuple[str, ...]] = {}
    seen: set[str] = set()
    for raw in lines:
        name_raw, tab, attrs_raw = raw.rstrip(b"\r").partition(b"\t")
        if not tab:
            continue
        try:
            name = names.normalize(names.mutf7_decode(name_raw, strict=False))
            attrs = canonical(attrs_raw.decode("ascii").split())
        except (MailboxNameError, UseAttrError, UnicodeDecodeError):
            continue
        attrs = tuple(a for a in attrs if a not in seen)  # one holder per attribute
        seen.update(attrs)
        if attrs:
            entries[name] = attrs
    return SpecialUseMap(entries)


def save(path: str, entries: dict[str, tuple[str, ...]]) -> None:
    """(blocking) Replace the account's file with ``entries``: temp file, fsync, rename."""
    text = "".join(
        names.mutf7_encode(n) + "\t" + " ".join(entries[n]) + "\n" for n in sorted(entries)
    )
    maildir.write_atomic(os.path.join(path, FILE), text.encode("ascii"))


def merge_save(path: str, entries: dict[str, tuple[str, ...]], changed: set[str]) -> None:
    """(blocking) Write the ``changed`` names' attributes (as in ``entries``) into the file as
    read afresh under the account's tree lock, so that another process's change of a moment
    ago (a CREATE with USE in an IMAP worker) is kept, not overwritten; an attribute given
    here is taken from the folder that held it on disk (one holder per attribute)."""
    from cgtwist.mailstore.tree import tree_lock  # tree imports this module

    with tree_lock(path):
        disk = load(path)
        for name in sorted(changed):
            disk.assign(name, entries.get(name, ()))
        save(path, disk.snapshot())


def file_exists(path: str) -> bool:
    return os.path.exists(os.path.join(path, FILE))
