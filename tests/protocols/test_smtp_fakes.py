"""Fakes and a StringTransport harness shared by the SMTP receiver tests (no tests here)."""

from __future__ import annotations

from typing import Any, Optional

from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from cgtwist.errors import MailError
from cgtwist.interfaces import IPolicy, ISubmission
from cgtwist.protocols.smtp.factory import SMTPFactory
from cgtwist.protocols.smtp.server import CgSMTP
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec


@implementer(IPolicy)
class FakePolicy:
    """Accepts everything unless told otherwise; ``hold`` makes a hook return a pending Deferred."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse: dict[str, MailError] = {}  # hook or "rcpt:<address>" -> error
        self.hold: set[str] = set()
        self.pending: list[defer.Deferred[Any]] = []
        self.trace: list[bytes] = []
        self.connect_result: Any = None
        self.crash: set[str] = set()

    def _answer(self, hook: str, value: Any, key: str = "") -> Any:
        if hook in self.crash:
            raise RuntimeError("policy bug")
        err = self.refuse.get(key or hook)
        if hook in self.hold:
            d: defer.Deferred[Any] = defer.Deferred()
            self.pending.append(d)
            if err is not None:
                d.addCallback(lambda _: defer.fail(err))
            else:
                d.addCallback(lambda _: value)
            return d
        if err is not None:
            return defer.fail(err)
        return defer.succeed(value)

    def connect(self, session: Any) -> Any:
        self.calls.append(("connect", session))
        return self._answer("connect", self.connect_result)

    def helo(self, session: Any, name: str) -> Any:
        self.calls.append(("helo", name))
        return self._answer("helo", None)

    def mail_from(self, session: Any, sender: str, params: Any) -> Any:
        self.calls.append(("mail_from", (sender, dict(params))))
        return self._answer("mail_from", None)

    def rcpt_to(self, session: Any, sender: str, recipient: str, params: Any) -> Any:
        self.calls.append(("rcpt_to", (session, recipient, dict(params))))
        return self._answer(
            "rcpt_to",
            recipient,
            "rcpt:" + recipient if "rcpt:" + recipient in self.refuse else "rcpt_to",
        )

    def trace_headers(self, session: Any, envelope: Any) -> Any:
        self.calls.append(("trace_headers", envelope))
        return self._answer("trace_headers", list(self.trace))

    def release(self) -> None:
        """Fire every held Deferred, oldest first."""
        while self.pending:
            self.pending.pop(0).callback(None)


@implementer(ISubmission)
class FakeSubmission:
    def __init__(self) -> None:
        self.messages: list[tuple[Any, bytes]] = []
        self.error: Optional[Exception] = None
        self.hold = False
        self.pending: list[defer.Deferred[str]] = []

    def check_capacity(self, size: int = 0) -> Any:
        return defer.succeed(None)

    def submit(self, envelope: Any, data: bytes) -> Any:
        if self.error is not None:
            return defer.fail(self.error)
        self.messages.append((envelope, data))
        msg_id = f"Q{len(self.messages)}"
        if self.hold:
            d: defer.Deferred[str] = defer.Deferred()
            self.pending.append(d)
            d.addCallback(lambda _: msg_id)
            return d
        return defer.succeed(msg_id)


class BrokenChecker:
    """A checker whose store is down: AUTH must answer 454, not 535."""

    from twisted.cred.credentials import IUsernamePassword

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Any:
        return defer.fail(OSError("database is locked"))


class FormsChecker:
    """Accepts alice's password under every login form, like the real AccountChecker."""

    from twisted.cred.credentials import IUsernamePassword

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def requestAvatarId(self, credentials: Any) -> Any:
        self.seen.append(credentials.username)
        name = credentials.username.replace(b"%", b"@")
        if b"@" not in name:
            name += b"@example.com"
        if name == b"alice@example.com" and credentials.password == b"secret":
            return defer.succeed("alice@example.com")
        return defer.fail(UnauthorizedLogin())


def make_portal(checker: Any = None) -> Portal:
    from twisted.cred.portal import IRealm

    @implementer(IRealm)
    class NoRealm:
        def requestAvatar(self, *a: Any) -> Any:
            raise NotImplementedError("the mail-access realm serves no SMTP avatar")

    if checker is None:
        checker = FormsChecker()
    return Portal(NoRealm(), [checker])


class TLSStringTransport(StringTransport):
    """A StringTransport that claims to support startTLS and records the call."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.tls_started: Any = None

    def startTLS(self, ctx: Any) -> None:
        self.tls_started = ctx


class Harness:
    """One CgSMTP on a StringTransport with a Clock; ``send`` returns the new reply lines."""

    def __init__(
        self,
        listener: Optional[ListenerSpec] = None,
        overrides: Optional[dict[str, Any]] = None,
        tls_ctx: Any = None,
        portal: Optional[Portal] = None,
        peer: str = "192.0.2.10",
        factory: Optional[SMTPFactory] = None,
        greet: bool = True,
    ) -> None:
        from twisted.internet.interfaces import ITLSTransport
        from zope.interface import directlyProvides

        self.clock = Clock()
        self.policy = FakePolicy()
        self.submission = FakeSubmission()
        self.settings = SettingsHolder(Settings(overrides or {}))
        self.factory = factory or SMTPFactory(
            listener or ListenerSpec("smtp", 25),
            self.settings,
            self.policy,
            self.submission,
            portal or make_portal(),
            lambda: tls_ctx,
            "mx.example.com",
            clock=self.clock,
        )
        if factory is not None:
            self.policy = factory.policy  # type: ignore[assignment]
            self.submission = factory.submission  # type: ignore[assignment]
            self.clock = factory.clock  # type: ignore[assignment]
        self.transport = TLSStringTransport(
            hostAddress=IPv4Address("TCP", "198.51.100.1", 25),
            peerAddress=IPv4Address("TCP", peer, 40000),
        )
        if tls_ctx is not None:
            directlyProvides(self.transport, ITLSTransport)
        self.proto: CgSMTP = self.factory.buildProtocol(None)
        self._seen = 0
        if greet:
            self.connect()

    def connect(self) -> list[str]:
        self.proto.makeConnection(self.transport)
        return self.replies()

    def replies(self) -> list[str]:
        out = self.transport.value()[self._seen :]
        self._seen += len(out)
        return [x for x in out.decode("ascii").split("\r\n") if x]

    def send(self, data: bytes) -> list[str]:
        self.proto.dataReceived(data)
        return self.replies()

    def cmd(self, line: str) -> list[str]:
        return self.send(line.encode() + b"\r\n")

    def codes(self, data: bytes) -> list[str]:
        """Final reply codes (one per completed reply) for ``data``."""
        return [x[:3] for x in self.send(data) if x[3:4] == " "]

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def transaction(
        self, body: bytes = b"Subject: hi\r\n\r\nhello\r\n", rcpt: str = "bob@example.com"
    ) -> list[str]:
        return self.send(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<"
            + rcpt.encode()
            + b">\r\nDATA\r\n"
            + body
            + b".\r\n"
        )
