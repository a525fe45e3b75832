"""SIGTERM and SIGINT for the server and its SMTP workers: the handler only wakes the reactor.

Owns the stop signals' handlers; what stopping does belongs to the services' stopService.
Twisted's own handler logs ("Received SIGTERM, shutting down.") inside the signal handler and
asks the reactor to stop on every signal. A signal handler runs on the reactor thread between
any two bytecodes, so a line logged there can interrupt the logging it needs (that hung a
server under load: cgtwist.logs TurnBufferedFile), and a second SIGTERM -- a repeated
``kill``, or systemd signalling every process of the unit while the server signals its
workers too -- logged a ReactorNotRunning traceback. Here the handler records the signal for
twistd (which exits with it, as with Twisted's handler) and hands it to the reactor, where the
first one is logged and stops the reactor and any later one is logged as already stopping.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Optional

from twisted.internet import error

from cgtwist.logs import Logger

log = Logger(namespace="cgtwist")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """``StopSignals(reactor).install()`` once the reactor runs (after Twisted's own)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.first: Optional[int] = None  # the signal that started the stop
        self._noted = False  # a handler has recorded the exit signal

    def install(self) -> None:
        if not hasattr(self.reactor, "_exitSignal"):  # another Twisted: stopping still works
            log.warn(
                "the reactor has no _exitSignal (another Twisted): after a stop signal the "
                "process exits with status 0, not the signal's"
            )
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) in (signal.SIG_IGN, None):
                continue  # ignored on purpose (a background job of a script): keep it so
            try:
                signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (tests)
                return

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        # Nothing here may log or take a lock: only note the signal and wake the reactor.
        if not self._noted:
            self._noted = True
            self.reactor._exitSignal = (
                signum  # twistd exits with it (_ISupportsExitSignalCapturing)
            )
        self.reactor.callFromThread(self.received, signum)

    def received(self, signum: int) -> None:
        """On the reactor thread: the first stop signal stops the reactor; others are noted."""
        name = signal.Signals(signum).name
        if self.first is not None:
            log.info(
                "Received {signal} again: already stopping since {first}",
                signal=name,
                first=signal.Signals(self.first).name,
            )
            return
        self.first = signum
        log.info("Received {signal}, shutting down.", signal=name)
        try:
            self.reactor.stop()
        except error.ReactorNotRunning:  # already stopping for another reason
            pass
