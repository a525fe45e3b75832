"""Logins: turn a login name into (account, domain) and check passwords for twisted.cred.

Owns the login-name forms and the one ICredentialsChecker shared by SMTP AUTH, POP3 and IMAP.
It decides only "who is this"; whether a protocol may be used is the realm's business (or the
optional ``service`` of a checker). Wrong password and unknown user fail alike; a store that
cannot answer fails differently (``AuthUnavailable``) so clients retry instead of giving up.
Being the one way in, it is where the per-account failure budget (``IAccountGuard``) is
consulted, so every protocol shares it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Union

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from zope.interface import implementer

from cgtwist.errors import InvalidName, MailError, StoreUnavailable
from cgtwist.interfaces import IAccountStore
from cgtwist.logs import Logger
from cgtwist.paths import check_account, check_domain
from cgtwist.types import Route

MAX_LOGIN_LENGTH = 320  # RFC 5321 §4.5.3.1.1/2: 64 octets local part + "@" + 255 domain


class AuthUnavailable(MailError):
    """The account store could not answer: a temporary failure, never "wrong password".

    SMTP answers ``454 4.7.0`` (RFC 4954 §6), POP3 ``-ERR [SYS/TEMP]`` (RFC 3206 §4), IMAP
    ``NO [UNAVAILABLE]`` (RFC 5530 §3).
    """

    def __init__(self, detail: str = "") -> None:
        super().__init__(454, "4.7.0", "Temporary authentication failure", detail)


def parse_login(login: str, main_domain: str) -> tuple[str, str]:
    """Split a login name into (account, domain), both validated and lower-cased.

    Accepted forms (COMMUNIGATE.md a.1): ``user@domain``; ``user%domain`` for clients that cut
    the name at '@'; ``user%domain@maindomain`` (a main-domain address restarts on its local
    part); and a bare ``user`` in the main domain. Raises InvalidName for anything else.
    """
    s = login.strip()
    if not s or len(s) > MAX_LOGIN_LENGTH or any(c.isspace() or ord(c) < 32 for c in s):
        raise InvalidName(f"invalid login name {login!r}")
    main = check_domain(main_domain)
    local, at, domain = s.rpartition("@")
    if not at:
        local, domain = s, ""
    elif not domain:
        raise InvalidName(f"invalid login name {login!r}")
    domain = domain.lower().rstrip(".")
    if (not domain or domain == main) and "%" in local:
        local, _, domain = local.rpartition("%")
        if not domain:
            raise InvalidName(f"invalid login name {login!r}")
    return check_account(local), check_domain(domain or main)


class IAccountGuard(Protocol):
    """The per-account failure budget the checker consults (cgtwist.checks.accountguard)."""

    def locked(self, account: str) -> bool:
        """True while logins to ``account`` are refused (Client IPs' correct passwords pass)."""

    def failed(
        self, account: str, ip: str, secret: Union[bytes, str, None] = None
    ) -> Deferred[float]:
        """Count a wrong password from a non-Client IP; fires once its delay has passed."""

    def refused(self, account: str, ip: str) -> Deferred[float]:
        """A login to a locked account was refused; fires once its delay has passed."""


class ILoginRouter(Protocol):
    """The Router as a login sees it (cgtwist.core.routing.Routing): ``route(login, "access")``."""

    def route(self, address: str, kind: str = "mail") -> Deferred[Route]:
        """Fire with the Route of ``address`` for ``kind``; MailError when it cannot."""


def _text(value: Union[str, bytes]) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@implementer(ICredentialsChecker)
class AccountChecker:
    """Check IUsernamePassword credentials against an IAccountStore.

    Fires with the avatar id ``"name@domain"`` (str, lower-case; an alias gives its target
    account; with a ``router``, a login name first goes through its ``Access:`` records and
    aliases) or fails with UnauthorizedLogin (unknown user, wrong password, disabled account,
    service account such as ``pbx``, ``service`` not enabled for the account, or an account
    ``guard`` has locked), or with AuthUnavailable when the store fails. With a ``guard``,
    wrong passwords from other than Client IPs count against the login's budget and their
    failure waits out its delay.
    """

    credentialInterfaces = (IUsernamePassword,)
    _log = Logger()

    def __init__(
        self,
        store: IAccountStore,
        service: Optional[str] = None,
        is_client_ip: Optional[Callable[[str], bool]] = None,
        guard: Optional[IAccountGuard] = None,
        router: Optional[ILoginRouter] = None,
    ) -> None:
        self._store = store
        self._service = service
        self._is_client_ip = is_client_ip
        self._guard = guard
        self._router = router

    def requestAvatarId(self, credentials: Any) -> Deferred[str]:  # type: ignore[override]  # str avatar ids, as everywhere here
        return Deferred.fromCoroutine(
            self._check(
                credentials.username,
                credentials.password,
                str(getattr(credentials, "peer_ip", "") or ""),
            )
        )

    async def _check(
        self, username: Union[str, bytes], password: Union[str, bytes], peer_ip: str = ""
    ) -> str:
        try:
            name, domain = parse_login(_text(username), self._store.main_domain)
        except (InvalidName, UnicodeDecodeError):
            name, domain = "", self._store.main_domain  # the store does the dummy work
        if name and self._router is not None:
            name, domain = await self._access(name, domain)
        guard = self._guard
        login = f"{name}@{domain}"
        is_client = bool(peer_ip) and self._is_client_ip is not None and self._is_client_ip(peer_ip)
        if guard is not None and name and not is_client and guard.locked(login):
            # Same answer as a wrong password, whether the account exists or not.
            await guard.refused(login, peer_ip)
            raise UnauthorizedLogin()
        try:
            account = await self._store.verify_password(name, domain, password)
        except StoreUnavailable as e:  # the store logged why
            self._log.warn(
                "login of {account} not checked: {err}", account=f"{name}@{domain}", err=str(e)
            )
            raise AuthUnavailable(str(e)) from None
        except Exception as e:
            self._log.failure("account store failed during login of {account}", account=login)
            raise AuthUnavailable(f"{type(e).__name__}: {e}") from None
        if account is None:
            if guard is not None and name and not is_client:
                await guard.failed(login, peer_ip, password)
            raise UnauthorizedLogin()
        if self._service is not None and self._service not in account.services:
            raise UnauthorizedLogin()
        # CommuniGate's Roaming service: without it the account may connect only from the
        # Client IPs. Same refusal as a wrong password, one line for the administrator.
        if (
            "roaming" not in account.services
            and peer_ip
            and self._is_client_ip is not None
            and not is_client
        ):
            self._log.info(
                "login refused: {account} has no Roaming and {ip} is not a Client IP",
                account=account.address,
                ip=peer_ip,
            )
            raise UnauthorizedLogin()
        return str(account.address).lower()

    async def _access(self, name: str, domain: str) -> tuple[str, str]:
        """The account a login name is (COMMUNIGATE.md a.1): the Router's ``Access:`` records
        and aliases, as ``router test --access`` shows. A name routed anywhere but to an
        account is no login ("" name: the store does the dummy work, the answer is the wrong
        password's); a Router that cannot answer now is a temporary failure."""
        login = f"{name}@{domain}"
        assert self._router is not None
        try:
            route = await self._router.route(login, "access")
        except MailError as e:
            if not e.temporary:
                return "", domain
            self._log.warn("login of {account} not routed: {err}", account=login, err=str(e))
            raise AuthUnavailable(str(e)) from None
        except Exception as e:
            self._log.failure("routing the login name {account} failed", account=login)
            raise AuthUnavailable(f"{type(e).__name__}: {e}") from None
        if route.module.upper() != "LOCAL":
            return "", domain
        local, _, dom = route.address.rpartition("@")
        try:
            return check_account(local), check_domain(dom)
        except InvalidName:
            return "", domain


class PeerCredentials(UsernamePassword):
    """Username and password plus the client's IP, for the Roaming check."""

    def __init__(self, username: bytes, password: bytes, peer_ip: str = "") -> None:
        super().__init__(username, password)
        self.peer_ip = peer_ip
