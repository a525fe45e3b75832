"""Passwords in the account store: setting, importing and verifying them, hashes upgraded.

Owns the ``password`` column of ``accounts``: a new password is checked against the account's
password policy (cgtwist.storage.scoped_settings) and hashed with argon2id; a hash imported from
another server is kept as it is; a login verifies exactly one hash whatever the outcome, so the
time it takes reveals nothing, and a hash of an older kind is replaced at the next login that
proves the password. Hashing and verifying run in the hasher's threads, never in a database
transaction and never on the reactor. ``PasswordStore`` is this half of the account store
(cgtwist.storage.store.AccountStore builds on it); it sits apart because it is the store's face
of the login path, with its own threads and its own rules about what a failure may reveal.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Union

from cgtwist.config import DEFAULT_NODE
from cgtwist.errors import InvalidName
from cgtwist.paths import check_account, check_domain
from cgtwist.storage import tables
from cgtwist.storage.database import Database
from cgtwist.storage.passwords import PasswordHasher
from cgtwist.storage.scoped_settings import ScopedSettingsStore
from cgtwist.storage.storebase import InvalidValue, _deferred
from cgtwist.storage.tables import KIND_USER
from cgtwist.types import Account


class PasswordStore(ScopedSettingsStore):
    """The passwords of the store behind ``db``, hashed and verified by ``hasher``."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher,
        now: Callable[[], float] = time.time,
        node: str = DEFAULT_NODE,
    ) -> None:
        super().__init__(db, now, node)
        self._hasher = hasher

    @_deferred
    async def set_password(
        self, name: str, domain: str, password: str, check_policy: bool = True
    ) -> None:
        """Store a new argon2id hash for the account's password, once it meets the account's
        password policy (InvalidValue says why not; ``check_policy`` False: a generated one)."""
        n, d = check_account(name), check_domain(domain)
        if not password:
            raise InvalidValue("the password must not be empty")
        if check_policy:
            await self._check_password_policy(d, await self.get_account_settings(n, d), password)
        phc = await self._hasher.hash(password)
        await self._write("set_password", tables.set_password_txn, n, d, phc, None)
        self._log.info("password of {account} changed", account=f"{n}@{d}")

    @_deferred
    async def set_password_hash(self, name: str, domain: str, stored: str) -> None:
        """Store a hash imported from another server (argon2id or SHA512-CRYPT) as it is.

        A SHA512-CRYPT hash is replaced with argon2id at the account's next successful login.
        """
        n, d = check_account(name), check_domain(domain)
        phc = self._imported_hash(stored)
        await self._write("set_password_hash", tables.set_password_txn, n, d, phc, None)
        self._log.info("password hash of {account} imported", account=f"{n}@{d}")

    def _imported_hash(self, stored: str) -> str:
        phc = stored.strip()
        if not self._hasher.is_supported_hash(phc):
            raise InvalidValue(
                "unsupported password hash (want $argon2id$... or {SHA512-CRYPT}$6$...)"
            )
        return phc

    @_deferred
    async def verify_password(
        self, name: str, domain: str, password: Union[str, bytes]
    ) -> Optional[Account]:
        """Fire with the Account when the password matches and it may log in, else None.

        Runs exactly one hash verification whatever the outcome (unknown domain, unknown user,
        invalid name, service account, disabled), so the cost reveals nothing. An alias logs in
        as its target account (COMMUNIGATE.md a.1). A database failure errbacks (the caller
        answers "temporary failure", never "wrong password").
        """
        try:
            n, d = check_account(name), check_domain(domain)
        except InvalidName:
            await self._hasher.verify(None, password)
            return None
        row = await self._db.run_interaction(
            "verify_password", tables.login_row_txn, n, d, readonly=True
        )
        stored = row["password"] if row else None
        ok = await self._hasher.verify(stored, password)
        if not (
            ok and row and row["enabled"] and row["domain_enabled"] and row["kind"] == KIND_USER
        ):
            return None
        if stored and self._hasher.needs_rehash(stored):
            await self._rehash(row["name"], row["domain"], stored, password)
        return tables.account_of(row)

    async def _rehash(self, n: str, d: str, old: str, password: Union[str, bytes]) -> None:
        try:
            phc = await self._hasher.hash(password)
            await self._write(
                "rehash_password", tables.set_password_txn, n, d, phc, old, announce=False
            )  # the same password: nothing to tell
        except Exception:
            self._log.failure(
                "could not upgrade the password hash of {account}", account=f"{n}@{d}"
            )
