"""IMAP QUOTA (RFC 9208): GETQUOTAROOT, GETQUOTA and SETQUOTA, as a mixin of CgIMAP4Server.

Owns translating an account's quota into QUOTAROOT and QUOTA responses: its limits are the
account settings ``quota.storage`` and ``quota.messages`` (cgtwist.account_settings, set by
an administrator with cgtwist-admin or WebAdmin), its usage the mailstore's count
(cgtwist.mailstore.quota, through the account). Decides nothing: APPEND and COPY over quota
are refused by the mailstore (``NO [OVERQUOTA]``), STATUS DELETED and DELETED-STORAGE are
the mailbox's.

Each account is one quota root named "" that governs all its folders (RFC 9208 §3.2's own
example), holding the resources whose limit is set: STORAGE in units of 1024 octets
(§5.1) and MESSAGE (§5.2). An account without limits has no quota root: GETQUOTAROOT lists
none and GETQUOTA "" answers NO (the grammar has no empty resource list).
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Union

from twisted.internet import defer
from twisted.python.failure import Failure

from cgtwist.account_settings import QuotaLimits
from cgtwist.logs import Logger
from cgtwist.mailstore.quota import Usage
from cgtwist.protocols.imap import typedimap4
from cgtwist.protocols.imap.arguments import ArgumentParsers
from cgtwist.protocols.imap.commands import CommandTable

log = Logger()

# RFC 9208 §3.1; no QUOTASET: limits are set by the administrator, not over IMAP (§4.1.3).
CAPABILITIES = (b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE")
ROOT = b'""'


class QuotaAccount(Protocol):
    """What the handlers ask of the session's account (cgtwist.mailstore.MaildirAccount)."""

    def exists(self, name: Union[str, bytes]) -> bool: ...
    def quota_limits(self) -> defer.Deferred[QuotaLimits]: ...
    def quota_usage(self) -> defer.Deferred[Usage]: ...


class Session(Protocol):
    """What the handlers ask of the session (CgIMAP4Server), as every command does."""

    account: QuotaAccount
    account_name: str

    def sendUntaggedResponse(self, message: bytes, isAsync: Optional[bool] = None) -> None: ...
    def sendPositiveResponse(self, tag: Optional[bytes] = None, message: bytes = b"") -> None: ...
    def sendNegativeResponse(self, tag: Optional[bytes] = None, message: bytes = b"") -> None: ...
    def _fail(self, tag: bytes, what: str) -> Callable[[Failure], None]: ...


def _quota_list(limits: QuotaLimits, usage: Usage) -> bytes:
    """The parenthesised resources of the account's root ("" when it has no limit)."""
    parts = []
    if limits.storage:
        parts.append(b"STORAGE %d %d" % (usage.kib, limits.storage // 1024))
    if limits.messages:
        parts.append(b"MESSAGE %d %d" % (usage.messages, limits.messages))
    return b"(" + b" ".join(parts) + b")" if parts else b""


def _resources(account: QuotaAccount) -> defer.Deferred[bytes]:
    """Fire with the account's root's resource list (b"" without limits)."""

    async def read() -> bytes:
        limits = await account.quota_limits()
        if not limits.storage and not limits.messages:
            return b""
        return _quota_list(limits, await account.quota_usage())

    return defer.ensureDeferred(read())


# The handlers are called as Twisted calls a command's handler, with the CgIMAP4Server
# first; they use only what every command does (account, send*Response, _fail, log).


def getquotaroot(server: Session, tag: bytes, name: bytes) -> None:
    """RFC 9208 §4.1.2: the roots of mailbox ``name`` (the account's, if it has limits)
    and each root's QUOTA."""
    if not server.account.exists(name):
        server.sendNegativeResponse(tag, b"[NONEXISTENT] No such mailbox")
        return
    quoted = typedimap4.quote(name)

    def show(resources: bytes) -> None:
        if not resources:
            server.sendUntaggedResponse(b"QUOTAROOT " + quoted)
        else:
            server.sendUntaggedResponse(b"QUOTAROOT " + quoted + b" " + ROOT)
            server.sendUntaggedResponse(b"QUOTA " + ROOT + b" " + resources)
        server.sendPositiveResponse(tag, b"GETQUOTAROOT completed")

    _resources(server.account).addCallback(show).addErrback(server._fail(tag, "GETQUOTAROOT"))


def getquota(server: Session, tag: bytes, root: bytes) -> None:
    """RFC 9208 §4.1.1: the usage and limits of quota root ``root``."""
    if root != b"":
        server.sendNegativeResponse(tag, b"[NONEXISTENT] No such quota root")
        return

    def show(resources: bytes) -> None:
        if not resources:
            server.sendNegativeResponse(tag, b"[NONEXISTENT] No such quota root")
            return
        server.sendUntaggedResponse(b"QUOTA " + ROOT + b" " + resources)
        server.sendPositiveResponse(tag, b"GETQUOTA completed")

    _resources(server.account).addCallback(show).addErrback(server._fail(tag, "GETQUOTA"))


def setquota(server: Session, tag: bytes, root: bytes, limits: object) -> None:
    """RFC 9208 §4.1.3 allows a server to refuse SETQUOTA: quotas are account settings an
    administrator sets (``cgtwist-admin settings set quota.storage``), so a user cannot
    raise their own, and the server does not advertise QUOTASET."""
    log.info(
        "imap: SETQUOTA refused for {account}: quotas are set by the administrator",
        account=server.account_name,
    )
    server.sendNegativeResponse(tag, b"[NOPERM] Quotas are set by the administrator, not over IMAP")


_astr = ArgumentParsers.arg_astring
commands = CommandTable()
commands.add("auth select", "GETQUOTAROOT", getquotaroot, _astr)
commands.add("auth select", "GETQUOTA", getquota, _astr)
commands.add("auth select", "SETQUOTA", setquota, _astr, ArgumentParsers.arg_plist)
