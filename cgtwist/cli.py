"""``cgtwist-admin``: the administrator's command line. Change the store, then tell the server.

Usage: ``cgtwist-admin [--config FILE] [--base-dir DIR] GROUP ACTION ...``. This module is the
framework and ``init``; the groups are modules (``domain``, ``account``, ``alias``, ``settings``
and ``node`` in cgtwist.cli_users, always loaded; ``router``, ``queue`` and others as plugins),
which only parse arguments and print: every operation is a method of ``cgtwist.admin.Admin``
(``ctx.admin``), which WebAdmin calls too. It reads the bootstrap config
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
* ``ctx.read(path, binary=False)``: a file's text or bytes (``-``: ``ctx.stdin``), a file
  that cannot be read being a one-line error;
* ``ctx.admin``: the ``cgtwist.admin.Admin`` operations on the store; what they change is told
  to the server (``reload``) after the handler returns;
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
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional, Sequence, TextIO

from twisted.internet import threads

from cgtwist import control, filemodes
from cgtwist.admin import Admin, AdminError
from cgtwist.admin import ServerDown as AdminServerDown
from cgtwist.admin.quota import maildir_usage
from cgtwist.config import BootstrapConfig, load
from cgtwist.core.auth import parse_login
from cgtwist.core.rules import mailbox_names_present
from cgtwist.errors import ConfigError, StoreError
from cgtwist.storage.database import Database, StoreUnavailable
from cgtwist.storage.engines import SqliteEngine, engine_for_url
from cgtwist.storage.passwords import PasswordHasher
from cgtwist.storage.store import AccountStore, open_store

PROG = "cgtwist-admin"
PLUGINS = (
    "cgtwist.cli_router",
    "cgtwist.cli_queue",
    "cgtwist.cli_rules",
    "cgtwist.cli_lists",
    "cgtwist.cli_accounts",
)
BUILTIN = ("cgtwist.cli_users",)  # domain, account, alias, settings, node: always present


def _user() -> str:
    """Who runs this command, for the log line of each change."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


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
    # What the handler's operations changed (kind, log text), told to the server once the
    # handler returns (after it printed a generated password, which a refused reload must
    # not swallow); the server logs each change with who made it.
    changed: list[tuple[str, str]] = dataclasses.field(default_factory=list)

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

    @property
    def admin(self) -> Admin:
        """The operations (cgtwist.admin) on this store, logged as made by this user (with
        ``needs_store=False``, only ``queue``, which asks the server, is usable)."""
        base = self.config.base_dir
        return Admin(
            self.store,
            self.config.main_domain,
            self.config.node,
            changed=lambda what, change: self.changed.append((what, change)),
            call=self._call_async,
            actor=self.actor,
            clock=self.reactor,
            hostname=self.config.hostname,
            mailboxes=lambda account, names: mailbox_names_present(base, account, names),
            usage=maildir_usage(
                base,
                lambda fn, *a: threads.deferToThreadPool(
                    self.reactor, self.reactor.getThreadPool(), fn, *a
                ),
            ),
        )

    def read(self, path: str, binary: bool = False, limit: int = -1) -> Any:
        """The text (``binary``: the bytes, at most ``limit``) of file ``path`` or, for
        ``-``, of standard input; unreadable or not UTF-8 is a one-line CLIError."""
        try:
            if path == "-":
                if not binary:
                    return self.stdin.read()
                stream = getattr(self.stdin, "buffer", None)
                return stream.read(limit) if stream is not None else self.stdin.read().encode()
            if binary:
                with open(path, "rb") as fb:
                    return fb.read(limit)
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            self.fail(f"{path}: cannot read: {e.strerror or e}")
        except UnicodeDecodeError as e:
            self.fail(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}")

    @property
    def actor(self) -> str:
        """Who makes the changes, for the log lines: this program and the Unix user."""
        return f"{PROG} ({_user()})"

    async def _call_async(self, cmd: str, **args: Any) -> dict[str, Any]:
        """``call`` as cgtwist.admin expects it: ServerDown, or AdminError for a refusal."""
        try:
            return self.call(cmd, **args)
        except ServerDown as e:
            raise AdminServerDown(str(e)) from None
        except CLIError as e:
            raise AdminError(str(e)) from None

    def tell_server(self) -> None:
        """Send one ``reload`` for each kind of change the handler's operations made."""
        kinds: dict[str, list[str]] = {}
        for what, change in self.changed:
            kinds.setdefault(what, []).append(change)
        self.changed.clear()
        for what, changes in kinds.items():
            self.notify("reload", what=what, by=self.actor, changes=changes)


Handler = Callable[[Context, argparse.Namespace], Any]


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


# ---- the parser -----------------------------------------------------------------------------


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

    groups.add_parser(
        "init",
        help="create the store (database, main domain, postmaster) if there is none",
        description="Create the store: the database schema, the main domain with postmaster "
        "(administrator, password from $CGTWIST_POSTMASTER_PASSWORD or generated "
        "and printed once) and pbx. Every other command needs an existing store; "
        "the server's first start also creates one.",
    ).set_defaults(handler=init, creates_store=True)

    for module_name in BUILTIN + PLUGINS:
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
        ctx.tell_server()
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
    elif isinstance(e, (CLIError, AdminError, StoreError, ValueError, ConfigError)):
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
