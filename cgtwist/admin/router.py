"""The Router table as an administrator edits it: show, validate and store, test an address.

Owns the table's life as the dynamic setting ``router.table``: parsing it with cgtwist.router
(errors with their line), the warning about Relay: records, and "test this address" through
the same cgtwist.core.routing the server routes with. It must not read files or print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, cast

from cgtwist import router
from cgtwist.admin.errors import AdminError
from cgtwist.core.routing import Routing
from cgtwist.errors import MailError
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.lists import ListStore
from cgtwist.types import Route

SETTING = "router.table"


class TableError(AdminError):
    """The table does not parse; ``line`` is the 1-based line at fault."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Stored:
    """What storing a table did: how many records, and a warning per Relay: record."""

    records: int
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (line, text)


@dataclass(frozen=True)
class Explanation:
    """How an address routes: each record and hop on the way, the route, notes about it."""

    address: str
    kind: str  # "mail" or "access"
    steps: list[router.RouteStep]  # printable
    route: Route
    notes: list[str]


def parse(text: str) -> router.Table:
    try:
        return router.parse_table(text)
    except router.RouterParseError as e:
        raise TableError(e.line, e.reason) from None


class RouterAdmin:
    """The Router table of one store; ``change(what, text)`` logs and tells the server."""

    def __init__(
        self,
        store: Any,
        main_domain: str,
        change: Callable[[str, str], Awaitable[Optional[dict[str, Any]]]],
    ) -> None:
        self.store = store
        self.main_domain = main_domain
        self._change = change

    async def table(self) -> str:
        """The stored table exactly as it was set (comments included); "" when empty."""
        return str((await self.store.get_settings()).get(SETTING, "") or "")

    async def set_table(self, text: str) -> Stored:
        """Validate ``text`` (TableError with the line), store it and tell the server."""
        table = parse(text)
        warnings = [
            (
                record.line,
                f"{record.relay}: record is dangerous: relays regardless of source: "
                f"{record.render()}",
            )
            for record in table.relay_records()
        ]
        await self.store.set_setting(SETTING, text)
        await self._change("router", f"Router table set: {len(table.records)} record(s)")
        return Stored(len(table.records), warnings)

    async def test(
        self, address: str, access: bool = False, text: Optional[str] = None
    ) -> Explanation:
        """Route ``address`` as the server would, with the stored table or ``text``.

        ``access``: as a login name (Access: records). A refusal is an AdminError carrying the
        SMTP reply the server would give."""
        overrides = dict(await self.store.get_settings())
        if text is not None:
            parse(text)
            overrides[SETTING] = text
        db = getattr(self.store, "db", None)
        routing = Routing(
            cast(Any, self.store),
            SettingsHolder(Settings(overrides)),
            self.main_domain,
            lists=ListStore(db) if db is not None else None,
        )
        kind = "access" if access else "mail"
        try:
            result = await routing.explain(address, kind)
        except MailError as e:
            raise AdminError(
                f"cannot route {address}: {e.reply()}" + (f" ({e.detail})" if e.detail else "")
            ) from None
        route = result.route
        # Two things make a route relay: a Relay: record, or a forwarder (cgtwist.router)
        forwarded = any(step.action == "forwarder" for step in result.steps)
        why = "a forwarder's route relays every sender" if forwarded else "a Relay: record matched"
        notes = [
            n
            for n, on in (
                (f"relay: {why}", route.relay),
                (f"error: {route.error}", bool(route.error)),
            )
            if on
        ]
        return Explanation(address, kind, list(result.steps), route, notes)
