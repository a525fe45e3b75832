"""Web logins: a name and password checked like every other login, throttled like them.

Owns one login attempt: the shared ``AuthPenalty`` (its per-host concurrency cap, its growing
delay after failures, its fail2ban line with ``protocol=http``), the cred checker the mail
protocols use (account store, account guard, services), and the login form's own CSRF token
(an HMAC of a random pre-login cookie). It must not create sessions or render.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from twisted.cred.error import UnauthorizedLogin

from cgtwist.core.auth import AuthUnavailable, PeerCredentials, parse_login
from cgtwist.errors import InvalidName, MailError
from cgtwist.interfaces import IAuthPenalty
from cgtwist.storage import tables
from cgtwist.types import Account

MAX_LOGIN = 320
MAX_PASSWORD = 1024


class LoginRefused(Exception):
    """The login failed; ``str(e)`` is what the form says (the same for a wrong password and
    an unknown account)."""


class Login:
    """Checks web logins with ``checker`` (an ICredentialsChecker taking PeerCredentials)
    under ``penalty`` (cgtwist.checks.authpenalty.AuthPenalty, shared with SMTP/POP3/IMAP)."""

    def __init__(self, checker: Any, penalty: IAuthPenalty, store: Any, main_domain: str) -> None:
        self.checker = checker
        self.penalty = penalty
        self.store = store
        self.main_domain = main_domain
        self._key = secrets.token_bytes(32)

    # -- the login form's CSRF token, before there is a session
    def form_token(self, pre: str) -> str:
        return hmac.new(self._key, pre.encode(), hashlib.sha256).hexdigest()

    def form_token_ok(self, pre: str, token: str) -> bool:
        return bool(pre) and hmac.compare_digest(self.form_token(pre), token)

    def _fingerprint(self, row: dict[str, Any]) -> str:
        """A keyed digest of the stored password hash: a session remembers it, never the hash,
        and ends when it changes (a new password, whoever set it)."""
        stored = str(row.get("password") or "").encode()
        return hmac.new(self._key, b"pw:" + stored, hashlib.sha256).hexdigest()

    async def current(self, address: str) -> tuple[Account, str] | None:
        """(Account, password fingerprint) of an account that may still log in, or None
        (removed, disabled, its domain disabled, or a service account)."""
        name, _, domain = address.partition("@")
        row = await self.store.db.run_interaction(
            "web_session", tables.account_full_txn, name, domain, readonly=True
        )
        if (
            row is None
            or not row["enabled"]
            or not row["domain_enabled"]
            or row["kind"] != tables.KIND_USER
        ):
            return None
        return tables.account_of(row), self._fingerprint(row)

    async def check(self, login: str, password: str, peer: str) -> tuple[Account, str]:
        """(Account, password fingerprint) for a right name and password; LoginRefused
        otherwise, after the penalty's delay for this host."""
        login = login.strip()
        if not login or len(login) > MAX_LOGIN or len(password) > MAX_PASSWORD:
            await self.penalty.failed(peer, login[:100], "http", secret=password[:MAX_PASSWORD])
            raise LoginRefused("Wrong name or password.")
        if not self.penalty.acquire(peer):
            raise LoginRefused("Too many logins in progress from your address; try again later.")
        try:
            creds = PeerCredentials(login.encode("utf-8"), password.encode("utf-8"), peer)
            try:
                avatar_id = await self.checker.requestAvatarId(creds)
            except UnauthorizedLogin:
                await self.penalty.failed(peer, login, "http", secret=password)
                raise LoginRefused("Wrong name or password.") from None
            except (AuthUnavailable, MailError):
                raise LoginRefused(
                    "Logins are temporarily unavailable; try again in a minute."
                ) from None
        finally:
            self.penalty.release(peer)
        try:
            name, domain = parse_login(str(avatar_id), self.main_domain)
        except InvalidName:
            raise LoginRefused("Wrong name or password.") from None
        found = await self.current(f"{name}@{domain}")
        if found is None:  # removed or disabled between the check and now
            raise LoginRefused("Wrong name or password.")
        self.penalty.succeeded(peer)
        return found

    async def verify(self, account: str, password: str, peer: str) -> bool:
        """Whether ``password`` is the account's current one (a password change asks); a wrong
        one counts as a failed login of this host."""
        name, _, domain = account.partition("@")
        ok = (
            len(password) <= MAX_PASSWORD
            and (await self.store.verify_password(name, domain, password)) is not None
        )
        if not ok:
            await self.penalty.failed(peer, account, "http", secret=password[:MAX_PASSWORD])
        return ok
