"""PIPE delivery with real scripts: exit codes, stdin, environment, timeout and unsafe names."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile

from twisted.internet import task
from twisted.trial import unittest

from cgtwist.delivery.pipe import PipeDelivery, command_of, parse_command
from cgtwist.errors import InvalidName
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, Recipient

MESSAGE = b"From: a@src.test\r\nSubject: pipe\r\n\r\nline one\r\nline two\r\n"


class PipeTests(unittest.TestCase):
    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.clock = task.Clock()
        top = tempfile.mkdtemp(prefix="cgtwist-pipe-")
        self.addCleanup(shutil.rmtree, top, True)
        self.app = os.path.join(top, "apps")
        os.makedirs(self.app)
        self.out = os.path.join(top, "out")
        self.script(
            "save",
            f"""
import os, sys
data = sys.stdin.buffer.read()
with open({self.out!r}, "wb") as f:
    f.write(data)
with open({self.out!r} + ".env", "w") as f:
    f.write(os.environ.get("SENDER", "") + "\\n" + os.environ.get("RECIPIENT", "") + "\\n")
    f.write(" ".join(sys.argv[1:]))
""",
        )
        self.script("tempfail", "import sys\nsys.stderr.write('disk busy\\n')\nsys.exit(75)\n")
        self.script(
            "fail", "import sys\nsys.stderr.write('\\nno such list: x\\nmore\\n')\nsys.exit(1)\n"
        )
        self.script("sleepy", "import time\ntime.sleep(60)\n")
        self.script("noread", "import sys\nsys.exit(0)\n")

    def script(self, name: str, body: str) -> None:
        path = os.path.join(self.app, name)
        with open(path, "w") as f:
            f.write(f"#!{sys.executable}\n{body}")
        os.chmod(path, stat.S_IRWXU)

    def agent(self, **settings: object) -> PipeDelivery:
        values: dict[str, object] = {"pipe.app_dir": os.path.abspath(self.app), "pipe.timeout": 20}
        values.update(settings)
        return PipeDelivery(SettingsHolder(Settings(values)), self.reactor, clock=self.clock)

    def rcpt(self, command: str) -> Recipient:
        # As the Router does it: the queue is the program name, the address carries the args.
        program = command.split(" ", 1)[0]
        return Recipient(address=f'"{command}"@pipe', route=f"PIPE({program})")

    async def test_exit_zero_is_delivered_with_message_on_stdin(self) -> None:
        """A program that exits 0 has the message delivered; it read the message with native
        line endings and saw SENDER, RECIPIENT and its arguments."""
        r = self.rcpt("save --list 'two words'")
        big = MESSAGE + b"x" * 300000 + b"\r\n"
        rs = await self.agent().deliver("p1", Envelope("a@src.test"), big, [r])
        self.assertEqual(rs[0].state, "delivered")
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), big.replace(b"\r\n", b"\n"))
        with open(self.out + ".env") as f:
            sender, recipient, args = f.read().split("\n")
        self.assertEqual(sender, "a@src.test")
        self.assertEqual(recipient, r.address)
        self.assertEqual(args, "--list two words")

    async def test_exit_75_is_pending(self) -> None:
        """EX_TEMPFAIL (75) means try again later, with the program's complaint as detail."""
        rs = await self.agent().deliver(
            "p2", Envelope("a@src.test"), MESSAGE, [self.rcpt("tempfail")]
        )
        self.assertEqual(rs[0].state, "pending")
        self.assertIn("disk busy", rs[0].detail)

    async def test_other_exit_is_failed_with_first_stderr_line(self) -> None:
        """Any other exit status fails the recipient; the first non-empty stderr line is the
        reason the sender will see."""
        rs = await self.agent().deliver("p3", Envelope("a@src.test"), MESSAGE, [self.rcpt("fail")])
        self.assertEqual(rs[0].state, "failed")
        self.assertEqual(rs[0].detail, "5.3.0 no such list: x")

    async def test_program_not_reading_stdin_still_counts(self) -> None:
        """A program that exits 0 without reading a large message is still a delivery; the
        server does not hang or crash on the closed pipe."""
        rs = await self.agent().deliver(
            "p4", Envelope("a@src.test"), MESSAGE * 50000, [self.rcpt("noread")]
        )
        self.assertEqual(rs[0].state, "delivered")

    async def test_timeout_kills_and_retries(self) -> None:
        """A program running past pipe.timeout is killed and the delivery is retried later."""
        d = self.agent(**{"pipe.timeout": 7}).deliver(
            "p5", Envelope("a@src.test"), MESSAGE, [self.rcpt("sleepy")]
        )
        self.clock.advance(6)
        self.assertFalse(d.called)
        self.clock.advance(1)
        rs = await d
        self.assertEqual(rs[0].state, "pending")
        self.assertIn("killed after 7s", rs[0].detail)

    async def test_unsafe_names_refused_without_running(self) -> None:
        """Names with '/', '\\' or a leading dot, or naming no program, fail without running
        anything."""
        marker = os.path.join(self.app, "ran")
        for cmd in ("../bin/sh -c x", "/bin/sh", "sub\\\\prog", ".hidden", "", "missing"):
            rs = await self.agent().deliver("p6", Envelope("a@src.test"), MESSAGE, [self.rcpt(cmd)])
            self.assertEqual(rs[0].state, "failed", cmd)
        self.assertFalse(os.path.exists(marker))

    async def test_symlink_placed_by_admin_runs(self) -> None:
        """An administrator may link a system program into the application directory."""
        os.symlink(
            os.path.abspath(os.path.join(self.app, "save")), os.path.join(self.app, "linked")
        )
        rs = await self.agent().deliver(
            "p9", Envelope("a@src.test"), MESSAGE, [self.rcpt("linked")]
        )
        self.assertEqual(rs[0].state, "delivered")

    async def test_not_configured_is_pending(self) -> None:
        """Without pipe.app_dir PIPE mail waits (an administrator can still configure it)."""
        rs = await self.agent(**{"pipe.app_dir": ""}).deliver(
            "p7", Envelope("a@src.test"), MESSAGE, [self.rcpt("save")]
        )
        self.assertEqual(rs[0].state, "pending")

    async def test_no_shell_interpretation(self) -> None:
        """Shell syntax in the arguments reaches the program literally; no shell runs it."""
        r = self.rcpt("save $(touch pwned) ; rm -rf x")
        rs = await self.agent().deliver("p8", Envelope("a@src.test"), MESSAGE, [r])
        self.assertEqual(rs[0].state, "delivered")
        with open(self.out + ".env") as f:
            self.assertEqual(f.read().split("\n")[2], "$(touch pwned) ; rm -rf x")
        self.assertFalse(os.path.exists(os.path.join(self.app, "pwned")))


class CommandParsing(unittest.TestCase):
    def test_quoted_local_part(self) -> None:
        """The quoted local part of "prog arg"@pipe is the command, arguments included, even
        though the queue is named after the program alone."""
        self.assertEqual(
            command_of(Recipient(address='"prog a\\"b"@pipe', route="PIPE(prog)")), 'prog a"b'
        )

    def test_parse_refuses_bad_names(self) -> None:
        """parse_command refuses separators, dot names and unbalanced quotes."""
        for bad in ("a/b", "a\\b", ".x", "'unbalanced", "   ", "x\ny"):
            with self.assertRaises(InvalidName):
                parse_command(bad)
        self.assertEqual(parse_command("prog 'a b' c"), ["prog", "a b", "c"])
