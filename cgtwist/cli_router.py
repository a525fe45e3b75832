"""``cgtwist-admin router``: show, replace and test the Router table kept in the store.

Owns only the command-line edge of the Router: reading the table file and printing. Validating,
the Relay: warnings, storing and testing are cgtwist.admin.router (WebAdmin's Router page calls
the same); routing itself is cgtwist.core.routing.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cgtwist.admin.router import TableError

PROG = "cgtwist-admin"

if TYPE_CHECKING:  # the CLI imports this module; no import back at run time
    from cgtwist.cli import Context


async def router_show(ctx: Context, args: argparse.Namespace) -> None:
    """Print the stored table exactly as it was set (comments included)."""
    text = await ctx.admin.router.table()
    if not text.strip():
        ctx.err.write(f"{PROG}: the Router table is empty\n")
        return
    ctx.out.write(text if text.endswith("\n") else text + "\n")


async def router_set(ctx: Context, args: argparse.Namespace) -> None:
    """Validate FILE, warn about Relay: records, store it and tell the server."""
    text = ctx.read(args.file)
    try:
        stored = await ctx.admin.router.set_table(text)
    except TableError as e:
        ctx.fail(f"{args.file}:{e.line}: {e.reason}")
    for line, warning in stored.warnings:
        ctx.err.write(f"{PROG}: warning: {args.file}:{line}: {warning}\n")
    ctx.out.write(f"router table stored: {stored.records} record(s)\n")


async def router_test(ctx: Context, args: argparse.Namespace) -> int:
    """Route ADDRESS as the server would and print every matched record, hop and the route."""
    text = None
    if args.table:
        text = ctx.read(args.table)
    try:
        result = await ctx.admin.router.test(args.address, access=args.access, text=text)
    except TableError as e:
        ctx.fail(f"{args.table}:{e.line}: {e.reason}")
    ctx.out.write(f"routing {args.address} ({result.kind})\n")
    for step in result.steps:
        ctx.out.write(f"  {step}\n")
    ctx.out.write(f"{result.route}" + "".join(f"  [{n}]" for n in result.notes) + "\n")
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
