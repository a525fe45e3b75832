"""Fakes for the queue tests: a synchronous thread pool, a fake router and scripted agents."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from cgtwist.queue.manager import QueueManager
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.spool.spool import Spool
from cgtwist.types import Envelope, QueueName, Recipient, Route


class SyncPool:
    """Runs 'thread' work at once, so the real Spool is synchronous under a Clock."""

    def callInThreadWithCallback(
        self, onResult: Callable[..., None], func: Callable[..., Any], *args: Any, **kw: Any
    ) -> None:
        try:
            result = func(*args, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class SyncClock(Clock):
    def callFromThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)


class FakeRouter:
    """example.com is local (LOCAL per account), anything else SMTP per domain.

    ``error@`` routes to ERROR, ``null@`` to NULL, addresses in ``temp`` fail temporarily,
    ``alias@example.com`` rewrites to bob@example.com, ``x@pipe`` goes to PIPE.
    """

    def __init__(self) -> None:
        self.temp: set[str] = set()
        self.calls: list[str] = []

    def route(self, address: str, kind: str = "mail") -> defer.Deferred[Route]:
        from cgtwist.errors import MailError

        self.calls.append(address)
        local, _, domain = address.partition("@")
        if address in self.temp:
            return defer.fail(MailError(451, "4.3.0", "router unavailable"))
        if local == "error":
            return defer.succeed(Route("ERROR", "", address, error="5.1.1 unknown user"))
        if local == "null":
            return defer.succeed(Route("NULL", "", address))
        if domain == "pipe":
            return defer.succeed(Route("PIPE", local, address))
        if domain == "example.com":
            if local == "alias":
                local = "bob"
            return defer.succeed(Route("LOCAL", f"{local}@{domain}", f"{local}@{domain}"))
        return defer.succeed(Route("SMTP", domain, address))


class Agent:
    """A scripted IDeliveryAgent: ``behaviour(queue, recipient) -> (state, detail)`` or None to
    leave the attempt hanging (a stalled destination) until ``release`` is called."""

    def __init__(
        self,
        module: str,
        clock: Clock,
        behaviour: Optional[Callable[[str, Recipient], Optional[tuple[str, str]]]] = None,
    ) -> None:
        self.module = module
        self.clock = clock
        self.behaviour = behaviour or (lambda q, r: ("delivered", "250 ok"))
        self.calls: list[tuple[float, str, str, list[str]]] = []
        self.hanging: list[tuple[defer.Deferred[Any], list[Recipient]]] = []
        self.queues: list[Optional[QueueName]] = []  # the queue given with each attempt

    def deliver(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName] = None,
    ) -> defer.Deferred[list[Recipient]]:
        self.queues.append(queue)
        name = str(queue) if queue is not None else recipients[0].route
        self.calls.append((self.clock.seconds(), msg_id, name, [r.address for r in recipients]))
        results = [self.behaviour(name, r) for r in recipients]
        if any(x is None for x in results):
            d: defer.Deferred[list[Recipient]] = defer.Deferred()
            self.hanging.append((d, recipients))
            return d
        for r, res in zip(recipients, results, strict=True):
            assert res is not None
            r.state, r.detail = res
        return defer.succeed(recipients)

    def release(self, state: str = "delivered", detail: str = "250 ok") -> None:
        hanging, self.hanging = self.hanging, []
        for d, rcpts in hanging:
            for r in rcpts:
                r.state, r.detail = state, detail
            d.callback(rcpts)


def env(*rcpts: str, sender: str = "alice@example.org") -> Envelope:
    return Envelope(
        sender=sender,
        recipients=[Recipient(a) for a in rcpts],
        submit={"peer": "192.0.2.1", "protocol": "ESMTP"},
    )


class QueueTestCase(unittest.TestCase):
    """A real Spool in a temporary directory, made synchronous, under a Clock."""

    overrides: dict[str, Any] = {}

    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="cgtwist-queue-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.clock = SyncClock()
        self.clock.advance(1_800_000_000)
        self.settings = SettingsHolder(Settings(dict(self.overrides)))
        self.router = FakeRouter()
        self.bounced: list[tuple[str, list[tuple[str, str]]]] = []
        self.local = Agent("LOCAL", self.clock)
        self.smtp = Agent("SMTP", self.clock)
        self.spool = Spool(self.base, self.clock, threadpool=SyncPool())  # type: ignore[arg-type]
        self.manager = self.make_manager()

    def make_manager(self, spool: Optional[Spool] = None, **kw: Any) -> QueueManager:
        """A manager over the fakes; ``kw`` are more of its constructor's arguments."""
        kw.setdefault("bouncer", self.bounce)
        return QueueManager(
            spool or self.spool,
            self.router,
            {"LOCAL": self.local, "SMTP": self.smtp},
            self.settings,
            self.clock,
            **kw,
        )

    def bounce(
        self, msg_id: str, envelope: Envelope, data: bytes, failed: list[Recipient]
    ) -> defer.Deferred[None]:
        self.bounced.append((msg_id, [(r.address, r.detail) for r in failed]))
        return defer.succeed(None)

    def submit(
        self,
        envelope: Envelope,
        data: bytes = b"Subject: t\r\n\r\nhello\r\n",
        manager: Optional[QueueManager] = None,
    ) -> str:
        msg_id = self.successResultOf(self.spool.store(envelope, data))
        (manager or self.manager).enqueue(msg_id, envelope, data)
        return msg_id

    def pump(self, seconds: float = 0.0) -> None:
        """Let the cooperator and timers run (several zero-time ticks, then ``seconds``)."""
        for _ in range(5):
            self.clock.advance(0)
        if seconds:
            self.clock.advance(seconds)
            for _ in range(5):
                self.clock.advance(0)

    def spooled(self) -> list[str]:
        import os

        return sorted(n for n in os.listdir(os.path.join(self.base, "Queue")) if "." in n)
