"""cgtwist.runtime.mode: ``[server] runtime`` turns every fenced piece on (``tuned``) or off
(``plain``), and a piece whose Twisted internals are gone falls back with a warning."""

from __future__ import annotations

import gc
import io
from typing import Any

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import (
    FileLogObserver,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    globalLogPublisher,
)

from cgtwist.logs import TurnBufferedFile, set_level
from cgtwist.runtime import collector, fastwrite
from cgtwist.runtime.mode import Runtime


@pytest.fixture
def logged() -> Any:
    lines: list[str] = []

    def observer(e: dict[str, Any]) -> None:
        if e.get("log_namespace") == "cgtwist.runtime":
            lines.append(e["log_format"].format(**e))

    globalLogPublisher.addObserver(observer)
    thresholds = gc.get_threshold()
    yield lines
    gc.set_threshold(*thresholds)
    globalLogPublisher.removeObserver(observer)
    fastwrite.enable(False)
    fastwrite.enable_pipe(False)
    set_level(LogLevel.debug)


def twistd_like() -> tuple[FileLogObserver, LogPublisher]:
    observer = FileLogObserver(io.StringIO(), formatEventAsClassicLogText)
    return observer, LogPublisher(observer)


def test_plain_replaces_nothing(logged: list[str]) -> None:
    """``plain``: Twisted's reactor loop, transport writes, log observers as twistd made them."""
    reactor = EPollReactor()
    observer, publisher = twistd_like()
    runtime = Runtime("plain", reactor)
    runtime.start_server(publisher, "info")
    assert not any(runtime.tuned.values())
    assert "doIteration" not in vars(reactor)
    assert not fastwrite._direct["socket"]
    assert not isinstance(observer._outFile, TurnBufferedFile)
    assert gc.get_threshold()[0] != collector.YOUNG
    assert any(line.startswith("runtime plain: Twisted's reactor loop") for line in logged)


def test_tuned_installs_every_piece(logged: list[str]) -> None:
    reactor = EPollReactor()
    observer, publisher = twistd_like()
    runtime = Runtime("tuned", reactor)
    runtime.start_server(publisher, "info")
    assert runtime.tuned == {
        "log": True,
        "reactor": True,
        "writes": True,
        "threads": True,
        "gc": True,
    }
    assert gc.get_threshold()[0] == collector.YOUNG
    assert "doIteration" in vars(reactor)
    assert fastwrite._direct["socket"]
    assert isinstance(observer._outFile, TurnBufferedFile)
    assert not any("unavailable" in line for line in logged)


def test_tuned_falls_back_piece_by_piece_with_a_warning(logged: list[str]) -> None:
    """A Twisted without the reactor's private selectables (an upgrade): that piece runs
    Twisted's own loop, the log says which and why, and the other pieces stay tuned."""
    reactor = EPollReactor()
    reactor._selectables = None  # type: ignore[assignment]
    _, publisher = twistd_like()
    runtime = Runtime("tuned", reactor)
    runtime.start_server(publisher, "info")
    assert runtime.tuned["reactor"] is False
    assert runtime.tuned["writes"] is True
    assert "doIteration" not in vars(reactor)
    assert any(
        "direct epoll dispatch unavailable" in line and "_selectables" in line for line in logged
    )


def test_unreachable_log_observers_are_reported(logged: list[str]) -> None:
    """Without the publisher's observer list, the warning says what does not apply."""
    runtime = Runtime("plain", EPollReactor())
    runtime.start_server(lambda e: None, "info")
    assert any("[log] level filters cgtwist's own events only" in line for line in logged)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        Runtime("fast", EPollReactor())
