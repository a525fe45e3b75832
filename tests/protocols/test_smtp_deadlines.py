"""The SMTP receiver against slow and impatient clients: the greeting pause and its early
talkers, and the command, DATA and session deadlines (StringTransport, task.Clock)."""

from __future__ import annotations

from twisted.trial import unittest
from zope.interface import alsoProvides, implementer

from cgtwist.interfaces import IClientAccess, ISessionWatch
from cgtwist.protocols.deadlines import Deadlines, DeadlineTimers, transfer_allowance
from cgtwist.types import ListenerSpec
from tests.protocols.test_smtp_fakes import FakePolicy, Harness

TIMEOUT = "421 4.4.2 mx.example.com Error: timeout exceeded"


class GreetingPauseTests(unittest.TestCase):
    def test_no_pause_by_default(self) -> None:
        """Out of the box the banner comes at once (smtp.greeting_delay = 0)."""
        h = Harness(greet=False)
        self.assertEqual(h.connect(), ["220 mx.example.com ESMTP cgtwist"])

    def test_banner_after_the_pause(self) -> None:
        """With a pause the banner waits on the clock (not a sleep); a patient client then
        pipelines as usual."""
        h = Harness(greet=False, overrides={"smtp.greeting_delay": 2})
        self.assertEqual(h.connect(), [])
        h.clock.advance(1.9)
        self.assertEqual(h.replies(), [])
        h.clock.advance(0.2)
        self.assertEqual(h.replies(), ["220 mx.example.com ESMTP cgtwist"])
        out = h.codes(
            b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n"
            b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"
        )
        self.assertEqual(out, ["250", "250", "250", "354", "250", "221"])

    def test_early_talker_gets_554_at_once(self) -> None:
        """Commands sent into the pause are never answered: 554 and close, at once, and the
        offence is reported (a bot, as postscreen's pregreet test finds them)."""
        offences: list[tuple[str, str]] = []
        h = Harness(greet=False, overrides={"smtp.greeting_delay": 2})
        alsoProvides(h.policy, ISessionWatch)
        h.policy.report_offence = lambda ip, kind: offences.append((ip, kind))  # type: ignore[attr-defined]
        h.connect()
        out = h.send(b"EHLO bot\r\nMAIL FROM:<x@y.example>\r\nRCPT TO:<v@example.com>\r\n")
        self.assertEqual(out, ["554 5.5.1 Protocol error: talked before the greeting"])
        self.assertTrue(h.closed)
        h.clock.advance(5)
        self.assertEqual(h.replies(), [])
        self.assertEqual(offences, [("192.0.2.10", "pregreet")])
        self.assertEqual([c for c in h.policy.calls if c[0] != "connect"], [])

    def test_client_ips_and_submission_are_not_paused(self) -> None:
        """Client IPs and submission listeners (MUAs of roaming users) get the banner at once."""

        @implementer(IClientAccess)
        class Clients(FakePolicy):
            def is_client_ip(self, ip: str) -> bool:
                return True

        h = Harness(greet=False, overrides={"smtp.greeting_delay": 2})
        h.factory.policy = Clients()
        self.assertEqual(h.connect(), ["220 mx.example.com ESMTP cgtwist"])
        h = Harness(
            greet=False,
            overrides={"smtp.greeting_delay": 2},
            listener=ListenerSpec("smtp", 587, submission=True),
        )
        self.assertEqual(h.connect(), ["220 mx.example.com ESMTP cgtwist"])

    def test_shutdown_during_the_pause(self) -> None:
        """A server stopping during the pause says 421 and never greets afterwards."""
        h = Harness(greet=False, overrides={"smtp.greeting_delay": 2})
        h.connect()
        h.proto.shutdown()
        self.assertEqual(h.replies(), ["421 4.3.2 mx.example.com Service shutting down"])
        h.proto.connectionLost(None)
        h.clock.advance(3)
        self.assertEqual(h.replies(), [])


class CommandDeadlineTests(unittest.TestCase):
    def test_trickled_command_line_is_dropped(self) -> None:
        """One byte every 5 s keeps the idle timer happy but not the command deadline."""
        h = Harness(overrides={"smtp.command_deadline": 60, "smtp.idle_timeout": 300})
        for byte in b"EHLO a-very-long-name.example":
            h.send(bytes([byte]))
            h.clock.advance(5)
            if h.closed:
                break
        self.assertEqual(h.replies(), [TIMEOUT])
        self.assertTrue(h.closed)
        self.assertTrue(60 <= h.clock.seconds() <= 65, h.clock.seconds())

    def test_complete_lines_rearm(self) -> None:
        """A client that sends whole lines, however slowly (within the idle timeout), is fine;
        each new line gets the full deadline."""
        h = Harness(overrides={"smtp.command_deadline": 10, "smtp.idle_timeout": 300})
        for _ in range(5):
            h.send(b"NO")
            h.clock.advance(8)
            self.assertEqual(h.send(b"OP\r\n"), ["250 2.0.0 Ok"])
            h.clock.advance(100)
        self.assertFalse(h.closed)

    def test_waiting_for_our_reply_is_not_the_clients_time(self) -> None:
        """Pipelined input waiting behind a slow policy reply does not count against the
        client's command deadline."""
        h = Harness(overrides={"smtp.command_deadline": 10})
        h.cmd("EHLO c.example")
        h.policy.hold.add("mail_from")
        h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y")
        h.clock.advance(30)
        self.assertFalse(h.closed)
        h.policy.release()
        self.assertEqual(h.replies(), ["250 2.1.0 Sender OK"])
        self.assertEqual(h.send(b".example>\r\n"), ["250 2.1.5 Recipient OK"])

    def test_zero_means_none(self) -> None:
        h = Harness(
            overrides={
                "smtp.command_deadline": 0,
                "smtp.idle_timeout": 0,
                "smtp.session_deadline": 0,
            }
        )
        h.send(b"NO")
        h.clock.advance(100000)
        self.assertFalse(h.closed)


class DataDeadlineTests(unittest.TestCase):
    def start_data(self, **overrides: object) -> Harness:
        settings = {"smtp.data_deadline": 60, "smtp.data_min_rate": 100, "smtp.data_timeout": 300}
        settings.update(overrides)
        h = Harness(overrides=settings)
        h.cmd("EHLO c.example")
        self.assertEqual(
            h.codes(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n"),
            ["250", "250", "354"],
        )
        return h

    def test_trickled_data_is_dropped(self) -> None:
        """DATA at one line of 10 octets every 10 s (1 octet/s) passes the per-byte data
        timeout but not the DATA deadline; nothing is spooled."""
        h = self.start_data()
        while not h.closed and h.clock.seconds() < 1000:
            h.send(b"123456789\r\n")
            h.clock.advance(10)
        self.assertEqual(h.replies(), [TIMEOUT])
        self.assertEqual(h.submission.messages, [])
        self.assertLess(h.clock.seconds(), 100)

    def test_large_message_on_a_slow_link_gets_through(self) -> None:
        """A message moving at the minimum rate earns time and is accepted, long after the
        base deadline."""
        h = self.start_data()
        line = b"x" * 998 + b"\r\n"
        for _ in range(200):  # 200 kB at 125 octets/s: 1,600 s, far beyond the 60 s base
            h.send(line)
            h.clock.advance(8)
            self.assertFalse(h.closed)
        self.assertEqual(h.send(b".\r\n")[-1][:9], "250 2.0.0")
        self.assertEqual(len(h.submission.messages), 1)
        h.clock.advance(3000)  # no DATA deadline is left behind after the message
        self.assertEqual(h.replies(), [TIMEOUT])  # only the idle timeout (300 s)

    def test_fixed_deadline_without_rate(self) -> None:
        h = self.start_data(**{"smtp.data_min_rate": 0})
        for _ in range(5):
            h.send(b"x" * 998 + b"\r\n")
            h.clock.advance(10)
        self.assertFalse(h.closed)
        h.clock.advance(11)
        self.assertEqual(h.replies(), [TIMEOUT])


class SessionDeadlineTests(unittest.TestCase):
    def test_session_ends_between_commands(self) -> None:
        """A session of whole, slow NOOPs ends at the session deadline with 421 4.4.2."""
        h = Harness(overrides={"smtp.session_deadline": 100, "smtp.idle_timeout": 60})
        while not h.closed and h.clock.seconds() < 1000:
            h.cmd("NOOP")
            h.clock.advance(30)
        self.assertEqual(
            h.replies(), ["421 4.4.2 mx.example.com Error: session time limit exceeded"]
        )
        self.assertTrue(100 <= h.clock.seconds() <= 130, h.clock.seconds())

    def test_message_in_data_is_finished_first(self) -> None:
        """The session deadline never cuts a message being sent: it is accepted, then 421."""
        h = Harness(overrides={"smtp.session_deadline": 100})
        h.cmd("EHLO c.example")
        h.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\nDATA\r\nSubject: x\r\n\r\n")
        h.clock.advance(150)
        self.assertFalse(h.closed)
        self.assertEqual(
            h.send(b"body\r\n.\r\n"),
            [
                "250 2.0.0 Ok: queued as Q1",
                "421 4.4.2 mx.example.com Error: session time limit exceeded",
            ],
        )
        self.assertTrue(h.closed)


class DeadlinesTests(unittest.TestCase):
    def test_arm_rearm_cancel(self) -> None:
        from twisted.internet.task import Clock

        clock, fired = Clock(), []
        d = Deadlines(clock)
        d.arm("a", 10, lambda: fired.append("a"))
        d.arm("a", 20, lambda: fired.append("a2"))  # replaces
        d.arm("b", 5, lambda: fired.append("b"))
        d.arm("c", 0, lambda: fired.append("c"))  # 0: off
        self.assertFalse(d.armed("c"))
        clock.advance(6)
        self.assertEqual(fired, ["b"])
        self.assertFalse(d.armed("b"))
        d.cancel_all()
        clock.advance(100)
        self.assertEqual(fired, ["b"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_connections_share_one_timer(self) -> None:
        """The deadlines of a listener's connections ride on one reactor timer, set for the
        earliest; each still fires at its own time, and cancelled ones never fire."""
        from twisted.internet.task import Clock

        clock, fired = Clock(), []
        timers = DeadlineTimers(clock)
        one, two = Deadlines(clock, timers), Deadlines(clock, timers)
        one.arm("session", 100, lambda: fired.append("one session"))
        two.arm("session", 100, lambda: fired.append("two session"))
        one.arm("data", 30, lambda: fired.append("one data"))
        two.arm("data", 20, lambda: fired.append("two data"))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        two.cancel("data")  # its message ended
        clock.advance(25)
        self.assertEqual(fired, [])
        clock.advance(5)
        self.assertEqual(fired, ["one data"])
        self.assertFalse(one.armed("data"))
        two.cancel_all()  # disconnected
        clock.advance(70)
        self.assertEqual(fired, ["one data", "one session"])
        self.assertEqual(clock.getDelayedCalls(), [])  # nothing left: no timer

    def test_earlier_deadline_moves_the_timer(self) -> None:
        from twisted.internet.task import Clock

        clock, fired = Clock(), []
        timers = DeadlineTimers(clock)
        one, two = Deadlines(clock, timers), Deadlines(clock, timers)
        one.arm("session", 3600, lambda: fired.append("session"))
        clock.advance(10)
        two.arm("line", 60, lambda: fired.append("line"))
        clock.advance(60)
        self.assertEqual(fired, ["line"])
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [3600.0])

    def test_deadline_armed_while_firing(self) -> None:
        """An expired deadline may arm another (the DATA deadline looks again later) or
        cancel one of another connection; the timer follows."""
        from twisted.internet.task import Clock

        clock, fired = Clock(), []
        timers = DeadlineTimers(clock)
        one, two = Deadlines(clock, timers), Deadlines(clock, timers)

        def again() -> None:
            fired.append(("data", clock.seconds()))
            if len([f for f in fired if f[0] == "data"]) < 3:
                one.arm("data", 10, again)
            two.cancel("session")

        one.arm("data", 10, again)
        two.arm("session", 25, lambda: fired.append(("session", clock.seconds())))
        two.arm("line", 15, lambda: fired.append(("line", clock.seconds())))
        for _ in range(5):
            clock.advance(10)
        # (Clock.advance runs what is due with the clock already at the advanced time.)
        self.assertEqual(fired, [("data", 10.0), ("line", 20.0), ("data", 20.0), ("data", 30.0)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_late_timer_keeps_the_order_of_other_timers(self) -> None:
        """A timer that fires late (a clock advanced past several) runs only what was due at
        its own time: a later deadline comes after the reactor's timers due before it, as its
        own timer would (here: an idle timeout at 50 closes first, the 100 s deadline is
        cancelled)."""
        from twisted.internet.task import Clock

        clock, fired = Clock(), []
        timers = DeadlineTimers(clock)
        one = Deadlines(clock, timers)
        one.arm("data", 10, lambda: fired.append("data"))
        one.arm("session", 100, lambda: fired.append("session"))

        def idle() -> None:
            fired.append("idle")
            one.cancel_all()

        clock.callLater(50, idle)
        clock.advance(200)
        self.assertEqual(fired, ["data", "idle"])

    def test_many_cancelled_deadlines_are_dropped(self) -> None:
        """Cancelled deadlines do not pile up in the heap under a long-lived one."""
        from twisted.internet.task import Clock

        clock = Clock()
        timers = DeadlineTimers(clock)
        keep = Deadlines(clock, timers)
        keep.arm("session", 3600, lambda: None)
        for _ in range(1000):
            d = Deadlines(clock, timers)
            d.arm("session", 3600, lambda: None)
            d.arm("data", 600, lambda: None)
            d.cancel_all()
        self.assertLessEqual(len(timers._heap), 130)

    def test_transfer_allowance(self) -> None:
        self.assertEqual(transfer_allowance(600, 1024, 10 * 1024 * 1024), 600 + 10240)
        self.assertEqual(transfer_allowance(600, 0, 10**9), 600)
