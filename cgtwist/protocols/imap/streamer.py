"""Writing a command's untagged responses with back-pressure: the push producer FETCH (and a
QRESYNC SELECT) write through.

Owns the pacing of one response stream: it stops while the transport says pause (a slow
reader), yields to the reactor after ``STREAM_BURST`` octets or ``TURN`` seconds, and waits
for a Deferred among the chunks (work done in an I/O thread). It never builds responses: the
command's iterator of chunks does.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

from twisted.internet import defer, interfaces
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.runtime.fastwrite import write_now
from cgtwist.typedtwisted import current_failure

STREAM_BURST = 256 * 1024  # octets written before yielding to the reactor
TURN = 0.01  # seconds of work in one reactor turn before yielding


@implementer(interfaces.IPushProducer)
class Streamer:
    """Writes a chunk iterator to the transport as a push producer: stops while the transport
    says pause (a slow reader), yields to the reactor after each burst."""

    def __init__(
        self, proto: Any, chunks: Iterator[bytes], hold: Optional[Callable[[bytes], None]] = None
    ) -> None:
        """``hold``: given the last burst instead of the socket, when the caller writes a line
        right after the stream (FETCH's tagged reply), so that both go in one send."""
        self.proto = proto
        self.chunks = chunks
        self.hold = hold
        self.paused = False
        self.stopped = False
        self.scheduled: Any = None
        self.waiting = False  # a Deferred from the chunks is being waited for
        self.registered = False  # the transport's producer (once more than a burst)
        self.done: defer.Deferred[None] = defer.Deferred()

    def start(self) -> defer.Deferred[None]:
        """Write the first burst at once; only a response that outlasts it registers with
        the transport as its producer (most FETCH responses are one message: registering,
        and the transport's buffered write a reactor turn later, were a third of a
        ``UID FETCH <uid> BODY.PEEK[]``'s cost)."""
        self._run()
        return self.done

    def _register(self) -> None:
        if not self.registered:
            self.registered = True
            self.proto.transport.registerProducer(self, True)

    def _schedule(self) -> None:
        self._register()  # more to come: the transport may now ask for a pause
        if self.scheduled is None and not self.stopped and not self.waiting:
            self.scheduled = self.proto.clock.callLater(0, self._run)

    def _run(self) -> None:
        self.scheduled = None
        out: list[bytes] = []  # this turn's chunks, written at once: one send per burst
        written = 0
        clock = self.proto.clock
        deadline = clock.seconds() + TURN
        try:
            while not self.paused and not self.stopped:
                chunk = next(self.chunks, None)
                if chunk is None:
                    if self.hold is not None and out:
                        self.hold(out[0] if len(out) == 1 else b"".join(out))
                    else:
                        self._write(out)
                    self._finish(None)
                    return
                if not isinstance(chunk, bytes) and isinstance(chunk, defer.Deferred):
                    # Work done in a thread (a large message parsed): go on when it is ready.
                    self._write(out)
                    self._register()
                    self.waiting = True
                    chunk.addCallbacks(self._ready, self._finish)
                    return
                out.append(chunk)
                written += len(chunk)
                if written >= STREAM_BURST or clock.seconds() > deadline:
                    self._write(out)
                    self._schedule()
                    return
            self._write(out)
        except Exception:
            failure = current_failure()
            self._write(out)  # the responses complete before the failure
            self._finish(failure)

    def _write(self, out: list[bytes]) -> None:
        """One write of the turn's chunks: straight to an idle plain socket, else through the
        transport's buffer (cgtwist.runtime.fastwrite)."""
        if out:
            write_now(self.proto.transport, out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _finish(self, failure: Optional[Failure]) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.registered:
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
