"""The log buffer at shutdown: lines logged after the reactor's last turn still reach the file."""

from __future__ import annotations

import io

from twisted.internet import task

from cgtwist.logs import TurnBufferedFile


def test_lines_after_unbuffer_are_written_at_once() -> None:
    """Gathered lines wait for the turn's end; after ``unbuffer`` (the reactor's ``after
    shutdown``) what was gathered is written and so is every later line, since no turn
    comes to flush them ("Main loop terminated." was lost that way)."""
    out = io.StringIO()
    clock = task.Clock()
    buffered = TurnBufferedFile(out, clock)
    buffered.write("during the turn\n")
    assert out.getvalue() == ""
    buffered.unbuffer()
    assert out.getvalue() == "during the turn\n"
    buffered.write("Main loop terminated.\n")
    assert out.getvalue() == "during the turn\nMain loop terminated.\n"
    clock.advance(0)  # the turn's flush scheduled before finds nothing left
    assert out.getvalue() == "during the turn\nMain loop terminated.\n"
