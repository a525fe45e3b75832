"""Tests for LOCAL delivery into Maildir (cgtwist.delivery.local)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from typing import Any, Optional

from twisted.internet import defer, reactor
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cgtwist import durable
from cgtwist import paths as local_paths
from cgtwist.delivery.local import LocalDelivery
from cgtwist.interfaces import IDeliveryAgent
from cgtwist.mailstore import maildir as md
from cgtwist.types import Account, Envelope, QueueName, Recipient
from tests.mailstore.oslog import OsLog

DATA = b"From: a@example.org\r\nSubject: t\r\n\r\nline 1\r\n.line\r\n\x00\xff bytes\r\nno eol"


class FakeStore:
    def __init__(self, *accounts: str) -> None:
        self.accounts = set(accounts)
        self.broken = False

    def get_account(self, name: str, domain: str) -> defer.Deferred[Optional[Account]]:
        if self.broken:
            return defer.fail(RuntimeError("database is locked"))
        if f"{name}@{domain}".lower() in self.accounts:
            return defer.succeed(Account(name.lower(), domain.lower()))
        return defer.succeed(None)


class FakeNotifier:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def mailbox_changed(self, account: str, folder: str) -> None:
        self.calls.append((account, folder))


def _capture_log(testcase: unittest.TestCase) -> list[str]:
    """The text of every log event from now to the end of the test."""
    out: list[str] = []

    def observer(event: LogEvent) -> None:
        out.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return out


def rcpt(account: str, address: Optional[str] = None) -> Recipient:
    return Recipient(address or account, route=f"LOCAL({account})")


class LocalDeliveryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="cgtwist-local-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.store = FakeStore("bob@example.com", "carol@example.com")
        self.notifier = FakeNotifier()
        self.agent = LocalDelivery(
            self.base,
            self.store,
            self.notifier,
            reactor=reactor,
            hostname="mx.example",
            writer=self.writer(),
        )
        self.env = Envelope(sender="alice@example.org", recipients=[])

    def writer(self) -> md.MaildirWriter:
        """The process's save path."""
        return md.MaildirWriter("mx.example")

    def maildir(self, account: str = "bob") -> str:
        return os.path.join(self.base, "Domains", "example.com", account, "Maildir")

    def files(self, account: str = "bob", sub: str = "new") -> list[str]:
        path = os.path.join(self.maildir(account), sub)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def test_interface(self) -> None:
        """The agent is a valid IDeliveryAgent for module LOCAL."""
        self.assertTrue(verifyObject(IDeliveryAgent, self.agent))
        self.assertEqual(self.agent.module, "LOCAL")

    @defer.inlineCallbacks
    def test_byte_exact_with_trace_headers(self) -> None:
        """The message lands in new/ byte-exact after Return-Path and Delivered-To, the Maildir is
        created on first delivery, and IMAP sessions are notified."""
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual([(r.state, r.detail[:3]) for r in rs], [("delivered", "250")])
        names = self.files()
        self.assertEqual(len(names), 1)
        with open(os.path.join(self.maildir(), "new", names[0]), "rb") as f:
            content = f.read()
        head = b"Return-Path: <alice@example.org>\r\nDelivered-To: bob@example.com\r\n"
        self.assertEqual(content, head + DATA)
        self.assertTrue(names[0].endswith(f",S={len(content)}"))
        self.assertRegex(names[0], r"^\d+\.M\d+P\d+Q\d+\.mx\.example,S=\d+$")
        self.assertEqual(self.files(sub="tmp"), [])
        self.assertEqual(self.files(sub="cur"), [])
        self.assertEqual(self.notifier.calls, [("bob@example.com", "INBOX")])

    @defer.inlineCallbacks
    def test_queue_given_names_the_account(self) -> None:
        """The queue the manager gives (``LOCAL(account)``) names the account, whatever the
        recipient's route text says: the agent does not parse the route when it has one."""
        r = Recipient("postmaster@example.com", route="")
        queue = QueueName("LOCAL", "carol@example.com")
        rs = yield self.agent.deliver("m1", self.env, DATA, [r], queue=queue)
        self.assertEqual([r.state for r in rs], ["delivered"])
        self.assertEqual((len(self.files("carol")), self.files("bob")), (1, []))

    @defer.inlineCallbacks
    def test_lf_message_gets_lf_headers_and_null_sender(self) -> None:
        """A message stored with LF line ends gets LF headers; <> shows as Return-Path: <>."""
        env = Envelope(sender="", recipients=[])
        yield self.agent.deliver("m1", env, b"Subject: x\n\nbody\n", [rcpt("bob@example.com")])
        with open(os.path.join(self.maildir(), "new", self.files()[0]), "rb") as f:
            self.assertEqual(
                f.read(), b"Return-Path: <>\nDelivered-To: bob@example.com\nSubject: x\n\nbody\n"
            )

    @defer.inlineCallbacks
    def test_header_injection_impossible(self) -> None:
        """A sender with CR/LF cannot add a header line to the delivered message."""
        env = Envelope(sender="a@b\r\nBcc: evil@x", recipients=[])
        yield self.agent.deliver("m1", env, DATA, [rcpt("bob@example.com")])
        with open(os.path.join(self.maildir(), "new", self.files()[0]), "rb") as f:
            first = f.read().split(b"\r\n")[:3]
        self.assertEqual(first[0], b"Return-Path: <a@bBcc: evil@x>")
        self.assertEqual(first[1], b"Delivered-To: bob@example.com")

    @defer.inlineCallbacks
    def test_concurrent_deliveries_unique_names(self) -> None:
        """Many deliveries at once each get their own file; none overwrites another; they share
        the fsyncs of new/ instead of paying one each."""
        synced: list[str] = []
        real = durable.fsync_dir

        def counting(path: str) -> None:
            synced.append(path)
            real(path)

        self.patch(durable, "fsync_dir", counting)
        ds = [
            self.agent.deliver(f"m{i}", self.env, DATA + b"%d" % i, [rcpt("bob@example.com")])
            for i in range(30)
        ]
        yield defer.gatherResults(ds)
        names = self.files()
        self.assertEqual(len(names), 30)
        bodies = set()
        for n in names:
            with open(os.path.join(self.maildir(), "new", n), "rb") as f:
                bodies.add(f.read())
        self.assertEqual(len(bodies), 30)
        # Making the account's Maildir fsyncs its parents once (durable.make_dirs); the
        # deliveries themselves flush only new/, fewer times than there are messages.
        new_syncs = [p for p in synced if p.endswith("/new")]
        self.assertTrue(new_syncs)
        self.assertLess(len(new_syncs), 30)
        self.assertLess(len(synced) - len(new_syncs), 10)

    @defer.inlineCallbacks
    def test_several_recipients_one_copy(self) -> None:
        """Two recipients routed to the same account get one copy, both marked delivered."""
        rs = yield self.agent.deliver(
            "m1",
            self.env,
            DATA,
            [rcpt("bob@example.com"), rcpt("bob@example.com", "alias@example.com")],
        )
        self.assertEqual([r.state for r in rs], ["delivered", "delivered"])
        self.assertEqual(len(self.files()), 1)

    @defer.inlineCallbacks
    def test_maildir_removed_between_deliveries_is_recreated(self) -> None:
        """An administrator who removes a Maildir while the server runs does not lose the next
        message: it lands in a fresh Maildir (the remembered path is checked again)."""
        yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        shutil.rmtree(self.maildir())
        out = yield self.agent.deliver("m2", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(out[0].state, "delivered")
        self.assertEqual(len(self.files()), 1)
        self.assertTrue(os.path.isdir(os.path.join(self.maildir(), "cur")))

    @defer.inlineCallbacks
    def test_known_maildir_skips_path_checks(self) -> None:
        """Mail to an account that just received mail does not resolve its path again (that
        costs ~20 stat calls per message), and a settings reload (forget) checks it anew."""
        yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        checked: list[str] = []
        real = local_paths.maildir

        def counting(*a: Any) -> str:
            checked.append(a[2])
            return real(*a)

        self.patch(local_paths, "maildir", counting)
        yield self.agent.deliver("m2", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(checked, [])
        self.agent.forget()
        yield self.agent.deliver("m3", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(checked, ["bob"])
        self.assertEqual(len(self.files()), 3)

    @defer.inlineCallbacks
    def test_lookup_overlapping_a_change_is_not_remembered(self) -> None:
        """An account lookup that began before accounts changed (forget(): a change announced
        by another node) may have read the old row; it answers its delivery but is not kept,
        so the next message asks the store again and sees the change."""
        answer: defer.Deferred[Any] = defer.Deferred()
        asked: list[str] = []
        real = self.store.get_account

        def slow(name: str, domain: str) -> Any:
            asked.append(name)
            return answer if len(asked) == 1 else real(name, domain)

        self.patch(self.store, "get_account", slow)
        first = self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        self.agent.forget()  # the account was removed meanwhile
        answer.callback(real("bob", "example.com").result)
        yield first
        self.store.accounts.discard("bob@example.com")
        rs = yield self.agent.deliver("m2", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(asked, ["bob", "bob"])
        self.assertEqual(rs[0].state, "pending")

    @defer.inlineCallbacks
    def test_missing_account_retries(self) -> None:
        """Mail for an account deleted after acceptance stays pending (retried, not dropped)."""
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("gone@example.com")])
        self.assertEqual(rs[0].state, "pending")
        self.assertTrue(rs[0].detail.startswith("451 4.2.1"))
        self.assertFalse(os.path.exists(os.path.join(self.base, "Domains", "example.com", "gone")))

    @defer.inlineCallbacks
    def test_store_error_retries(self) -> None:
        """A database failure during the account lookup defers the delivery."""
        self.store.broken = True
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual((rs[0].state, rs[0].detail[:9]), ("pending", "451 4.3.0"))

    @defer.inlineCallbacks
    def test_disk_full_retries_and_cleans_tmp(self) -> None:
        """A full disk leaves the recipient pending with 4.3.1 and no partial file in tmp/."""
        real_write = os.write

        def write(fd: int, data: Any) -> int:
            if "/tmp/" in os.readlink(f"/proc/self/fd/{fd}").replace(self.base, ""):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        def writev(fd: int, chunks: Any) -> int:
            return write(fd, b"".join(chunks))

        self.patch(os, "write", write)
        self.patch(os, "writev", writev)
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual((rs[0].state, rs[0].detail[:9]), ("pending", "452 4.3.1"))
        self.assertEqual(self.files(sub="tmp"), [])
        self.assertEqual(self.files(), [])
        self.assertEqual(self.notifier.calls, [])

    @defer.inlineCallbacks
    def test_permission_error_retries(self) -> None:
        """A permission problem on the Maildir defers (4.3.0) instead of bouncing."""

        def deny(*a: Any, **kw: Any) -> Any:
            raise OSError(errno.EACCES, "Permission denied")

        self.patch(md, "ensure", deny)
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual((rs[0].state, rs[0].detail[:9]), ("pending", "451 4.3.0"))

    @defer.inlineCallbacks
    def test_fsync_order(self) -> None:
        """Nothing is acknowledged before all that leads to the message is durable: fsync(the
        file) < its rename into new/ < fsync(new/) < delivered; and the file is fsynced once:
        a rename leaves its link count alone (issue 21: an O_TMPFILE file linked into new/
        needed a second fsync after the link, a third flush per message)."""
        calls: list[tuple[str, int, str]] = []  # (operation, inode, what)
        real_fsync, real_rename, real_link = os.fsync, os.rename, os.link

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            real_fsync(fd)
            calls.append(("fsync", st.st_ino, "dir" if stat.S_ISDIR(st.st_mode) else "file"))

        def rename(a: str, b: str) -> None:
            real_rename(a, b)
            calls.append(("rename", os.stat(b).st_ino, os.path.basename(os.path.dirname(b))))

        def link(a: str, b: str, **kw: Any) -> None:  # the unnamed file's link into new/
            real_link(a, b, **kw)
            calls.append(("link", os.stat(b).st_ino, os.path.basename(os.path.dirname(b))))

        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.maildir(), sub))
        self.patch(os, "fsync", fsync)
        self.patch(os, "rename", rename)
        self.patch(os, "link", link)
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        self.assertEqual(rs[0].state, "delivered")
        done = len(calls)
        named = [i for i, c in enumerate(calls) if c[0] in ("link", "rename")]
        self.assertEqual([calls[i][2] for i in named], ["new"])
        op, ino, _ = calls[named[0]]
        self.assertEqual(op, "rename")
        self.assertIn(("fsync", ino, "file"), calls[: named[0]])
        new_ino = os.stat(os.path.join(self.maildir(), "new")).st_ino
        self.assertIn(("fsync", new_ino, "dir"), calls[named[0] + 1 : done])
        self.assertEqual([c for c in calls if c[2] == "file"], [("fsync", ino, "file")])

    @defer.inlineCallbacks
    def test_first_delivery_durable_with_its_directories(self) -> None:
        """The first message to a new account is acknowledged only once every name that
        leads to it is durable: the domain, account and Maildir directories, cur/new/tmp and
        the message's name in new/ (with its link count when a link made it)."""
        log = OsLog(self)
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("bob@example.com")])
        log.mark("delivered")
        self.assertEqual(rs[0].state, "delivered")
        end = log.at("delivered")
        made = [(i, e) for i, e in log.names_made(end) if e[3] != "tmp" or e[1] == "mkdir"]
        self.assertIn(
            os.path.join(self.maildir(), "new", self.files()[0]),
            [os.path.join(self.maildir(), "new", e[3]) for _, e in made],
        )
        for i, e in made:
            if e[1] == "mkdir" or e[3] == self.files()[0]:
                self.assertTrue(log.name_durable_at(i, end), e)

    @defer.inlineCallbacks
    def test_failed_commit_withdraws_every_copy(self) -> None:
        """EIO from the shared fsync of new/ reaches every delivery waiting on it; each removes
        its name again and stays pending, so the retry stores each message once, not twice
        (issue 21 item 4), and says so in the log."""
        real = durable.fsync_dir
        failing = [True]

        def eio(path: str) -> None:
            if failing[0] and path.endswith("/new"):
                raise OSError(errno.EIO, "Input/output error")
            real(path)

        self.patch(durable, "fsync_dir", eio)
        events = _capture_log(self)
        ds = [
            self.agent.deliver(f"m{i}", self.env, DATA + b"%d" % i, [rcpt("bob@example.com")])
            for i in range(8)
        ]
        results = yield defer.gatherResults(ds)
        self.assertEqual(
            {(rs[0].state, rs[0].detail[:9]) for rs in results}, {("pending", "451 4.3.0")}
        )
        self.assertEqual(self.files(), [])
        self.assertEqual(self.files(sub="tmp"), [])
        self.assertEqual(self.notifier.calls, [])
        self.assertEqual(sum("withdrawn, will retry" in e for e in events), 8)
        failing[0] = False
        ds = [
            self.agent.deliver(f"m{i}", self.env, DATA + b"%d" % i, [rcpt("bob@example.com")])
            for i in range(8)
        ]
        results = yield defer.gatherResults(ds)
        self.assertEqual({rs[0].state for rs in results}, {"delivered"})
        self.assertEqual(len(self.files()), 8)

    @defer.inlineCallbacks
    def test_unsafe_name_never_a_path(self) -> None:
        """An account name that would escape the base directory is refused, nothing written."""
        self.store.accounts.add("../../x@example.com")
        rs = yield self.agent.deliver("m1", self.env, DATA, [rcpt("../../x@example.com")])
        self.assertEqual(rs[0].state, "failed")
        self.assertFalse(os.path.exists(os.path.join(self.base, "x")))


LOCAL_SCRIPT = r"""
import sys
from twisted.internet import defer, reactor
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from cgtwist.delivery.local import LocalDelivery
from cgtwist.types import Account, Envelope, QueueName, Recipient
class Store:
    def get_account(self, n, d):
        return defer.succeed(Account(n, d))
agent = LocalDelivery(sys.argv[1], Store(), reactor=reactor, hostname="h")
def go():
    d = agent.deliver("m", Envelope("a@example.org", []), b"Subject: x\r\n\r\nhi\r\n",
                      [Recipient("bob@example.com", route="LOCAL(bob@example.com)")])
    d.addCallback(lambda rs: print("DONE", rs[0].state, flush=True))
    d.addBoth(lambda _: reactor.stop())
reactor.callWhenRunning(go)
reactor.run()
"""


class LocalCrashpointTests(unittest.TestCase):
    def test_crash_points(self) -> None:
        """SIGKILL before the link or rename leaves nothing in new/ (the message is delivered
        again; an unnamed file leaves nothing at all, a tmp/ file waits for clean_tmp); after
        it, the complete message is in new/."""
        import signal

        from cgtwist import crashpoint
        from tests.crashchild import run

        # The tmp/ file stays for clean_tmp.
        for point, tmp_n, new_n in (
            (crashpoint.LOCAL_BEFORE_RENAME, 1, 0),
            (crashpoint.LOCAL_AFTER_RENAME, 0, 1),
        ):
            base = tempfile.mkdtemp(prefix="cgtwist-lcrash-")
            self.addCleanup(shutil.rmtree, base, True)
            p = run(LOCAL_SCRIPT, base, point)
            self.assertEqual(p.returncode, -signal.SIGKILL, p.stderr)
            self.assertNotIn("DONE", p.stdout)
            md = os.path.join(base, "Domains", "example.com", "bob", "Maildir")
            self.assertEqual(len(os.listdir(os.path.join(md, "tmp"))), tmp_n, point)
            self.assertEqual(len(os.listdir(os.path.join(md, "new"))), new_n, point)
            for name in os.listdir(os.path.join(md, "new")):
                with open(os.path.join(md, "new", name), "rb") as f:
                    self.assertTrue(f.read().endswith(b"Subject: x\r\n\r\nhi\r\n"))
