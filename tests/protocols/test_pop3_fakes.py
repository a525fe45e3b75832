"""Shared fakes for the POP3 and realm tests: an in-memory account store and a portal."""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.cred.portal import Portal
from twisted.internet import defer

from cgtwist import paths
from cgtwist.core.auth import AccountChecker
from cgtwist.mailstore import MailboxNotifier, maildir
from cgtwist.protocols.realm import MailRealm
from cgtwist.types import Account


class FakeStore:
    """IAccountStore subset: accounts with a password and enabled services."""

    main_domain = "example.com"

    def __init__(self) -> None:
        self.accounts: dict[tuple[str, str], tuple[str, frozenset[str]]] = {}
        self.fail = False

    def add(
        self,
        name: str,
        password: str,
        services: frozenset[str] = frozenset({"pop", "imap", "mail"}),
        domain: str = "example.com",
    ) -> None:
        self.accounts[(name, domain)] = (password, services)

    def get_account(self, name: str, domain: str) -> defer.Deferred[Optional[Account]]:
        entry = self.accounts.get((name, domain))
        return defer.succeed(Account(name, domain, services=entry[1]) if entry else None)

    def verify_password(
        self, name: str, domain: str, password: Any
    ) -> defer.Deferred[Optional[Account]]:
        if self.fail:
            return defer.fail(RuntimeError("database down"))
        if isinstance(password, bytes):
            password = password.decode()
        entry = self.accounts.get((name, domain))
        if entry is None or entry[0] != password:
            return defer.succeed(None)
        return defer.succeed(Account(name, domain, services=entry[1]))


def make_portal(
    base: str, store: FakeStore, notifier: Optional[MailboxNotifier] = None
) -> tuple[Portal, MailRealm]:
    realm = MailRealm(base, store, notifier or MailboxNotifier(), store.main_domain)
    return Portal(realm, [AccountChecker(store)]), realm


def deliver(base: str, name: str, data: bytes, domain: str = "example.com") -> str:
    """What LOCAL delivery does: write into the account's Maildir new/."""
    md = paths.maildir(base, domain, name)
    maildir.ensure(md)
    return os.path.join(md, "new", maildir.deliver(md, data, to_new=True)[1])
