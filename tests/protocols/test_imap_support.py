"""Shared test fixtures for the IMAP protocol tests (no tests here).

A real MaildirAccount on a temporary directory, a cred portal with an in-memory checker, and a
CgIMAP4Server on a StringTransport driven by a task.Clock.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any, Optional

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import address, interfaces, task
from twisted.internet.testing import StringTransport
from twisted.mail import imap4
from zope.interface import implementer

from cgtwist.mailstore.account import MaildirAccount
from cgtwist.mailstore.notifier import MailboxNotifier
from cgtwist.mailstore.tree import provision
from cgtwist.protocols.imap.server import CgIMAP4Server, IMAPFactory
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec

_BASE = tempfile.mkdtemp(prefix="cgimap-tests-")
atexit.register(shutil.rmtree, _BASE, True)

MESSAGE = (
    b"From: Alice Example <alice@example.com>\r\nTo: bob@example.com\r\n"
    b"Subject: Hello there\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <m1@example.com>\r\n\r\nFirst line of the body\r\nsecond line\r\n"
)

MULTIPART = (
    b"From: carol@example.com\r\nTo: bob@example.com\r\nSubject: Parts\r\n"
    b"Date: Tue, 03 Mar 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\npart one text\r\n"
    b"--XX\r\nContent-Type: text/html\r\n\r\n<p>part two</p>\r\n--XX--\r\n"
)


@implementer(interfaces.ITLSTransport)
class TLSStringTransport(StringTransport):
    """A StringTransport that records STARTTLS instead of doing a handshake."""

    tls_context: Any = None
    nodelay = False

    def startTLS(self, ctx: Any) -> None:
        self.tls_context = ctx

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


@implementer(IRealm)
class AccountRealm:
    """Gives each login name its own MaildirAccount below ``base``."""

    def __init__(self, base: str, notifier: MailboxNotifier) -> None:
        self.base = base
        self.notifier = notifier
        self.accounts: dict[str, MaildirAccount] = {}

    def account(self, name: str) -> MaildirAccount:
        if name not in self.accounts:
            path = os.path.join(self.base, name, "Maildir")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            provision(path)
            self.accounts[name] = MaildirAccount(path, name, self.notifier)
        return self.accounts[name]

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces_: Any) -> Any:
        name = avatarId.decode() if isinstance(avatarId, bytes) else avatarId
        return imap4.IAccount, self.account(name), lambda: None


class World:
    """One server world: accounts, a portal, settings and a clock."""

    def __init__(self, overrides: Optional[dict[str, Any]] = None, reactor: Any = None) -> None:
        self.tmp = tempfile.mkdtemp(prefix="world-", dir=_BASE)
        self.notifier = MailboxNotifier(reactor)
        self.realm = AccountRealm(self.tmp, self.notifier)
        checker = InMemoryUsernamePasswordDatabaseDontUse(
            **{"alice@example.com": b"secret", "bob@example.com": b"hunter2"}
        )
        self.portal = Portal(self.realm, [checker])
        self.settings = SettingsHolder(Settings(overrides or {}))
        self.clock = task.Clock()

    def factory(
        self, tls: str = "starttls", allow_plain: bool = False, ctx: Any = "ctx", clock: Any = None
    ) -> IMAPFactory:
        spec = ListenerSpec("imap", 143, address="127.0.0.1", tls=tls, allow_plain_auth=allow_plain)
        return IMAPFactory(
            spec, self.settings, self.portal, lambda: ctx, "mail.example.com", clock or self.clock
        )

    def deliver(self, name: str, data: bytes = MESSAGE, folder: str = "INBOX") -> None:
        """Put a message into a folder as LOCAL delivery would, and push the change."""
        acct = self.realm.account(name)
        d = acct.select(folder)
        box = []
        d.addCallback(box.append)
        mbox = box[0]
        mbox.append(data, [], None)
        mbox.close()
        self.notifier.mailbox_changed(name, folder)


class Client:
    """A CgIMAP4Server on a StringTransport; ``send`` returns what the server wrote."""

    def __init__(
        self, world: World, ip: str = "192.0.2.10", factory: Optional[IMAPFactory] = None, **kw: Any
    ) -> None:
        self.world = world
        self.factory = factory or world.factory(**kw)
        self.proto: CgIMAP4Server = self.factory.buildProtocol(address.IPv4Address("TCP", ip, 5555))
        self.transport = TLSStringTransport(peerAddress=address.IPv4Address("TCP", ip, 5555))
        self.proto.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out

    def send(self, data: bytes) -> bytes:
        self.proto.dataReceived(data)
        return self.take()

    def login(self, user: bytes = b"alice@example.com", pw: bytes = b"secret") -> bytes:
        self.proto.secure = True  # as if STARTTLS had completed
        out = self.send(b"L1 LOGIN " + user + b" " + pw + b"\r\n")
        assert b"L1 OK" in out, out
        return out

    def select(self, name: bytes = b"INBOX") -> bytes:
        out = self.send(b"S1 SELECT " + name + b"\r\n")
        assert b"S1 OK" in out, out
        return out

    def close(self) -> None:
        self.proto.connectionLost(None)  # type: ignore[arg-type]


def session(world: World, *messages: bytes, select: bool = True) -> Client:
    """The start of most session tests: ``messages`` delivered to alice's INBOX in order, then
    a client logged in as alice with INBOX selected (not yet, with ``select=False``: to ENABLE
    or EXAMINE first)."""
    for data in messages:
        world.deliver("alice@example.com", data)
    c = Client(world)
    c.login()
    if select:
        c.select()
    return c
