"""Who may do what in WebAdmin: server administrators, domain administrators, users.

Owns the rule, as data from an account: postmaster of the main domain and accounts with the
``admin`` setting are server administrators (everything); accounts with ``domain_admin``
administer their own domain (its accounts, nothing server-wide); everyone else has WebUser
only. It must not look anything up: the login gives it the account.
"""

from __future__ import annotations

from dataclasses import dataclass

from cgtwist.types import Account


@dataclass(frozen=True)
class Rights:
    server_admin: bool
    domains: frozenset[str]  # domains this account administers (server admins: all)

    @property
    def any_admin(self) -> bool:
        return self.server_admin or bool(self.domains)

    def may_admin(self, domain: str) -> bool:
        return self.server_admin or domain in self.domains

    @classmethod
    def of(cls, account: Account, main_domain: str) -> Rights:
        """The rights of a ``cgtwist.types.Account``."""
        settings = account.settings or {}
        server = bool(settings.get("admin")) or (
            account.name == "postmaster" and account.domain == main_domain
        )
        domains = frozenset({account.domain}) if settings.get("domain_admin") else frozenset()
        return cls(server_admin=server, domains=domains)
