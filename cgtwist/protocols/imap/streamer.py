"""Writing a command's untagged responses with back-pressure: the push producer FETCH (and a
QRESYNC SELECT) write through.

Owns the pacing of one response stream: it stops while the transport says pause (a slow
reader), yields to the reactor after ``STREAM_BURST`` octets or ``TURN`` seconds, and waits
for a Deferred among the chunks (work done in an I/O thread). It never builds responses: the
command's iterator of chunks does.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from twisted.internet import defer, interfaces
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.typedtwisted import current_failure

STREAM_BURST = 256 * 1024  # octets written before yielding to the reactor
TURN = 0.01  # seconds of work in one reactor turn before yielding


@implementer(interfaces.IPushProducer)
class Streamer:
    """Writes a chunk iterator to the transport as a push producer: stops while the transport
    says pause (a slow reader), yields to the reactor after each burst."""

    def __init__(self, proto: Any, chunks: Iterator[bytes]) -> None:
        self.proto = proto
        self.chunks = chunks
        self.paused = False
        self.stopped = False
        self.scheduled: Any = None
        self.waiting = False  # a Deferred from the chunks is being waited for
        self.done: defer.Deferred[None] = defer.Deferred()

    def start(self) -> defer.Deferred[None]:
        self.proto.transport.registerProducer(self, True)
        self._run()
        return self.done

    def _schedule(self) -> None:
        if self.scheduled is None and not self.stopped and not self.waiting:
            self.scheduled = self.proto.clock.callLater(0, self._run)

    def _run(self) -> None:
        self.scheduled = None
        written = 0
        clock = self.proto.clock
        deadline = clock.seconds() + TURN
        try:
            while not self.paused and not self.stopped:
                chunk = next(self.chunks, None)
                if chunk is None:
                    self._finish(None)
                    return
                if isinstance(chunk, defer.Deferred):
                    # Work done in a thread (a large message parsed): go on when it is ready.
                    self.waiting = True
                    chunk.addCallbacks(self._ready, self._finish)
                    return
                self.proto.transport.write(chunk)
                written += len(chunk)
                if written >= STREAM_BURST or clock.seconds() > deadline:
                    self._schedule()
                    return
        except Exception:
            self._finish(current_failure())

    def _finish(self, failure: Optional[Failure]) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.proto.transport.unregisterProducer()
        if failure is None:
            self.done.callback(None)
        else:
            self.done.errback(failure)

    def _ready(self, _: object) -> None:
        self.waiting = False
        self._schedule()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.stopped = True
        if self.scheduled is not None and self.scheduled.active():
            self.scheduled.cancel()
        self.chunks = iter(())
