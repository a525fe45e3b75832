"""One Maildir folder shared by several processes: UIDs handed out once, MODSEQs strictly
increasing across all of them, and each process seeing the others' changes as its own.

Two ``MailboxNotifier`` instances with their own ``Folder`` objects over one directory are
what two processes are (nothing in memory is shared); the tests at the end run real
processes concurrently and ``kill -9`` one of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from twisted.internet import task
from twisted.mail import imap4

from cgtwist.mailstore import index, maildir
from cgtwist.mailstore.account import MaildirAccount
from cgtwist.mailstore.mailbox import MaildirMailbox
from cgtwist.mailstore.notifier import MailboxNotifier
from tests.mailstore.test_mailstore import Recorder, StoreTestBase, deliver, msg, result


class TwoProcessTestBase(StoreTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.one = self.account
        self.two = MaildirAccount(self.md, "a@example.com", MailboxNotifier())

    def add(self, box: MaildirMailbox, subject: str, flags: tuple[str, ...] = ()) -> int:
        [uid] = result(box.folder.add([(msg(subject), list(flags), None)], origin=box))
        return uid

    def store(self, box: MaildirMailbox, uid: int, flags: list[str], mode: int = 1) -> None:
        result(box.store(imap4.MessageSet(uid), flags, mode, True))

    def caught_up(self, *boxes: MaildirMailbox) -> None:
        """Each session at a command boundary: its folder synced, the client told."""
        for box in boxes:
            result(box.refresh())
            box.sync()

    def flags(self, box: MaildirMailbox, uid: int) -> set[str]:
        [(_seq, m)] = list(box.fetch(imap4.MessageSet(uid), True))
        return set(m.getFlags())

    def log_modseqs(self) -> list[int]:
        """The MODSEQ of every change line of the folder's index log, in file order: the
        order in which the changes were made, whichever process made them."""
        with open(os.path.join(self.md, index.LOG_FILE), "rb") as f:
            lines = [json.loads(x) for x in f.read().split(b"\n")[1:] if x]
        out = []
        for v in lines:
            if v[0] == "a":
                out.append(v[3])
            elif v[0] in ("f", "x"):
                out.append(v[1])
        return out


class SharedFolderTests(TwoProcessTestBase):
    def test_appends_from_two_processes_get_distinct_increasing_uids(self) -> None:
        """APPEND alternating between two processes: every UID is new and above the last
        one either process handed out, and both see the same messages under the same UIDs."""
        a = self.select(account=self.one)
        b = self.select(account=self.two)
        got = []
        for i in range(10):
            got.append(self.add(a if i % 2 else b, f"m{i}"))
        self.assertEqual(got, sorted(set(got)), got)
        self.caught_up(a, b)
        self.assertEqual(self.uids(a), got)
        self.assertEqual(self.uids(b), got)
        self.assertEqual(a.getUIDNext(), b.getUIDNext())
        self.assertEqual(a.getUIDNext(), got[-1] + 1)

    def test_modseq_strictly_increasing_and_equal_on_both_sides(self) -> None:
        """STOREs alternating between two processes: each change's MODSEQ is above every
        earlier one, both sides report the same MODSEQ per message, and the log holds the
        changes in MODSEQ order."""
        for i in range(4):
            deliver(self.md, msg(f"m{i}"))
        a = self.select(account=self.one)
        b = self.select(account=self.two)
        seen = [max(a.highest_modseq, b.highest_modseq)]
        for i in range(20):
            box = a if i % 2 else b
            uid = 1 + i % 4
            self.store(box, uid, ["\\Flagged"], 1 if (i // 4) % 2 == 0 else -1)
            got = box.modseq_of(uid) or 0
            self.assertGreater(got, seen[-1], f"change {i}")
            seen.append(got)
        self.caught_up(a, b)
        self.assertEqual(a.highest_modseq, b.highest_modseq)
        for uid in range(1, 5):
            self.assertEqual(a.modseq_of(uid), b.modseq_of(uid), uid)
        logged = self.log_modseqs()
        self.assertEqual(logged, sorted(set(logged)), logged)

    def test_changes_of_the_other_process_reach_its_sessions(self) -> None:
        """A session in IDLE in one process hears of the other's APPEND, STORE and
        EXPUNGE (EXISTS, FETCH FLAGS, EXPUNGE), with the MODSEQs the other handed out."""
        deliver(self.md, msg("old"))
        a = self.select(account=self.one)
        b = self.select(account=self.two)
        Recorder().on(a)  # selected there too: a's APPEND is \Recent there, not here
        rec = Recorder().on(b)
        uid = self.add(a, "new", ("\\Seen",))
        result(b.refresh())
        self.assertIn(("exists", 2), rec.events)
        self.assertEqual(self.flags(b, uid), {"\\Seen"})
        self.assertEqual(b.modseq_of(uid), a.modseq_of(uid))

        rec.events.clear()
        self.store(a, 1, ["\\Answered"])
        result(b.refresh())
        self.assertIn(("flags", {1: ["\\Answered"]}), rec.events)
        self.assertEqual(b.modseq_of(1), a.modseq_of(1))

        rec.events.clear()
        self.store(a, 1, ["\\Deleted"])
        result(a.expunge())
        result(b.refresh())
        self.assertIn(("expunge", [1]), rec.events)
        self.assertEqual(b.highest_modseq, a.highest_modseq)

    def test_store_on_a_message_the_other_process_renamed_is_not_lost(self) -> None:
        """A STORE in a process that has not looked since the other changed the same
        message's flags still takes effect, and keeps the other's flag."""
        deliver(self.md, msg("x"))
        a = self.select(account=self.one)
        b = self.select(account=self.two)
        self.store(a, 1, ["\\Seen"])
        self.store(b, 1, ["\\Flagged"])
        self.caught_up(a, b)
        for box in (a, b):
            self.assertEqual(self.flags(box, 1), {"\\Seen", "\\Flagged"})
        [name] = os.listdir(os.path.join(self.md, "cur"))
        self.assertEqual(maildir.split_name(name)[1], "FS")

    def test_flags_set_back_by_the_other_process_keep_the_message(self) -> None:
        """One process changes a message's flags and has not yet removed the name it
        replaced when the other sets them back (the old name again): the first one's batched
        removal must not take the message's only name."""
        clock = task.Clock()
        slow = MaildirAccount(self.md, "a@example.com", MailboxNotifier(timer=clock))
        deliver(self.md, msg("x"))
        a = self.select(account=slow)
        b = self.select(account=self.two)
        self.store(a, 1, ["\\Flagged"])  # its old name waits for the batch's fsync
        self.store(b, 1, ["\\Flagged"], -1)
        clock.advance(1)  # the batch: fsync, then the replaced names go
        self.caught_up(a, b)
        self.assertEqual(len(os.listdir(os.path.join(self.md, "cur"))), 1)
        for box in (a, b):
            self.assertEqual(box.uids, [1])
            self.assertEqual(self.flags(box, 1), set())
        box = self.select(account=self.reopen())
        self.assertEqual(box.uids, [1])

    def test_compaction_by_the_other_process(self) -> None:
        """One process writes a new snapshot and starts a new log: the other reads the
        index afresh, keeps every MODSEQ and goes on above them, and its changes are in the
        new log, read back by the first."""
        for i in range(3):
            deliver(self.md, msg(f"m{i}"))
        a = self.select(account=self.one)
        b = self.select(account=self.two)
        self.store(a, 1, ["\\Seen"])
        result(a.folder._locked(a.folder._compact_blocking))
        self.store(a, 2, ["\\Answered"])
        high = a.highest_modseq
        self.store(b, 3, ["\\Flagged"])
        self.assertGreater(b.modseq_of(3) or 0, high)
        self.caught_up(a, b)
        for uid in (1, 2, 3):
            self.assertEqual(a.modseq_of(uid), b.modseq_of(uid), uid)
            self.assertEqual(self.flags(a, uid), self.flags(b, uid))
        self.assertEqual(self.flags(a, 3), {"\\Flagged"})
        logged = self.log_modseqs()
        self.assertEqual(logged, sorted(set(logged)))

    def test_keyword_of_the_other_process(self) -> None:
        """A keyword one process gave a message is that message's keyword in the other
        (the letter is read from the shared map), and can be removed there."""
        deliver(self.md, msg("x"))
        a = self.select(account=self.one)
        b = self.select(account=self.two)
        self.store(a, 1, ["$Project"])
        self.caught_up(b)
        self.assertEqual(self.flags(b, 1), {"$Project"})
        self.store(b, 1, ["$Project"], -1)
        self.caught_up(a)
        self.assertEqual(self.flags(a, 1), set())

    def test_log_dropped_by_the_other_process(self) -> None:
        """The other process dropped the index files (as after a failed append): what it
        handed out since is unknown, so the next MODSEQ is above the whole reservation."""
        deliver(self.md, msg("x"))
        a = self.select(account=self.one)
        b = self.select(account=self.two)
        self.store(b, 1, ["\\Seen"])
        self.caught_up(a)
        for i in range(3):
            self.store(a, 1, ["\\Flagged"], 1 if i % 2 == 0 else -1)
        high = a.highest_modseq
        for name in (index.INDEX_FILE, index.LOG_FILE):
            os.unlink(os.path.join(self.md, name))
        self.store(b, 1, ["\\Answered"])
        self.assertGreater(b.modseq_of(1) or 0, high)

    def test_expunge_by_the_other_process_is_not_undone(self) -> None:
        """A message one process expunged stays gone for the other, whose uidlist save
        does not bring its UID back."""
        deliver(self.md, msg("x"))
        deliver(self.md, msg("y"))
        a = self.select(account=self.one)
        b = self.select(account=self.two)
        self.store(a, 1, ["\\Deleted"])
        result(a.expunge())
        self.add(b, "z")
        self.caught_up(a, b)
        self.assertEqual(self.uids(a), [2, 3])
        self.assertEqual(self.uids(b), [2, 3])
        box = self.select(account=self.reopen())
        self.assertEqual(self.uids(box), [2, 3])
        self.assertEqual(box.getUIDNext(), 4)

    def test_expunge_removes_the_name_the_other_process_replaced(self) -> None:
        """A message whose flags another process changed, and whose name before that change
        is still there (that process removes it in a batch, later): an EXPUNGE here removes
        both names, so a crash of that process before its batch cannot bring the message
        back at the next listing."""
        clock = task.Clock()  # the first process's batch never comes
        self.one = MaildirAccount(self.md, "a@example.com", MailboxNotifier(timer=clock))
        # Looks here vouch for themselves at once (no directory time within the window).
        self.two = MaildirAccount(
            self.md, "a@example.com", MailboxNotifier(clock=lambda: time.time() + 10)
        )
        for s in ("x", "y"):
            deliver(self.md, msg(s))
        a = self.select(account=self.one)
        b = self.select(account=self.two)
        self.caught_up(a, b)
        key = a.folder.entries[1].key
        self.store(a, 1, ["\\Flagged"])
        cur = os.path.join(self.md, "cur")
        self.assertEqual(len([n for n in os.listdir(cur) if n.startswith(key)]), 2)
        self.caught_up(b)
        self.assertIn("\\Flagged", self.flags(b, 1))
        result(b.folder.expunge([1], origin=b))
        self.assertEqual([n for n in os.listdir(cur) if n.startswith(key)], [])
        box = self.select(account=self.reopen())
        self.assertEqual(self.uids(box), [2])


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 300.0  # seconds a worker may take on a busy machine before the test gives up


class RealProcessTests(TwoProcessTestBase):
    """Two real processes (``tests/mailstore/sharer.py``) changing INBOX at once."""

    def spawn(self, name: str, count: int) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=ROOT)
        p = subprocess.Popen(
            [sys.executable, "-m", "tests.mailstore.sharer", self.md, name, str(count)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(_reap, p)
        return p

    def said(self, out: str) -> list[dict[str, int]]:
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def check_unique(self, events: list[dict[str, int]]) -> None:
        """Each UID added once; each change's MODSEQ handed out once, whichever process."""
        added = [e["uid"] for e in events if e["op"] == "add"]
        self.assertEqual(len(added), len(set(added)), sorted(added))
        # An APPEND and a STORE of one process can share nothing with the other's.
        per_change = {}
        for e in events:
            if e["op"] in ("add", "store"):
                per_change.setdefault(e["modseq"], set()).add((e["op"], e["uid"]))
        for m, changes in per_change.items():
            self.assertEqual(len(changes), 1, (m, changes))

    def test_two_processes_at_once(self) -> None:
        """APPEND, STORE and EXPUNGE from two processes at the same time: UIDs unique and
        increasing per process, MODSEQs never handed out twice and in log order, and a
        fresh process finds exactly the messages both left, with their flags."""
        one, two = self.spawn("one", 40), self.spawn("two", 40)
        outs = [p.communicate(timeout=DEADLINE)[0] for p in (one, two)]
        self.assertEqual([one.returncode, two.returncode], [0, 0])
        events = [self.said(o) for o in outs]
        for ev in events:
            adds = [e["uid"] for e in ev if e["op"] == "add"]
            self.assertEqual(adds, sorted(adds))
            mods = [e["modseq"] for e in ev if "modseq" in e]
            self.assertEqual(mods, sorted(mods), mods)  # each process's changes in order
        both = events[0] + events[1]
        self.check_unique(both)
        logged = self.log_modseqs()
        self.assertEqual(logged, sorted(set(logged)), logged)

        box = self.select(account=self.reopen())
        expunged = {e["uid"] for e in both if e["op"] == "expunge"}
        added = {e["uid"] for e in both if e["op"] == "add"}
        self.assertEqual(set(box.uids), added - expunged)
        self.assertEqual(len(os.listdir(os.path.join(self.md, "cur"))), len(added - expunged))
        self.assertGreater(box.getUIDNext(), max(added))
        self.assertGreaterEqual(box.highest_modseq, max(e["modseq"] for e in both if "modseq" in e))

    def test_kill_9_of_one_process_loses_nothing(self) -> None:
        """One process killed with SIGKILL in the middle of its changes: the other goes on
        (the lock dies with its holder), and every message either was told of is there
        under its UID, none twice."""
        victim = self.spawn("victim", 0)
        assert victim.stdout is not None
        told: list[dict[str, int]] = []
        while len(told) < 30:
            line = victim.stdout.readline()
            self.assertTrue(line, "the process stopped early")
            told.append(json.loads(line))
        other = self.spawn("other", 20)
        while len(told) < 60:
            told.append(json.loads(victim.stdout.readline()))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=DEADLINE)
        rest = victim.stdout.read()
        told += self.said(rest)
        out = other.communicate(timeout=DEADLINE)[0]
        self.assertEqual(other.returncode, 0)
        both = told + self.said(out)
        self.check_unique(both)

        box = self.select(account=self.reopen())
        expunged = {e["uid"] for e in both if e["op"] == "expunge"}
        added = {e["uid"] for e in both if e["op"] == "add"}
        # The victim may be killed after its last EXPUNGE and before it said so.
        cut = {e["uid"] for e in told if e["op"] == "expunging"} - expunged
        self.assertLessEqual(len(cut), 1, cut)
        self.assertLessEqual(added - expunged - cut, set(box.uids))
        # At most the one APPEND the kill cut short (stored, its UID not yet printed).
        self.assertLessEqual(len(set(box.uids) - (added - expunged)), 1)
        keys = [maildir.split_name(n)[0] for n in os.listdir(os.path.join(self.md, "cur"))]
        self.assertEqual(len(keys), len(set(keys)))
        self.assertEqual(len(keys), len(box.uids))
        self.assertGreaterEqual(box.highest_modseq, max(e["modseq"] for e in both if "modseq" in e))
        # And the folder goes on: a change after the kill gets a new UID.
        [uid] = result(box.folder.add([(msg("after"), [], None)]))
        self.assertGreater(uid, max(added))


def _reap(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        p.kill()
    p.wait()
    if p.stdout is not None:
        p.stdout.close()
