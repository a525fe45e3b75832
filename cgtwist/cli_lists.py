"""``cgtwist-admin list``: mailing lists, their subscribers and held posts.

Owns the command-line edge of the LIST module: ``add|remove|show|set|subscribers|subscribe|
unsubscribe|import|export|held|approve|reject``. The operations are ``ListAdmin`` methods over
the list and account stores, returning data, so a web or admin service layer can call the same
ones; the handlers below only parse arguments and print. Changes in the store are followed by a
``reload`` (the Router forgets its cached answers); approve and reject are done by the running
server (``list-decide``), whose LIST agent distributes through the spool.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Optional

from cgtwist.errors import NotFound
from cgtwist.lists import csvio
from cgtwist.lists.model import FIELDS, MailingList, Subscriber, check_mode
from cgtwist.settings import parse_cli_value
from cgtwist.storage.lists import HELD, ListStore, StoredMessage

if TYPE_CHECKING:  # the CLI imports this module; no import back at run time
    from cgtwist.cli import Context


class ListAdmin:
    """The administrator's list operations over ``lists`` (ListStore) and ``accounts``."""

    def __init__(self, lists: ListStore, accounts: Any) -> None:
        self.lists = lists
        self.accounts = accounts

    async def _check_accounts(self, values: dict[str, Any]) -> None:
        for key in ("owner", "archive"):
            who = values.get(key)
            if who:
                name, _at, domain = str(who).rpartition("@")
                if await self.accounts.get_account(name, domain) is None:
                    raise NotFound(f"{key} {who}: no such account")

    async def add(self, address: str, values: dict[str, Any]) -> MailingList:
        await self._check_accounts(values)
        await self.lists.add_list(address, values)
        return await self.get(address)

    async def get(self, address: str) -> MailingList:
        lst = await self.lists.get_list(address)
        if lst is None:
            raise NotFound(f"list {address} does not exist")
        return lst  # type: ignore[no-any-return]

    async def set(self, address: str, values: dict[str, Any]) -> MailingList:
        await self.get(address)
        await self._check_accounts(values)
        return await self.lists.set_list(address, values)  # type: ignore[no-any-return]

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
        return sub

    async def import_csv(self, address: str, text: str, replace: bool) -> int:
        return await self.lists.put_subscribers(  # type: ignore[no-any-return]
            address, csvio.parse(text), replace=replace
        )

    async def export_csv(self, address: str) -> str:
        return csvio.export(await self.lists.subscribers(address))

    async def held(self, address: str) -> list[StoredMessage]:
        return await self.lists.kept(address, HELD)  # type: ignore[no-any-return]


def _admin(ctx: Context) -> ListAdmin:
    return ListAdmin(ListStore(ctx.accounts.db), ctx.accounts)


def _values(ctx: Context, pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq:
            ctx.fail(f"expected key=value, not {pair!r} (keys: {', '.join(sorted(FIELDS))})")
        value = parse_cli_value(text)
        if FIELDS.get(key.strip(), (str,))[0] is str and not isinstance(value, str):
            value = text  # a tag "[1]" or a footer that looks like JSON stays text
        out[key.strip()] = value
    return out


def _show(ctx: Context, lst: MailingList) -> None:
    ctx.out.write(f"{lst.address}\n")
    for key, value in lst.fields().items():
        ctx.out.write(f"  {key}: {value!r}\n" if isinstance(value, str) else f"  {key}: {value}\n")


async def list_add(ctx: Context, args: argparse.Namespace) -> None:
    values = _values(ctx, args.set or [])
    for key in ("owner", "description", "policy"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    lst = await _admin(ctx).add(args.list, values)
    ctx.out.write(f"list {lst.address} created\n")
    ctx.notify("reload", what="lists")


async def list_remove(ctx: Context, args: argparse.Namespace) -> None:
    await ListStore(ctx.accounts.db).remove_list(args.list)
    ctx.out.write(f"list {args.list} removed\n")
    ctx.notify("reload", what="lists")


async def list_show(ctx: Context, args: argparse.Namespace) -> None:
    admin = _admin(ctx)
    if args.list:
        lst = await admin.get(args.list)
        _show(ctx, lst)
        subs = await admin.lists.subscribers(lst.address)
        held = await admin.held(lst.address)
        ctx.out.write(f"  subscribers: {len(subs)}\n  held: {len(held)}\n")
        return
    for lst in await admin.lists.list_lists(args.domain):
        ctx.out.write(f"{lst.address}  {lst.policy}  {lst.description}\n")


async def list_set(ctx: Context, args: argparse.Namespace) -> None:
    _show(ctx, await _admin(ctx).set(args.list, _values(ctx, args.pairs)))


async def list_subscribers(ctx: Context, args: argparse.Namespace) -> None:
    for s in await _admin(ctx).lists.subscribers(args.list, args.mode):
        extra = f"  bounces={s.bounces}" if s.bounces else ""
        ctx.out.write(f"{s.address}  {s.mode}  {s.state}{extra}\n")


async def list_subscribe(ctx: Context, args: argparse.Namespace) -> None:
    sub = await _admin(ctx).subscribe(args.list, args.address, args.mode, args.name or "")
    ctx.out.write(f"{sub.address} subscribed to {args.list} ({sub.mode})\n")


async def list_unsubscribe(ctx: Context, args: argparse.Namespace) -> None:
    if not await ListStore(ctx.accounts.db).remove_subscriber(args.list, args.address):
        ctx.fail(f"{args.address} is not subscribed to {args.list}")
    ctx.out.write(f"{args.address} unsubscribed from {args.list}\n")


async def list_import(ctx: Context, args: argparse.Namespace) -> None:
    try:
        if args.file == "-":
            text = ctx.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        ctx.fail(f"{args.file}: cannot read: {e}")
    try:
        n = await _admin(ctx).import_csv(args.list, text, args.replace)
    except ValueError as e:
        ctx.fail(f"{args.file}: {e}")
    ctx.out.write(f"{n} subscriber(s) imported into {args.list}\n")


async def list_export(ctx: Context, args: argparse.Namespace) -> None:
    text = await _admin(ctx).export_csv(args.list)
    if args.file and args.file != "-":
        with open(args.file, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        ctx.out.write(text)


async def list_held(ctx: Context, args: argparse.Namespace) -> None:
    for m in await _admin(ctx).held(args.list):
        ctx.out.write(f"{m.id}  {int(m.created)}  {m.sender}  {m.subject}\n")


async def _decide(ctx: Context, args: argparse.Namespace, approve: bool) -> None:
    await _admin(ctx).get(args.list)
    reason: Optional[str] = getattr(args, "reason", None)
    ctx.call("list-decide", list=args.list, id=args.id, approve=approve, reason=reason)
    ctx.out.write(f"{args.id} {'approved' if approve else 'rejected'}\n")


async def list_approve(ctx: Context, args: argparse.Namespace) -> None:
    await _decide(ctx, args, True)


async def list_reject(ctx: Context, args: argparse.Namespace) -> None:
    await _decide(ctx, args, False)


def register(subparsers: Any) -> None:
    """Add the ``list`` group to cgtwist-admin (called by cgtwist.cli.build_parser)."""
    g = subparsers.add_parser("list", help="mailing lists (the LIST module)").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    keys = ", ".join(sorted(FIELDS))

    def cmd(name: str, handler: Any, help: str, *, list_arg: bool = True) -> Any:
        p = g.add_parser(name, help=help)
        if list_arg:
            p.add_argument("list", metavar="LIST", help="name@domain")
        p.set_defaults(handler=handler)
        return p

    p = cmd("add", list_add, "create a list in one of our domains")
    p.add_argument("--owner", help="the owner's account (local@domain)")
    p.add_argument("--description")
    p.add_argument("--policy", choices=("anyone", "subscribers", "moderated"))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"keys: {keys}")
    cmd("remove", list_remove, "remove a list, its subscribers and held posts")
    p = cmd("show", list_show, "show a list's settings (no LIST: every list)", list_arg=False)
    p.add_argument("list", metavar="LIST", nargs="?")
    p.add_argument("--domain")
    p = cmd("set", list_set, "change settings of a list")
    p.add_argument("pairs", nargs="+", metavar="KEY=VALUE", help=f"keys: {keys}")
    p = cmd("subscribers", list_subscribers, "print the subscribers")
    p.add_argument("--mode", choices=("feed", "digest", "index", "null", "banned"))
    p = cmd("subscribe", list_subscribe, "subscribe ADDRESS (no confirmation) or change its mode")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--mode", default="feed", choices=("feed", "digest", "index", "null", "banned"))
    p.add_argument("--name", help="the subscriber's real name")
    p = cmd("unsubscribe", list_unsubscribe, "remove ADDRESS from the list")
    p.add_argument("address", metavar="ADDRESS")
    p = cmd("import", list_import, "add subscribers from a CSV file ('-' = stdin)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--replace", action="store_true", help="the file is the whole list")
    p = cmd("export", list_export, "write the subscribers as CSV (to FILE or stdout)")
    p.add_argument("file", metavar="FILE", nargs="?")
    cmd("held", list_held, "print the posts held for moderation")
    p = cmd("approve", list_approve, "distribute a held post (the server must run)")
    p.add_argument("id", metavar="ID")
    p = cmd("reject", list_reject, "reject a held post; its poster is told")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason")
