"""Tests for ``cgtwist-admin queue`` (cgtwist.cli_queue): the text an administrator reads, and
the real command talking to a real QueueManager over the control socket."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from cgtwist import cli, control
from cgtwist.cli_queue import duration, format_list, format_show, spool_size
from cgtwist.queue.admin import QueueAdmin
from tests.queue.helpers import QueueTestCase, env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = 1_800_000_000.0


def _listing(**over: Any) -> dict[str, Any]:
    info = {
        "id": "1800000000000000-1-1",
        "sender": "alice@example.org",
        "queued": NOW - 330,
        "age": 330.0,
        "held": False,
        "recipients": [
            {
                "address": "x@one.example",
                "state": "pending",
                "route": "SMTP(one.example)",
                "detail": "451 4.4.1 no answer",
            },
            {
                "address": "y@two.example",
                "state": "delivered",
                "route": "SMTP(two.example)",
                "detail": "250 2.0.0 ok",
            },
        ],
        "queues": [
            {
                "queue": "SMTP(one.example)",
                "state": "waiting",
                "attempts": 2,
                "next_attempt": NOW + 125,
            }
        ],
    }
    info.update(over)
    return info


class FormatTests(unittest.TestCase):
    """What ``queue list`` and ``queue show`` print, from replies as the server sends them."""

    def test_durations(self) -> None:
        """Ages read at a glance: seconds, minutes, hours, days."""
        self.assertEqual(
            [duration(x) for x in (5, 185, 7440, 273600, None)],
            ["5s", "3m05s", "2h04m", "3d04h", "-"],
        )

    def test_list_table(self) -> None:
        """Each message shows id, age, size and sender; each recipient its state, queue,
        attempts, next attempt and last reply; a summary counts the backlog."""
        reply = {
            "messages": [
                _listing(),
                _listing(id="1800000000000000-1-2", sender="", held=True, queues=[]),
            ],
            "active": 2,
            "backlog": 7,
        }
        text = format_list(reply, NOW, lambda i: 2048 if i.endswith("-1") else None)
        lines = text.splitlines()
        self.assertIn("ID", lines[0])
        self.assertRegex(lines[1], r"^1800000000000000-1-1 +5m30s +2\.0K  alice@example\.org$")
        self.assertIn("x@one.example  pending  SMTP(one.example)  attempts 2  next ", lines[2])
        self.assertIn("(in 2m05s)", lines[2])
        self.assertTrue(lines[2].endswith('"451 4.4.1 no answer"'))
        self.assertIn("y@two.example  delivered  SMTP(two.example)", lines[3])
        self.assertNotIn("next", lines[3])
        self.assertRegex(lines[4], r"-1-2 .* -  <>  HELD$")
        self.assertEqual(
            lines[-1],
            "2 message(s) shown; 2 in the active queue, 7 more in the backlog (not listed)",
        )

    def test_list_empty(self) -> None:
        """An empty queue says so in one line, without a header."""
        self.assertEqual(
            format_list({"messages": [], "active": 0, "backlog": 0}, NOW),
            "0 message(s) shown; 0 in the active queue\n",
        )

    def test_show_history(self) -> None:
        """show prints the envelope, submit info, states and the attempts oldest first with
        host, IP, TLS and reply, plus the queue's per-recipient results."""
        info = _listing(
            submit={"peer": "192.0.2.1", "account": "alice@example.org"},
            history=[
                {
                    "k": "a",
                    "t": NOW - 60,
                    "q": "SMTP(one.example)",
                    "r": [["x@one.example", "pending", "451 4.4.1 no answer"]],
                },
                {
                    "k": "a",
                    "t": NOW - 61,
                    "host": "mx.one.example",
                    "ip": "192.0.2.7",
                    "reply": "451 4.4.1 no answer",
                    "tls": "TLSv1.3",
                },
                {
                    "k": "a",
                    "t": NOW - 30,
                    "host": "mx2.one.example",
                    "ip": "192.0.2.8",
                    "reply": "421 busy",
                    "tls": None,
                },
            ],
        )
        text = format_show(info, NOW, 1234)
        self.assertIn("  sender:   alice@example.org", text)
        self.assertIn("  size:     1.2K", text)
        self.assertIn("  peer:     192.0.2.1", text)
        self.assertIn("x@one.example  pending  SMTP(one.example)  attempts 2", text)
        history = text.split("History:\n", 1)[1].splitlines()
        self.assertEqual(len(history), 3)
        self.assertIn('mx.one.example [192.0.2.7]  TLSv1.3  "451 4.4.1 no answer"', history[0])
        self.assertIn('SMTP(one.example)  x@one.example pending "451 4.4.1 no answer"', history[1])
        self.assertIn('mx2.one.example [192.0.2.8]  no TLS  "421 busy"', history[2])

    def test_show_without_history(self) -> None:
        """A message never tried yet says so instead of printing an empty section."""
        self.assertIn("History: no delivery attempts yet", format_show(_listing(history=[]), NOW))

    def test_spool_size_reads_header_only_for_valid_ids(self) -> None:
        """The size column comes from the spool header; odd ids never become paths."""
        base = self.mktemp()
        os.makedirs(os.path.join(base, "Queue"))
        with open(os.path.join(base, "Queue", "1800000000000000-1-1.msg"), "wb") as f:
            f.write(b"CGTWIST-SPOOL 1 1800000000000000-1-1 120 4567\n{}")
        size = spool_size(base)
        self.assertEqual(size("1800000000000000-1-1"), 4567)
        self.assertIsNone(size("1800000000000000-1-2"))
        self.assertIsNone(size("../../etc/passwd"))


class NotRunningTests(unittest.TestCase):
    async def test_no_server_one_line_exit_1(self) -> None:
        """Without a running server every queue command fails with one clear line, status 1."""
        base = self.mktemp()
        os.makedirs(base)
        for argv in (
            ["queue", "list"],
            ["queue", "retry", "--all"],
            ["queue", "hold", "1800000000000000-1-1"],
        ):
            out, err = io.StringIO(), io.StringIO()
            rc = await cli.execute(reactor, ["--base-dir", base, *argv], out, err)
            self.assertEqual(rc, 1)
            self.assertEqual(len(err.getvalue().splitlines()), 1, err.getvalue())
            self.assertIn("the server is not running", err.getvalue())
            self.assertIn("queue commands need a running server", err.getvalue())

    async def test_bad_id_and_usage(self) -> None:
        """A malformed id is refused before anything is sent; retry needs an id or --all."""
        base = self.mktemp()
        os.makedirs(base)
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(
            await cli.execute(reactor, ["--base-dir", base, "queue", "show", "../x"], out, err), 1
        )
        self.assertIn("not a message id", err.getvalue())
        err = io.StringIO()
        self.assertEqual(
            await cli.execute(reactor, ["--base-dir", base, "queue", "retry"], out, err), 1
        )
        self.assertIn("needs a message id or --all", err.getvalue())


class LiveTests(QueueTestCase):
    """The real cgtwist-admin process against a real QueueManager (Clock-driven, real spool)
    serving its control handlers on ``<base>/cgtwist.ctl``."""

    overrides = {"queue.retry_schedule": [600], "queue.suspend_after": 100}

    def setUp(self) -> None:
        super().setUp()
        self.smtp.behaviour = lambda q, r: ("pending", "451 4.4.1 no answer")
        self.conf = os.path.join(self.base, "cgtwist.conf")
        with open(self.conf, "w") as f:
            f.write(f'[server]\nbase_dir = "{self.base}"\nmain_domain = "example.com"\n')
        sock = os.path.join(self.base, "cgtwist.ctl")
        port = reactor.listenUNIX(
            sock, control.ControlFactory(QueueAdmin(self.manager).control_handlers())
        )  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    async def admin(self, *args: str, code: int = 0) -> tuple[str, str]:
        out, err, rc = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "cgtwist.cli", "--config", self.conf, "queue", *args],
            env=self.env,
            path=self.base,
        )
        self.assertNotIn(b"Traceback", err)
        self.assertEqual(rc, code, (args, out, err))
        return out.decode(), err.decode()

    async def test_list_show_hold_release_retry(self) -> None:
        """A deferred message is listed with its reply, shown with its attempts; hold stops
        retries, release and retry make it go again at once."""
        a = self.submit(env("x@one.example"), b"Subject: t\r\n\r\n" + b"x" * 3000)
        b = self.submit(env("y@two.example", sender="other@example.org"))
        self.pump()

        class Attempt:
            time, host, ip, reply, tls = (
                NOW,
                "mx.one.example",
                "192.0.2.7",
                "451 4.4.1 no answer",
                "TLSv1.3",
            )

        self.manager.note_attempt(a, Attempt())
        out, _ = await self.admin("list")
        self.assertIn(a, out)
        self.assertIn(b, out)
        self.assertRegex(out, a + r" +0s +2\.9K  alice@example\.org")
        self.assertIn("x@one.example  pending  SMTP(one.example)  attempts 1  next ", out)
        out, _ = await self.admin("list", "--recipient", "y@two", "--sender", "other")
        self.assertNotIn(a, out)
        self.assertIn(b, out)
        out, _ = await self.admin("show", a)
        self.assertIn('mx.one.example [192.0.2.7]  TLSv1.3  "451 4.4.1 no answer"', out)
        self.assertIn('SMTP(one.example)  x@one.example pending "451 4.4.1 no answer"', out)

        await self.admin("hold", a)
        out, _ = await self.admin("list", "--held")
        self.assertIn(a + " ", out)
        self.assertNotIn(b, out)
        calls = len(self.smtp.calls)
        await self.admin("retry", "--all")
        self.pump()
        self.assertEqual([c[1] for c in self.smtp.calls[calls:]], [b], "a held message was tried")
        self.smtp.behaviour = lambda q, r: ("delivered", "250 ok")
        await self.admin("release", a)
        self.pump()
        self.assertEqual(self.smtp.calls[-1][1], a)
        self.assertNotIn(a + ".msg", self.spooled())

    async def test_drop_and_bounce(self) -> None:
        """drop deletes without a DSN; bounce fails the recipients and notifies the sender."""
        a = self.submit(env("x@one.example"))
        b = self.submit(env("y@two.example"))
        self.pump()
        out, _ = await self.admin("drop", a)
        self.assertIn("dropped", out)
        out, _ = await self.admin("bounce", b)
        self.assertIn("1 recipient(s) failed, sender notified", out)
        self.pump()
        self.assertEqual(self.spooled(), [])
        self.assertEqual([x[0] for x in self.bounced], [b])
        self.assertIn("administrator", self.bounced[0][1][0][1])

    async def test_unknown_id(self) -> None:
        """An id the server does not know is one readable line and status 1, and an info line
        in the server's log rather than a critical one with a traceback."""
        _, err = await self.admin("show", "1800000000000000-9-9", code=1)
        self.assertEqual(
            err.strip(),
            "cgtwist-admin: error: the server refused queue-show: "
            "no such message: 1800000000000000-9-9",
        )
        # The server answers a refusal with one log line, not a critical traceback
        self.assertEqual(self.flushLoggedErrors(), [])
