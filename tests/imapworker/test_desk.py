"""The server's answers to its IMAP/POP3 workers (cgtwist.imapworker.desk): the limits hold
for the server as a whole, and a worker that ends gives back all it held."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial import unittest

from cgtwist.activesessions import ActiveSessions
from cgtwist.checks.accountguard import AccountGuard
from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.imapworker.desk import AccessDesk
from cgtwist.imapworker.locks import NotedGuard
from cgtwist.protocols.limits import UserIPSessions
from cgtwist.settings import Settings, SettingsHolder


class Worker:
    """One worker's end of the pipe: the lines the server sends it."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def send(self, data: bytes) -> bool:
        self.got.append(data)
        return True


class DeskCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.settings = SettingsHolder(
            Settings(
                {
                    "access.max_connections_per_ip": 2,
                    "auth.max_userip_connections": 1,
                    "auth.fail_delays": [3],
                    "auth.max_concurrent_per_ip": 1,
                    "auth.account_max_failures": 2,
                    "auth.account_delay": 1,
                    "auth.account_lock_time": 60,
                }
            )
        )
        self.penalty = AuthPenalty(self.clock, self.settings)
        self.active = ActiveSessions(self.clock.seconds)
        self.guard = NotedGuard(AccountGuard(self.clock, self.settings), self.clock, self.settings)
        self.counted: list[str] = []
        self.desk = AccessDesk(
            self.settings,
            is_client_ip=lambda ip: ip == "10.0.0.1",
            penalty=self.penalty,
            sessions=UserIPSessions(self.settings),
            active=self.active,
            guard=self.guard,
            counted=self.counted.append,
        )
        self.w1, self.w2 = Worker(), Worker()

    def say(self, worker: Worker, line: bytes) -> bytes:
        before = len(worker.got)
        self.desk.line(worker, worker.send, line)
        return b"".join(worker.got[before:])


class DeskTests(DeskCase):
    def test_connections_per_ip_count_across_workers(self) -> None:
        """Two connections from one IP, whichever worker has them; a third is refused (and
        not counted); a closed one frees its place; Client IPs are exempt; another listener
        counts apart, as each listener's factory does in the server."""
        self.assertEqual(self.say(self.w1, b"O 1 0 192.0.2.1"), b"o 1 1\n")
        self.assertEqual(self.say(self.w2, b"O 1 0 192.0.2.1"), b"o 1 1\n")
        self.assertEqual(self.say(self.w2, b"O 2 0 192.0.2.1"), b"o 2 0\n")
        self.assertEqual(self.say(self.w2, b"O 3 1 192.0.2.1"), b"o 3 1\n")
        self.assertEqual([self.say(self.w1, b"O 9 0 10.0.0.1") for _ in range(3)], [b"o 9 1\n"] * 3)
        self.say(self.w1, b"X 0 192.0.2.1")
        self.assertEqual(self.say(self.w2, b"O 4 0 192.0.2.1"), b"o 4 1\n")
        # a close the worker does not hold is ignored (no count goes below what is open)
        self.say(self.w1, b"X 0 192.0.2.1")
        self.assertEqual(self.say(self.w1, b"O 5 0 192.0.2.1"), b"o 5 0\n")

    def test_a_worker_that_ends_gives_back_all_it_held(self) -> None:
        """Connections, login attempts, places among an account's sessions and WebUser
        entries of a dead worker are freed; the other worker's stay."""
        self.say(self.w1, b"O 1 0 192.0.2.1")
        self.say(self.w1, b"O 2 0 192.0.2.1")
        self.assertEqual(self.say(self.w1, b"U 3 192.0.2.1 alice@example.test"), b"u 3 1\n")
        self.say(self.w1, b"L 4 imap 1 192.0.2.1 alice@example.test")
        self.say(self.w2, b"L 4 pop3 0 192.0.2.9 alice@example.test")
        self.penalty.failed("192.0.2.7", "x", "imap", log_line=False)
        self.assertEqual(self.say(self.w1, b"P 5 192.0.2.7"), b"p 5 1\n")
        self.assertEqual(self.say(self.w2, b"P 6 192.0.2.7"), b"p 6 0\n")  # cap 1, failed host
        self.assertEqual(self.say(self.w2, b"O 7 0 192.0.2.1"), b"o 7 0\n")
        self.assertEqual(self.say(self.w2, b"U 8 192.0.2.1 alice@example.test"), b"u 8 0\n")

        self.desk.worker_ended(self.w1)
        self.assertEqual(self.say(self.w2, b"O 9 0 192.0.2.1"), b"o 9 1\n")
        self.assertEqual(self.say(self.w2, b"U 10 192.0.2.1 alice@example.test"), b"u 10 1\n")
        self.assertEqual(self.say(self.w2, b"P 11 192.0.2.7"), b"p 11 1\n")
        self.assertEqual(
            [s.protocol for s in self.active.of_account("alice@example.test")], ["pop3"]
        )
        self.assertNotIn(self.w1, self.desk.holdings)

    def test_places_and_attempts_are_given_back_by_their_lines(self) -> None:
        self.say(self.w1, b"U 1 192.0.2.1 alice@example.test")
        self.say(self.w1, b"V 1")
        self.assertEqual(self.say(self.w2, b"U 1 192.0.2.1 alice@example.test"), b"u 1 1\n")
        self.penalty.failed("192.0.2.7", "x", "imap", log_line=False)
        self.say(self.w1, b"P 2 192.0.2.7")
        self.say(self.w1, b"D 192.0.2.7")
        self.say(self.w1, b"D 192.0.2.7")  # once more: nothing held, nothing released
        self.assertEqual(self.say(self.w2, b"P 3 192.0.2.7"), b"p 3 1\n")
        self.assertEqual(self.say(self.w1, b"P 4 192.0.2.7"), b"p 4 0\n")

    def test_webuser_ends_a_session_in_a_worker(self) -> None:
        """The server's list shows a worker's session; ending it there sends the worker an
        ``E`` line with the reason, and the entry is gone."""
        self.say(self.w1, b"L 7 imap 1 192.0.2.1 Alice@Example.test")
        (session,) = self.active.of_account("alice@example.test")
        self.assertEqual(
            (session.protocol, session.peer, session.secure), ("imap", "192.0.2.1", True)
        )
        self.active.end("alice@example.test", session.id, "ended in WebUser")
        self.assertEqual(self.w1.got, [b"E 7 ended in WebUser\n"])
        self.assertEqual(self.active.of_account("alice@example.test"), [])
        self.assertEqual(self.desk.holdings[self.w1].listed, {})
        self.say(self.w1, b"G 7")  # the worker's own goodbye after it: nothing to remove
        self.say(self.w1, b"L 8 pop3 0 192.0.2.1 alice@example.test")
        self.say(self.w1, b"G 8")
        self.assertEqual(self.active.of_account("alice@example.test"), [])

    def test_a_failure_is_answered_after_the_servers_delay(self) -> None:
        """``F`` counts on the server's penalty (its delays, across workers) and is answered
        only once the delay has passed; ``K`` forgets the host's failures."""
        self.assertEqual(self.say(self.w1, b"F 1 192.0.2.5 imap 0 ab12 alice"), b"")
        self.clock.advance(2.9)
        self.assertEqual(self.w1.got, [])
        self.clock.advance(0.2)
        self.assertEqual(self.w1.got, [b"f 1 3.000\n"])
        self.assertEqual(self.penalty.failures("192.0.2.5"), 1)
        self.say(self.w2, b"F 2 192.0.2.5 pop3 0 - bob with spaces")
        self.assertEqual(self.penalty.failures("192.0.2.5"), 2)
        self.say(self.w2, b"K 192.0.2.5")
        self.assertEqual(self.penalty.failures("192.0.2.5"), 0)

    def test_counters_and_bad_lines(self) -> None:
        """``S`` lines go to the statistics; a line that does not parse is logged, dropped
        and answered with nothing."""
        self.say(self.w1, b"S c imap 3")
        self.assertEqual(self.counted, ["c imap 3"])
        for bad in (b"O 1", b"Z what", b"U x y", b"L 1 imap"):
            self.assertEqual(self.say(self.w1, bad), b"")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 4)


class AccountLockTests(DeskCase):
    def test_failures_in_both_workers_lock_the_account_everywhere(self) -> None:
        """auth.account_max_failures = 2: one wrong password in each worker locks the
        account; the server tells every worker (and one started later) of the lock."""
        told: list[tuple[str, float]] = []
        self.guard.subscribe(lambda account, seconds: told.append((account, seconds)))
        self.say(self.w1, b"B 1 192.0.2.1 aa11 alice@example.test")
        self.assertEqual(told, [])
        self.say(self.w2, b"B 1 192.0.2.2 bb22 alice@example.test")
        self.assertEqual(told, [("alice@example.test", 60.0)])
        self.assertTrue(self.guard.locked("alice@example.test"))
        self.clock.advance(10)
        self.assertEqual(self.w1.got, [b"b 1 1.000\n"])
        self.assertEqual(self.guard.in_force(), [("alice@example.test", 50.0)])
        self.say(self.w1, b"B 2 192.0.2.1 cc33 alice@example.test")  # locked already
        self.assertEqual(len(told), 1)
        self.clock.advance(60)
        self.assertEqual(self.guard.in_force(), [])
        # the same wrong password again counts once, as the server's guard does
        self.say(self.w1, b"B 3 192.0.2.1 dd44 bob@example.test")
        self.say(self.w2, b"B 3 192.0.2.1 dd44 bob@example.test")
        self.assertFalse(self.guard.locked("bob@example.test"))
