"""The server's statistics: counters of messages, connections and failed logins, the queue's
size at the moment, and each counter's per-minute history, for /metrics and WebAdmin's
Statistics page.

Owns the counting (``Statistics``, the ``IStatistics`` every counting part is given by its
constructor) and the Prometheus text form (prometheus-client, on a registry of its own: no
module-level state, so two servers in one test process do not share figures). It must not
decide anything or do I/O: counting is a dictionary update on the reactor thread, and the
queue's size is read from the queue manager when someone asks, never polled.

With ``smtp.workers`` above 0 the SMTP sessions run in worker processes: each counts into a
``ForwardedCounts``, which sends what it counted to the server at most once a second as
``S`` lines on the worker's link (``forwarded_lines``), and the server adds them
(``Statistics.add_forwarded``). Messages are counted by the server when it adopts them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Optional, Protocol, Sequence, Sized, Union

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from cgtwist.interfaces import IAuthPenalty, IStatistics
from cgtwist.types import QueueName

MESSAGE_EVENTS = ("received", "delivered", "deferred", "bounced", "rejected")
PROTOCOLS = ("smtp", "pop3", "imap", "http")
QUEUE_KINDS = ("LOCAL", "SMTP", "PIPE", "LIST", "GROUP")
HISTORY_MINUTES = 60
# The text format every Prometheus reads (our names need none of 1.0.0's escaping), named
# here so the header does not change with prometheus-client's idea of the latest.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (messages in the queue, {logical queue kind: messages waiting, due or in delivery there})
QueueFigures = tuple[int, Mapping[str, int]]


class _LogicalQueue(Protocol):
    @property
    def name(self) -> QueueName: ...
    @property
    def due(self) -> Sized: ...
    @property
    def waiting(self) -> Sized: ...
    @property
    def active(self) -> int: ...


class QueueView(Protocol):
    """What the figures read of cgtwist.queue.manager.QueueManager (not imported: the
    statistics sit below the queue)."""

    def logical_queues(self) -> Sequence[_LogicalQueue]: ...
    def messages(self) -> Sized: ...
    def backlog_size(self) -> int: ...


def queue_figures(manager: Optional[QueueView]) -> QueueFigures:
    """The queue's size now, from a ``cgtwist.queue.manager.QueueManager``: every message it
    holds or has in its backlog, and per kind (the module of each logical queue: LOCAL,
    SMTP, ...) the jobs due, waiting for a retry or being delivered. One pass over the
    logical queues (one per destination), as the queue page does."""
    if manager is None:
        return 0, {}
    kinds: dict[str, int] = {}
    for lq in manager.logical_queues():
        module = lq.name.module
        kinds[module] = kinds.get(module, 0) + len(lq.due) + len(lq.waiting) + lq.active
    return len(manager.messages()) + manager.backlog_size(), kinds


@dataclass(frozen=True)
class Minute:
    """The counts of one minute (``start``: its first second, Unix time)."""

    start: float
    counts: Mapping[str, int]

    def get(self, key: str) -> int:
        return self.counts.get(key, 0)


class _QueueCollector(Collector):
    """The queue's gauges, read from the queue manager at each scrape."""

    def __init__(self, figures: Callable[[], QueueFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[GaugeMetricFamily]:
        total, kinds = self._figures()
        messages = GaugeMetricFamily(
            "cgtwist_queue_messages", "Messages in the queue (in memory and in its backlog)"
        )
        messages.add_metric([], total)
        yield messages
        jobs = GaugeMetricFamily(
            "cgtwist_queue_size",
            "Jobs in the logical queues of each kind (due, waiting for a retry, in delivery)",
            labels=["kind"],
        )
        for kind in sorted(set(QUEUE_KINDS) | set(kinds)):
            jobs.add_metric([kind], kinds.get(kind, 0))
        yield jobs


class _CounterCollector(Collector):
    """The counters, read at each scrape from the dictionaries Statistics counts into: a
    prometheus-client Counter takes a lock and a label look-up per increment, which on every
    message's path cost more than the counting itself."""

    def __init__(
        self, events: Mapping[str, int], connections: Mapping[str, int], fails: Mapping[str, int]
    ) -> None:
        self._families = (
            (
                "cgtwist_messages",
                "Messages received; recipients delivered, deferred and bounced; SMTP refusals",
                "event",
                events,
            ),
            ("cgtwist_connections", "Connections accepted per protocol", "protocol", connections),
            (
                "cgtwist_login_failures",
                "Failed logins (wrong name or password) per protocol",
                "protocol",
                fails,
            ),
        )

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, text, label, counts in self._families:
            family = CounterMetricFamily(name, text, labels=[label])
            for value, count in sorted(counts.items()):
                family.add_metric([value], count)
            yield family


@implementer(IStatistics)
class Statistics:
    """The counters of one server, as Prometheus counters and as per-minute history.

    ``clock``: the reactor (minutes are its seconds // 60); ``queue``: the queue's size now
    (``queue_figures`` of the manager, called at each scrape or page view). The history keeps
    the last ``minutes`` minutes that saw an event (a quiet minute costs nothing and reads as
    zero)."""

    def __init__(
        self,
        clock: IReactorTime,
        queue: Callable[[], QueueFigures] = lambda: (0, {}),
        minutes: int = HISTORY_MINUTES,
    ) -> None:
        self.clock = clock
        self.queue = queue
        self.started = clock.seconds()
        self.registry = CollectorRegistry()
        # Counted in plain dictionaries (a count is on every message's path, in the SMTP
        # session and the queue); Prometheus reads them when it scrapes (_CounterCollector).
        self._events: dict[str, int] = dict.fromkeys(MESSAGE_EVENTS, 0)
        self._connections: dict[str, int] = dict.fromkeys(PROTOCOLS, 0)
        self._login_failures: dict[str, int] = dict.fromkeys(PROTOCOLS, 0)
        self.registry.register(
            _CounterCollector(self._events, self._connections, self._login_failures)
        )
        self.registry.register(_QueueCollector(queue))
        self._totals: dict[str, int] = {}
        self._history: deque[tuple[int, dict[str, int]]] = deque(maxlen=max(1, minutes))

    # -- IStatistics
    def message(self, event: str, count: int = 1) -> None:
        if count <= 0:
            return
        self._events[event] = self._events.get(event, 0) + count
        self._bump(event, count)

    def connection(self, protocol: str) -> None:
        self._connections[protocol] = self._connections.get(protocol, 0) + 1
        self._bump("connections", 1)
        self._bump(f"connections {protocol}", 1)

    def login_failed(self, protocol: str) -> None:
        self._login_failures[protocol] = self._login_failures.get(protocol, 0) + 1
        self._bump("login_failures", 1)
        self._bump(f"login_failures {protocol}", 1)

    def add_forwarded(self, line: str) -> None:
        """Add what an SMTP worker counted: one ``forwarded_lines`` line (without its
        ``S``); ValueError for a line that is not one."""
        kind, name, raw = line.split(" ")
        count = int(raw)
        if count <= 0 or count > 1 << 40:
            raise ValueError(f"bad count {raw!r}")
        if kind == "m" and name in MESSAGE_EVENTS:
            self.message(name, count)
        elif kind == "c" and name in PROTOCOLS:
            self._connections[name] += count
            self._bump("connections", count)
            self._bump(f"connections {name}", count)
        elif kind == "l" and name in PROTOCOLS:
            self._login_failures[name] += count
            self._bump("login_failures", count)
            self._bump(f"login_failures {name}", count)
        else:
            raise ValueError(f"unknown counter {kind} {name}")

    def _bump(self, key: str, count: int) -> None:
        self._totals[key] = self._totals.get(key, 0) + count
        minute = int(self.clock.seconds() // 60)
        if not self._history or self._history[-1][0] != minute:
            self._history.append((minute, {}))
        counts = self._history[-1][1]
        counts[key] = counts.get(key, 0) + count

    # -- reading
    def total(self, key: str) -> int:
        """Everything counted under ``key`` since the start (an event, ``connections`` or
        ``connections smtp``, ``login_failures`` or ``login_failures http``)."""
        return self._totals.get(key, 0)

    def minutes(self, n: int) -> list[Minute]:
        """The last ``n`` minutes, newest first, the current one included (it is still
        counting), quiet ones as zeros."""
        now = int(self.clock.seconds() // 60)
        kept = dict(self._history)
        return [Minute(float(m * 60), kept.get(m, {})) for m in range(now, now - n, -1)]

    def exposition(self) -> bytes:
        """Every figure in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry)


FORWARD_EVERY = 1.0  # seconds: a worker sends what it counted at most this often


def forwarded_lines(counts: Mapping[tuple[str, str], int]) -> bytes:
    """``S <kind> <name> <count>`` lines for an SMTP worker's link (kind: m message event,
    c connections, l login failures)."""
    return b"".join(f"S {k} {n} {c}\n".encode() for (k, n), c in sorted(counts.items()) if c)


@implementer(IStatistics)
class ForwardedCounts:
    """An SMTP worker's counters: gathered, then handed to ``send`` (the link to the server)
    ``FORWARD_EVERY`` seconds after the first count, so a busy worker writes one line per
    counter a second, an idle one nothing (one timer while there is something to send)."""

    def __init__(self, clock: IReactorTime, send: Callable[[bytes], None]) -> None:
        self.clock = clock
        self.send = send
        self._counts: dict[tuple[str, str], int] = {}
        self._timer: Optional[object] = None

    def _add(self, kind: str, name: str, count: int) -> None:
        if count <= 0:
            return
        key = (kind, name)
        self._counts[key] = self._counts.get(key, 0) + count
        if self._timer is None:
            self._timer = self.clock.callLater(FORWARD_EVERY, self.flush)

    def flush(self) -> None:
        self._timer = None
        counts, self._counts = self._counts, {}
        if counts:
            self.send(forwarded_lines(counts))

    def message(self, event: str, count: int = 1) -> None:
        self._add("m", event, count)

    def connection(self, protocol: str) -> None:
        self._add("c", protocol, 1)

    def login_failed(self, protocol: str) -> None:
        self._add("l", protocol, 1)


@implementer(IAuthPenalty)
class CountedPenalty:
    """The login brake ``inner`` (cgtwist.checks.authpenalty.AuthPenalty), counting each
    failed login in ``stats``: every protocol's login goes through the one penalty, so this
    is the one place that sees them all."""

    def __init__(self, inner: IAuthPenalty, stats: IStatistics) -> None:
        self.inner = inner
        self.stats = stats

    def acquire(self, ip: str) -> Union[bool, Deferred[bool]]:
        return self.inner.acquire(ip)

    def release(self, ip: str) -> None:
        self.inner.release(ip)

    def failed(
        self,
        ip: str,
        login: str,
        protocol: str,
        secret: Union[bytes, str, None] = None,
        log_line: bool = True,
    ) -> Deferred[float]:
        self.stats.login_failed(protocol)
        return self.inner.failed(ip, login, protocol, secret, log_line)

    def succeeded(self, ip: str) -> None:
        self.inner.succeeded(ip)

    def should_disconnect(self, connection_failures: int) -> bool:
        return self.inner.should_disconnect(connection_failures)
