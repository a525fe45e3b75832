"""An account's folders as Twisted's IMAP account (IAccount, INamespacePresenter).

Owns folder-level operations on one account's Maildir++ tree: create, delete, rename, list
with wildcards and attributes (CHILDREN, SPECIAL-USE), subscriptions (Dovecot-style
``subscriptions`` file), special-use attributes kept with their folders through CREATE (USE),
RENAME and DELETE (``cgtwist.mailstore.specialuse``), and the initial layout (INBOX plus
Sent, Drafts, Trash, Junk). Every
name goes through ``cgtwist.mailstore.names``, which refuses anything that could leave the
account's directory. Messages are handled by ``MaildirMailbox``.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional, Sequence, Union

from twisted.internet import defer
from twisted.mail import imap4
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.account_settings import QuotaLimits
from cgtwist.logs import Logger
from cgtwist.mailstore import maildir, names, specialuse
from cgtwist.mailstore.listing import MailboxInfo, WildcardPattern
from cgtwist.mailstore.mailbox import MaildirMailbox
from cgtwist.mailstore.names import INBOX, MailboxNameError
from cgtwist.mailstore.quota import Usage
from cgtwist.mailstore.tree import (
    DELETED_PREFIX,
    SUBSCRIPTIONS_FILE,
    change_subscriptions,
    ensure_all,
    provision,
    read_subscriptions,
    remove_new,
    rename_all,
    stamp,
)

if TYPE_CHECKING:
    from cgtwist.mailstore.notifier import MailboxNotifier


class MailboxError(imap4.MailboxException):
    """A folder operation was refused; the text is safe to show to the client."""


def _ensure_within(path: str, dirs: list[str], limit: int) -> None:
    """(blocking) ``ensure_all`` unless the account would then have more than ``limit``
    folders besides INBOX (``quota.max_folders``): MailboxError ``[LIMIT]`` (RFC 5530)."""
    have = 0
    try:
        entries = os.listdir(path)
    except OSError:
        entries = []
    for entry in entries:
        full = os.path.join(path, entry)
        if names.name_from_dir(entry) is not None and maildir.is_maildir(full):
            have += 1
    if have + len(dirs) > limit:
        raise MailboxError(f"[LIMIT] Too many mailboxes: at most {limit} besides INBOX")
    ensure_all(dirs)


@implementer(imap4.IAccount, imap4.INamespacePresenter)
class MaildirAccount:
    """The IMAP avatar: ``path`` is the account's Maildir, ``account`` is "name@domain",
    ``notifier`` the process-wide MailboxNotifier (folder registry, threads, push);
    ``max_folders`` the account's ``quota.max_folders`` (0 = no limit) when it logged in;
    ``quota_limits`` fires with its storage and message limits in force now (read at each
    APPEND, COPY and GETQUOTA, so a ``settings set`` applies to open sessions; None: no
    limits)."""

    log = Logger()

    def __init__(
        self,
        path: str,
        account: str,
        notifier: MailboxNotifier,
        max_folders: int = 0,
        quota_limits: Optional[Callable[[], defer.Deferred[QuotaLimits]]] = None,
    ) -> None:
        self.path = path
        self.account = account
        self.notifier = notifier
        self.max_folders = max_folders
        self._quota_limits = quota_limits
        self._subs: Optional[_Subscriptions] = None
        self._uses: Optional[_SpecialUses] = None

    # -- quota (RFC 9208; the count is cgtwist.mailstore.quota's) ---------------------------

    def quota_limits(self) -> defer.Deferred[QuotaLimits]:
        """The account's quota limits in force (all 0 without a source)."""
        if self._quota_limits is None:
            return defer.succeed(QuotaLimits())
        return self._quota_limits()

    def quota_usage(self) -> defer.Deferred[Usage]:
        """What the account keeps now (counted by a scan in a thread when not known)."""
        return self.notifier.usage.usage(self.account, self.path)

    def check_room(self, octets: int, messages: int) -> defer.Deferred[None]:
        """Fire when ``octets`` in ``messages`` more fit the account's quota; else fail with
        MailboxError ``[OVERQUOTA]`` (RFC 9208 §4.3: APPEND and COPY store nothing then),
        logged. The messages are counted when stored (the folder reports them)."""

        async def check() -> None:
            limits = await self.quota_limits()
            over = await self.notifier.usage.room(self.account, self.path, limits, octets, messages)
            if over:
                self.log.info(
                    "quota: {account} refused {messages} messages of {octets} octets: "
                    "{resource} limit reached",
                    account=self.account,
                    messages=messages,
                    octets=octets,
                    resource=over,
                )
                what = "storage" if over == "STORAGE" else "message count"
                raise MailboxError(f"[OVERQUOTA] Quota exceeded: mailbox {what} limit reached")

        return defer.ensureDeferred(check())

    # -- helpers -------------------------------------------------------------------------------

    def _norm(self, name: Union[str, bytes]) -> str:
        try:
            return names.normalize(name)
        except MailboxNameError as e:
            raise MailboxError(f"[CANNOT] Invalid mailbox name: {e}") from None

    def _dir(self, canon: str) -> str:
        try:
            return names.folder_path(self.path, canon)
        except MailboxNameError as e:
            raise MailboxError(f"[CANNOT] Invalid mailbox name: {e}") from None

    def special_use_of(self, canon: str) -> Optional[str]:
        """The folder's special-use attributes, space-separated (RFC 6154), or None."""
        return " ".join(self.special_uses_of(canon)) or None

    def special_uses_of(self, canon: str) -> tuple[str, ...]:
        return self._special().of(canon)

    def _special(self) -> specialuse.SpecialUseMap:
        """The account's special-use map, one shared by all its sessions in this process,
        read again when another process changed the file (one stat per call) and this one
        has no change of its own waiting to be written."""
        if self._uses is None:
            self._uses = self.notifier.shared(
                ("specialuse", self.path), lambda: _SpecialUses(self.path)
            )
        return self._uses.current()

    def _save_special(self) -> defer.Deferred[None]:
        """Write the map as it is when the write's turn comes, durably (in a thread); writes
        of one account happen in order. A failure is logged by the notifier and passed on."""
        return self.notifier.write_serialised(
            ("specialuse", self.path),
            lambda: (
                specialuse.merge_save,
                self.path,
                self._special().snapshot(),
                self._special().take_changes(),
            ),
        )

    def _use_attrs(self, canon: str, use: Sequence[str]) -> tuple[str, ...]:
        """CREATE's USE attributes for ``canon`` as stored, or MailboxError ``[USEATTR]``
        (RFC 6154 §5.1) for one the server does not honour or another folder holds."""
        try:
            attrs = specialuse.canonical(use)
        except specialuse.UseAttrError as e:
            self._refused(canon, str(e))
        uses = self._special()
        for attr in attrs:
            holder = uses.holder(attr)
            if holder is not None and holder != canon and self.exists(holder):
                self._refused(canon, f"Another mailbox already has the special use {attr}")
            if uses.creating(holder):
                self._refused(canon, f"A mailbox is being created with {attr}")
        return attrs

    def _refused(self, canon: str, why: str) -> NoReturn:
        self.log.info(
            "{account}: CREATE {folder} refused: {why}", account=self.account, folder=canon, why=why
        )
        raise MailboxError(f"[USEATTR] {why}")

    def exists(self, name: Union[str, bytes]) -> bool:
        try:
            canon = names.normalize(name)
            return maildir.is_maildir(names.folder_path(self.path, canon))
        except MailboxNameError:
            return False

    def folder_names(self) -> list[str]:
        """Every selectable folder of the account, INBOX first (one listdir)."""
        out = [INBOX]
        try:
            entries = os.listdir(self.path)
        except OSError:
            return out
        for entry in entries:
            canon = names.name_from_dir(entry)
            if canon is None:
                continue
            full = os.path.join(self.path, entry)
            if os.path.islink(full) or not maildir.is_maildir(full):
                continue
            out.append(canon)
        return [INBOX] + sorted(out[1:])

    def run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        """Run blocking or long work ``fn(*args)`` off the reactor (the notifier's threads):
        for the IMAP layer's reading and decoding of large messages."""
        return self.notifier.run(fn, *args)

    def ensure(self) -> defer.Deferred[bool]:
        """Create the Maildir and special-use folders if missing (in a thread)."""
        return self.notifier.run(provision, self.path)

    # -- IAccount ------------------------------------------------------------------------------

    def addMailbox(self, name: Union[str, bytes], mbox: Any = None) -> defer.Deferred[bool]:
        return self.create(name)

    def create(self, pathspec: Union[str, bytes], use: Sequence[str] = ()) -> defer.Deferred[bool]:
        """CREATE (RFC 3501 §6.3.3): a trailing delimiter is dropped; missing parents are
        created too. Raises MailboxError (e.g. ``[ALREADYEXISTS]``) when refused; otherwise
        fires once the new folders are durable (made in a thread).

        ``use`` (RFC 6154 §5.1 ``CREATE name (USE (...))``) gives the new folder those
        special-use attributes; one refused is ``[USEATTR]`` and nothing is created. The
        folder is made first and its attributes written after, so a crash between the two
        leaves a plain folder whose CREATE was never answered; a failed write removes it."""
        if isinstance(pathspec, bytes):
            try:
                pathspec = names.mutf7_decode(pathspec)
            except MailboxNameError as e:
                raise MailboxError(f"[CANNOT] Invalid mailbox name: {e}") from None
        if pathspec.endswith(names.DELIMITER) and len(pathspec) > 1:
            pathspec = pathspec[:-1]
        canon = self._norm(pathspec)
        if canon == INBOX or self.exists(canon):
            raise MailboxError("[ALREADYEXISTS] Mailbox already exists")
        dirs = [
            self._dir(p) for p in names.parent_names(canon) if p != INBOX and not self.exists(p)
        ]
        dirs.append(self._dir(canon))
        attrs = self._use_attrs(canon, use)
        uses = self._special()
        new_names = [p for p in names.parent_names(canon) if p != INBOX and not self.exists(p)]
        new_names.append(canon)
        # A name of a folder deleted behind the server's back may still hold attributes: a
        # new folder starts without them.
        stale = any(uses.of(n) for n in new_names)

        def made(_: object) -> bool:
            self.log.info(
                "{account} created folder {folder}{use}",
                account=self.account,
                folder=canon,
                use=f" with special use {' '.join(attrs)}" if attrs else "",
            )
            return True

        if self.max_folders:
            d = self.notifier.run(_ensure_within, self.path, dirs, self.max_folders)
        else:
            d = self.notifier.run(ensure_all, dirs)
        if not attrs and not stale:
            return d.addCallback(made)
        for n in new_names:
            uses.assign(n, attrs if n == canon else ())
        uses.begin(canon)  # its attributes are claimed while the folder is being made

        def not_made(failure: Failure) -> Failure:
            uses.end(canon)
            uses.drop(canon)
            return failure

        def record(_: object) -> defer.Deferred[bool]:
            uses.end(canon)

            def unwritten(failure: Failure) -> defer.Deferred[bool]:
                uses.drop(canon)
                self.log.warn(
                    "{account}: special use of {folder} not written, folder removed",
                    account=self.account,
                    folder=canon,
                )
                removed = self.notifier.run(remove_new, dirs)
                return removed.addBoth(lambda _: failure)

            return self._save_special().addCallbacks(made, unwritten)

        return d.addCallbacks(record, not_made)

    def select(
        self, name: Union[str, bytes], rw: bool = True
    ) -> defer.Deferred[Optional[MaildirMailbox]]:
        """SELECT/EXAMINE/STATUS/APPEND target: fires with a MaildirMailbox, or None when the
        name is invalid or no such folder exists (RFC 3501 §6.3.1)."""
        try:
            canon = names.normalize(name)
            path = names.folder_path(self.path, canon)
        except MailboxNameError:
            return defer.succeed(None)
        if not maildir.is_maildir(path):
            if canon != INBOX:
                return defer.succeed(None)
        folder = self.notifier.folder(self.account, canon, path)
        box = MaildirMailbox(self, folder, rw)

        def looked(_: object) -> Union[MaildirMailbox, defer.Deferred[Optional[MaildirMailbox]]]:
            if folder.gone:
                # This process had the folder loaded, and another one deleted it (and may
                # have made a new one under the name): look again, at what is there now.
                box.close()
                return self.select(name, rw)
            return box.opened()

        return box.refresh().addCallback(looked)

    def delete(self, name: Union[str, bytes]) -> defer.Deferred[bool]:
        """DELETE (RFC 3501 §6.3.4): removes the folder and its messages; its sub-folders
        stay (the parent is then listed \\Noselect) and so does its subscription. INBOX
        cannot be deleted."""
        canon = self._norm(name)
        if canon == INBOX:
            raise MailboxError("[CANNOT] INBOX cannot be deleted")
        path = self._dir(canon)
        if not maildir.is_maildir(path):
            raise MailboxError("[NONEXISTENT] No such mailbox")
        graveyard = os.path.join(self.path, DELETED_PREFIX + os.urandom(8).hex())

        def gone(_: object) -> Union[bool, defer.Deferred[bool]]:
            self.notifier.forget(self.account, canon)
            # Its messages went: count again, here and in every other process.
            self.notifier.usage.forget(self.account, self.path)
            self.notifier.run(shutil.rmtree, graveyard, True)
            # The subscription stays: RFC 3501 §6.3.9 forbids the server to remove a name
            # from the list on its own (LIST (SUBSCRIBED) shows it \\NonExistent, RFC 5258).
            self.log.info("{account} deleted folder {folder}", account=self.account, folder=canon)
            if not self._special().drop(canon):
                return True
            # Its special use goes with it (a folder re-created under the name is a new
            # one). The folder is gone whatever the write does: a failure is only logged.
            return self._save_special().addBoth(lambda _: True)

        # Renamed out of sight and that made durable (a thread's work), then removed at
        # leisure: a cut never brings back a folder whose DELETE was answered.
        return self.notifier.run(rename_all, self.path, [(path, graveyard)]).addCallback(gone)

    def rename(
        self, oldname: Union[str, bytes], newname: Union[str, bytes]
    ) -> defer.Deferred[bool]:
        """RENAME (RFC 3501 §6.3.5), sub-folders included; UIDVALIDITY moves with the folder.
        Fires once the new names are durable (the renames run in a thread).

        Renaming INBOX moves its messages into a new folder and leaves INBOX empty.
        """
        old = self._norm(oldname)
        new = self._norm(newname)
        if (
            new == INBOX
            or (new + names.DELIMITER).startswith(INBOX + names.DELIMITER)
            and old == INBOX
        ):
            raise MailboxError("[CANNOT] Cannot rename a mailbox to INBOX")
        if old == INBOX:
            return self._rename_inbox(new)
        if not self.exists(old):
            raise MailboxError("[NONEXISTENT] No such mailbox")
        if self.exists(new):
            raise MailboxError("[ALREADYEXISTS] Target mailbox already exists")
        if (new + names.DELIMITER).startswith(old + names.DELIMITER):
            raise MailboxError("[CANNOT] Cannot move a mailbox into itself")
        moves = []
        for n in self.folder_names():
            if n == old or n.startswith(old + names.DELIMITER):
                target = new + n[len(old) :]
                moves.append((n, self._dir(n), target, self._dir(target)))
        for _n, _p, _target, tpath in moves:
            if os.path.exists(tpath):
                raise MailboxError("[ALREADYEXISTS] Target mailbox already exists")
        parents = [
            self._dir(p) for p in names.parent_names(new) if p != INBOX and not self.exists(p)
        ]
        done: list[tuple[str, str]] = []

        def work() -> None:
            ensure_all(parents)
            rename_all(self.path, [(p, tpath) for _n, p, _t, tpath in moves], done)

        def moved(result: object) -> object:
            # Also after a failure: the sessions must follow the folders that did move.
            subs = self._subscriptions()
            uses = self._special()
            used = False
            added: set[str] = set()
            dropped: set[str] = set()
            for n, p, target, tpath in moves:
                if (p, tpath) not in done:
                    continue
                self.notifier.renamed(self.account, n, target, tpath)
                used = uses.rename(n, target) or used  # RFC 6154: the use goes with it
                if n in subs:
                    subs.discard(n)
                    subs.add(target)
                    dropped.add(n)
                    added.add(target)
            if added:
                self._save_subscriptions(added, dropped - added)
            if used:
                # The folders moved whatever the write does: a failure is only logged.
                return self._save_special().addBoth(lambda _: result)
            return result

        def renamed(_: object) -> bool:
            self.log.info(
                "{account} renamed folder {old} to {new}", account=self.account, old=old, new=new
            )
            return True

        return self.notifier.run(work).addBoth(moved).addCallback(renamed)

    def _rename_inbox(self, new: str) -> defer.Deferred[bool]:
        """RFC 3501 §6.3.5: move every INBOX message into the new folder, keep INBOX."""

        created = self.create(new)  # refusals (the name exists, is invalid) raise here

        async def move() -> bool:
            await created
            src = await self.select(INBOX, True)
            dest = await self.select(new, True)
            assert src is not None and dest is not None
            try:
                await src.move_uids(src.uids, dest)
            finally:
                src.close()
                dest.close()
            self.log.info("{account} moved INBOX to {folder}", account=self.account, folder=new)
            return True

        return defer.ensureDeferred(move())

    def _subscriptions(self) -> set[str]:
        """The account's subscriptions, one set shared by all its sessions in this process,
        read again when another process changed the file (one stat per call)."""
        if self._subs is None:
            self._subs = self.notifier.shared(
                ("subscriptions", self.path), lambda: _Subscriptions(self.path)
            )
        return self._subs.current()

    def _save_subscriptions(
        self, add: set[str], remove: set[str], wait: bool = False
    ) -> defer.Deferred[bool]:
        """Subscribe ``add`` and unsubscribe ``remove`` in the file durably (in a thread),
        read afresh under the account's tree lock so that no other process's change of a
        moment ago is overwritten; writes of one account happen in order. Fires with True
        once written; with ``wait`` False nobody waits, so a failure (logged by the notifier)
        is consumed here."""
        d = self.notifier.write_serialised(
            ("subscriptions", self.path),
            lambda: (change_subscriptions, self.path, set(add), set(remove)),
        )
        d.addCallback(lambda _: True)
        if not wait:
            d.addErrback(lambda _: False)
        return d

    def isSubscribed(self, name: Union[str, bytes]) -> bool:
        try:
            return names.normalize(name) in self._subscriptions()
        except MailboxNameError:
            return False

    def subscribe(self, name: Union[str, bytes]) -> defer.Deferred[bool]:
        """SUBSCRIBE (RFC 3501 §6.3.6): allowed for names that do not exist (yet). Fires once
        the subscriptions file is durably rewritten, so the OK is not undone by a cut."""
        canon = self._norm(name)
        self._dir(canon)
        subs = self._subscriptions()
        if canon in subs:
            return defer.succeed(True)
        subs.add(canon)
        return self._save_subscriptions({canon}, set(), wait=True)

    def unsubscribe(self, name: Union[str, bytes]) -> defer.Deferred[bool]:
        """UNSUBSCRIBE (RFC 3501 §6.3.7); fires once durable, as SUBSCRIBE does."""
        canon = self._norm(name)
        subs = self._subscriptions()
        if canon not in subs:
            raise MailboxError("[NONEXISTENT] Not subscribed")
        subs.discard(canon)
        return self._save_subscriptions(set(), {canon}, wait=True)

    def subscriptions(self) -> list[str]:
        return sorted(self._subscriptions())

    @staticmethod
    def _pattern(ref: Union[str, bytes], wildcard: Union[str, bytes]) -> WildcardPattern:
        """``ref`` + ``wildcard`` (RFC 3501 §6.3.8); INBOX matches case-insensitively."""
        if isinstance(ref, bytes):
            ref = ref.decode("latin-1")
        if isinstance(wildcard, bytes):
            wildcard = wildcard.decode("latin-1")
        pattern = ref + wildcard if not wildcard.startswith(names.DELIMITER) else wildcard
        if pattern[:5].upper() == INBOX and (len(pattern) == 5 or pattern[5] == names.DELIMITER):
            pattern = INBOX + pattern[5:]
        return WildcardPattern(pattern)

    def listMailboxes(
        self, ref: Union[str, bytes], wildcard: Union[str, bytes]
    ) -> list[tuple[str, MailboxInfo]]:
        """LIST (RFC 3501 §6.3.8): ``ref`` + ``wildcard``; attributes \\HasChildren /
        \\HasNoChildren (RFC 3348), \\Noselect for parents that are not folders, and the
        special-use attribute (RFC 6154). INBOX matches case-insensitively."""
        rx = self._pattern(ref, wildcard)
        existing = set(self.folder_names())
        all_names = set(existing)
        for n in existing:
            all_names.update(names.parent_names(n))
        children = {p for n in all_names for p in names.parent_names(n)}
        uses = self._special()
        out = []
        for n in sorted(all_names, key=lambda x: (x != INBOX, x)):
            if not rx.matches(n):
                continue
            attrs = ["\\HasChildren" if n in children else "\\HasNoChildren"]
            if n not in existing:
                attrs.insert(0, "\\Noselect")
            else:
                attrs.extend(uses.of(n))
            out.append((n, MailboxInfo(n, attrs)))
        return out

    def list_extended(
        self,
        ref: Union[str, bytes],
        patterns: list[Union[str, bytes]],
        *,
        subscribed: bool = False,
        recursive: bool = False,
        special_use: bool = False,
        mark_subscribed: bool = False,
    ) -> list[tuple[str, MailboxInfo]]:
        """LIST-EXTENDED (RFC 5258): the names matching any of ``patterns``.

        ``subscribed`` selects subscribed names (existing or not: \\NonExistent when no
        folder or parent has the name) and marks them \\Subscribed, as ``mark_subscribed``
        does for every selection (RETURN (SUBSCRIBED)); ``recursive`` (RECURSIVEMATCH, §3.5)
        also lists a matching name with a subscribed descendant that no pattern matches, with
        CHILDINFO ("SUBSCRIBED"); ``special_use`` (RFC 6154 §3) keeps only special-use
        folders. \\HasChildren/\\HasNoChildren and special-use attributes are always given."""
        rxs = [self._pattern(ref, p) for p in patterns]

        def matches(n: str) -> bool:
            return any(rx.matches(n) for rx in rxs)

        existing = set(self.folder_names())
        all_names = set(existing)
        for n in existing:
            all_names.update(names.parent_names(n))
        children = {p for n in all_names for p in names.parent_names(n)}
        subs = set(self._subscriptions())
        uses = self._special()
        parents_of_unmatched: set[str] = set()
        if subscribed and recursive:
            for s in subs:
                if not matches(s):
                    parents_of_unmatched.update(names.parent_names(s))
        candidates = subs | parents_of_unmatched if subscribed else all_names
        out = []
        for n in sorted(candidates, key=lambda x: (x != INBOX, x)):
            if not matches(n):
                continue
            info = ["SUBSCRIBED"] if n in parents_of_unmatched else []
            if subscribed and n not in subs and not info:
                continue
            su = uses.of(n) if n in existing else ()
            if special_use and not su:
                continue
            if n in all_names:
                attrs = ["\\HasChildren" if n in children else "\\HasNoChildren"]
                if n not in existing:
                    attrs.insert(0, "\\Noselect")
            else:
                attrs = ["\\NonExistent"]  # RFC 5258 §3.4: implies \\Noselect
            if n in subs and (subscribed or mark_subscribed):
                attrs.append("\\Subscribed")
            attrs.extend(su)
            out.append((n, MailboxInfo(n, attrs, info)))
        return out

    def listSubscribed(
        self, ref: Union[str, bytes], wildcard: Union[str, bytes]
    ) -> list[tuple[str, MailboxInfo]]:
        """LSUB (RFC 3501 §6.3.9): the subscribed names matching ``ref`` + ``wildcard``, whether
        or not they exist (a subscription outlives its folder). When a ``%`` stops at a level
        above a subscribed name, the unsubscribed parent it reaches is listed \\Noselect, so a
        client walking the tree level by level still finds the subscribed child."""
        rx = self._pattern(ref, wildcard)
        subs = self._subscriptions()
        rows: dict[str, list[str]] = {}
        for s in subs:
            if rx.matches(s):
                rows[s] = []
                continue
            for parent in names.parent_names(s):
                if parent not in subs and parent not in rows and rx.matches(parent):
                    rows[parent] = ["\\Noselect"]
        ordered = sorted(rows, key=lambda x: (x != INBOX, x))
        return [(n, MailboxInfo(n, rows[n])) for n in ordered]

    # -- INamespacePresenter (RFC 2342) --------------------------------------------------------

    def getPersonalNamespaces(self) -> list[list[str]]:
        return [["", names.DELIMITER]]

    def getSharedNamespaces(self) -> None:
        return None

    def getUserNamespaces(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<MaildirAccount {self.account}>"


class _Subscriptions:
    """One process's copy of an account's subscriptions file, read again whenever the file
    is not the one last read (another process, or a write of this one, replaced it)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp: Optional[tuple[int, int, int]] = None
        self._read = False
        self._names: set[str] = set()

    def current(self) -> set[str]:
        now = stamp(self._path, SUBSCRIPTIONS_FILE)
        if not self._read or now != self._stamp:
            # The set object stays the same: sessions hold it.
            self._names.clear()
            self._names.update(read_subscriptions(self._path))
            self._stamp, self._read = now, True
        return self._names


class _SpecialUses:
    """One process's copy of an account's special-use map (``specialuse.FILE``), read
    again whenever the file is not the one last read and no change made here waits to be
    written (``merge_save`` writes those into the file as it then is)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp = stamp(path, specialuse.FILE)
        self._map = specialuse.load(path)

    def current(self) -> specialuse.SpecialUseMap:
        if not self._map.changed:
            now = stamp(self._path, specialuse.FILE)
            if now != self._stamp:
                self._stamp = now
                self._map.replace(specialuse.load(self._path))
        return self._map
