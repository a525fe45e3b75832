"""Typed doorways to the few Twisted callables cgtwist uses that Twisted leaves unannotated.

Under ``mypy --strict`` (``disallow_untyped_calls``) a call to an unannotated function is an
error in a typed module, and the alternative, a ``# type: ignore[no-untyped-call]`` at each
call, hides every other mistake on that line too. Each name here binds one Twisted callable to
the signature cgtwist relies on, once, so the callers stay checked; a Twisted that changes
the callable's arity fails here, in one place (mypy checks the assignment against Twisted's
inferred signature).

Nothing here changes behaviour: each name *is* the Twisted callable, only its declared type
differs. Prefer a typed Twisted alternative where one exists (``Failure.value`` with
``isinstance`` instead of ``Failure.check``/``trap``, ``Failure.raiseException``).

Where cgtwist subclasses a Twisted class and calls up into its unannotated methods
(``super().startService()``), the class itself is the doorway: for the type checker a subclass
declaring the signatures Twisted documents, at run time Twisted's own class.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Callable, Optional

from twisted.application import service
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.protocols.basic import FileSender
from twisted.python import log
from twisted.python.failure import Failure
from twisted.python.logfile import BaseLogFile

current_failure: Callable[[], Failure] = Failure
"""``Failure()`` inside an ``except`` block: the exception being handled, with its
traceback."""

failure_of: Callable[[BaseException], Failure] = Failure
"""``Failure(exc)``: an exception that was not raised (no traceback), as a Failure."""

log_err: Callable[[Optional[object], str], None] = log.err
"""``twisted.python.log.err(stuff, why)``: a legacy error event (``stuff`` None means the
exception being handled), as Twisted's own last-resort handlers log it."""

close_log_file: Callable[[BaseLogFile], None] = BaseLogFile.close
"""``logfile.close()``: close a twistd log file (its path stays, for a replacement)."""

if TYPE_CHECKING:

    class Service(service.Service):
        """``twisted.application.service.Service`` with its documented signatures."""

        def privilegedStartService(self) -> None: ...
        def startService(self) -> None: ...
        def stopService(self) -> Optional[Deferred[None]]: ...

    class MultiService(service.MultiService):
        """``twisted.application.service.MultiService`` with its documented signatures
        (``stopService`` fires when every child has stopped)."""

        def __init__(self) -> None: ...
        def privilegedStartService(self) -> None: ...
        def startService(self) -> None: ...
        def stopService(self) -> Deferred[None]: ...

    class Factory(protocol.Factory):
        """``twisted.internet.protocol.Factory`` with its documented signatures."""

        def doStop(self) -> None: ...

else:
    Service = service.Service
    MultiService = service.MultiService
    Factory = protocol.Factory

begin_file_transfer: Callable[
    [FileSender, IO[bytes], IConsumer, Optional[Callable[[bytes], bytes]]], Deferred[bytes]
] = FileSender.beginFileTransfer
"""``sender.beginFileTransfer(file, consumer, transform)``: stream a file to a consumer as a
pull producer (back-pressure); fires with the last chunk written, after transform."""
