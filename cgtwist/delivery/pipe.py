"""The PIPE delivery module: run a program from the application directory with the message on
its standard input, for ``"program args"@pipe`` recipients.

Owns checking the program name (no ``/``, ``\\`` or leading ``.``; CommuniGate PIPE rules),
splitting the arguments shell-like without ever running a shell, spawning the process with a
minimal environment, feeding it the message with back-pressure, the timeout, and mapping the
exit status to a recipient state (0 delivered, 75 EX_TEMPFAIL pending, else failed). It never
retries: the queue manager does.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import signal
from typing import IO, TYPE_CHECKING, Any, Callable, Optional

from twisted.internet import defer, error, protocol
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.delivery.agent import DeliveryAgent
from cgtwist.delivery.bounce import one_line
from cgtwist.errors import InvalidName
from cgtwist.interfaces import IDeliveryAgent
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder
from cgtwist.types import Envelope, QueueName, Recipient

if TYPE_CHECKING:
    from twisted.internet.interfaces import IProcessTransport

    # FileSender leaves beginFileTransfer unannotated and mypy --strict refuses an untyped
    # call; for the type checker only, the class with the signature used here (at run time
    # the name is FileSender itself). The consumer is the program's process transport (it
    # is an IConsumer: registerProducer goes to the stdin pipe).
    class _FileSender(FileSender):
        def beginFileTransfer(
            self,
            file: IO[bytes],
            consumer: Optional[IProcessTransport],
            transform: Optional[Callable[[bytes], bytes]] = None,
        ) -> defer.Deferred[bytes]: ...

else:
    _FileSender = FileSender

log = Logger(namespace="cgtwist.delivery.pipe")

EX_TEMPFAIL = 75  # sysexits.h
_STDERR_KEEP = 4096


def command_of(recipient: Recipient, queue: Optional[QueueName] = None) -> str:
    """The command line of a PIPE recipient: the quoted local part of ``"prog args"@pipe``.

    The Router names the logical queue after the program only (``PIPE(prog)``), so the
    arguments come from the address; the queue (``queue``, else the one named by the route)
    is the fallback for other address forms.
    """
    local, at, domain = recipient.address.rpartition("@")
    if at and domain.lower() == "pipe":
        if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
            local = re.sub(r"\\(.)", r"\1", local[1:-1])  # RFC 5321 §4.1.2 quoted-string
        return local
    queue = queue or QueueName.parse(recipient.route)
    return queue.queue if queue is not None and queue.module == "PIPE" else recipient.address


def parse_command(command: str) -> list[str]:
    """Split ``program args`` like a POSIX shell would, but never run one; check the name.

    Raises InvalidName for an unusable command (CommuniGate: the name must not contain ``/``
    or ``\\`` and must not start with ``.``).
    """
    try:
        argv = shlex.split(command, posix=True)
    except ValueError as e:
        raise InvalidName(f"cannot parse PIPE command: {e}") from None
    if not argv:
        raise InvalidName("empty PIPE command")
    name = argv[0]
    raw = command.strip().split(None, 1)[0] if command.strip() else ""
    if (
        any("/" in n or "\\" in n or n.startswith(".") or not n.strip() for n in (name, raw))
        or "\0" in command
    ):
        raise InvalidName(f"PIPE program name not allowed: {name!r}")
    if any(ord(c) < 0x20 for c in command):
        raise InvalidName("control characters in PIPE command")
    return argv


class _Run(protocol.ProcessProtocol):
    """One program run: collects the first bytes of stderr and the exit status."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.stderr = b""
        self.done: defer.Deferred[Any] = defer.Deferred()
        self.timed_out = False
        self.timer: Any = None  # IDelayedCall

    def connectionMade(self) -> None:
        # FileSender writes in blocks as the pipe drains (back-pressure); a program that
        # exits without reading gives EPIPE, which only ends the transfer.
        d = _FileSender().beginFileTransfer(io.BytesIO(self.data), self.transport)
        d.addBoth(self._stdin_done)

    def _stdin_done(self, _: Any) -> None:
        transport: Any = self.transport
        if transport is not None:
            try:
                transport.closeStdin()
            except Exception:
                pass

    def outReceived(self, data: bytes) -> None:
        pass  # stdout is ignored (CommuniGate discards it too)

    def errReceived(self, data: bytes) -> None:
        if len(self.stderr) < _STDERR_KEEP:
            self.stderr += data[: _STDERR_KEEP - len(self.stderr)]

    def processEnded(self, reason: Failure) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if not self.done.called:
            self.done.callback(reason.value)

    def first_error_line(self) -> str:
        for line in self.stderr.decode("utf-8", "replace").splitlines():
            if line.strip():
                return one_line(line, 300)
        return ""


@implementer(IDeliveryAgent)
class PipeDelivery(DeliveryAgent):
    """IDeliveryAgent for module "PIPE": one run of the program per recipient.

    ``reactor`` spawns processes; ``clock`` (default: the reactor) runs the timeout.
    The program is ``<pipe.app_dir>/<name>``; its environment has SENDER, RECIPIENT,
    MESSAGE_ID and a fixed PATH, nothing inherited from the server.
    """

    module = "PIPE"

    def __init__(self, settings: SettingsHolder, reactor: Any, clock: Any = None) -> None:
        self.settings = settings
        self.reactor = reactor
        self.clock = clock or reactor

    async def attempt(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> list[Recipient]:
        """Run ``PIPE(program)`` once per recipient."""
        # Programs read native line endings, as mail delivered to a Unix mailbox has.
        native = re.sub(rb"\r\n", b"\n", data)
        for r in recipients:
            try:
                await self._one(msg_id, envelope, native, r, queue)
            except Exception:
                log.failure(
                    "{msg_id}: PIPE delivery to {rcpt} crashed", msg_id=msg_id, rcpt=r.address
                )
                r.state, r.detail = "pending", "4.3.0 internal error running the PIPE program"
            log.info(
                "{msg_id}: to=<{rcpt}> module=PIPE status={state} {detail}",
                msg_id=msg_id,
                rcpt=r.address,
                state=r.state,
                detail=r.detail,
            )
        return recipients

    async def _one(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        r: Recipient,
        queue: Optional[QueueName],
    ) -> None:
        app_dir = self.settings.current.pipe.app_dir
        if not app_dir:
            r.state, r.detail = "pending", "4.3.5 PIPE delivery is not configured (pipe.app_dir)"
            return
        try:
            argv = parse_command(command_of(r, queue))
        except InvalidName as e:
            r.state, r.detail = "failed", f"5.1.3 {one_line(str(e), 200)}"
            return
        # The name has no separator and no leading dot, so it names an entry of app_dir itself;
        # that entry may be a symlink the administrator put there (e.g. to procmail).
        program = os.path.join(app_dir, argv[0])
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            r.state, r.detail = "failed", f"5.1.1 no such PIPE program: {one_line(argv[0], 100)}"
            return
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "SENDER": envelope.sender,
            "RECIPIENT": r.address,
            "MESSAGE_ID": str(msg_id),
            "LANG": "C",
        }
        run = _Run(data)
        timeout = float(self.settings.current.pipe.timeout)
        try:
            proc = self.reactor.spawnProcess(
                run, program, [program] + argv[1:], env=env, path=os.path.realpath(app_dir)
            )
        except OSError as e:
            r.state, r.detail = "pending", f"4.3.0 cannot start PIPE program: {e.strerror}"
            return

        def kill() -> None:
            run.timed_out = True
            try:
                proc.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

        run.timer = self.clock.callLater(timeout, kill)
        reason = await run.done
        status = getattr(reason, "exitCode", None)
        sig = getattr(reason, "signal", None)
        diag = run.first_error_line()
        if run.timed_out:
            r.state, r.detail = "pending", f"4.4.7 PIPE program killed after {timeout:g}s"
        elif status == 0:
            r.state, r.detail = "delivered", "2.0.0 PIPE program exited 0"
        elif status == EX_TEMPFAIL:
            r.state, r.detail = (
                "pending",
                f"4.3.0 {diag or 'PIPE program asked to retry (exit 75)'}",
            )
        elif status is None and sig is not None:
            name = _signal_name(sig)
            r.state, r.detail = "pending", f"4.3.0 PIPE program killed by {name}"
        else:
            r.state, r.detail = "failed", f"5.3.0 {diag or f'PIPE program exited {status}'}"


def _signal_name(sig: Any) -> str:
    try:
        return signal.Signals(int(sig)).name
    except (ValueError, TypeError):
        return f"signal {sig}"
