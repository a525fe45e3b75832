"""The POP3 TRANSACTION and UPDATE states (RFC 1939 §5, §6): one logged-in session's maildrop.

Owns the commands on a locked maildrop: STAT, LIST, UIDL, DELE, RSET, NOOP, RETR and TOP with
dot-stuffing (RFC 1939 §3) across chunk boundaries, a small message in one write and a big one
streamed with back-pressure, and QUIT, which alone applies the deletions (UPDATE). The
connection, its command loop and the login are ``cgtwist.protocols.pop3.server``'s; the
maildrop itself (lock, snapshot, UIDLs, deleting files) is ``cgtwist.mailstore.pop.PopMailbox``.
Never touches files itself.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from twisted.internet import defer
from twisted.protocols import basic
from twisted.python.failure import Failure

from cgtwist.logs import Logger
from cgtwist.mailstore.pop import PopMailbox
from cgtwist.typedtwisted import begin_file_transfer

SMALL_MESSAGE = 256 * 1024  # RETR sends messages up to this size in one write, bigger ones stream


class POP3Session(Protocol):
    """What the maildrop needs of its connection (``POP3Server``)."""

    transport: Any  # a TCP/TLS transport
    peer_ip: str
    account: str
    state: str

    def ok(self, text: str = "") -> None: ...
    def err(self, text: str) -> None: ...


def _stuffer() -> Callable[[bytes], bytes]:
    """Dot-stuffing (RFC 1939 §3) across chunk boundaries; input already has CRLF line ends."""
    state = {"bol": True}

    def transform(chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        out = chunk.replace(b"\n.", b"\n..")
        if state["bol"] and chunk[:1] == b".":
            out = b"." + out
        state["bol"] = chunk.endswith(b"\n")
        return out

    return transform


class Maildrop:
    """The TRANSACTION-state commands of one session, over its locked ``PopMailbox``.

    ``handler(cmd)`` gives the method serving a command (``do_<CMD>``), or None; each takes the
    rest of the line and may return a Deferred the command loop waits for.
    """

    COMMANDS = frozenset(("NOOP", "STAT", "LIST", "UIDL", "DELE", "RSET", "RETR", "TOP", "QUIT"))
    log = Logger()

    def __init__(self, session: POP3Session, mbox: PopMailbox) -> None:
        self.session = session
        self.mbox = mbox

    def handler(self, cmd: str) -> Optional[Callable[[str], Optional[defer.Deferred[Any]]]]:
        if cmd not in self.COMMANDS:
            return None
        fn: Callable[[str], Optional[defer.Deferred[Any]]] = getattr(self, "do_" + cmd)
        return fn

    def _msg(self, arg: str, allow_deleted: bool = False) -> Optional[int]:
        """A 1-based message number -> 0-based index, or None after sending -ERR."""
        if not arg.isdigit() or len(arg) > 9:
            self.session.err("Invalid message number")
            return None
        n = int(arg)
        if not 1 <= n <= len(self.mbox.entries):
            self.session.err(f"There is no message {n}")
            return None
        if not allow_deleted and self.mbox.is_deleted(n - 1):
            self.session.err(f"Message {n} is deleted")
            return None
        return n - 1

    def do_NOOP(self, rest: str) -> None:
        self.session.ok()

    def do_STAT(self, rest: str) -> None:
        count, size = self.mbox.count_and_size()
        self.session.ok(f"{count} {size}")

    def _listing(self, rest: str, value: Callable[[int], str], title: str) -> None:
        args = rest.split()
        if len(args) > 1:
            self.session.err("Too many arguments")
            return
        if args:
            i = self._msg(args[0])
            if i is not None:
                self.session.ok(f"{i + 1} {value(i)}")
            return
        self.session.ok(title)
        lines = [
            f"{i + 1} {value(i)}".encode()
            for i in range(len(self.mbox.entries))
            if i not in self.mbox.deleted
        ]
        self.session.transport.writeSequence([b"\r\n".join(lines + [b"."]) + b"\r\n"])

    def do_LIST(self, rest: str) -> None:
        mbox = self.mbox
        self._listing(rest, lambda i: str(mbox.entries[i].meta.size), "Scan list follows")

    def do_UIDL(self, rest: str) -> None:
        self._listing(rest, self.mbox.getUidl, "Unique-ID list follows")

    def do_DELE(self, rest: str) -> None:
        i = self._msg(rest.strip())
        if i is not None:
            self.mbox.deleteMessage(i)
            self.session.ok(f"Message {i + 1} marked for deletion")

    def do_RSET(self, rest: str) -> None:
        self.mbox.undeleteMessages()
        self.session.ok()

    def do_RETR(self, rest: str) -> Optional[defer.Deferred[Any]]:
        i = self._msg(rest.strip())
        if i is None:
            return None
        try:
            f = self.mbox.message_file(i)
        except LookupError:
            self.session.err(f"Message {i + 1} was removed by another session")
            return None
        size = self.mbox.entries[i].meta.size
        if size <= SMALL_MESSAGE:
            # One write for the reply, the message and the terminator.
            with f:
                data = f.read()
            end = b".\r\n" if not data or data.endswith(b"\n") else b"\r\n.\r\n"
            self.session.transport.write(b"+OK %d octets\r\n" % size + _stuffer()(data) + end)
            return None
        self.session.ok(f"{size} octets")
        return self._send_file(f)

    def do_TOP(self, rest: str) -> Optional[defer.Deferred[Any]]:
        args = rest.split()
        if len(args) != 2:
            self.session.err("Usage: TOP msg lines")
            return None
        if not args[1].isdigit() or len(args[1]) > 9:
            self.session.err("Invalid line count")
            return None
        i = self._msg(args[0])
        if i is None:
            return None
        try:
            data = self.mbox.top(i, int(args[1]))
        except LookupError:
            self.session.err(f"Message {i + 1} was removed by another session")
            return None
        self.session.ok("Top of message follows")
        stuff = _stuffer()
        out = stuff(data)
        self.session.transport.write(
            out + (b".\r\n" if not data or data.endswith(b"\n") else b"\r\n.\r\n")
        )
        return None

    def _send_file(self, f: Any) -> defer.Deferred[Any]:
        """Stream the message with back-pressure (a pull producer), dot-stuffed, then '.'."""
        sender = basic.FileSender()
        d = begin_file_transfer(sender, f, self.session.transport, _stuffer())

        def finish(last: bytes) -> None:
            f.close()
            if self.session.transport is not None and not self.session.transport.disconnecting:
                self.session.transport.write(
                    b".\r\n" if not last or last == b"\n" else b"\r\n.\r\n"
                )

        def failed(fail: Failure) -> None:
            f.close()
            self.log.info(
                "pop3: sending a message to {ip} stopped: {why}",
                ip=self.session.peer_ip,
                why=fail.getErrorMessage(),
            )
            if self.session.transport is not None:
                self.session.transport.loseConnection()

        return d.addCallbacks(finish, failed)

    def do_QUIT(self, rest: str) -> defer.Deferred[Any]:
        """RFC 1939 §6: UPDATE state: deletions happen now, and only now."""
        self.session.state = "UPDATE"
        d = self.mbox.sync()

        def done(n: int) -> None:
            self.log.info("pop3: logout {account}: {n} deleted", account=self.session.account, n=n)
            self.session.ok(f"Logging out, {n} messages deleted")
            self.session.transport.loseConnection()

        def failed(f: Failure) -> None:
            self.log.failure("pop3: UPDATE failed for {account}", f, account=self.session.account)
            self.session.err("[SYS/TEMP] Some deleted messages were not removed")
            self.session.transport.loseConnection()

        return d.addCallbacks(done, failed)
