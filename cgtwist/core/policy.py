"""The baseline receiving policy: route each recipient and refuse unauthorised relaying.

Owns only the spine's decisions (COMMUNIGATE.md a.6, step 4): a recipient is accepted when the
Router sends it somewhere local (LOCAL, PIPE, LIST, NULL, GROUP), refused with the route's text when the
Router says ERROR, and accepted for a remote (SMTP) route only from a Client IP, a ``Relay:``
record, or an authenticated account whose effective services (account and domain) include
``relay`` and, away from the Client IPs, ``roaming`` (COMMUNIGATE.md a.6). An authenticated
session's MAIL FROM (and, with ``smtp.check_from_header``, its From: field) must be an address
the account owns (cgtwist.core.senders): 553 5.7.1, or 550 5.7.1 after DATA. Every other hook
accepts. Protection checks (RBL, SPF, callbacks) wrap this object and delegate to it; it never
does DNS or I/O itself.
"""

from __future__ import annotations

import enum
from typing import Any, Awaitable, Literal, Mapping, NoReturn, Optional, TypeVar, Union, cast

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from cgtwist.core.account_limits import (
    Account,
    AccountLimits,
    Cache,
    mail_refusal_of,
    size_refusal_of,
)
from cgtwist.core.routing import route_error
from cgtwist.core.senders import SenderRule, header_from_addresses
from cgtwist.errors import MailError
from cgtwist.interfaces import CheckOutcome, IAccountStore, IMessageCheck, IPolicy, IRouter
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder
from cgtwist.types import Envelope, Route, SessionInfo

LOCAL_MODULES = frozenset({"LOCAL", "PIPE", "LIST", "NULL", "GROUP"})
T = TypeVar("T")


class _Later(enum.Enum):
    LATER = 0  # _fired: no value yet (or a failure): await the Deferred


def _fired(d: defer.Deferred[T]) -> Union[T, Literal[_Later.LATER]]:
    """The value ``d`` has already fired with (the Router's cache answered), or LATER: not
    fired yet, or failed; the caller then awaits ``d``, which reports the failure."""
    if d.called and not d.paused:
        result = d.result
        if not isinstance(result, Failure):
            return cast(T, result)  # the value d fired with
    return _Later.LATER


@implementer(IPolicy, IMessageCheck)
class BasicPolicy:
    """IPolicy for the spine. Small on purpose: protection policies wrap it."""

    log = Logger()

    def __init__(
        self,
        router: IRouter,
        settings: SettingsHolder,
        accounts: Optional[IAccountStore] = None,
        limits: Optional[AccountLimits] = None,
    ) -> None:
        self.router = router
        self.settings = settings
        # Each local recipient's own limits (mail.max_message_size); None: the server's only.
        self.limits = limits
        # Where an account's services come from. Without one (unit tests with a bare router),
        # the router's own store is used if it has one, else every authenticated user may relay.
        self.accounts: Any = accounts if accounts is not None else getattr(router, "store", None)
        self.senders = SenderRule(router, self.accounts, settings)

    def connect(self, session: SessionInfo) -> defer.Deferred[Optional[SessionInfo]]:
        return defer.succeed(None)

    def helo(self, session: SessionInfo, name: str) -> defer.Deferred[Optional[SessionInfo]]:
        return defer.succeed(None)

    def mail_from(
        self, session: SessionInfo, sender: str, params: Mapping[str, str]
    ) -> defer.Deferred[None]:
        # The null sender stays allowed: DSNs (RFC 5321 §4.5.5).
        if not session.account or not sender or not self.settings.current.smtp.restrict_sender:
            return defer.succeed(None)
        return defer.ensureDeferred(self._owned(session, sender, "MAIL FROM"))

    def check_message(
        self, session: SessionInfo, envelope: Envelope, message: bytes
    ) -> defer.Deferred[CheckOutcome]:
        """After DATA, before the message is queued: each local recipient's maximum message
        size (552 5.3.4), then the From: check (``smtp.check_from_header``); fires None.

        Every message takes this path, and its recipients' routes and accounts were asked
        about at RCPT moments ago: answered from the Router's and the limits' caches it runs
        at once, without a coroutine; whatever is not cached any more is asked for then."""
        if self.limits is not None:
            size = len(message)
            for i, rcpt in enumerate(envelope.recipients):
                d = self.router.route(rcpt.address, "mail")
                route = _fired(d)
                if route is _Later.LATER:
                    return defer.ensureDeferred(
                        self._check_message(session, envelope, message, i, d)
                    )
                if route.module.upper() != "LOCAL":
                    continue
                account = self.limits.cached(route.address)
                if account is Cache.MISS:
                    return defer.ensureDeferred(
                        self._check_message(session, envelope, message, i, d)
                    )
                refusal = size_refusal_of(account, route.address, size)
                if refusal is not None:
                    return defer.fail(self._too_big(session, rcpt.address, route, size, refusal))
        if session.account and self.settings.current.smtp.check_from_header:
            return defer.ensureDeferred(self._from_checked(session, message))
        return defer.succeed(None)

    async def _from_checked(self, session: SessionInfo, message: bytes) -> CheckOutcome:
        await self._from_owned(session, message)
        return None

    async def _check_message(
        self,
        session: SessionInfo,
        envelope: Envelope,
        message: bytes,
        start: int,
        first: defer.Deferred[Route],
    ) -> CheckOutcome:
        """``check_message`` from recipient ``start`` on, whose route ``first`` brings."""
        assert self.limits is not None
        for i, rcpt in enumerate(envelope.recipients[start:]):
            route: Route = await (first if i == 0 else self.router.route(rcpt.address, "mail"))
            if route.module.upper() == "LOCAL":
                await self._size_fits(session, rcpt.address, route, len(message))
        if session.account and self.settings.current.smtp.check_from_header:
            await self._from_owned(session, message)
        return None

    async def _local_fits(
        self, session: SessionInfo, recipient: str, route: Route, size: int
    ) -> str:
        """A local account takes mail (its Mail service) and, RFC 1870 §6.2, a declared SIZE
        larger than it takes is refused at RCPT (``_fits``, once the account is read)."""
        assert self.limits is not None
        account = await self._limit("rcpt check", route, self.limits.account(route.address))
        self._fits(session, recipient, route, size, account)
        return recipient

    def _fits(
        self,
        session: SessionInfo,
        recipient: str,
        route: Route,
        size: int,
        account: Optional[Account],
    ) -> None:
        """Raise (and log) the refusal of ``recipient`` at RCPT by its LOCAL ``account``: the
        Mail service off, or a declared ``size`` over its limit."""
        refusal = mail_refusal_of(account, route.address)
        if refusal is not None:
            self.log.info(
                "recipient refused: Mail service off for {account}: peer={peer} rcpt={rcpt}",
                account=route.address,
                peer=session.peer_ip,
                rcpt=recipient,
            )
            raise refusal
        refusal = size_refusal_of(account, route.address, size) if size else None
        if refusal is not None:
            raise self._too_big(session, recipient, route, size, refusal)

    async def _size_fits(
        self, session: SessionInfo, recipient: str, route: Route, size: int
    ) -> None:
        """Raise 552 5.3.4 when the LOCAL account ``route`` leads ``recipient`` to takes less
        than ``size`` octets (RFC 1870 §6.2)."""
        assert self.limits is not None
        account = await self._limit("size check", route, self.limits.account(route.address))
        refusal = size_refusal_of(account, route.address, size)
        if refusal is not None:
            raise self._too_big(session, recipient, route, size, refusal)

    def _too_big(
        self, session: SessionInfo, recipient: str, route: Route, size: int, refusal: MailError
    ) -> MailError:
        self.log.info(
            "message too big for {account}: peer={peer} rcpt={rcpt} size={size} {why}",
            account=route.address,
            peer=session.peer_ip,
            rcpt=recipient,
            size=size,
            why=refusal.text,
        )
        return refusal

    async def _limit(self, what: str, route: Route, check: Awaitable[T]) -> T:
        """What the store says of an account; a store that cannot answer is a 451, never a
        silent pass."""
        try:
            return await check
        except Exception:
            self.log.failure(
                "{what}: settings of {account} unreadable", what=what, account=route.address
            )
            raise MailError(451, "4.3.0", "Temporary local problem, try again later") from None

    async def _from_owned(self, session: SessionInfo, message: bytes) -> None:
        addresses = header_from_addresses(message)
        if addresses is None:
            self.log.info(
                "message refused: From: field unreadable: peer={peer} account={account}",
                peer=session.peer_ip,
                account=session.account,
            )
            raise MailError(
                550, "5.7.1", "Message refused: the From: header field cannot be checked"
            )
        for address in addresses:
            await self._owned(session, address, "From:")

    async def _owned(self, session: SessionInfo, address: str, where: str) -> None:
        """Return if the session's account owns ``address``, else raise the refusal."""
        account = session.account or ""
        try:
            reason = await self.senders.refusal(account, address)
        except MailError as e:
            if e.temporary:  # the Router or the store cannot answer now
                raise MailError(
                    451, "4.3.0", "Temporary local problem, try again later", e.detail
                ) from None
            reason = f"unroutable ({e.enhanced} {e.text})"
        except Exception:
            self.log.failure(
                "sender check: {account} as {address} failed", account=account, address=address
            )
            raise MailError(451, "4.3.0", "Temporary local problem, try again later") from None
        if not reason:
            return
        self.log.info(
            "sender not owned: peer={peer} account={account} {where} <{address}> reason={reason}",
            peer=session.peer_ip,
            account=account,
            where=where,
            address=address,
            reason=reason,
        )
        if where == "From:":
            raise MailError(550, "5.7.1", f"From: header address rejected: not owned by {account}")
        # RFC 5321 §4.2.2 553: mailbox name not allowed; RFC 3463 5.7.1: delivery not authorized.
        raise MailError(
            553, "5.7.1", f"<{address}>: Sender address rejected: not owned by {account}"
        )

    def rcpt_to(
        self, session: SessionInfo, sender: str, recipient: str, params: Mapping[str, str]
    ) -> defer.Deferred[str]:
        d = defer.maybeDeferred(self.router.route, recipient, "mail")
        return d.addCallbacks(
            self._routed,
            self._route_failed,
            callbackArgs=(session, recipient, params),
            errbackArgs=(session, recipient),
        )

    def _routed(
        self, route: Route, session: SessionInfo, recipient: str, params: Mapping[str, str]
    ) -> Any:
        module = route.module.upper()
        if module == "LOCAL" and self.limits is not None:
            declared = params.get("SIZE", "")
            size = int(declared) if declared.isdigit() else 0
            account = self.limits.cached(route.address)
            if account is Cache.MISS:
                return defer.ensureDeferred(self._local_fits(session, recipient, route, size))
            self._fits(session, recipient, route, size, account)
            return recipient
        if module in LOCAL_MODULES:
            return recipient
        if module == "ERROR":
            raise route_error(route)
        # Anything else leaves this server: relaying (COMMUNIGATE.md a.6).
        if session.is_client_ip or route.relay:
            return recipient
        if session.account:
            if self.accounts is None:
                return recipient
            d = defer.ensureDeferred(self._relay_refusal(session.account))
            d.addCallback(self._account_checked, session, recipient, route)
            return d
        return self._deny(session, recipient, route, "not authenticated, not a Client IP")

    async def _relay_refusal(self, account: str) -> str:
        """Why ``account`` may not relay from a non-client IP ("" = it may)."""
        name, _, domain = account.rpartition("@")
        try:
            info = await self.accounts.get_account(name, domain)
        except Exception:
            self.log.failure("relay check: looking up {account} failed", account=account)
            raise MailError(451, "4.3.0", "Temporary local problem, try again later") from None
        if info is None:
            return "account no longer exists"
        if "relay" not in info.services:
            return "Relay service disabled for the account or its domain"
        if "roaming" not in info.services:  # Roaming off: relaying only from Client IPs
            return "Roaming disabled and the peer is not a Client IP"
        return ""

    def _account_checked(
        self, refusal: str, session: SessionInfo, recipient: str, route: Route
    ) -> str:
        if not refusal:
            return recipient
        return self._deny(session, recipient, route, refusal)

    def _deny(self, session: SessionInfo, recipient: str, route: Route, reason: str) -> NoReturn:
        self.log.info(
            "relaying denied: peer={peer} account={account} rcpt={rcpt} route={route} reason={reason}",
            peer=session.peer_ip,
            account=session.account or "-",
            rcpt=recipient,
            route=str(route),
            reason=reason,
        )
        raise MailError(554, "5.7.1", "Relaying denied")

    def _route_failed(self, f: Failure, session: SessionInfo, recipient: str) -> Failure:
        err = f.value
        if isinstance(err, MailError):
            if err.temporary:
                raise MailError(
                    451, "4.3.0", "Temporary routing failure, try again later", err.detail
                )
            return f
        self.log.failure("routing {rcpt} failed", f, rcpt=recipient, peer=session.peer_ip)
        raise MailError(451, "4.3.0", "Temporary routing failure, try again later")

    def trace_headers(
        self, session: SessionInfo, envelope: Envelope
    ) -> defer.Deferred[list[bytes]]:
        return defer.succeed([])
