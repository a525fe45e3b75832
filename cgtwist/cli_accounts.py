"""``cgtwist-admin settings show --effective``: an account's settings in force and their source.

Owns only the command-line rendering of ``AccountStore.get_effective_settings`` (the schema and
its inheritance are cgtwist.account_settings): one line per setting, ``name = value  (source)``,
the source being where the value comes from (default, server, domain, account).
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
