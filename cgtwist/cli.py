"""``cgtwist-admin``: the administrator's command line. Change the store, then tell the server.

Usage: ``cgtwist-admin [--config FILE] [--base-dir DIR] GROUP ACTION ...`` with ``init`` and
the groups ``domain``, ``account``, ``alias`` and ``settings`` defined here. It reads the bootstrap config
(``--config``, else ``$CGTWIST_CONFIG``, else defaults), opens the store (applying migrations),
makes the change and sends ``reload`` over the control socket so the running server applies it at
once; with no server running the change applies at its next start. Only ``init`` (and the
server's first start) creates a store: any other command on a base directory or database
without one says "no store at ..." and exits 1, so a mistyped ``--base-dir`` never leaves a
new store with an unknown postmaster password behind.
Errors are one line on stderr and exit status 1 (usage errors: 2); never a traceback.

Extending: a module ``cgtwist/cli_<group>.py`` listed in ``PLUGINS`` defines
``register(subparsers)``, which adds its group with ``subparsers.add_parser(...)`` and gives each
action ``set_defaults(handler=fn)`` (and ``needs_store=False`` when it only talks to the server).
A handler is ``async def fn(ctx: Context, args: argparse.Namespace) -> int | None`` (None = 0).
``ctx`` holds:

* ``ctx.config``: the ``cgtwist.config.BootstrapConfig``;
* ``ctx.store``: the ``cgtwist.storage.store.AccountStore`` (None with ``needs_store=False``);
* ``ctx.reactor``: the running reactor;
* ``ctx.notify(cmd, **args)``: send one control command; returns the reply dict, or None when
  the server is not running (a note is printed); raises CLIError when the server refuses.
  A reply naming listeners that are not bound prints one line for each; after a ``settings``
  change (which is how listeners change) that is a CLIError too, so the exit status says so;
* ``ctx.call(cmd, **args)``: the same, but a server that is not running is an error
  (``ServerDown``, a CLIError);
* ``ctx.out`` / ``ctx.err`` / ``ctx.stdin``: where to print and read (tests pass StringIO);
* ``ctx.fail(text)`` raises CLIError(text);
* ``ctx.created`` / ``ctx.postmaster_password``: for ``init`` (``creates_store=True``), whether
  this command created the store and the postmaster password it generated (None when given
  in ``$CGTWIST_POSTMASTER_PASSWORD`` or nothing was created).

Raise CLIError (or a cgtwist StoreError/ValueError) for a one-line error and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional, Sequence, TextIO

from cgtwist import cli_accounts, control, filemodes
from cgtwist import settings as dynamic
from cgtwist.config import BootstrapConfig, load
from cgtwist.core.auth import parse_login
from cgtwist.errors import ConfigError, StoreError
from cgtwist.storage.database import Database, StoreUnavailable
from cgtwist.storage.engines import SqliteEngine, engine_for_url
from cgtwist.storage.passwords import PasswordHasher, generate_password
from cgtwist.storage.store import SERVICES, AccountStore, open_store

PROG = "cgtwist-admin"
PLUGINS = ("cgtwist.cli_router", "cgtwist.cli_queue", "cgtwist.cli_rules", "cgtwist.cli_accounts")


class CLIError(Exception):
    """A failure to report as one line on stderr with exit status 1."""


class ServerDown(CLIError):
    """Nothing listens on the control socket."""


@dataclass
class Context:
    """What every handler gets (see the module docstring)."""

    config: BootstrapConfig
    store: Optional[AccountStore]
    reactor: Any
    out: TextIO
    err: TextIO
    stdin: TextIO = sys.stdin
    created: bool = False
    postmaster_password: Optional[str] = None

    def fail(self, text: str) -> NoReturn:
        raise CLIError(text)

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send a control command to the running server; its refusal is a CLIError."""
        try:
            reply = control.call(self.config.control_socket, cmd, **args)
        except control.ServerNotRunning:
            raise ServerDown("the server is not running") from None
        except (OSError, ValueError) as e:
            raise CLIError(f"cannot talk to the server: {e}") from None
        if not reply.get("ok"):
            raise CLIError(f"the server refused {cmd}: {reply.get('error', 'no reason given')}")
        return reply

    def notify(self, cmd: str, **args: Any) -> Optional[dict[str, Any]]:
        """Tell a running server about a change; no server: say it applies at the next start."""
        try:
            reply = self.call(cmd, **args)
        except ServerDown:
            self.err.write(
                f"{PROG}: note: the server is not running; the change applies when it starts\n"
            )
            return None
        except CLIError as e:
            raise CLIError(f"changed in the store, but {e}") from None
        unbound = [
            entry
            for entry in reply.get("listeners") or ()
            if isinstance(entry, dict) and entry.get("bound") is False
        ]
        for entry in unbound:
            self.err.write(
                f"{PROG}: listener {entry.get('name', '?')} is not bound: "
                f"{entry.get('error', 'no reason given')}\n"
            )
        if unbound and args.get("what") == "settings":
            raise CLIError(
                f"changed in the store, but {len(unbound)} listener(s) could not "
                "be bound (see above)"
            )
        return reply

    def address(self, text: str) -> tuple[str, str]:
        """An account or alias address: ``name@domain``, ``name%domain`` or ``name``."""
        return parse_login(text, self.config.main_domain)

    @property
    def accounts(self) -> AccountStore:
        if self.store is None:
            raise CLIError("internal: this command has no store")
        return self.store


Handler = Callable[[Context, argparse.Namespace], Any]


def _services(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    return [s for s in text.replace(" ", ",").split(",") if s]


def _password(ctx: Context, args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated): from --password, --password-stdin, or generated.

    The caller prints a generated password once the change succeeded.
    """
    if args.password is not None:
        if not args.password:
            ctx.fail("the password must not be empty")
        return str(args.password), False
    if args.password_stdin:
        line = ctx.stdin.readline().rstrip("\r\n")
        if not line:
            ctx.fail("no password on standard input")
        return line, False
    return generate_password(), True


# ---- init -----------------------------------------------------------------------------------


async def init(ctx: Context, args: argparse.Namespace) -> None:
    main = ctx.accounts.main_domain
    where = engine_for_url(ctx.config.database_url).describe()
    if ctx.created:
        ctx.out.write(f"created the store at {where}\nmain domain: {main}\n")
    else:
        ctx.err.write(f"{PROG}: the store at {where} exists already\n")
    if ctx.postmaster_password is not None:  # a new store, or a new main domain
        ctx.out.write(
            f"created postmaster@{main} (administrator) with password: {ctx.postmaster_password}\n"
        )
    elif ctx.created:
        ctx.out.write(
            f"created postmaster@{main} (administrator) with the password in "
            "$CGTWIST_POSTMASTER_PASSWORD\n"
        )


async def store_exists(config: BootstrapConfig, reactor: Any) -> bool:
    """Whether the configured database holds a cgtwist store, without creating anything.

    SQLite: the file exists (opening it would create it). PostgreSQL: the administrator creates
    the database; the store is its schema (the ``schema_version`` table migrations make).
    """
    engine = engine_for_url(config.database_url)
    if isinstance(engine, SqliteEngine):
        return os.path.exists(engine.path)
    db = Database(config.database_url, reactor, 1, 1)
    try:
        rows = await db.run_interaction(
            "store_exists",
            lambda cur: cur.query(
                "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_version' "
                "AND table_schema = current_schema()"
            ),
            readonly=True,
        )
    finally:
        db.close()
    return bool(rows)


# ---- domain ---------------------------------------------------------------------------------


async def domain_add(ctx: Context, args: argparse.Namespace) -> None:
    if args.alias_of:
        await ctx.accounts.add_domain_alias(args.name, args.alias_of)
    else:
        await ctx.accounts.add_domain(args.name, services=_services(args.services))
    ctx.notify("reload", what="domain")


async def domain_list(ctx: Context, args: argparse.Namespace) -> None:
    for name in await ctx.accounts.list_domains():
        info = await ctx.accounts.get_domain(name)
        extra = f"  (aliases: {', '.join(info['aliases'])})" if info and info["aliases"] else ""
        main = "  [main]" if name == ctx.config.main_domain else ""
        ctx.out.write(f"{name}{main}{extra}\n")


async def domain_show(ctx: Context, args: argparse.Namespace) -> None:
    info = await ctx.accounts.get_domain(args.name)
    if info is None:
        ctx.fail(f"domain {args.name} does not exist")
    ctx.out.write(json.dumps(info, indent=2, sort_keys=True) + "\n")


async def domain_set(ctx: Context, args: argparse.Namespace) -> None:
    await ctx.accounts.update_domain(
        args.name, services=_services(args.services), enabled=args.enabled
    )
    ctx.notify("reload", what="domain")


async def domain_remove(ctx: Context, args: argparse.Namespace) -> None:
    store = ctx.accounts
    if await store.get_domain(args.name) is None and await store.is_local_domain(args.name):
        await store.remove_domain_alias(args.name)
    else:
        await store.remove_domain(args.name, force=args.force)
    ctx.notify("reload", what="domain")


# ---- account --------------------------------------------------------------------------------


async def account_add(ctx: Context, args: argparse.Namespace) -> None:
    name, domain = ctx.address(args.address)
    password: Optional[str] = None
    generated = False
    if args.password_hash is None:
        password, generated = _password(ctx, args)
    await ctx.accounts.add_account(
        name,
        domain,
        password,
        real_name=args.real_name or "",
        services=_services(args.services),
        settings={"admin": True} if args.admin else None,
        enabled=not args.disabled,
        password_hash=args.password_hash,
        check_policy=not generated,
    )
    if generated:
        ctx.out.write(f"password for {name}@{domain}: {password}\n")
    ctx.notify("reload", what="account")


async def account_list(ctx: Context, args: argparse.Namespace) -> None:
    for info in await ctx.accounts.list_account_info(args.domain or ctx.config.main_domain):
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
    info = await ctx.accounts.get_account_info(name, domain)
    ctx.out.write(json.dumps(info, indent=2, sort_keys=True) + "\n")


async def account_remove(ctx: Context, args: argparse.Namespace) -> None:
    name, domain = ctx.address(args.address)
    await ctx.accounts.remove_account(name, domain)
    ctx.notify("reload", what="account")


async def account_passwd(ctx: Context, args: argparse.Namespace) -> None:
    name, domain = ctx.address(args.address)
    if await ctx.accounts.get_account(name, domain) is None:
        ctx.fail(f"account {name}@{domain} does not exist")
    if args.password_hash is not None:
        await ctx.accounts.set_password_hash(name, domain, args.password_hash)
        ctx.notify("reload", what="account")
        return
    password, generated = _password(ctx, args)
    await ctx.accounts.set_password(name, domain, password, check_policy=not generated)
    if generated:
        ctx.out.write(f"password for {name}@{domain}: {password}\n")
    ctx.notify("reload", what="account")


async def account_set(ctx: Context, args: argparse.Namespace) -> None:
    name, domain = ctx.address(args.address)
    await ctx.accounts.update_account(
        name,
        domain,
        real_name=args.real_name,
        services=_services(args.services),
        enabled=args.enabled,
    )
    ctx.notify("reload", what="account")


# ---- alias ----------------------------------------------------------------------------------


async def alias_add(ctx: Context, args: argparse.Namespace) -> None:
    name, domain = ctx.address(args.alias)
    await ctx.accounts.add_alias(name, domain, args.target)
    ctx.notify("reload", what="alias")


async def alias_remove(ctx: Context, args: argparse.Namespace) -> None:
    name, domain = ctx.address(args.alias)
    await ctx.accounts.remove_alias(name, domain)
    ctx.notify("reload", what="alias")


async def alias_list(ctx: Context, args: argparse.Namespace) -> None:
    for alias, target in await ctx.accounts.list_aliases(args.domain):
        ctx.out.write(f"{alias} -> {target}\n")


# ---- settings -------------------------------------------------------------------------------


async def settings_show(ctx: Context, args: argparse.Namespace) -> None:
    if args.effective:
        return await cli_accounts.settings_show_effective(ctx, args)
    store = ctx.accounts
    if args.domain or args.account:
        if args.account:
            values = await store.get_account_settings(*ctx.address(args.account))
        else:
            values = await store.get_domain_settings(args.domain)
        if args.key is not None:
            if args.key not in values:
                ctx.fail(f"no setting {args.key}")
            values = {args.key: values[args.key]}
        for key in sorted(values):
            ctx.out.write(f"{key} = {json.dumps(values[key])}\n")
        return
    node = args.node or ctx.config.node
    overrides = await store.get_settings(node)
    keys = sorted(dynamic.DEFAULTS)
    if args.key is not None:
        if args.key not in dynamic.DEFAULTS:
            ctx.fail(f"unknown setting {args.key!r}")
        keys = [args.key]
    for key in keys:
        value = overrides.get(key, dynamic.DEFAULTS[key][0])
        mark = "" if key in overrides else "  (default)"
        if dynamic.is_node_setting(key):
            mark += f"  (node {node})"
        ctx.out.write(f"{key} = {json.dumps(value)}{mark}\n")
        if args.key is not None:
            ctx.out.write(f"  {dynamic.DEFAULTS[key][1]}\n")


async def settings_set(ctx: Context, args: argparse.Namespace) -> None:
    value = dynamic.parse_cli_value(args.value)
    if args.account:
        await ctx.accounts.set_account_setting(*ctx.address(args.account), args.key, value)
    elif args.domain:
        await ctx.accounts.set_domain_setting(args.domain, args.key, value)
    else:
        await ctx.accounts.set_setting(args.key, value, node=args.node)
    ctx.notify("reload", what="settings")


async def settings_unset(ctx: Context, args: argparse.Namespace) -> None:
    if args.account:
        await ctx.accounts.unset_account_setting(*ctx.address(args.account), args.key)
    elif args.domain:
        await ctx.accounts.unset_domain_setting(args.domain, args.key)
    else:
        await ctx.accounts.unset_setting(args.key, node=args.node)
    ctx.notify("reload", what="settings")


# ---- nodes ----------------------------------------------------------------------------------


async def node_list(ctx: Context, args: argparse.Namespace) -> None:
    """Every node that started on this database or has settings, with its node settings."""
    for node in await ctx.accounts.list_nodes():
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
    await ctx.accounts.remove_node(args.name)


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


def build_parser() -> argparse.ArgumentParser:
    """The full parser, including groups registered by plugin modules that exist."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Administer a cgtwist mail server (changes apply at once)."
    )
    parser.add_argument(
        "--config", metavar="FILE", help="bootstrap configuration (default: $CGTWIST_CONFIG)"
    )
    parser.add_argument("--base-dir", metavar="DIR", help="base directory (overrides the file)")
    parser.add_argument(
        "--main-domain",
        metavar="NAME",
        help="main domain (overrides the file; default: the one recorded at the first start)",
    )
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    svc = f"comma-separated services out of {','.join(SERVICES)}"

    groups.add_parser(
        "init",
        help="create the store (database, main domain, postmaster) if there is none",
        description="Create the store: the database schema, the main domain with postmaster "
        "(administrator, password from $CGTWIST_POSTMASTER_PASSWORD or generated "
        "and printed once) and pbx. Every other command needs an existing store; "
        "the server's first start also creates one.",
    ).set_defaults(handler=init, creates_store=True)

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

    for module_name in PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                continue
            raise
        module.register(groups)
    return parser


async def run(
    reactor: Any,
    args: argparse.Namespace,
    config: BootstrapConfig,
    out: TextIO,
    err: TextIO,
    stdin: Optional[TextIO] = None,
    hasher: Optional[PasswordHasher] = None,
) -> int:
    """Open the store when the handler needs it, run the handler, close; return the status."""
    store: Optional[AccountStore] = None
    created = False
    generated: Optional[str] = None
    try:
        if getattr(args, "needs_store", True):
            creating = getattr(args, "creates_store", False)
            created = not await store_exists(config, reactor)
            if created and not creating:
                where = engine_for_url(config.database_url).describe()
                raise CLIError(
                    f"no store at {where} (wrong --config or --base-dir? '{PROG} init' creates one)"
                )
            store = await open_store(
                config.database_url,
                config.main_domain,
                reactor,
                1,
                max(1, config.pool_max),
                hasher,
                timeout=config.database_timeout,
                node=config.node,
            )
            main = await store.settle_main_domain(config.main_domain, config.main_domain_explicit)
            config = dataclasses.replace(config, main_domain=main)
            generated = await store.bootstrap()
            if generated and not creating:  # a new main domain given with --main-domain
                err.write(
                    f"{PROG}: created postmaster@{config.main_domain} with password: {generated}\n"
                )
        ctx = Context(
            config=config,
            store=store,
            reactor=reactor,
            out=out,
            err=err,
            stdin=stdin or sys.stdin,
            created=created,
            postmaster_password=generated,
        )
        result = await args.handler(ctx, args)
        return int(result or 0)
    finally:
        if store is not None:
            store.close()
            _match_base_dir_owner(config)


def _match_base_dir_owner(config: BootstrapConfig) -> None:
    """Run as root, give SQLite files we created to the base directory's owner.

    The server usually drops root (``twistd --uid``); a database file that root's
    cgtwist-admin created first would otherwise be unwritable for it.
    """
    if os.geteuid() != 0 or not config.database_url.startswith("sqlite:///"):
        return
    try:
        st = os.stat(config.base_dir)
    except OSError:
        return
    if st.st_uid == 0:
        return
    db = engine_for_url(config.database_url)
    for suffix in ("", "-wal", "-shm"):
        path = getattr(db, "path", "") + suffix
        try:
            if os.path.exists(path) and os.stat(path).st_uid == 0:
                os.chown(path, st.st_uid, st.st_gid)
        except OSError:
            pass


def _tighten_store_files(config: BootstrapConfig, err: TextIO) -> None:
    """An SQLite store (with its -wal/-shm) left readable by others, by an older version,
    loses the bits ``[server] umask`` forbids, as the server does at its start; say so."""
    engine = engine_for_url(config.database_url)
    if not isinstance(engine, SqliteEngine):
        return
    files = [config.base_dir] + [engine.path + s for s in ("", "-wal", "-shm")]
    for path, old, new in filemodes.tighten(files, config.umask):
        err.write(f"{PROG}: file mode of {path} tightened from {old:04o} to {new:04o}\n")


def _one_line(e: BaseException) -> str:
    if isinstance(e, StoreUnavailable):
        text = f"database unavailable: {e}"  # down, frozen, or gone for the second time
    elif isinstance(e, (CLIError, StoreError, ValueError, ConfigError)):
        text = str(e) or type(e).__name__
    elif type(e).__name__ in ("OperationalError", "DatabaseError", "InterfaceError"):
        text = f"database unavailable: {e}"  # locked, read-only, or PostgreSQL down
    else:
        text = f"internal error: {type(e).__name__}: {e}"
    return text.splitlines()[0]


async def execute(
    reactor: Any,
    argv: Sequence[str],
    out: TextIO,
    err: TextIO,
    stdin: Optional[TextIO] = None,
    hasher: Optional[PasswordHasher] = None,
    set_umask: bool = False,
) -> int:
    """The whole command: parse ``argv``, load the config, run; return the exit status.

    Usage errors print argparse's message (to stderr) and give 2; every other failure is one
    line on ``err`` and 1. ``set_umask`` (the console script): the process takes the
    config's ``[server] umask``, so the store it creates is as private as the server's.
    """
    try:
        parser = build_parser()
    except Exception as e:  # a broken plugin module: say which, do not show a traceback
        err.write(f"{PROG}: error: {_one_line(e)}\n")
        return 1
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(list(argv))
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        overrides = {
            k: v for k, v in (("base_dir", args.base_dir), ("main_domain", args.main_domain)) if v
        }
        config = load(args.config, overrides or None)
    except ConfigError as e:  # FILE:LINE: KEY: problem, as twistd cgtwist prints it
        err.write(f"{e}\n")
        return 1
    if set_umask:
        os.umask(config.umask)
        _tighten_store_files(config, err)
    try:
        return await run(reactor, args, config, out, err, stdin, hasher)
    except Exception as e:
        err.write(f"{PROG}: error: {_one_line(e)}\n")
        return 1


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Console-script entry point: exit 0 on success, 1 on error, 2 on a usage error."""
    arguments = sys.argv[1:] if argv is None else list(argv)

    async def react_main(reactor: Any) -> None:
        code = await execute(reactor, arguments, sys.stdout, sys.stderr, set_umask=True)
        sys.stdout.flush()
        raise SystemExit(code)

    from twisted.internet import task  # the CLI is its own composition root

    task.react(react_main)
    sys.exit(0)  # not reached: react exits


if __name__ == "__main__":
    main()
