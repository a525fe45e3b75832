"""``cgtwist-admin rules``: show, set, test and explain Server, Domain and Account Rules.

Owns only the command-line edge of Rules: picking the rule set (``--server``, ``--domain D``,
``--account A``), reading files, reporting parse errors as ``FILE:line: problem``, storing
through cgtwist.storage.rules (checked first as the server would: level and RulesAllowed),
telling the running server, and printing an explanation. Evaluation is cgtwist.rules and
cgtwist.core.rules; ``explain`` delivers nothing and remembers nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Optional

from cgtwist.addresslist import AddressList, AddressListError
from cgtwist.core.routing import Routing
from cgtwist.core.rules import RulesRunner, mailbox_names_present
from cgtwist.errors import MailError
from cgtwist.rules.evaluate import Outcome, evaluate
from cgtwist.rules.sieve import SieveError, compile_sieve
from cgtwist.rules.text import format_action, format_condition, format_rules
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.rules import ACCOUNT, DOMAIN, SERVER, InvalidRules, RulesConflict, RuleStore
from cgtwist.types import Account, Envelope, Recipient

PROG = "cgtwist-admin"
MAX_MESSAGE = 64 * 1024 * 1024

if TYPE_CHECKING:  # the CLI imports this module; no import back at run time
    from cgtwist.cli import Context


def _read(ctx: Context, path: str, binary: bool = False) -> Any:
    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_MESSAGE) if binary else sys.stdin.read()
        if binary:
            with open(path, "rb") as fb:
                return fb.read(MAX_MESSAGE)
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        ctx.fail(f"{path}: cannot read: {e.strerror or e}")
    except UnicodeDecodeError as e:
        ctx.fail(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}")


async def _runner(ctx: Context) -> RulesRunner:
    store = ctx.accounts
    settings = SettingsHolder(Settings(await store.get_settings()))
    clients = settings.current.clients.ips
    try:
        client_list = AddressList.parse(clients)
    except AddressListError:
        client_list = AddressList()
    base = ctx.config.base_dir
    return RulesRunner(
        RuleStore(store.db, ctx.config.node),
        store,
        settings,
        clock=ctx.reactor,
        hostname=ctx.config.hostname,
        submission=None,
        route=Routing(store, settings, ctx.config.main_domain).route,
        is_client_ip=client_list.contains,
        mailboxes=lambda account, names: mailbox_names_present(base, account, names),
    )


async def _scope(ctx: Context, args: argparse.Namespace) -> tuple[str, str, str]:
    """(scope, owner, words for messages) from --server / --domain / --account."""
    if args.domain:
        domain = args.domain.strip().lower()
        if await ctx.accounts.get_domain(domain) is None:
            ctx.fail(f"no domain {domain}")
        return DOMAIN, domain, f"the Domain Rules of {domain}"
    if args.account:
        name, domain = ctx.address(args.account)
        if await ctx.accounts.get_account(name, domain) is None:
            ctx.fail(f"no account {name}@{domain}")
        return ACCOUNT, f"{name}@{domain}".lower(), f"the Account Rules of {name}@{domain}"
    return SERVER, "", "the Server Rules"


async def rules_show(ctx: Context, args: argparse.Namespace) -> None:
    """Print the stored text exactly as set; its revision goes to stderr."""
    scope, owner, what = await _scope(ctx, args)
    stored = await (await _runner(ctx)).store.get(scope, owner)
    if not stored.text:
        ctx.err.write(f"{PROG}: {what}: none set\n")
        return
    ctx.err.write(f"{PROG}: {what}, revision {stored.revision}\n")
    ctx.out.write(stored.text if stored.text.endswith("\n") else stored.text + "\n")


async def _checked(ctx: Context, runner: RulesRunner, scope: str, owner: str, path: str) -> Any:
    text = _read(ctx, path)
    try:
        rules = await runner.check_text(scope, owner, text)
    except InvalidRules as e:
        msg = str(e)
        if msg.startswith("line "):
            line, _, problem = msg[5:].partition(": ")
            ctx.fail(f"{path}:{line}: {problem}")
        ctx.fail(f"{path}: {msg}")
    return text, rules


async def rules_set(ctx: Context, args: argparse.Namespace) -> None:
    """Check FILE as the server would run it, store it and tell the server."""
    scope, owner, what = await _scope(ctx, args)
    runner = await _runner(ctx)
    text, rules = await _checked(ctx, runner, scope, owner, args.file)
    try:
        revision = await runner.store.set(scope, owner, text, expect=args.expect_revision)
    except (InvalidRules, RulesConflict) as e:
        ctx.fail(str(e))
    ctx.out.write(f"{what} stored: {len(rules.rules)} rule(s), revision {revision}\n")
    ctx.notify("reload", what="rules")


async def rules_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Remove a stored rule set and tell the server."""
    scope, owner, what = await _scope(ctx, args)
    if not await (await _runner(ctx)).store.delete(scope, owner):
        ctx.fail(f"{what}: none set")
    ctx.out.write(f"{what} removed\n")
    ctx.notify("reload", what="rules")


async def rules_import_sieve(ctx: Context, args: argparse.Namespace) -> None:
    """Compile a Sieve script into a rule set; print it (--dry-run) or store it like set."""
    scope, owner, what = await _scope(ctx, args)
    try:
        rules, warnings = compile_sieve(_read(ctx, args.file))
    except SieveError as e:
        ctx.fail(f"{args.file}:{e.line}: {e.problem}")
    for w in warnings:
        ctx.err.write(f"{PROG}: warning: {args.file}: {w}\n")
    text = format_rules(rules)
    if args.dry_run:
        ctx.out.write(text)
        return
    runner = await _runner(ctx)
    try:
        await runner.check_text(scope, owner, text)
        revision = await runner.store.set(scope, owner, text)
    except InvalidRules as e:
        ctx.fail(f"{args.file}: {e}")
    ctx.out.write(f"{what} stored from Sieve: {len(rules.rules)} rule(s), revision {revision}\n")
    ctx.notify("reload", what="rules")


async def rules_test(ctx: Context, args: argparse.Namespace) -> None:
    """Check FILE without storing it; print the rules in the order they would run."""
    scope, owner, what = await _scope(ctx, args)
    _text, rules = await _checked(ctx, await _runner(ctx), scope, owner, args.file)
    ctx.out.write(f"{args.file}: valid as {what}: {len(rules.rules)} rule(s)\n")
    for r in rules.ordered():
        ctx.out.write(f"  {r.priority:2d} {r.name}\n")
    for r in rules.rules:
        if not r.enabled:
            ctx.out.write(f"   - {r.name} (priority 0: disabled)\n")


def _explain(ctx: Context, title: str, outcome: Optional[Outcome], note: str = "") -> None:
    out = ctx.out
    if outcome is None:
        out.write(f"{title}: {note or 'none'}\n")
        return
    out.write(f"{title}{': ' + note if note else ''}\n")
    if not outcome.trace:
        out.write("  (no rule enabled)\n")
    for t in outcome.trace:
        out.write(
            f"  rule {t.rule.name!r} (priority {t.rule.priority}): "
            f"{'FIRED' if t.fired else 'not fired'}\n"
        )
        for ct in t.conditions:
            met = "yes" if ct.met else "no"
            out.write(f"    {format_condition(ct.condition)}: {met}  {ct.seen}\n")
        left = len(t.rule.conditions) - len(t.conditions)
        if left:
            out.write(f"    ({left} more condition(s) not checked)\n")
        for a in t.actions:
            out.write(f"    {format_action(a)}\n")
        for a, why in t.skipped:
            out.write(f"    skip {a.name}: {why}\n")
        if t.stopped:
            out.write("    (Stop Processing: no lower rule is looked at)\n")


async def rules_explain(ctx: Context, args: argparse.Namespace) -> int:
    """Run the Server Rules, then the recipient's Domain and Account Rules, on MESSAGE_FILE
    and print every rule, each condition's outcome and the actions; delivers nothing."""
    data = _read(ctx, args.message, binary=True)
    runner = await _runner(ctx)
    submit = {
        "peer": args.ip or "",
        "protocol": "ESMTPA" if args.auth else "ESMTP",
        "account": args.sender if args.auth and args.sender else "",
        "tls": "",
    }
    envelope = Envelope(args.sender or "", [Recipient(args.to)], submit)
    execute = runner.settings.current.rules.execute
    server_rules = await runner.rules(SERVER, "")
    facts = await runner.facts(envelope, data, [args.to], [server_rules])
    actions: list[str] = []
    if server_rules.rules:
        out = evaluate(server_rules, facts, server=True, execute=execute, explain=True)
        _explain(ctx, "Server Rules", out)
        actions += [f"server: {a.name} {a.param}".strip() for a in out.actions]
    else:
        _explain(ctx, "Server Rules", None)
    try:
        route = await runner.route(args.to) if runner.route else None
    except MailError as e:
        ctx.out.write(f"route of {args.to}: {e.reply()}\n")
        route = None
    if route is not None:
        ctx.out.write(f"route of {args.to}: {route}\n")
    if route is None or route.module != "LOCAL":
        ctx.out.write("Domain and Account Rules: not applied (not delivered by LOCAL)\n")
    else:
        name, _, domain = route.queue.rpartition("@")
        account = Account(name, domain)
        dom = await runner.rules(DOMAIN, domain)
        acct = await runner.rules(ACCOUNT, account.address)
        allowed = await runner.allowed(account)
        lfacts = await runner.facts(envelope, data, [account.address], [dom, acct], account)
        first = (
            evaluate(dom, lfacts, server=False, execute=execute, explain=True)
            if dom.rules
            else None
        )
        _explain(ctx, f"Domain Rules of {domain}", first)
        if first is not None:
            actions += [f"domain: {a.name} {a.param}".strip() for a in first.actions]
        if first is not None and first.has("Stop Processing"):
            ctx.out.write(f"Account Rules of {account.address}: not reached (Stop Processing)\n")
        elif allowed == "None":
            ctx.out.write(f"Account Rules of {account.address}: not applied (RulesAllowed None)\n")
        elif acct.rules:
            second = evaluate(
                acct, lfacts, server=False, allowed=allowed, execute=execute, explain=True
            )
            _explain(ctx, f"Account Rules of {account.address}", second, f"RulesAllowed {allowed}")
            actions += [f"account: {a.name} {a.param}".strip() for a in second.actions]
        else:
            _explain(ctx, f"Account Rules of {account.address}", None)
    ctx.out.write("actions that would run:\n")
    for line in actions or ["(none: delivered as is)"]:
        ctx.out.write(f"  {line}\n")
    if any("Reply" in a for a in actions):
        days = round(float(runner.settings.current.rules.reply_interval) / 86400, 1)
        ctx.out.write(f"  (a reply goes at most once per sender per {days} days)\n")
    return 0


def _scope_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--server", action="store_true", help="the Server Rules (every message)")
    g.add_argument("--domain", metavar="D", help="the Domain Rules of D")
    g.add_argument("--account", metavar="A", help="the Account Rules of A")


def register(subparsers: Any) -> None:
    """Add the ``rules`` group to cgtwist-admin (called by cgtwist.cli.build_parser)."""
    g = subparsers.add_parser("rules", help="Server, Domain and Account Rules").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = g.add_parser("show", help="print a stored rule set")
    _scope_args(p)
    p.set_defaults(handler=rules_show)
    p = g.add_parser("set", help="check FILE and store it as the rule set ('-' = stdin)")
    _scope_args(p)
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--expect-revision",
        type=int,
        metavar="N",
        help="refuse if the stored rule set is no longer revision N (0: none stored)",
    )
    p.set_defaults(handler=rules_set)
    p = g.add_parser(
        "import-sieve", help="compile a Sieve script (RFC 5228) into the rule set and store it"
    )
    _scope_args(p)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--dry-run", action="store_true", help="print the rules, store nothing")
    p.set_defaults(handler=rules_import_sieve)
    p = g.add_parser("delete", help="remove a stored rule set")
    _scope_args(p)
    p.set_defaults(handler=rules_delete)
    p = g.add_parser("test", help="check FILE as that rule set without storing it")
    _scope_args(p)
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=rules_test)
    p = g.add_parser("explain", help="show which rules MESSAGE_FILE meets and what they would do")
    p.add_argument("message", metavar="MESSAGE_FILE")
    p.add_argument("--to", required=True, metavar="ADDR", help="the envelope recipient")
    p.add_argument("--from", dest="sender", metavar="ADDR", help="the envelope sender")
    p.add_argument("--ip", metavar="IP", help="the client's address")
    p.add_argument("--auth", action="store_true", help="as if the sender authenticated")
    p.set_defaults(handler=rules_explain)
