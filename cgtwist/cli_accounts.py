"""cgtwist-admin's account extras: ``settings show --effective`` and the ``forwarder`` and
``group`` commands.

Owns only the command line: ``settings show --effective`` renders
``AccountStore.get_effective_settings`` (the schema and its inheritance are
cgtwist.account_settings), one line per setting, ``name = value  (source)``; ``forwarder`` and
``group`` call the administration operations (cgtwist.admin: the store's Forwarder and Group
operations, each change logged and told to the running server like any other).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cgtwist import account_settings

if TYPE_CHECKING:  # the CLI imports this module; no import back at run time
    from cgtwist.cli import Context


async def settings_show_effective(ctx: Context, args: argparse.Namespace) -> None:
    """Print the effective settings of ``--account`` (or what ``--domain``'s accounts inherit)."""
    if args.account:
        name, domain = ctx.address(args.account)
        if await ctx.accounts.get_account(name, domain) is None:
            ctx.fail(f"account {name}@{domain} does not exist")
        eff = await ctx.accounts.get_effective_settings(name, domain)
    elif args.domain:
        eff = await ctx.accounts.get_effective_settings(args.domain)
    else:
        ctx.fail("--effective needs --account or --domain")
    keys = sorted(eff.sources)
    if args.key is not None:
        if args.key not in eff.sources:
            known = ", ".join(sorted(account_settings.SCOPED))
            ctx.fail(f"unknown account setting {args.key!r} (known: {known})")
        keys = [args.key]
    for key in keys:
        value, source = eff.sources[key]
        ctx.out.write(f"{key} = {json.dumps(value)}  ({source})\n")
        if args.key is not None:
            ctx.out.write(f"  {account_settings.SCOPED[key].doc}\n")


async def group_add(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.add_group(args.kind, *ctx.address(args.address), args.targets)


async def group_set(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.set_group(args.kind, *ctx.address(args.address), args.targets)


async def group_remove(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.remove_group(args.kind, *ctx.address(args.address))


async def group_list(ctx: Context, args: argparse.Namespace) -> None:
    for address, targets in await ctx.admin.groups(args.kind, args.domain):
        ctx.out.write(f"{address} -> {', '.join(targets)}\n")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``forwarder`` and ``group`` groups to cgtwist-admin (cgtwist.cli.build_parser)."""
    for kind, what, noun in (
        (
            "forwarder",
            "names that forward mail to other addresses, accepted from anyone",
            "ADDRESS",
        ),
        ("group", "names whose mail is delivered to each member", "MEMBER"),
    ):
        g = subparsers.add_parser(kind, help=what).add_subparsers(
            dest="action", metavar="ACTION", required=True
        )
        p = g.add_parser("add", help=f"create NAME@DOMAIN sending to each {noun}")
        p.add_argument("address", metavar="NAME@DOMAIN")
        p.add_argument("targets", metavar=noun, nargs="+")
        p.set_defaults(handler=group_add, kind=kind)
        p = g.add_parser("set", help=f"replace the {noun}s of NAME@DOMAIN")
        p.add_argument("address", metavar="NAME@DOMAIN")
        p.add_argument("targets", metavar=noun, nargs="+")
        p.set_defaults(handler=group_set, kind=kind)
        p = g.add_parser("remove", help=f"remove the {kind} NAME@DOMAIN")
        p.add_argument("address", metavar="NAME@DOMAIN")
        p.set_defaults(handler=group_remove, kind=kind)
        p = g.add_parser("list", help=f"list {kind}s and their {noun}s")
        p.add_argument("domain", nargs="?", help="default: every domain")
        p.set_defaults(handler=group_list, kind=kind)
