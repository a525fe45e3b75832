"""Event dispatch for the epoll reactor without a log context pushed per I/O event.

Twisted's ``EPollReactor.doPoll`` runs every read/write event through
``twisted.python.log.callWithLogger``: it asks the selectable for its log prefix, copies the
current log context into a new dict with ``system`` set to it, pushes it, dispatches, pops
it. The context only feeds the ``[system]`` prefix of *legacy* ``twisted.python.log``
messages; cgtwist logs through ``twisted.logger`` namespaces and says which peer a line is
about in the line itself. On the SMTP path that wrapper was 12% of an SMTP worker's Python
time and 4% of the server's (py-spy: ``doPoll`` 70% inclusive, ``_doReadOrWrite`` 58%),
about one quarter of a millisecond per message.

``streamline(reactor)`` gives one reactor instance a ``doPoll`` that dispatches directly and
is otherwise Twisted's own: the same poll, the same ``_doReadOrWrite`` (which already logs
and disconnects on an application error), and a last-resort log line if dispatching itself
raises, as ``callWithLogger`` would. Any other reactor type, or an EPollReactor whose
internals are not the ones this was written against (``missing``), is left alone.
"""

from __future__ import annotations

import errno
import types
from typing import Any, Optional

from twisted.internet.base import ReactorBase
from twisted.internet.epollreactor import EPollReactor

from cgtwist.typedtwisted import log_err


def _do_poll(self: Any, timeout: Optional[float]) -> None:
    """``EPollReactor.doPoll`` (Twisted 22-26) minus ``callWithLogger``."""
    if timeout is None:
        timeout = -1  # wait indefinitely
    try:
        events = self._poller.poll(timeout, len(self._selectables))
    except OSError as err:
        if err.errno == errno.EINTR:
            return
        raise
    dispatch = self._doReadOrWrite
    selectables = self._selectables
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        try:
            dispatch(selectable, fd, event)
        except KeyboardInterrupt:
            raise
        except BaseException:
            log_err(None, "dispatching an I/O event")


def missing(reactor: Any) -> Optional[str]:
    """What of Twisted's epoll reactor the direct dispatch relies on is not there (a
    sentence for the log), or None when it may replace ``doPoll``.

    The replacement must still be what the main loop calls (``doIteration``), and it uses
    the reactor's poller, its fd -> selectable dict and its per-event ``_doReadOrWrite``.
    A Twisted that renamed any of them would make the replacement either unused or broken,
    so the server keeps Twisted's own loop instead (slower, never wrong)."""
    if type(reactor) is not EPollReactor:
        return f"the reactor is {type(reactor).__name__}, not Twisted's EPollReactor"
    if "doIteration" not in ReactorBase.mainLoop.__code__.co_names:
        return "ReactorBase.mainLoop no longer calls doIteration"
    if not callable(getattr(getattr(reactor, "_poller", None), "poll", None)):
        return "EPollReactor._poller.poll is gone"
    if not isinstance(getattr(reactor, "_selectables", None), dict):
        return "EPollReactor._selectables is no longer a dict"
    if not callable(getattr(reactor, "_doReadOrWrite", None)):
        return "EPollReactor._doReadOrWrite is gone"
    return None


def streamline(reactor: Any) -> bool:
    """Switch ``reactor`` (if it is exactly Twisted's EPollReactor with the internals
    ``missing`` checks) to the direct dispatch; True if it was switched. Safe to call more
    than once."""
    if missing(reactor) is not None:
        return False  # not the internals this was written against: keep Twisted's
    poll = types.MethodType(_do_poll, reactor)
    setattr(reactor, "doPoll", poll)  # noqa: B010  (an instance attribute over the method)
    setattr(reactor, "doIteration", poll)  # noqa: B010  (mainLoop calls self.doIteration)
    return True
