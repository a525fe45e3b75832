"""Routing a spooled message's recipients (CommuniGate's Enqueuer): the Router asked for each,
a slice at a time, and each answer applied to the message as it comes.

Owns asking the IRouter about a message's unrouted pending recipients and what an answer means
for one recipient: a Route is recorded (its queue name on the recipient), the ERROR and NULL
modules settle the recipient at once, a permanent MailError fails it, anything else (a
temporary error, a crash, no route) is handed back as a temporary failure. Where routed
recipients go next (their logical queues), when a temporary failure is tried again and the
journal write are the queue manager's (cgtwist.queue.manager).
"""

from __future__ import annotations

from typing import Iterator

from twisted.internet import defer
from twisted.internet.task import Cooperator
from twisted.python.failure import Failure

from cgtwist.errors import MailError
from cgtwist.interfaces import IRouter
from cgtwist.logs import Logger
from cgtwist.queue.outcome import settle
from cgtwist.queue.state import DELIVERED, FAILED, Msg
from cgtwist.types import Route

ROUTE_SLICE = 64  # recipients routed per step of the cooperator


class Enqueuer:
    """Routes recipients through ``router``; the slices after the first take turns on
    ``cooperator`` with the rest of the queue's work; failures are logged to ``log`` (the
    queue manager's, so its log lines keep their namespace)."""

    def __init__(self, router: IRouter, cooperator: Cooperator, log: Logger) -> None:
        self.router = router
        self._coop = cooperator
        self.log = log

    def route(self, m: Msg, todo: list[int]) -> defer.Deferred[list[tuple[int, str]]]:
        """Route recipients ``todo`` (indexes) of ``m``; fire, once every answer is applied,
        with the (index, error) of those that failed temporarily.

        The Router is asked for ``ROUTE_SLICE`` recipients at once and for the rest one slice
        per step of the cooperator, each answer applied as it comes (most come at once: the
        Router answers from its kept facts): a list's 10,000 subscribers never hold the
        reactor for the whole of their routing, and a small message is routed at once."""
        rcpts = m.envelope.recipients
        waiting: list[defer.Deferred[None]] = []
        temp: list[tuple[int, str]] = []  # (index, error) of temporary failures

        def apply(value: object, i: int) -> None:
            r = rcpts[i]
            if isinstance(value, Route):
                if value.module == "ERROR":
                    settle(m, i, FAILED, value.error or "5.1.1 address rejected", "ERROR")
                elif value.module == "NULL":
                    settle(m, i, DELIVERED, "2.0.0 discarded by the Router (NULL)", "NULL")
                else:
                    m.routes[i] = value
                    r.route = str(value.queue_name)
            elif isinstance(value, Failure) and isinstance(value.value, MailError):
                if value.value.temporary:
                    temp.append((i, value.getErrorMessage()))
                else:
                    settle(m, i, FAILED, value.value.reply(), "")
            elif isinstance(value, Failure):
                temp.append((i, value.getErrorMessage()))
                self.log.failure(
                    "queue: routing {rcpt} of {msg_id} failed",
                    value,
                    rcpt=r.address,
                    msg_id=m.msg_id,
                )
            else:
                temp.append((i, "router returned no route"))

        def ask(i: int) -> None:
            d = defer.maybeDeferred(self.router.route, rcpts[i].address).addBoth(apply, i)
            if not d.called:
                waiting.append(d)

        def slices(rest: list[int]) -> Iterator[None]:
            for n, i in enumerate(rest, 1):
                ask(i)
                if n % ROUTE_SLICE == 0:
                    yield None

        for i in todo[:ROUTE_SLICE]:
            ask(i)
        rest = todo[ROUTE_SLICE:]
        asked: defer.Deferred[None] = (
            self._coop.coiterate(slices(rest)).addCallback(lambda _: None)
            if rest
            else defer.succeed(None)
        )

        def answered(_: None) -> defer.Deferred[list[tuple[bool, None]]]:
            return defer.DeferredList(waiting, consumeErrors=True)

        def failures(_: object) -> list[tuple[int, str]]:
            return temp

        return asked.addCallback(answered).addCallback(failures)
