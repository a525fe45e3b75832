"""The queue manager's in-memory records of one message and of one message in one queue.

Pure data shared by the manager, its reports and its admin operations; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from twisted.internet import defer

from cgtwist.types import Envelope, QueueName, Route

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

HistoryRecord = dict[str, Any]
"""One attempt's record in a message's journal (JSON: time, queue, recipients' outcomes)."""


@dataclass(eq=False)
class Job:
    """One message in one logical queue: its recipients there and its retry state.

    ``routed``: while an attempt runs, every recipient routed into this queue (the manager's
    ``_place`` after routing more of the message), for the attempt after it; None when
    nothing was routed meanwhile. It saves the manager looking through all of a message's
    routes when an attempt ends: a list's 10,000 recipients over 100 queues made that a
    million route comparisons per message."""

    queue: QueueName
    indexes: list[int]
    failures: int = 0
    due: float = 0.0
    running: bool = False
    routed: Optional[list[int]] = None


@dataclass(eq=False)
class JournalBatch:
    """The results of a message's attempts that came back while a journal write of it was
    on its way, written together after it: their recipients, their history records, and
    the Deferred each of those attempts waits on (fired once they are on disk)."""

    changed: list[int] = field(default_factory=list)
    history: list[HistoryRecord] = field(default_factory=list)
    waiters: list[defer.Deferred[None]] = field(default_factory=list)


@dataclass(eq=False)
class Msg:
    msg_id: str
    envelope: Envelope
    queued: float
    data: Optional[bytes] = None
    held: bool = False
    bounced: set[int] = field(default_factory=set)
    warned: bool = False
    routes: dict[int, Route] = field(default_factory=dict)
    jobs: dict[QueueName, Job] = field(default_factory=dict)
    running: int = 0  # deliveries, routing or reports in flight
    route_failures: int = 0
    route_due: Optional[float] = None
    report_failures: int = 0
    report_due: Optional[float] = None
    reporting: bool = False
    dropped: bool = False
    bounce_all: str = ""
    removing: bool = False
    waiters: Optional[list[defer.Deferred[bytes]]] = None
    journal: Optional[JournalBatch] = None  # set while a journal write is on its way
