"""``cgtwist-admin`` groups ``domain``, ``account``, ``alias``, ``settings`` and ``node``.

Owns only their command-line edge: the arguments of each action and how its result is
printed. Every operation is a method of ``cgtwist.admin.Admin`` (``ctx.admin``), which
WebAdmin calls too; the framework (Context, the store, the control socket, exit statuses) is
cgtwist.cli, which registers this module first among its plugins.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any, Optional

from cgtwist import cli_accounts
from cgtwist import settings as dynamic
from cgtwist.admin.operations import services_list
from cgtwist.storage.store import SERVICES

if TYPE_CHECKING:  # the CLI imports this module; no import back at run time
    from cgtwist.cli import Context


def _password(ctx: Context, args: argparse.Namespace) -> Optional[str]:
    """The password from --password or --password-stdin; None: generate one (the operation
    returns it and the handler prints it once the change succeeded)."""
    if args.password is not None:
        if not args.password:
            ctx.fail("the password must not be empty")
        return str(args.password)
    if args.password_stdin:
        line = ctx.stdin.readline().rstrip("\r\n")
        if not line:
            ctx.fail("no password on standard input")
        return line
    return None


# ---- domain ---------------------------------------------------------------------------------


async def domain_add(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.add_domain(
        args.name, services=services_list(args.services), alias_of=args.alias_of
    )


async def domain_list(ctx: Context, args: argparse.Namespace) -> None:
    for info in await ctx.admin.domains():
        extra = f"  (aliases: {', '.join(info['aliases'])})" if info["aliases"] else ""
        main = "  [main]" if info["main"] else ""
        ctx.out.write(f"{info['name']}{main}{extra}\n")


async def domain_show(ctx: Context, args: argparse.Namespace) -> None:
    info = await ctx.accounts.get_domain(args.name)
    if info is None:
        ctx.fail(f"domain {args.name} does not exist")
    ctx.out.write(json.dumps(info, indent=2, sort_keys=True) + "\n")


async def domain_set(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.set_domain(
        args.name, services=services_list(args.services), enabled=args.enabled
    )


async def domain_remove(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.remove_domain(args.name, force=args.force)


# ---- account --------------------------------------------------------------------------------


async def account_add(ctx: Context, args: argparse.Namespace) -> None:
    name, domain = ctx.address(args.address)
    password = _password(ctx, args) if args.password_hash is None else None
    generated = await ctx.admin.add_account(
        name,
        domain,
        password,
        password_hash=args.password_hash,
        real_name=args.real_name or "",
        services=services_list(args.services),
        admin=args.admin,
        enabled=not args.disabled,
    )
    if generated:
        ctx.out.write(f"password for {name}@{domain}: {generated}\n")


async def account_list(ctx: Context, args: argparse.Namespace) -> None:
    for info in await ctx.admin.accounts(args.domain):
        flags = [
            f
            for f, on in (
                ("disabled", not info["enabled"]),
                ("service", info["kind"] != "user"),
                ("admin", bool(info["settings"].get("admin"))),
            )
            if on
        ]
        tail = f"  [{', '.join(flags)}]" if flags else ""
        real = f"  {info['real_name']}" if info["real_name"] else ""
        ctx.out.write(f"{info['address']}{real}{tail}\n")


async def account_show(ctx: Context, args: argparse.Namespace) -> None:
    name, domain = ctx.address(args.address)
    info = await ctx.admin.account(name, domain)
    # usage counted from the Maildir in a thread (what is on disk, whether or not the
    # server runs) beside the quota settings in force: cgtwist.admin.quota
    info["quota"] = (await ctx.admin.quota.report(name, domain)).as_dict()
    ctx.out.write(json.dumps(info, indent=2, sort_keys=True) + "\n")


async def account_remove(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.remove_account(*ctx.address(args.address))


async def account_passwd(ctx: Context, args: argparse.Namespace) -> None:
    name, domain = ctx.address(args.address)
    password = _password(ctx, args) if args.password_hash is None else None
    generated = await ctx.admin.set_password(
        name, domain, password, password_hash=args.password_hash
    )
    if generated:
        ctx.out.write(f"password for {name}@{domain}: {generated}\n")


async def account_set(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.set_account(
        *ctx.address(args.address),
        real_name=args.real_name,
        services=services_list(args.services),
        enabled=args.enabled,
    )


# ---- alias ----------------------------------------------------------------------------------


async def alias_add(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.add_alias(*ctx.address(args.alias), args.target)


async def alias_remove(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.remove_alias(*ctx.address(args.alias))


async def alias_list(ctx: Context, args: argparse.Namespace) -> None:
    for alias, target in await ctx.admin.aliases(args.domain):
        ctx.out.write(f"{alias} -> {target}\n")


# ---- settings -------------------------------------------------------------------------------


def _scope(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    """The --account/--domain/--node target as keyword arguments of the settings operations."""
    if getattr(args, "account", None):
        return {"account": ctx.address(args.account)}
    if getattr(args, "domain", None):
        return {"domain": args.domain}
    return {"node": getattr(args, "node", None)}


async def settings_show(ctx: Context, args: argparse.Namespace) -> None:
    if args.effective:
        return await cli_accounts.settings_show_effective(ctx, args)
    if args.domain or args.account:
        scope = _scope(ctx, args)
        values = await ctx.admin.scoped_settings(scope.get("domain"), scope.get("account"))
        if args.key is not None:
            if args.key not in values:
                ctx.fail(f"no setting {args.key}")
            values = {args.key: values[args.key]}
        for key in sorted(values):
            ctx.out.write(f"{key} = {json.dumps(values[key])}\n")
        return
    for view in await ctx.admin.server_settings(args.node or ctx.config.node, args.key):
        mark = "  (default)" if view.default else ""
        if view.node is not None:
            mark += f"  (node {view.node})"
        ctx.out.write(f"{view.key} = {json.dumps(view.value)}{mark}\n")
        if args.key is not None:
            ctx.out.write(f"  {view.doc}\n")


async def settings_set(ctx: Context, args: argparse.Namespace) -> None:
    value = dynamic.parse_cli_value(args.value)
    await ctx.admin.set_setting(args.key, value, **_scope(ctx, args))


async def settings_unset(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.unset_setting(args.key, **_scope(ctx, args))


# ---- nodes ----------------------------------------------------------------------------------


async def node_list(ctx: Context, args: argparse.Namespace) -> None:
    """Every node that started on this database or has settings, with its node settings."""
    for node in await ctx.admin.nodes():
        started = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(node["started"]))
            if node["started"]
            else "never started"
        )
        mark = "  (this node)" if node["name"] == ctx.config.node else ""
        ctx.out.write(f"{node['name']}  {node['hostname'] or '-'}  {started}{mark}\n")
        for key in sorted(node["settings"]):
            ctx.out.write(f"  {key} = {json.dumps(node['settings'][key])}\n")


async def node_remove(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.admin.remove_node(args.name)


# ---- the parser -----------------------------------------------------------------------------


def _add_password_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password", help="the password (visible in the process list: prefer stdin)")
    g.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    g.add_argument(
        "--password-hash",
        metavar="HASH",
        help="import a hash from another server: $argon2id$... or "
        "{SHA512-CRYPT}$6$... (upgraded to argon2id at the next login)",
    )


def _add_enable_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    g.add_argument("--disable", dest="enabled", action="store_const", const=False)


def register(groups: Any) -> None:
    """Add the domain, account, alias, settings and node groups (called by
    cgtwist.cli.build_parser)."""
    svc = f"comma-separated services out of {','.join(SERVICES)}"

    g = groups.add_parser("domain", help="domains").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = g.add_parser("add", help="create a domain")
    p.add_argument("name")
    p.add_argument("--services", help=svc + " (default: all)")
    p.add_argument("--alias-of", metavar="DOMAIN", help="make NAME another name of DOMAIN")
    p.set_defaults(handler=domain_add)
    g.add_parser("list", help="list domains").set_defaults(handler=domain_list)
    p = g.add_parser("show", help="show a domain")
    p.add_argument("name")
    p.set_defaults(handler=domain_show)
    p = g.add_parser("set", help="change a domain's services or enabled flag")
    p.add_argument("name")
    p.add_argument("--services", help=svc)
    _add_enable_options(p)
    p.set_defaults(handler=domain_set)
    p = g.add_parser("remove", help="remove a domain (or a domain alias)")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="also remove its accounts and aliases")
    p.set_defaults(handler=domain_remove)

    g = groups.add_parser("account", help="accounts").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = g.add_parser("add", help="create an account (password generated unless given)")
    p.add_argument("address", help="name@domain, name%%domain or name (main domain)")
    _add_password_options(p)
    p.add_argument("--real-name", default="")
    p.add_argument("--services", help=svc + " (default: all)")
    p.add_argument("--disabled", action="store_true", help="create it unable to log in")
    p.add_argument("--admin", action="store_true", help="make it a server administrator")
    p.set_defaults(handler=account_add)
    p = g.add_parser("list", help="list a domain's accounts")
    p.add_argument("domain", nargs="?", help="default: the main domain")
    p.set_defaults(handler=account_list)
    p = g.add_parser("show", help="show an account")
    p.add_argument("address")
    p.set_defaults(handler=account_show)
    p = g.add_parser("remove", help="remove an account (its mail stays on disk)")
    p.add_argument("address")
    p.set_defaults(handler=account_remove)
    p = g.add_parser("passwd", help="set an account's password (generated unless given)")
    p.add_argument("address")
    _add_password_options(p)
    p.set_defaults(handler=account_passwd)
    p = g.add_parser("set", help="change real name, services or enabled flag")
    p.add_argument("address")
    p.add_argument("--real-name")
    p.add_argument("--services", help=svc)
    _add_enable_options(p)
    p.set_defaults(handler=account_set)

    g = groups.add_parser("alias", help="account aliases").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = g.add_parser("add", help="make ALIAS deliver to TARGET")
    p.add_argument("alias")
    p.add_argument("target", help="an address; a bare name is in the alias's domain")
    p.set_defaults(handler=alias_add)
    p = g.add_parser("remove", help="remove an alias")
    p.add_argument("alias")
    p.set_defaults(handler=alias_remove)
    p = g.add_parser("list", help="list aliases")
    p.add_argument("domain", nargs="?", help="default: every domain")
    p.set_defaults(handler=alias_list)

    g = groups.add_parser("settings", help="dynamic settings").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    for action, fn, extra in (
        ("show", settings_show, "?"),
        ("set", settings_set, "value"),
        ("unset", settings_unset, None),
    ):
        p = g.add_parser(action, help=f"{action} server (or --domain/--account) settings")
        if extra == "?":
            p.add_argument("key", nargs="?")
            p.add_argument(
                "--effective",
                action="store_true",
                help="with --account or --domain: every account setting in force and where "
                "it comes from (default, server, domain, account)",
            )
        else:
            p.add_argument("key")
        if extra == "value":
            p.add_argument("value", help="JSON (bare words are strings)")
        t = p.add_mutually_exclusive_group()
        t.add_argument("--domain", help="a domain's settings instead of the server's")
        t.add_argument("--account", help="an account's settings instead of the server's")
        t.add_argument(
            "--node",
            help="the settings of node NODE instead of this server's "
            "([server] node); only node settings ("
            + ", ".join(sorted(dynamic.NODE_SETTINGS))
            + ") differ between nodes",
        )
        p.set_defaults(handler=fn)

    g = groups.add_parser("node", help="nodes sharing the database").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    g.add_parser("list", help="list nodes and their node settings").set_defaults(handler=node_list)
    p = g.add_parser("remove", help="forget a node that left the cluster (and its settings)")
    p.add_argument("name")
    p.set_defaults(handler=node_remove)
