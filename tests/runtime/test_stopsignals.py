"""cgtwist.runtime.stopsignals: what the server and its workers do on SIGTERM and SIGINT."""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet import error
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from cgtwist.runtime.stopsignals import StopSignals


class _Reactor:
    """Records stops and what a signal handler hands to the reactor thread."""

    def __init__(self) -> None:
        self.stops = 0
        self.from_thread: list[tuple[Any, tuple[Any, ...]]] = []
        self._exitSignal: Any = None

    def stop(self) -> None:
        self.stops += 1
        if self.stops > 1:
            raise error.ReactorNotRunning("Can't stop reactor that isn't running.")

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.from_thread.append((f, args))

    def run_handed(self) -> None:
        handed, self.from_thread = self.from_thread, []
        for f, args in handed:
            f(*args)


class StopSignalTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = _Reactor()
        self.signals = StopSignals(self.reactor)

    def test_the_handler_only_hands_the_signal_to_the_reactor(self) -> None:
        """In the handler nothing is logged or stopped (it may interrupt the logging it would
        need); twistd learns the signal to exit with."""
        self.signals._handler(signal.SIGTERM, None)
        self.assertEqual(self.reactor.stops, 0)
        self.assertEqual(self.reactor._exitSignal, signal.SIGTERM)
        self.reactor.run_handed()
        self.assertEqual(self.reactor.stops, 1)

    def test_a_repeated_sigterm_is_noted_not_a_traceback(self) -> None:
        """SIGTERM twice (a repeated kill; systemd signalling every process of the unit while
        the server signals its workers): one stop, and no ReactorNotRunning error logged."""
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT):
            self.signals._handler(sig, None)
        self.reactor.run_handed()
        self.assertEqual(self.reactor.stops, 1)
        self.assertEqual(self.reactor._exitSignal, signal.SIGTERM)  # the first one
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_stopping_already_for_another_reason(self) -> None:
        """The reactor already stopping (a failed start) is not an error."""
        self.reactor.stops = 1
        self.signals.received(signal.SIGTERM)
        self.assertEqual(self.flushLoggedErrors(), [])


class ExitSignalCheckTests(unittest.TestCase):
    def test_a_reactor_without_exit_signal_is_reported(self) -> None:
        """A Twisted whose reactor no longer records the exit signal (private
        ``_exitSignal``): the handlers still stop the reactor, and the log says the exit
        status will not carry the signal."""
        reactor = _Reactor()
        del reactor._exitSignal
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, sig, signal.getsignal(sig))
        StopSignals(reactor).install()
        self.assertTrue(any("_exitSignal" in (e.get("log_format") or "") for e in events))
