"""The cross-process watch's own rules (``cgtwist.mailstore.watch``), in one process with
disk work inline: a process's own changes cost it no rescan, a burst is one catch-up, and
the kernel's refusal of a watch falls back to the periodic check with one log line. (The
push from another real process: tests/mailstore/test_crossprocess.py WatchTests.)
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any, Callable

from twisted.internet import task
from twisted.mail import imap4
from twisted.trial import unittest

from cgtwist.mailstore import MailboxNotifier, MaildirAccount, maildir, provision, watch
from cgtwist.mailstore.folder import Folder
from tests.mailstore.test_mailstore import Recorder, msg, result


class StepClock(task.Clock):
    """A task.Clock that also keeps readers, read by ``settle`` as the reactor would."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: list[Any] = []

    def addReader(self, r: Any) -> None:
        self.readers.append(r)

    def removeReader(self, r: Any) -> None:
        self.readers.remove(r)

    def settle(self) -> None:
        """Read the descriptor and run what is due now, until nothing more is."""
        for _ in range(20):
            for r in self.readers:
                r.doRead()
            if not any(c.getTime() <= self.seconds() for c in self.getDelayedCalls()):
                return
            self.advance(0)


class WatchRuleTests(unittest.TestCase):
    def setUp(self) -> None:
        self.md = os.path.abspath(os.path.join(self.mktemp(), "Maildir"))
        provision(self.md)
        for i in range(20):
            maildir.deliver(self.md, msg(f"m{i}"), to_new=True)
        # The folders' clock too: a look's "within the timestamp tick" window then ends only
        # when the test says so, however slow the machine.
        self.clock = StepClock()
        self.clock.advance(time.time())
        self.notifier = MailboxNotifier(clock=self.clock.seconds)

    def start(self, **kw: Any) -> watch.FolderWatch:
        w = watch.FolderWatch(self.clock, **kw)
        self.notifier._watch = w
        self.addCleanup(w.stop)
        return w

    def count_scans(self) -> list[int]:
        scans = [0]
        orig = Folder._scan_blocking

        def counting(folder: Folder, *a: Any, **k: Any) -> Any:
            scans[0] += 1
            return orig(folder, *a, **k)

        self.patch(Folder, "_scan_blocking", counting)
        return scans

    def test_own_changes_cost_no_rescan(self) -> None:
        """This process's STOREs and APPENDs wake the watch (the kernel cannot tell who
        wrote), and the catch-up finds the folder as it last saw it: no rescan."""
        self.start()
        account = MaildirAccount(self.md, "a@example.com", self.notifier)
        box = result(account.select("INBOX", True))
        self.clock.settle()
        scans = self.count_scans()
        for uid in range(1, 11):
            result(box.store(imap4.MessageSet(uid), ["\\Flagged"], 1, True))
            self.clock.settle()
        for i in range(3):
            result(box.folder.add([(msg(f"a{i}"), [], None)], origin=box))
            self.clock.settle()
        self.clock.advance(1)  # past any confirmation of a look within a timestamp tick
        self.clock.settle()
        self.assertLessEqual(scans[0], 1)

    def test_catch_up_ending_after_the_folder_left_schedules_nothing(self) -> None:
        """A catch-up still running when the folder's last session leaves it: when it ends,
        no look is scheduled for the folder the watch no longer has (stop() would not cancel
        it; CI's whole-suite run saw it as a reactor left unclean)."""
        fw = self.start()
        account = MaildirAccount(self.md, "a@example.com", self.notifier)
        box = result(account.select("INBOX", True))
        self.clock.settle()
        folder = box.folder
        entry = fw._folders[id(folder)]
        entry.busy = True  # its refresh is in flight...
        box.close()  # ...when the last session leaves: remove()
        self.assertNotIn(id(folder), fw._folders)
        folder._suspect = (True, True)  # a look that would want confirming
        fw._caught_up(None, id(folder), entry, folder)
        fw.stop()
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()], [])

    def test_burst_is_one_catch_up(self) -> None:
        """Five deliveries by another program before the reactor looks cost the rescans one
        delivery costs (the session told of all five at once)."""
        self.start()
        account = MaildirAccount(self.md, "a@example.com", self.notifier)
        box = result(account.select("INBOX", True))
        idle = Recorder().on(box)
        self.clock.settle()
        scans = self.count_scans()
        maildir.deliver(self.md, msg("one"), to_new=True)
        self.clock.settle()
        one = scans[0]
        self.assertIn(("exists", 21), idle.events)
        self.clock.advance(1)  # past the confirming look of the first burst
        self.clock.settle()
        scans[0] = 0
        for i in range(5):
            maildir.deliver(self.md, msg(f"n{i}"), to_new=True)
        self.clock.settle()
        self.assertEqual(scans[0], one)
        self.assertIn(("exists", 26), idle.events)

    def test_kernel_limit_falls_back_to_the_periodic_check(self) -> None:
        """The kernel refuses the watch (ENOSPC: fs.inotify.max_user_watches): one log line,
        and the folder is checked every poll_interval seconds instead."""

        class Refusing(watch.Inotify):
            def add(self, path: str, mask: int) -> int:
                raise OSError(errno.ENOSPC, "No space left on device", path)

        factory: Callable[..., watch.Inotify] = Refusing
        w = self.start(poll_interval=lambda: 3.0, inotify=factory)
        logged: list[str] = []
        self.patch(watch.FolderWatch.log, "warn", lambda text, **kw: logged.append(text))
        account = MaildirAccount(self.md, "a@example.com", self.notifier)
        box = result(account.select("INBOX", True))
        idle = Recorder().on(box)
        self.assertEqual(w.watched, 0)
        self.assertEqual(len(logged), 1)
        self.assertIn("fs.inotify.max_user_watches", logged[0])
        maildir.deliver(self.md, msg("late"), to_new=True)
        self.clock.settle()
        self.assertEqual(idle.events, [])
        self.clock.advance(3.0)
        self.clock.settle()
        self.assertIn(("exists", 21), idle.events)
        account2 = MaildirAccount(self.md, "a@example.com", self.notifier)
        result(account2.create("Other"))
        result(account2.select("Other", True))
        self.assertEqual(len(logged), 1)  # said once

    def test_queue_overflow_wakes_every_folder(self) -> None:
        w = self.start()
        account = MaildirAccount(self.md, "a@example.com", self.notifier)
        box = result(account.select("INBOX", True))
        idle = Recorder().on(box)
        self.clock.settle()
        maildir.deliver(self.md, msg("lost"), to_new=True)
        # The kernel dropped the events (its queue was full) and said so.
        assert w._notify is not None
        w._notify.read = lambda: None  # type: ignore[method-assign]
        w._event(-1, watch.IN_Q_OVERFLOW, b"")
        self.clock.settle()
        self.assertIn(("exists", 21), idle.events)

    def test_folder_missing_when_opened_is_checked_periodically(self) -> None:
        """A folder whose directory is not there (yet) when its first session opens it is
        checked every poll_interval seconds, not forgotten."""
        w = self.start(poll_interval=lambda: 3.0)
        folder = self.notifier.folder("a@example.com", "Later", os.path.join(self.md, ".Later"))
        w.add(folder)
        self.assertEqual((w.watched, len(w._polled)), (0, 1))
        w.remove(folder)
        self.assertEqual(len(w._polled), 0)
