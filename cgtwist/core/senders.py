"""Sender ownership: which addresses an authenticated account may send as (MAIL FROM, From:).

Owns the rule (RELIABILITY.md #44) and the bounded parsing of a message's From: field; it
never replies and never logs refusals (cgtwist.core.policy does). An account ``name@domain``
owns, cheapest question first:

1. its own address;
2. an ``smtp.send_as`` pattern of the server (addresses every account may use, e.g. a shared
   ``noreply@``);
3. every address the Router sends to its LOCAL account: its aliases, its domain's aliases,
   Router records (``sales@company.com = alice``), so "mail to X reaches me" means "I may send
   as X", as CommuniGate's own addresses do;
4. an ``smtp.send_as`` pattern of the account itself (CommuniGate's "may send as" list);
5. with the account's ``admin`` flag (postmaster and other domain administrators): any address
   of its own domain, as CommuniGate lets a domain administrator act for the domain.

The null sender ``<>`` is never asked about: DSNs must get through. Only the first two steps
are free of I/O; the rest run only for an address that is not plainly the account's own.
"""

from __future__ import annotations

from email.utils import getaddresses
from typing import Optional

from cgtwist.interfaces import IAccountStore, IRouter
from cgtwist.message.headers import MAX_HEADER_BYTES, header_block, header_fields, unfolded
from cgtwist.pictures import matches_any, split_list
from cgtwist.settings import SettingsHolder

# Longest From: field we parse (RFC 5322 §2.1.1: 998 octets a line; folded, a few lines).
MAX_FROM_FIELD = 8192


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def header_from_addresses(message: bytes) -> Optional[list[str]]:
    """The addresses of the message's From: field (read by cgtwist.message.headers, which
    accepts the obsolete ``From :``, RFC 5322 §4.5.3): [] when it has none, None when they
    cannot be told (two From: fields, RFC 5322 §3.6; a field without an address; a header
    section longer than MAX_HEADER_BYTES, Postfix's header_size_limit, or a field too long to
    be a sensible one). Linear in the header section, which is bounded."""
    head = header_block(message)
    if len(head) == MAX_HEADER_BYTES:  # no end of the header section within the bound
        return None
    fields = [value for name, value in header_fields(head) if name == "from"]
    if not fields:
        return []
    if len(fields) > 1 or len(fields[0]) > MAX_FROM_FIELD:
        return None
    addresses = [addr for _name, addr in getaddresses([unfolded(fields[0])]) if addr]
    if not addresses or any("@" not in a for a in addresses):
        return None
    return addresses


class SenderRule:
    """Does an account own an address? ``router`` is the IRouter, ``accounts`` the
    IAccountStore (None: only the steps without the store apply), ``settings`` the live
    settings (``smtp.send_as``)."""

    def __init__(
        self, router: IRouter, accounts: Optional[IAccountStore], settings: SettingsHolder
    ) -> None:
        self.router = router
        self.accounts = accounts
        self.settings = settings

    async def refusal(self, account: str, address: str) -> str:
        """Why ``account`` ("name@domain") may not send as ``address``; "" when it may.

        Raises MailError (temporary) when the Router or the store cannot answer now.
        """
        own, addr = account.lower(), address.lower().rstrip(".")
        if addr == own:
            return ""
        if matches_any(split_list(self.settings.current.smtp.send_as), addr):
            return ""
        route = await self.router.route(address, "mail")
        local = route.module.upper() == "LOCAL"
        if local and route.address.lower() == own:
            return ""
        if self.accounts is None:
            return "not an address of the account"
        name, _, domain = account.rpartition("@")
        info = await self.accounts.get_account(name, domain)
        if info is None:
            return "the account no longer exists"
        settings = info.settings or {}
        if matches_any(split_list(settings.get("smtp.send_as")), addr):
            return ""
        if settings.get("admin"):
            home = domain.lower()
            if _domain(addr) == home or (local and _domain(route.address) == home):
                return ""
        return "not an address of the account"
