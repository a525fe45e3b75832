"""Each IMAP session's view of a shared mailbox stays what its client was told (RFC 3501 §5.2,
§7.4.1; RFC 9051 §7.5), under random interleavings of two sessions and LOCAL delivery.

A ``Watcher`` reads everything one session's server writes, as imaptest's state tracking does,
and fails on what would desynchronise a real client: EXISTS that drops without EXPUNGE, an
EXPUNGE or FETCH naming a sequence number the client never heard of, EXPUNGE while FETCH,
STORE or SEARCH runs, a keyword in FETCH FLAGS before ``* FLAGS`` named it, a UID that moves
to another sequence number, anything after BYE. After the updates, a session's picture must
equal the mailbox on disk.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.trial import unittest

from tests.protocols.test_imap_support import MESSAGE, Client, World

_ACCOUNT = "alice@example.com"
_LINE = re.compile(rb"\* (\d+) (EXISTS|EXPUNGE|RECENT|FETCH)(?: \((.*)\))?$")
_SYSTEM = {b"\\Seen", b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Draft", b"\\Recent"}


class Desync(AssertionError):
    pass


class Watcher:
    """What one client believes about the selected mailbox, built only from server output."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.uids: list[Optional[int]] = []  # by sequence number; None = not yet seen by UID
        self.keywords: set[bytes] = set()
        self.selected = False
        self.bye = False
        self.command = b""  # the command whose responses are being read ("" = none, or IDLE)

    def fail(self, why: str, line: bytes) -> None:
        raise Desync(f"{self.name}: {why}: {line!r}")

    def feed(self, out: bytes) -> None:
        for line in out.split(b"\r\n"):
            if line:
                self._line(line)

    def _line(self, line: bytes) -> None:
        if self.bye and not re.match(rb"^[A-Za-z0-9]+ OK", line):
            self.fail("a response after BYE", line)
        if line.startswith(b"* BYE"):
            self.bye = True
            return
        if line.startswith(b"* FLAGS ("):
            self.keywords = {f for f in line[9:-1].split() if f not in _SYSTEM}
            return
        m = _LINE.match(line)
        if not m or not self.selected:
            return
        n, kind, rest = int(m.group(1)), m.group(2), m.group(3) or b""
        if kind == b"EXISTS":
            if n < len(self.uids):
                self.fail(f"message count dropped {len(self.uids)} -> {n}", line)
            self.uids.extend([None] * (n - len(self.uids)))
        elif kind == b"EXPUNGE":
            if self.command in (b"FETCH", b"STORE", b"SEARCH"):
                self.fail(f"EXPUNGE during {self.command.decode()}", line)
            if not 1 <= n <= len(self.uids):
                self.fail(f"EXPUNGE of unknown sequence number (count {len(self.uids)})", line)
            del self.uids[n - 1]
        elif kind == b"FETCH":
            if not 1 <= n <= len(self.uids):
                self.fail(f"FETCH of unknown sequence number (count {len(self.uids)})", line)
            flags = re.search(rb"FLAGS \(([^)]*)\)", rest)
            if flags:
                for f in flags.group(1).split():
                    if f not in _SYSTEM and f not in self.keywords:
                        self.fail(f"keyword {f.decode()} not in the last FLAGS", line)
            uid = re.search(rb"UID (\d+)", rest)
            if uid:
                known = self.uids[n - 1]
                if known is not None and known != int(uid.group(1)):
                    self.fail(f"sequence number {n} was UID {known}", line)
                self.uids[n - 1] = int(uid.group(1))


class Session:
    """A client connection with its watcher."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.watcher = Watcher(name)
        self.client = Client(world)
        self.client.login()
        self.idle = False
        self.tags = 0
        self.select()

    def select(self) -> None:
        out = self.client.send(b"S1 SELECT INBOX\r\n")
        w = self.watcher
        w.uids, w.selected, w.command = [], True, b"SELECT"
        w.feed(out)
        w.command = b""

    def drain(self) -> None:
        """What the server pushed on its own (IDLE)."""
        self.watcher.command = b"IDLE" if self.idle else b""
        self.watcher.feed(self.client.take())

    def run(self, command: bytes) -> bytes:
        assert not self.idle
        self.drain()
        self.tags += 1
        tag = b"t%d" % self.tags
        verb = command.split(b" ", 2)
        self.watcher.command = verb[0] if verb[0] != b"UID" else b"UID " + verb[1]
        out = self.client.send(tag + b" " + command + b"\r\n")
        self.watcher.feed(out)
        self.watcher.command = b""
        assert re.search(rb"(^|\r\n)" + tag + rb" (OK|NO)", out), out
        return out

    def count(self) -> int:
        return len(self.watcher.uids)


class ViewMachine(RuleBasedStateMachine):
    """Two sessions on one INBOX, plus LOCAL delivery."""

    @initialize()
    def start(self) -> None:
        self.world = World()
        for _ in range(3):
            self.world.deliver(_ACCOUNT, MESSAGE)
        self.sessions = [Session(self.world, "a"), Session(self.world, "b")]

    def teardown(self) -> None:
        for s in getattr(self, "sessions", []):
            s.client.close()

    def _session(self, i: int) -> Session:
        return self.sessions[i]

    def _seq(self, s: Session, pick: int) -> bytes:
        return b"%d" % (pick % s.count() + 1) if s.count() else b"*"

    @rule()
    def deliver(self) -> None:
        self.world.deliver(_ACCOUNT, MESSAGE)

    @rule(
        i=st.integers(0, 1),
        pick=st.integers(0, 50),
        flag=st.sampled_from(
            [b"\\Seen", b"\\Deleted", b"\\Flagged", b"$Label1", b"$Label2", b"$Label3", b"Work"]
        ),
        mode=st.sampled_from([b"+FLAGS", b"-FLAGS", b"FLAGS", b"+FLAGS.SILENT"]),
    )
    def store(self, i: int, pick: int, flag: bytes, mode: bytes) -> None:
        s = self._session(i)
        if not s.idle and s.count():
            s.run(b"STORE " + self._seq(s, pick) + b" " + mode + b" (" + flag + b")")

    @rule(i=st.integers(0, 1), uid=st.booleans())
    def expunge(self, i: int, uid: bool) -> None:
        s = self._session(i)
        if not s.idle:
            s.run(b"UID EXPUNGE 1:*" if uid else b"EXPUNGE")

    @rule(i=st.integers(0, 1), keyword=st.sampled_from([b"", b"$Label4 ", b"Home "]))
    def append(self, i: int, keyword: bytes) -> None:
        s = self._session(i)
        if not s.idle:
            flags = b"(" + keyword + b"\\Seen)"
            s.run(b"APPEND INBOX " + flags + b" {%d+}\r\n" % len(MESSAGE) + MESSAGE)

    @rule(i=st.integers(0, 1), pick=st.integers(0, 50), into_self=st.booleans(), uid=st.booleans())
    def move(self, i: int, pick: int, into_self: bool, uid: bool) -> None:
        s = self._session(i)
        if not s.idle and s.count():
            where = b" INBOX" if into_self else b" Trash"
            s.run(
                (b"UID MOVE " if uid else b"MOVE ")
                + (b"1:*" if uid else self._seq(s, pick))
                + where
            )

    @rule(i=st.integers(0, 1), pick=st.integers(0, 50))
    def copy_into_inbox(self, i: int, pick: int) -> None:
        s = self._session(i)
        if not s.idle and s.count():
            s.run(b"COPY " + self._seq(s, pick) + b" INBOX")

    @rule(i=st.integers(0, 1), uid=st.booleans())
    def fetch(self, i: int, uid: bool) -> None:
        s = self._session(i)
        if not s.idle and s.count():
            s.run(b"UID FETCH 1:* (FLAGS)" if uid else b"FETCH 1:* (UID FLAGS)")

    @rule(i=st.integers(0, 1))
    def search(self, i: int) -> None:
        s = self._session(i)
        if not s.idle:
            s.run(b"SEARCH DELETED")

    @rule(i=st.integers(0, 1))
    def noop(self, i: int) -> None:
        s = self._session(i)
        if not s.idle:
            s.run(b"NOOP")

    @rule(i=st.integers(0, 1))
    def idle(self, i: int) -> None:
        s = self._session(i)
        if s.idle:
            s.watcher.command = b"IDLE"
            s.watcher.feed(s.client.send(b"DONE\r\n"))
            s.watcher.command = b""
            s.idle = False
        else:
            s.drain()
            out = s.client.send(b"i IDLE\r\n")
            s.idle = True
            s.watcher.command = b"IDLE"
            s.watcher.feed(out)

    @rule(i=st.integers(0, 1))
    def logout_and_return(self, i: int) -> None:
        s = self._session(i)
        if s.idle:
            return
        s.drain()
        s.watcher.command = b"LOGOUT"
        s.watcher.feed(s.client.send(b"o LOGOUT\r\n"))
        s.client.close()
        self.sessions[i] = Session(self.world, s.watcher.name)

    @invariant()
    def pushed_updates_are_consistent(self) -> None:
        for s in getattr(self, "sessions", []):
            s.drain()

    @precondition(lambda self: hasattr(self, "sessions"))
    @rule(i=st.integers(0, 1))
    def picture_matches_disk(self, i: int) -> None:
        """After a NOOP, the client's picture is the mailbox: every UID in its place."""
        s = self._session(i)
        if s.idle:
            return
        s.run(b"NOOP")
        if s.count():
            s.run(b"FETCH 1:* (UID)")
        folder = self.world.notifier.folder(_ACCOUNT, "INBOX", s.client.proto.mbox.folder.path)
        assert s.watcher.uids == folder.uids, (s.watcher.uids, folder.uids)


TestViewMachine = ViewMachine.TestCase
TestViewMachine.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class LogoutTests(unittest.TestCase):
    def test_nothing_follows_bye_when_logging_out(self) -> None:
        """Flag changes by another session still owed at LOGOUT are not sent after ``* BYE``
        (imaptest: ``seq too high ... state=LOGOUT``)."""
        world = World()
        world.deliver(_ACCOUNT, MESSAGE)
        a, b = Session(world, "a"), Session(world, "b")
        b.run(b"STORE 1 +FLAGS (\\Flagged)")
        out = a.client.send(b"o LOGOUT\r\n")
        self.assertNotIn(b"FETCH", out.split(b"* BYE", 1)[1])

    def test_logout_does_not_wait_for_the_folders_disk_work(self) -> None:
        """LOGOUT answers at once even while the folder's disk work is busy (another
        session's STORE, a flush's fsync): RFC 3501 §6.1.3 needs nothing from the disk
        before ``* BYE`` and the tagged OK, and Dovecot does not wait either."""
        world = World()
        world.deliver(_ACCOUNT, MESSAGE)
        a = Session(world, "a")
        mbox = a.client.proto.mbox
        assert mbox is not None
        folder = mbox.folder
        folder.lock.acquire()  # the disk work of another session, still running
        writes: list[bytes] = []
        write = a.client.transport.write

        def counted(data: bytes) -> None:
            writes.append(data)
            write(data)

        a.client.transport.write = counted  # type: ignore[method-assign]
        out = a.client.send(b"o LOGOUT\r\n")
        self.assertEqual(out, b"* BYE Logging out\r\no OK LOGOUT completed\r\n")
        self.assertEqual(writes, [out])  # one send, as Dovecot's
        folder.lock.release()


class CountTests(unittest.TestCase):
    def test_own_expunge_with_delivery_owed_keeps_count_true(self) -> None:
        """A delivery not yet announced and this session's own EXPUNGE: the EXISTS that
        follows counts what is there, and EXISTS never drops."""
        world = World()
        world.deliver(_ACCOUNT, MESSAGE)
        world.deliver(_ACCOUNT, MESSAGE)
        a, b = Session(world, "a"), Session(world, "b")
        world.deliver(_ACCOUNT, MESSAGE)
        a.run(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        a.run(b"EXPUNGE")
        b.run(b"NOOP")
        for s in (a, b):
            s.run(b"NOOP")
            s.run(b"FETCH 1:* (UID)")
            self.assertEqual(s.watcher.uids, [2, 3])

    def test_keyword_from_another_session_announced_before_fetch(self) -> None:
        """A keyword another session created is in ``* FLAGS`` before any FETCH shows it."""
        world = World()
        world.deliver(_ACCOUNT, MESSAGE)
        a, b = Session(world, "a"), Session(world, "b")
        b.run(b"STORE 1 +FLAGS (NewKeyword)")
        out = a.run(b"FETCH 1 (FLAGS)")
        self.assertLess(out.index(b"* FLAGS ("), out.index(b"* 1 FETCH"))


class ExpungedByOthersTests(unittest.TestCase):
    def test_fetch_of_text_another_session_expunged(self) -> None:
        """FETCH of a message another session expunged (not yet reported) answers for the rest
        and ends in NO [EXPUNGEISSUED]: never an empty body in place of the real one (RFC 2180
        §4.1.3); flags alone are still given, and the EXPUNGE follows at NOOP."""
        world = World()
        world.deliver(_ACCOUNT, MESSAGE)
        world.deliver(_ACCOUNT, MESSAGE)
        a, b = Session(world, "a"), Session(world, "b")
        b.run(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        b.run(b"EXPUNGE")
        out = a.run(b"FETCH 1:* (BODY.PEEK[])")
        self.assertNotIn(b"* 1 FETCH (BODY", out)
        self.assertIn(b"* 2 FETCH (BODY[] {%d}" % len(MESSAGE), out)
        self.assertRegex(out, rb"t\d+ NO \[EXPUNGEISSUED\]")
        self.assertIn(b"* 1 FETCH (FLAGS (\\Deleted", a.run(b"FETCH 1 (FLAGS)"))
        self.assertIn(b"* 1 EXPUNGE", a.run(b"NOOP"))

    def test_fetch_of_a_file_gone_before_the_index_knows(self) -> None:
        """The file of a message vanished (expunged by another process, not yet rescanned):
        FETCH of its text ends in NO [EXPUNGEISSUED] instead of an empty body."""
        world = World()
        world.deliver(_ACCOUNT, MESSAGE)
        world.deliver(_ACCOUNT, MESSAGE)
        a = Session(world, "a")
        folder = a.client.proto.mbox.folder
        entry = folder.entries[1]
        cur = os.path.dirname(entry.path(folder.path))
        before = os.stat(cur)
        os.unlink(entry.path(folder.path))
        os.utime(cur, ns=(before.st_atime_ns, before.st_mtime_ns))  # the rescan is not told
        out = a.run(b"FETCH 1:2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertNotIn(b"* 1 FETCH", out)
        self.assertIn(b"* 2 FETCH", out)
        self.assertRegex(out, rb"t\d+ NO \[EXPUNGEISSUED\]")
