"""The Maildir mailbox store: UIDs, flags, folders, concurrent delivery, containment."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.mail import imap4
from twisted.trial import unittest

from cgtwist.mailstore import (
    MailboxNotifier,
    MaildirAccount,
    MaildirMailbox,
    filemeta,
    maildir,
    provision,
)
from cgtwist.mailstore.account import MailboxError
from cgtwist.mailstore.mailbox import Updates
from cgtwist.mailstore.uidlist import UIDLIST_FILE


def msg(subject: str, body: str = "hello") -> bytes:
    return (
        f"From: a@example.com\r\nTo: b@example.com\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()
    )


def deliver(md: str, data: bytes) -> str:
    """What LOCAL delivery does: tmp/ then rename into new/."""
    return maildir.deliver(md, data, to_new=True)[1]


def result(d: defer.Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (the inline notifier runs disk work at once)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "deferred did not fire"
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


class Recorder:
    """A session in IDLE: syncs its view as soon as it is told of a change and records what
    it would send. ``hold_expunges`` plays a FETCH, STORE or SEARCH in progress."""

    def __init__(self, hold_expunges: bool = False) -> None:
        self.events: list[tuple[str, Any]] = []
        self.box: Any = None
        self.hold_expunges = hold_expunges

    def on(self, box: Any) -> Recorder:
        self.box = box
        box.addListener(self)
        return self

    def viewChanged(self) -> None:
        up = self.box.sync(not self.hold_expunges)
        if up.expunged:
            self.events.append(("expunge", up.expunged))
        if up.exists is not None:
            self.events.append(("exists", up.exists))
        if up.fetch_flags:
            self.events.append(("flags", dict(up.fetch_flags)))


class StoreTestBase(unittest.TestCase):
    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        self.md = os.path.join(self.base, "Domains", "example.com", "a", "Maildir")
        provision(self.md)
        self.notifier = MailboxNotifier()
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)

    def reopen(self) -> MaildirAccount:
        """A fresh process: new notifier, nothing in memory."""
        self.notifier = MailboxNotifier()
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)
        return self.account

    def select(
        self, name: str = "INBOX", rw: bool = True, account: MaildirAccount | None = None
    ) -> MaildirMailbox:
        box = result((account or self.account).select(name, rw))
        assert box is not None
        return box

    def uids(self, box: MaildirMailbox) -> list[int]:
        return [m.getUID() for _s, m in box.fetch(imap4.MessageSet(1, None), False)]


class UIDTests(StoreTestBase):
    def test_uids_and_uidvalidity_stable_across_restart(self) -> None:
        """After a server restart the client finds the same UIDs and UIDVALIDITY."""
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        before = (box.getUIDValidity(), self.uids(box), box.getUIDNext())
        self.assertEqual(before[1], [1, 2, 3])
        box2 = self.select(account=self.reopen())
        self.assertEqual((box2.getUIDValidity(), self.uids(box2), box2.getUIDNext()), before)

    def test_uid_never_reused_after_expunge(self) -> None:
        """Expunging the newest message and restarting never hands its UID to a new message."""
        deliver(self.md, msg("one"))
        deliver(self.md, msg("two"))
        box = self.select()
        result(box.store(imap4.MessageSet(2), ["\\Deleted"], 1, False))
        self.assertEqual(result(box.expunge()), [2])
        box2 = self.select(account=self.reopen())
        deliver(self.md, msg("three"))
        result(box2.refresh())
        box2.sync()
        self.assertEqual(self.uids(box2), [1, 3])

    def test_rebuild_after_uidlist_lost(self) -> None:
        """Losing cgtwist-uidlist keeps every message and changes UIDVALIDITY (RFC 3501 §2.3.1.1)."""
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        old = box.getUIDValidity()
        os.unlink(os.path.join(self.md, UIDLIST_FILE))
        box2 = self.select(account=self.reopen())
        self.assertEqual(box2.getMessageCount(), 3)
        self.assertNotEqual(box2.getUIDValidity(), old)
        self.assertEqual(self.uids(box2), [1, 2, 3])

    def test_dovecot_uidlist_adopted(self) -> None:
        """A Maildir moved over from Dovecot keeps its UIDVALIDITY and UIDs, so clients do not
        download everything again."""
        a = deliver(self.md, msg("a"))
        b = deliver(self.md, msg("b"))
        with open(os.path.join(self.md, "dovecot-uidlist"), "w") as f:
            f.write(
                f"3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n"
                f"25006 :{a}:2,S\n25017 W2481 :{b}\n"
            )
        box = self.select()
        self.assertEqual(box.getUIDValidity(), 1275660208)
        self.assertEqual(self.uids(box), [25006, 25017])
        self.assertEqual(box.getUIDNext(), 25022)

    def test_dovecot_uidlist_ignored_once_indexed(self) -> None:
        """Once cgtwist has indexed a folder, a stale dovecot-uidlist never brings UIDs back."""
        deliver(self.md, msg("a"))
        self.select()
        os.unlink(os.path.join(self.md, UIDLIST_FILE))
        with open(os.path.join(self.md, "dovecot-uidlist"), "w") as f:
            f.write("3 V7 N2\n1 :nonexistent\n")
        self.assertNotEqual(self.select(account=self.reopen()).getUIDValidity(), 7)

    def test_corrupt_uidlist_rebuilt(self) -> None:
        """A damaged uidlist is rebuilt rather than crashing the session."""
        deliver(self.md, msg("x"))
        self.select()
        with open(os.path.join(self.md, UIDLIST_FILE), "w") as f:
            f.write("garbage\n7 zzz\n")
        box = self.select(account=self.reopen())
        self.assertEqual(box.getMessageCount(), 1)


class FlagTests(StoreTestBase):
    def test_flags_in_file_names(self) -> None:
        """Flags set over IMAP are visible to mutt/Dovecot as Maildir info letters."""
        deliver(self.md, msg("x"))
        box = self.select()
        out = result(box.store(imap4.MessageSet(1), ["\\Seen", "\\flagged", "\\Recent"], 1, False))
        self.assertEqual(out[1], ["\\Flagged", "\\Seen"])
        [name] = os.listdir(os.path.join(self.md, "cur"))
        self.assertTrue(name.endswith(":2,FS"), name)
        result(box.store(imap4.MessageSet(1), ["\\Seen"], -1, False))
        [name] = os.listdir(os.path.join(self.md, "cur"))
        self.assertTrue(name.endswith(":2,F"), name)

    def test_flags_survive_restart_and_external_change(self) -> None:
        """A flag changed by another Maildir client (renamed file) is seen after a rescan."""
        deliver(self.md, msg("x"))
        box = self.select()
        listener = Recorder().on(box)
        [name] = os.listdir(os.path.join(self.md, "cur"))
        cur = os.path.join(self.md, "cur")
        os.rename(os.path.join(cur, name), os.path.join(cur, name.split(":")[0] + ":2,RS"))
        result(self.notifier.mailbox_changed("a@example.com", "INBOX"))
        self.assertEqual(box.flags_of(1), ["\\Answered", "\\Seen", "\\Recent"])
        self.assertIn(("flags", {1: ["\\Answered", "\\Seen", "\\Recent"]}), listener.events)

    def test_keywords_dovecot_compatible(self) -> None:
        """Keywords are stored as Dovecot's letters with a dovecot-keywords file."""
        deliver(self.md, msg("x"))
        box = self.select()
        result(box.store(imap4.MessageSet(1), ["$Junk"], 1, False))
        [name] = os.listdir(os.path.join(self.md, "cur"))
        self.assertTrue(name.endswith(":2,a"), name)
        with open(os.path.join(self.md, "dovecot-keywords")) as f:
            self.assertEqual(f.read(), "0 $Junk\n")
        self.assertIn("$Junk", self.select(account=self.reopen()).flags_of(1))

    def test_flags_follow_keyword_table(self) -> None:
        """Two messages with the same letters show the same keyword, and a keyword given to a
        new letter shows up at once (flags are remembered per letters only per keyword table)."""
        deliver(self.md, msg("x"))
        deliver(self.md, msg("y"))
        box = self.select()
        result(box.store(imap4.MessageSet(1), ["\\Seen"], 1, False))
        result(box.store(imap4.MessageSet(2), ["\\Seen"], 1, False))
        self.assertEqual(box.flags_of(1)[:1], ["\\Seen"])
        result(box.store(imap4.MessageSet(1, 2), ["Work"], 1, False))
        self.assertIn("Work", box.flags_of(1))
        self.assertIn("Work", box.flags_of(2))
        result(box.store(imap4.MessageSet(2), ["Home"], 1, False))
        self.assertEqual([f for f in box.flags_of(2) if f in ("Home", "Work")], ["Home", "Work"])
        self.assertNotIn("Home", box.flags_of(1))

    def test_recent_once(self) -> None:
        """A new message is \\Recent for the first session only; it moves new/ -> cur/."""
        deliver(self.md, msg("x"))
        box = self.select()
        Recorder().on(box)
        self.assertEqual(box.getRecentCount(), 1)
        self.assertEqual(os.listdir(os.path.join(self.md, "new")), [])
        other = self.select()
        Recorder().on(other)
        self.assertEqual(other.getRecentCount(), 0)

    def test_message_gone_while_selecting_is_simply_not_there(self) -> None:
        """A message removed on disk (another Maildir client) while a SELECT loads the folder is
        not in that session's view at all: FETCH 1:* works and the count is right.

        The removed file is found by its key, not by its place in a sorted listing: Maildir
        keys do not sort in arrival order (maildir(5)'s ``M<usec>`` is not zero-padded, so a
        message at .M500000 sorts before one at .M50000 of the same second), and UIDs follow
        arrival (file time). The two keys below are such a pair, the later one first."""
        keys = iter(["1000000000.M50000P7Q1.mx", "1000000000.M500000P7Q2.mx"])
        self.patch(maildir, "unique_key", lambda hostname=None: next(keys))
        first = deliver(self.md, msg("x"))
        deliver(self.md, msg("y"))
        os.utime(os.path.join(self.md, "new", first), (1000000000, 1000000000))  # x came first
        Recorder().on(self.select())  # the folder is loaded and shared
        cur = os.path.join(self.md, "cur")
        (gone,) = [n for n in os.listdir(cur) if n.startswith(first + ":")]
        os.unlink(os.path.join(cur, gone))
        os.utime(cur, ns=(1, 1))  # any different time makes the next look rescan
        box = self.select()
        self.assertEqual(box.getMessageCount(), 1)
        self.assertEqual([m.getUID() for _s, m in box.fetch(imap4.MessageSet(1, None), False)], [2])
        self.assertEqual(box.sync(), Updates())

    def test_examine_leaves_new_alone(self) -> None:
        """EXAMINE (read-only) does not move messages out of new/ nor allow STORE."""
        deliver(self.md, msg("x"))
        box = self.select(rw=False)
        self.assertEqual(len(os.listdir(os.path.join(self.md, "new"))), 1)
        self.assertRaises(
            imap4.ReadOnlyMailbox, result, box.store(imap4.MessageSet(1), ["\\Seen"], 1, False)
        )


class ConcurrencyTests(StoreTestBase):
    def test_delivery_while_selected_is_pushed(self) -> None:
        """A message delivered while a session has INBOX selected appears at once (IDLE)."""
        box = self.select()
        listener = Recorder().on(box)
        deliver(self.md, msg("late"))
        result(self.notifier.mailbox_changed("a@example.com", "INBOX"))
        self.assertEqual(box.getMessageCount(), 1)
        self.assertEqual(listener.events, [("exists", 1)])
        self.assertEqual(box.getRecentCount(), 1)

    def test_delivery_seen_on_next_command_without_notification(self) -> None:
        """Even without a notification, the next command's refresh sees new mail."""
        box = self.select()
        deliver(self.md, msg("late"))
        result(box.refresh())
        self.assertEqual(box.getMessageCount(), 0)  # not announced yet...
        self.assertEqual(box.sync().exists, 1)  # ...until the command's end
        self.assertEqual(box.getMessageCount(), 1)

    def test_expunge_by_other_session_deferred(self) -> None:
        """Another session's EXPUNGE is held until this session may report it (RFC 3501 §7.4.1)."""
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        a = self.select()
        b = self.select()
        Recorder().on(a)
        lb = Recorder(hold_expunges=True).on(b)
        result(a.store(imap4.MessageSet(2, 3), ["\\Deleted"], 1, False))
        self.assertIn(("flags", {2: ["\\Deleted"], 3: ["\\Deleted"]}), lb.events)
        self.assertEqual(result(a.expunge()), [3, 2])
        self.assertEqual(b.getMessageCount(), 3)
        self.assertTrue(b.pending_expunges)
        self.assertNotIn("expunge", [kind for kind, _ in lb.events])
        # the ghost can still be fetched (empty) until reported
        [(_s, ghost)] = b.fetch(imap4.MessageSet(3), False)
        self.assertEqual(ghost.open().read(), b"")
        self.assertEqual(b.sync(True).expunged, [3, 2])
        self.assertEqual(b.getMessageCount(), 1)

    def test_quiet_folder_not_rescanned_until_it_changes(self) -> None:
        """Once directory times are old enough to trust, a refresh costs two stat calls; a
        delivery changes new/'s time and the next refresh sees the message."""
        later = [0.0]
        self.notifier = MailboxNotifier(clock=lambda: later[0])
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)
        later[0] = 4e9  # far in the future: every directory time is trusted
        box = self.select()
        folder = box.folder
        self.assertIsNotNone(folder._mtimes)
        calls = []
        real = folder._scan_blocking
        folder._scan_blocking = lambda *a: calls.append(1) or real(*a)  # type: ignore[method-assign]
        result(box.refresh())
        self.assertEqual(calls, [])
        deliver(self.md, msg("x"))
        os.utime(os.path.join(self.md, "new"), ns=(1, 1))  # any different time counts
        result(box.refresh())
        self.assertEqual(calls, [1])
        self.assertEqual(box.sync().exists, 1)

    def test_own_changes_need_no_rescan(self) -> None:
        """After this process's own STORE the next command does not rescan the folder, yet a
        change by another Maildir client afterwards is still seen."""
        self.notifier = MailboxNotifier(clock=lambda: 4e9)
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)
        deliver(self.md, msg("x"))
        box = self.select()
        Recorder().on(box)
        result(box.refresh())
        calls: list[int] = []
        real = box.folder._scan_blocking
        box.folder._scan_blocking = lambda *a: calls.append(1) or real(*a)  # type: ignore[method-assign]
        result(box.store(imap4.MessageSet(1), ["\\Seen"], 1, False))
        result(box.refresh())
        self.assertEqual(calls, [])
        cur = os.path.join(self.md, "cur")
        [name] = os.listdir(cur)
        os.rename(os.path.join(cur, name), os.path.join(cur, name.split(":")[0] + ":2,FS"))
        os.utime(cur, ns=(1, 1))
        result(box.refresh())
        self.assertEqual(calls, [1])
        self.assertEqual(box.flags_of(1), ["\\Flagged", "\\Seen", "\\Recent"])

    def test_command_during_another_sessions_store_does_not_relist(self) -> None:
        """While one session's STORE is still renaming files, another session's command waits
        for it instead of relisting the folder, and still learns the new flags; mail delivered
        afterwards is still seen."""
        # (A clock that never advances: the batch removing the replaced name waits.)
        self.notifier = MailboxNotifier(clock=lambda: 4e9, timer=task.Clock())
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)
        deliver(self.md, msg("x"))
        a, b = self.select(), self.select()
        Recorder().on(a)
        lb = Recorder().on(b)
        result(a.refresh())
        folder = a.folder
        held: list[tuple[Any, tuple[Any, ...], defer.Deferred[Any]]] = []

        def runner(fn: Any, *args: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            held.append((fn, args, d))
            return d

        folder._run = runner  # type: ignore[method-assign]
        calls: list[int] = []
        real = folder._scan_blocking
        folder._scan_blocking = lambda *x: calls.append(1) or real(*x)  # type: ignore[method-assign]
        stored = a.store(imap4.MessageSet(1), ["\\Flagged"], 1, False)
        fn, args, d = held.pop()
        fn_result = fn(*args)  # the rename happens: cur/ has a new time
        refreshed = b.refresh()
        self.assertFalse(refreshed.called)  # waits for the STORE to be applied
        d.callback(fn_result)
        result(stored)
        result(refreshed)
        self.assertEqual(calls, [])
        self.assertEqual(held, [])
        self.assertIn(("flags", {1: ["\\Flagged"]}), lb.events)
        folder._run = self.notifier.run  # type: ignore[method-assign]
        deliver(self.md, msg("y"))
        os.utime(os.path.join(self.md, "new"), ns=(1, 1))
        result(b.refresh())
        self.assertEqual(calls, [1])
        self.assertEqual(b.getMessageCount(), 2)

    def test_same_tick_delivery_seen_by_one_confirming_rescan(self) -> None:
        """A delivery in the same timestamp tick as a look (new/'s time does not move) is still
        seen: one rescan once the trust window has passed, and no rescan per command before or
        after it."""
        t = 1_000_000_000
        now = [t + 0.01]
        self.notifier = MailboxNotifier(clock=lambda: now[0])
        self.account = MaildirAccount(self.md, "a@example.com", self.notifier)
        for sub in ("new", "cur"):
            os.utime(os.path.join(self.md, sub), ns=(t * 10**9, t * 10**9))
        box = self.select()
        Recorder().on(box)
        calls: list[int] = []
        real = box.folder._scan_blocking
        box.folder._scan_blocking = lambda *a: calls.append(1) or real(*a)  # type: ignore[method-assign]
        deliver(self.md, msg("same tick"))
        os.utime(os.path.join(self.md, "new"), ns=(t * 10**9, t * 10**9))  # the tick did not move
        now[0] = t + 0.02
        result(box.refresh())
        result(box.refresh())
        self.assertEqual(calls, [])  # within the window: the index is trusted
        now[0] = t + 1
        result(box.refresh())
        self.assertEqual(calls, [1])
        self.assertEqual(box.getMessageCount(), 1)
        # The message moved to cur/ (a real, current time), then the folder goes quiet.
        now[0] = max(os.stat(os.path.join(self.md, d)).st_mtime for d in ("new", "cur")) + 1
        result(box.refresh())
        n = len(calls)
        result(box.refresh())
        result(box.refresh())
        self.assertEqual(len(calls), n)
        self.assertLessEqual(n, 2)

    def test_notification_for_closed_or_bad_folder(self) -> None:
        """LOCAL may notify for a folder nobody has open, or pass junk: nothing breaks."""
        self.assertIsNone(result(self.notifier.mailbox_changed("nobody@example.com", "INBOX")))
        self.assertIsNone(result(self.notifier.mailbox_changed("a@example.com", "../../x")))
        self.flushLoggedErrors()

    def test_status_counts(self) -> None:
        """STATUS reports messages, unseen, UIDNEXT and recent without selecting the folder."""
        deliver(self.md, msg("a"))
        deliver(self.md, msg("b"))
        box = self.select(rw=False)
        st = box.requestStatus(["MESSAGES", "UNSEEN", "UIDNEXT", "RECENT", "UIDVALIDITY", "bogus"])
        self.assertEqual(
            {k: v for k, v in st.items() if k != "UIDVALIDITY"},
            {"MESSAGES": 2, "UNSEEN": 2, "UIDNEXT": 3, "RECENT": 2},
        )

    def test_idle_folders_kept_within_bounds(self) -> None:
        """Folders nobody has open stay loaded for the next session, but only up to a bound."""
        self.notifier.KEEP_MESSAGES = 2
        self.account.create("X")
        self.select("X").close()
        self.select("Sent").close()
        self.assertEqual([name for (_a, name) in self.notifier._keep], ["X", "Sent"])
        for c in "abc":
            deliver(self.md, msg(c))
        self.select().close()
        self.select("Drafts").close()  # INBOX's 3 messages are over the bound: older ones go
        self.assertEqual([name for (_a, name) in self.notifier._keep], ["Drafts"])

    def test_threaded_disk_work(self) -> None:
        """With the reactor's thread pool, APPEND and rescans run off the reactor thread."""
        notifier = MailboxNotifier(reactor)
        account = MaildirAccount(self.md, "a@example.com", notifier)

        async def go() -> None:
            box = await account.select("INBOX")
            uid = await box.append(msg("t"), ["\\Seen"], "17-Jul-1996 02:44:25 -0700")
            self.assertEqual(uid, 1)
            deliver(self.md, msg("u"))
            await notifier.mailbox_changed("a@example.com", "INBOX")
            self.assertEqual(box.sync().exists, 2)
            [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
            self.assertEqual(m.getInternalDate(), "Wed, 17 Jul 1996 09:44:25 -0000")

        return defer.ensureDeferred(go())


class ThreadedConsistencyTests(StoreTestBase):
    def test_concurrent_sessions_and_delivery_agree_with_disk(self) -> None:
        """Three sessions storing, appending and expunging at once while mail is delivered,
        with disk work in real threads: afterwards a fresh process sees exactly the same UIDs
        and flags, and no UID was handed out twice."""
        notifier = MailboxNotifier(reactor)
        account = MaildirAccount(self.md, "a@example.com", notifier)

        async def go() -> None:
            boxes = [await account.select("INBOX") for _ in range(3)]
            for b in boxes:
                Recorder().on(b)
            ops = []
            appended: list[int] = []
            for i in range(30):
                b = boxes[i % 3]
                if i % 5 == 0:
                    deliver(self.md, msg(f"d{i}"))
                    ops.append(notifier.mailbox_changed("a@example.com", "INBOX"))
                elif i % 5 == 1:
                    ops.append(b.append(msg(f"a{i}"), ["\\Seen"]).addCallback(appended.append))
                elif i % 5 == 2 and b.getMessageCount():
                    ops.append(b.store(imap4.MessageSet(1, None), ["\\Flagged"], 1, False))
                elif i % 5 == 3 and b.getMessageCount():
                    ops.append(b.store(imap4.MessageSet(1), ["\\Deleted"], 1, False))
                else:
                    ops.append(b.expunge())
                ops.append(b.refresh())
            await defer.gatherResults(ops, consumeErrors=True)
            await boxes[0].refresh()
            folder = boxes[0].folder
            self.assertEqual(len(appended), len(set(appended)))
            mine = {u: folder.flags_of(e) for u, e in folder.entries.items()}
            fresh = self.select(account=self.reopen())
            self.assertEqual(
                {u: fresh.folder.flags_of(e) for u, e in fresh.folder.entries.items()}, mine
            )
            self.assertEqual(fresh.getUIDNext(), folder.uidnext)
            for b in boxes:
                b.sync(True)
                self.assertEqual(b.uids, sorted(mine))

        return defer.ensureDeferred(go())


class MessageTests(StoreTestBase):
    def test_lf_files_served_as_crlf(self) -> None:
        """A Maildir file with bare LF (mutt, Dovecot) is served with CRLF and a matching size."""
        deliver(self.md, b"Subject: lf\nX-A: 1\n\nline1\nline2\n")
        box = self.select()
        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
        data = m.open().read()
        self.assertEqual(data, b"Subject: lf\r\nX-A: 1\r\n\r\nline1\r\nline2\r\n")
        self.assertEqual(m.getSize(), len(data))
        self.assertEqual(m.getBodyFile().read(), b"line1\r\nline2\r\n")
        self.assertEqual(m.meta.body_lines, 2)
        self.assertEqual(m.getHeaders(False, "x-a"), {"x-a": "1"})
        self.assertEqual(m.getHeaders(False, "subject"), {"subject": "lf"})

    def test_body_file_is_only_the_body(self) -> None:
        """getBodyFile() of a CRLF message starts at the body even after seek(0), and its size
        (seek to end) is the body size: BODY[1] / BODY[TEXT] never include the header."""
        deliver(self.md, msg("s", "line one\r\nline two"))
        box = self.select()
        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
        body = m.getBodyFile()
        body.seek(0)
        self.assertEqual(body.read(), b"line one\r\nline two\r\n")
        body.seek(0, 2)
        self.assertEqual(body.tell(), m.meta.body_size)
        body.seek(5)
        self.assertEqual(body.read(3), b"one")
        body.close()

    def test_multipart(self) -> None:
        """MIME parts are reachable for BODY[1] and BODYSTRUCTURE."""
        raw = (
            b"Subject: mp\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
            b"--XX\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--XX\r\nContent-Type: text/html\r\n\r\n<b>2</b>\r\n--XX--\r\n"
        )
        deliver(self.md, raw)
        box = self.select()
        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
        self.assertTrue(m.isMultipart())
        self.assertEqual(m.getSubPart(1).getBodyFile().read(), b"<b>2</b>")
        self.assertEqual(
            m.getSubPart(0).getHeaders(False, "content-type"), {"content-type": "text/plain"}
        )
        self.assertRaises(IndexError, m.getSubPart, 5)

    def test_copy_follows_renamed_source(self) -> None:
        """COPY still finds a message whose file another client renamed (flag change) meanwhile,
        and FETCH reads it too."""
        deliver(self.md, msg("x"))
        box = self.select()
        cur = os.path.join(self.md, "cur")
        [name] = os.listdir(cur)
        os.rename(os.path.join(cur, name), os.path.join(cur, name.split(":")[0] + ":2,S"))
        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
        self.assertIn(b"Subject: x", m.open().read())
        self.assertEqual(result(box.copy_uids([1], self.select("Trash"))), ([1], [1]))

    def test_cache_written(self) -> None:
        """Parsed facts are cached beside the folder so a restart does not re-read messages."""
        deliver(self.md, msg("cached"))
        self.select()
        self.assertTrue(os.path.exists(os.path.join(self.md, "cgtwist-index")))
        measured: list[str] = []
        real = filemeta.measure
        self.patch(filemeta, "measure", lambda p, *a: measured.append(p) or real(p, *a))
        box = self.select(account=self.reopen())
        self.assertEqual(measured, [])
        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
        self.assertEqual(m.meta.headers["subject"], "cached")

    def test_derived_values_cached_across_restart(self) -> None:
        """A value computed from a message (BODYSTRUCTURE) is computed once and survives a restart."""
        deliver(self.md, msg("x"))
        box = self.select()
        Recorder().on(box)
        calls: list[int] = []

        def compute() -> bytes:
            calls.append(1)
            return b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 7 1)\xe9'

        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
        self.assertEqual(m.cached("bs", compute), b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 7 1)\xe9')
        [(_s, m)] = box.fetch(imap4.MessageSet(1), False)
        m.cached("bs", compute)
        self.assertEqual(len(calls), 1)
        box.close()  # the last session leaving writes the cache
        [(_s, m)] = self.select(account=self.reopen()).fetch(imap4.MessageSet(1), False)
        self.assertEqual(m.cached("bs", compute), b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 7 1)\xe9')
        self.assertEqual(len(calls), 1)

    def test_copy_and_move_report_uids(self) -> None:
        """COPY and MOVE give (source UIDs, destination UIDs) for COPYUID; MOVE expunges."""
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        box = self.select()
        result(box.store(imap4.MessageSet(1), ["\\Seen"], 1, False))
        result(box.store(imap4.MessageSet(1), ["$Label1"], 1, False))
        trash = self.select("Trash")
        self.assertEqual(result(box.copy_uids([1, 2], trash)), ([1, 2], [1, 2]))
        self.assertEqual(trash.flags_of(1), ["$Label1", "\\Seen"])
        self.assertEqual(result(trash.append(msg("kw"), ["$Junk", "\\Draft", "\\Recent"])), 3)
        self.assertEqual(trash.flags_of(3), ["$Junk", "\\Draft"])
        src, dst, seqs = result(box.move_uids([3], trash))
        self.assertEqual((src, dst, seqs), ([3], [4], [3]))
        self.assertEqual(box.getMessageCount(), 2)
        self.assertEqual(trash.sync().exists, 4)


class FolderTests(StoreTestBase):
    def names(self, account: MaildirAccount | None = None) -> list[str]:
        return [n for n, _b in (account or self.account).listMailboxes("", "*")]

    def test_special_use_created(self) -> None:
        """A new account has Sent, Drafts, Trash, Junk with their RFC 6154 attributes, subscribed."""
        rows = dict(self.account.listMailboxes("", "*"))
        self.assertEqual(sorted(rows), ["Drafts", "INBOX", "Junk", "Sent", "Trash"])
        self.assertIn("\\Sent", rows["Sent"].getFlags())
        self.assertIn("\\Trash", rows["Trash"].getFlags())
        self.assertTrue(self.account.isSubscribed("Sent"))
        self.assertTrue(os.path.isdir(os.path.join(self.md, ".Sent", "cur")))

    def test_create_rename_delete_subscribe_persist(self) -> None:
        """Folders and subscriptions survive a restart; rename carries sub-folders along."""
        self.assertTrue(self.account.create("Work/2024/"))
        self.assertRaises(MailboxError, self.account.create, "Work")
        self.account.subscribe("Work/2024")
        acct = self.reopen()
        self.assertIn("Work/2024", self.names(acct))
        self.assertTrue(acct.isSubscribed("Work/2024"))
        acct.rename("Work", "Old")
        self.assertIn("Old/2024", self.names(acct))
        self.assertNotIn("Work", self.names(acct))
        self.assertTrue(self.reopen().isSubscribed("Old/2024"))
        self.account.delete("Old")
        rows = dict(self.account.listMailboxes("", "*"))
        self.assertIn("\\Noselect", rows["Old"].getFlags())
        self.assertRaises(MailboxError, self.account.delete, "INBOX")
        self.assertRaises(MailboxError, self.account.rename, "Sent", "inbox")

    def test_rename_inbox_moves_messages(self) -> None:
        """RENAME INBOX x moves the messages into x and leaves an empty INBOX (RFC 3501 §6.3.5)."""
        deliver(self.md, msg("a"))
        deliver(self.md, msg("b"))
        inbox = self.select()
        Recorder(hold_expunges=True).on(inbox)
        self.assertTrue(result(self.account.rename("INBOX", "Old Mail")))
        self.assertEqual(self.select("Old Mail").getMessageCount(), 2)
        self.assertEqual(self.select().getMessageCount(), 0)
        self.assertTrue(inbox.pending_expunges)
        self.assertRaises(MailboxError, self.account.rename, "INBOX", "Old Mail")

    def test_rename_open_folder(self) -> None:
        """A session with a folder selected keeps working after another renames it."""
        self.account.create("Box")
        box = self.select("Box")
        self.account.rename("Box", "Other")
        self.assertEqual(result(box.append(msg("x"))), 1)
        again = self.select("Other")
        self.assertEqual(again.getMessageCount(), 1)
        self.assertIsNone(result(self.account.select("Box")))

    def test_delete_while_selected_elsewhere(self) -> None:
        """A folder deleted by one session is not brought back by another that had it open;
        that session sees its messages expunged."""
        self.account.create("Tmp")
        box = self.select("Tmp")
        result(box.append(msg("x")))
        box.sync()  # the APPEND's EXISTS
        listener = Recorder().on(box)
        self.account.delete("Tmp")
        result(box.refresh())
        self.assertFalse(os.path.exists(os.path.join(self.md, ".Tmp")))
        self.assertEqual(listener.events, [("expunge", [1])])
        self.assertNotIn("Tmp", [n for n, _ in self.account.listMailboxes("", "*")])

    def test_subscriptions_shared_between_sessions(self) -> None:
        """Two sessions of one account subscribing at once lose neither subscription."""
        other = MaildirAccount(self.md, "a@example.com", self.notifier)
        self.account.subscribe("One")
        other.subscribe("Two")
        self.assertTrue(other.isSubscribed("One"))
        acct = self.reopen()
        self.assertTrue(acct.isSubscribed("One") and acct.isSubscribed("Two"))

    def test_subscriptions_file(self) -> None:
        """Subscriptions are kept one name per line (modified UTF-7) in Maildir/subscriptions."""
        self.account.subscribe("Caf\u00e9/Men\u00fc")
        with open(os.path.join(self.md, "subscriptions")) as f:
            self.assertIn("Caf&AOk-/Men&APw-\n", f.read())
        self.assertTrue(self.reopen().isSubscribed("Caf\u00e9/Men\u00fc"))
        self.account.unsubscribe("Caf\u00e9/Men\u00fc")
        self.assertRaises(MailboxError, self.account.unsubscribe, "Caf\u00e9/Men\u00fc")

    def test_interrupted_delete_cleaned_up(self) -> None:
        """A folder whose DELETE was cut short by a crash is removed at the next login."""
        os.makedirs(os.path.join(self.md, "cgtwist-deleted-0123", "cur"))
        provision(self.md)
        self.assertNotIn("cgtwist-deleted-0123", os.listdir(self.md))

    def test_wildcards(self) -> None:
        """LIST '%' stays on one level, '*' descends (RFC 3501 §6.3.8)."""
        self.account.create("A/B/C")
        self.assertEqual([n for n, _ in self.account.listMailboxes("", "A/%")], ["A/B"])
        self.assertEqual([n for n, _ in self.account.listMailboxes("A/", "*")], ["A/B", "A/B/C"])
        self.assertEqual([n for n, _ in self.account.listMailboxes("", "inbox")], ["INBOX"])

    def test_uidvalidity_differs_for_recreated_folder(self) -> None:
        """A folder deleted and created again under the same name gets a new UIDVALIDITY."""
        self.account.create("X")
        v1 = self.select("X").getUIDValidity()
        self.account.delete("X")
        self.account.create("X")
        self.assertNotEqual(self.select("X").getUIDValidity(), v1)

    def test_traversal_refused_by_account(self) -> None:
        """As 'a', no trick reaches 'adm' next door: bad names give NO / no such mailbox and
        nothing is created outside a's Maildir."""
        adm = os.path.join(self.base, "Domains", "example.com", "adm", "Maildir")
        provision(adm)
        before = sorted(os.listdir(os.path.dirname(self.md)))
        tricks = [
            "..",
            "../adm",
            "../../adm/Maildir",
            "/etc",
            ".hidden",
            "a\x00b",
            b"&AC4-&AC4-",
            b"&AC8-etc",
            "INBOX/../../adm",
            "~root",
            "a//b",
        ]
        for t in tricks:
            self.assertIsNone(result(self.account.select(t)), t)
            self.assertRaises(MailboxError, self.account.create, t)
            self.assertRaises(MailboxError, self.account.delete, t)
            self.assertRaises(MailboxError, self.account.subscribe, t)
            self.assertRaises(MailboxError, self.account.rename, "Sent", t)
        self.assertEqual(sorted(os.listdir(os.path.dirname(self.md))), before)
        self.assertNotIn("adm", " ".join(self.names()))
        self.assertEqual(sorted(os.listdir(adm)), sorted(os.listdir(self.md)))
