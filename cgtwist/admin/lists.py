"""Mailing lists as an administrator manages them: create, change, remove, subscribers, held
posts and their approval.

Owns the LIST module's administration once, for cgtwist-admin and the web alike: its owner
and archive are accounts (that the name is free, the store checks), a change to the lists
themselves tells the server (its Router forgets its cached answers), and approving or
rejecting a held post is done by the running server (``list-decide``: its LIST agent
distributes through the spool). It must not parse arguments, read files or print.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from cgtwist.admin.errors import AdminError, ServerDown
from cgtwist.errors import NotFound
from cgtwist.lists.model import MailingList, Subscriber, check_mode
from cgtwist.storage.lists import HELD, ListStore, StoredMessage

# Sends one control command to the running server (cgtwist.admin.queue.Call).
Call = Callable[..., Awaitable[dict[str, Any]]]


class ListAdmin:
    """The list operations over ``accounts`` (the account store) and the lists kept in its
    database (a ListStore, made at first use: the queue-only CLI has no store).

    ``change(what, text)`` logs a change and tells the server (a list's existence is what its
    Router caches); ``note(text)`` only logs one (settings and subscribers: the LIST agent
    reads them at each delivery); ``call`` sends a control command.
    """

    def __init__(
        self,
        accounts: Any,
        change: Callable[[str, str], Awaitable[Any]],
        note: Callable[[str], None],
        call: Optional[Call],
    ) -> None:
        self._lists: Optional[ListStore] = None
        self.accounts = accounts
        self._change = change
        self._note = note
        self._call = call

    @property
    def lists(self) -> ListStore:
        if self._lists is None:
            if self.accounts is None:
                raise AdminError("internal: no store to manage lists in")
            self._lists = ListStore(self.accounts.db)
        return self._lists

    async def _check_accounts(self, values: dict[str, Any]) -> None:
        for key in ("owner", "archive"):
            who = values.get(key)
            if who:
                name, _at, domain = str(who).rpartition("@")
                if await self.accounts.get_account(name, domain) is None:
                    raise NotFound(f"{key} {who}: no such account")

    async def all(self, domain: Optional[str] = None) -> list[MailingList]:
        """Every list (of ``domain``, which must exist), sorted by address."""
        if domain is not None and await self.accounts.get_domain(domain) is None:
            raise NotFound(f"domain {domain} does not exist")
        return list(await self.lists.list_lists(domain))

    async def get(self, address: str) -> MailingList:
        lst = await self.lists.get_list(address)
        if lst is None:
            raise NotFound(f"list {address} does not exist")
        return lst

    async def add(self, address: str, values: dict[str, Any]) -> MailingList:
        await self._check_accounts(values)
        await self.lists.add_list(address, values)
        lst = await self.get(address)
        await self._change("lists", f"list {lst.address} created")
        return lst

    async def set(self, address: str, values: dict[str, Any]) -> MailingList:
        await self.get(address)
        await self._check_accounts(values)
        lst: MailingList = await self.lists.set_list(address, values)
        self._note(f"list {lst.address} changed: {', '.join(sorted(values))}")
        return lst

    async def remove(self, address: str) -> None:
        """Remove a list with its subscribers and held posts."""
        await self.lists.remove_list(address)
        await self._change("lists", f"list {address} removed")

    async def subscribers(self, address: str, mode: Optional[str] = None) -> list[Subscriber]:
        return list(await self.lists.subscribers(address, mode))

    async def subscriber_page(
        self, address: str, search: str = "", limit: int = 200
    ) -> tuple[int, int, list[Subscriber]]:
        """(in all, matching ``search``, the first ``limit`` matching by address)."""
        page: tuple[int, int, list[Subscriber]] = await self.lists.subscriber_page(
            address, search, limit
        )
        return page

    async def subscribe(
        self, address: str, who: str, mode: str = "feed", real_name: str = ""
    ) -> Subscriber:
        """Subscribe (no confirmation: the administrator vouches) or change the mode."""
        old = await self.lists.get_subscriber(address, who)
        sub = Subscriber(who, check_mode(mode), real_name=real_name)
        if old is not None:
            sub = Subscriber(
                who,
                check_mode(mode),
                old.state,
                old.bounces,
                old.first_bounce,
                old.suspended_at,
                real_name or old.real_name,
            )
        await self.lists.put_subscribers(address, [sub])
        self._note(f"{who} subscribed to {address} ({sub.mode})")
        return sub

    async def unsubscribe(self, address: str, who: str) -> None:
        if not await self.lists.remove_subscriber(address, who):
            raise NotFound(f"{who} is not subscribed to {address}")
        self._note(f"{who} unsubscribed from {address}")

    async def import_csv(self, address: str, text: str, replace: bool) -> int:
        """Add (``replace``: set) the subscribers of a CSV text (ValueError names the line);
        parsed in the database's thread (WebAdmin's import runs in the server)."""
        n: int = await self.lists.import_csv(address, text, replace=replace)
        self._note(
            f"{n} subscriber(s) imported into {address}" + (" (replacing)" if replace else "")
        )
        return n

    async def export_csv(self, address: str) -> str:
        return await self.lists.subscribers_csv(address)  # built in the database's thread

    async def held(self, address: str) -> list[StoredMessage]:
        return await self.lists.kept(address, HELD)

    async def decide(
        self, address: str, msg_id: str, approve: bool, reason: Optional[str] = None
    ) -> None:
        """Approve (distribute) or reject (tell the poster) a held post; the server does it."""
        await self.get(address)
        if self._call is None:
            raise ServerDown("the server is not running")
        await self._call("list-decide", list=address, id=msg_id, approve=approve, reason=reason)
        self._note(f"held post {msg_id} of {address} {'approved' if approve else 'rejected'}")
