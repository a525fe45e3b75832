"""The server's counters: Prometheus text, per-minute history on the clock, and the login
brake's failures counted on their way through."""

from __future__ import annotations

from typing import Any, Union

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cgtwist.interfaces import IAuthPenalty, IStatistics
from cgtwist.stats import (
    FORWARD_EVERY,
    CountedPenalty,
    ForwardedCounts,
    Statistics,
    queue_figures,
)


def sample(stats: Statistics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(stats.exposition().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"no {name} {labels}")


class StatisticsTests(unittest.TestCase):
    def test_counters_in_the_prometheus_text(self) -> None:
        """Every series exists from the start at zero; each event adds to its own."""
        stats = Statistics(Clock(), queue=lambda: (7, {"SMTP": 3}))
        verifyObject(IStatistics, stats)
        self.assertEqual(sample(stats, "cgtwist_messages_total", event="bounced"), 0)
        stats.message("received")
        stats.message("delivered", 3)
        stats.message("deferred", 0)
        stats.connection("smtp")
        stats.login_failed("imap")
        self.assertEqual(sample(stats, "cgtwist_messages_total", event="received"), 1)
        self.assertEqual(sample(stats, "cgtwist_messages_total", event="delivered"), 3)
        self.assertEqual(sample(stats, "cgtwist_connections_total", protocol="smtp"), 1)
        self.assertEqual(sample(stats, "cgtwist_login_failures_total", protocol="imap"), 1)
        self.assertEqual(sample(stats, "cgtwist_queue_messages"), 7)
        self.assertEqual(sample(stats, "cgtwist_queue_size", kind="SMTP"), 3)
        self.assertEqual(sample(stats, "cgtwist_queue_size", kind="LOCAL"), 0)

    def test_two_servers_do_not_share_figures(self) -> None:
        """Each Statistics has its own registry: no module-level state."""
        a, b = Statistics(Clock()), Statistics(Clock())
        a.message("received")
        self.assertEqual(sample(b, "cgtwist_messages_total", event="received"), 0)

    def test_per_minute_history(self) -> None:
        """Counts land in the minute of the clock; quiet minutes read as zero; only the
        last ``minutes`` minutes are kept."""
        clock = Clock()
        clock.advance(600)
        stats = Statistics(clock, minutes=3)
        stats.message("received", 2)
        clock.advance(60)
        stats.message("received")
        stats.connection("pop3")
        clock.advance(120)
        shown = stats.minutes(4)
        self.assertEqual([m.start for m in shown], [780.0, 720.0, 660.0, 600.0])
        self.assertEqual([m.get("received") for m in shown], [0, 0, 1, 2])
        self.assertEqual(shown[2].get("connections"), 1)
        self.assertEqual(stats.total("connections pop3"), 1)
        for _ in range(3):
            clock.advance(60)
            stats.message("bounced")
        self.assertEqual([m.get("received") for m in stats.minutes(6)], [0] * 6)
        self.assertEqual(stats.total("received"), 3)

    def test_queue_figures_of_a_manager(self) -> None:
        class Name:
            def __init__(self, module: str) -> None:
                self.module = module

        class LQ:
            def __init__(self, module: str, due: int, waiting: int, active: int) -> None:
                self.name = Name(module)
                self.due = dict.fromkeys(range(due))
                self.waiting = dict.fromkeys(range(waiting))
                self.active = active

        class Manager:
            def logical_queues(self) -> list[LQ]:
                return [LQ("SMTP", 1, 2, 1), LQ("SMTP", 0, 1, 0), LQ("LOCAL", 1, 0, 0)]

            def messages(self) -> list[int]:
                return [1, 2, 3]

            def backlog_size(self) -> int:
                return 4

        self.assertEqual(queue_figures(Manager()), (7, {"SMTP": 5, "LOCAL": 1}))
        self.assertEqual(queue_figures(None), (0, {}))


@implementer(IAuthPenalty)
class FakePenalty:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def acquire(self, ip: str) -> bool:
        self.calls.append(("acquire", ip))
        return True

    def release(self, ip: str) -> None:
        self.calls.append(("release", ip))

    def failed(
        self,
        ip: str,
        login: str,
        protocol: str,
        secret: Union[bytes, str, None] = None,
        log_line: bool = True,
    ) -> defer.Deferred[float]:
        self.calls.append(("failed", ip, login, protocol, secret, log_line))
        return defer.succeed(1.5)

    def succeeded(self, ip: str) -> None:
        self.calls.append(("succeeded", ip))

    def should_disconnect(self, connection_failures: int) -> bool:
        return connection_failures > 2


class CountedPenaltyTests(unittest.TestCase):
    def test_failures_are_counted_and_everything_is_passed_on(self) -> None:
        inner, stats = FakePenalty(), Statistics(Clock())
        penalty = CountedPenalty(inner, stats)
        verifyObject(IAuthPenalty, penalty)
        self.assertTrue(penalty.acquire("192.0.2.1"))
        d = penalty.failed("192.0.2.1", "bob", "pop3", secret="pw", log_line=False)
        self.assertEqual(self.successResultOf(d), 1.5)
        penalty.release("192.0.2.1")
        penalty.succeeded("192.0.2.1")
        self.assertTrue(penalty.should_disconnect(3))
        self.assertEqual(
            inner.calls,
            [
                ("acquire", "192.0.2.1"),
                ("failed", "192.0.2.1", "bob", "pop3", "pw", False),
                ("release", "192.0.2.1"),
                ("succeeded", "192.0.2.1"),
            ],
        )
        self.assertEqual(sample(stats, "cgtwist_login_failures_total", protocol="pop3"), 1)


class ForwardedCountsTests(unittest.TestCase):
    def test_a_worker_sends_its_counts_once_a_second(self) -> None:
        """Counts gather for FORWARD_EVERY seconds, then go in one write of ``S`` lines that
        the server's Statistics adds; nothing counted, nothing sent (no timer)."""
        clock, sent = Clock(), []
        counts = ForwardedCounts(clock, sent.append)
        verifyObject(IStatistics, counts)
        self.assertEqual(clock.getDelayedCalls(), [])
        counts.connection("smtp")
        counts.connection("smtp")
        counts.message("rejected")
        counts.login_failed("smtp")
        counts.message("deferred", 0)
        clock.advance(FORWARD_EVERY - 0.1)
        self.assertEqual(sent, [])
        clock.advance(0.1)
        self.assertEqual(sent, [b"S c smtp 2\nS l smtp 1\nS m rejected 1\n"])
        self.assertEqual(clock.getDelayedCalls(), [])
        server = Statistics(Clock())
        for line in sent[0].decode().splitlines():
            server.add_forwarded(line[2:])
        self.assertEqual(sample(server, "cgtwist_connections_total", protocol="smtp"), 2)
        self.assertEqual(sample(server, "cgtwist_login_failures_total", protocol="smtp"), 1)
        self.assertEqual(sample(server, "cgtwist_messages_total", event="rejected"), 1)
        self.assertEqual(server.total("connections smtp"), 2)

    def test_bad_lines_are_refused(self) -> None:
        server = Statistics(Clock())
        for line in ("c smtp", "c smtp x", "c smtp -1", "x smtp 1", "m nonsense 1", "c ftp 1"):
            with self.assertRaises(ValueError, msg=line):
                server.add_forwarded(line)
        self.assertEqual(server.total("connections"), 0)
