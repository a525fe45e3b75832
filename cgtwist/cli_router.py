"""``cgtwist-admin router``: show, replace and test the Router table kept in the store.

Owns only the command-line edge of the Router: reading the table file, validating it with
cgtwist.router (line-numbered errors), warning about Relay: records, storing it as the dynamic
setting ``router.table`` and telling the running server. Routing itself is cgtwist.core.routing.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, cast

from cgtwist import router
from cgtwist.core.routing import Routing
from cgtwist.errors import MailError
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.lists import ListStore

PROG = "cgtwist-admin"
SETTING = "router.table"

if TYPE_CHECKING:  # the CLI imports this module; no import back at run time
    from cgtwist.cli import Context


def _read(ctx: Context, path: str) -> str:
    """The file's text (``-``: standard input); unreadable or not UTF-8 is a one-line error."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        ctx.fail(f"{path}: cannot read: {e.strerror or e}")
    except UnicodeDecodeError as e:
        ctx.fail(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}")


def _parse(ctx: Context, path: str, text: str) -> router.Table:
    try:
        return router.parse_table(text)
    except router.RouterParseError as e:
        ctx.fail(f"{path}:{e.line}: {e.reason}")


async def router_show(ctx: Context, args: argparse.Namespace) -> None:
    """Print the stored table exactly as it was set (comments included)."""
    text = (await ctx.accounts.get_settings()).get(SETTING, "") or ""
    if not text.strip():
        ctx.err.write(f"{PROG}: the Router table is empty\n")
        return
    ctx.out.write(text if text.endswith("\n") else text + "\n")


async def router_set(ctx: Context, args: argparse.Namespace) -> None:
    """Validate FILE, warn about Relay: records, store it and tell the server."""
    text = _read(ctx, args.file)
    table = _parse(ctx, args.file, text)
    for record in table.relay_records():
        ctx.err.write(
            f"{PROG}: warning: {args.file}:{record.line}: {record.relay}: record is "
            f"dangerous: relays regardless of source: {record.render()}\n"
        )
    await ctx.accounts.set_setting(SETTING, text)
    ctx.out.write(f"router table stored: {len(table.records)} record(s)\n")
    ctx.notify("reload", what="router")


async def router_test(ctx: Context, args: argparse.Namespace) -> int:
    """Route ADDRESS as the server would and print every matched record, hop and the route."""
    overrides = dict(await ctx.accounts.get_settings())
    if args.table:
        text = _read(ctx, args.table)
        _parse(ctx, args.table, text)
        overrides[SETTING] = text
    routing = Routing(
        cast(Any, ctx.accounts),
        SettingsHolder(Settings(overrides)),
        ctx.config.main_domain,
        lists=ListStore(db) if (db := getattr(ctx.accounts, "db", None)) is not None else None,
    )
    kind = "access" if args.access else "mail"
    try:
        result = await routing.explain(args.address, kind)
    except MailError as e:
        ctx.fail(
            f"cannot route {args.address}: {e.reply()}" + (f" ({e.detail})" if e.detail else "")
        )
    ctx.out.write(f"routing {args.address} ({kind})\n")
    for step in result.steps:
        ctx.out.write(f"  {step}\n")
    route = result.route
    notes = [
        n
        for n, on in (
            ("relay: a Relay: record matched", route.relay),
            (f"error: {route.error}", bool(route.error)),
        )
        if on
    ]
    ctx.out.write(f"{route}" + "".join(f"  [{n}]" for n in notes) + "\n")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``router`` group to cgtwist-admin (called by cgtwist.cli.build_parser)."""
    g = subparsers.add_parser("router", help="the Router table").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    g.add_parser("show", help="print the stored Router table").set_defaults(handler=router_show)
    p = g.add_parser("set", help="validate FILE and make it the Router table ('-' = stdin)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=router_set)
    p = g.add_parser("test", help="show how ADDRESS is routed: records, hops, final route")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--access", action="store_true", help="route it as a login name (Access: records)"
    )
    p.add_argument("--table", metavar="FILE", help="try this table file instead of the stored one")
    p.set_defaults(handler=router_test)
