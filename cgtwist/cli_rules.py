"""``cgtwist-admin rules``: show, set, test, explain and replay Server, Domain and Account Rules.

Owns only the command-line edge of Rules: the scope arguments (``--server``, ``--domain D``,
``--account A``), reading files, reporting parse errors as ``FILE:line: problem``, and
printing. The operations (check as the server would run it, store, tell the server, explain)
are ``ctx.admin.rules`` (cgtwist.admin.rules); ``explain`` delivers and remembers nothing.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import TYPE_CHECKING, Any, NoReturn

from cgtwist.admin.rules import Scope, Section
from cgtwist.rules.sieve import SieveError, compile_sieve
from cgtwist.rules.text import format_action, format_condition, format_rules
from cgtwist.storage.rulehistory import read_history
from cgtwist.storage.rules import InvalidRules

PROG = "cgtwist-admin"
MAX_MESSAGE = 64 * 1024 * 1024

if TYPE_CHECKING:  # the CLI imports this module; no import back at run time
    from cgtwist.cli import Context


async def _scope(ctx: Context, args: argparse.Namespace) -> Scope:
    """The rule set of --server / --domain / --account."""
    return await ctx.admin.rules.scope(args.domain, args.account)


async def rules_show(ctx: Context, args: argparse.Namespace) -> None:
    """Print the stored text exactly as set; its revision goes to stderr."""
    scope = await _scope(ctx, args)
    stored = await ctx.admin.rules.get(scope)
    if not stored.text:
        ctx.err.write(f"{PROG}: {scope.what}: none set\n")
        return
    ctx.err.write(f"{PROG}: {scope.what}, revision {stored.revision}\n")
    ctx.out.write(stored.text if stored.text.endswith("\n") else stored.text + "\n")


def _refused(ctx: Context, path: str, e: InvalidRules) -> NoReturn:
    """A rule set that does not parse or fit its level, as ``FILE:line: problem``."""
    msg = str(e)
    if msg.startswith("line "):
        line, _, problem = msg[5:].partition(": ")
        ctx.fail(f"{path}:{line}: {problem}")
    ctx.fail(f"{path}: {msg}")


async def rules_set(ctx: Context, args: argparse.Namespace) -> None:
    """Check FILE as the server would run it, store it and tell the server."""
    scope = await _scope(ctx, args)
    text = ctx.read(args.file)
    try:
        rules, revision = await ctx.admin.rules.set(scope, text, expect=args.expect_revision)
    except InvalidRules as e:
        _refused(ctx, args.file, e)
    ctx.out.write(f"{scope.what} stored: {len(rules.rules)} rule(s), revision {revision}\n")


async def rules_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Remove a stored rule set and tell the server."""
    scope = await _scope(ctx, args)
    await ctx.admin.rules.delete(scope)
    ctx.out.write(f"{scope.what} removed\n")


async def rules_import_sieve(ctx: Context, args: argparse.Namespace) -> None:
    """Compile a Sieve script into a rule set; print it (--dry-run) or store it like set."""
    scope = await _scope(ctx, args)
    try:
        compiled, warnings = compile_sieve(ctx.read(args.file))
    except SieveError as e:
        ctx.fail(f"{args.file}:{e.line}: {e.problem}")
    for w in warnings:
        ctx.err.write(f"{PROG}: warning: {args.file}: {w}\n")
    text = format_rules(compiled)
    if args.dry_run:
        ctx.out.write(text)
        return
    try:
        rules, revision = await ctx.admin.rules.set(scope, text)
    except InvalidRules as e:
        ctx.fail(f"{args.file}: {e}")
    ctx.out.write(
        f"{scope.what} stored from Sieve: {len(rules.rules)} rule(s), revision {revision}\n"
    )


async def rules_test(ctx: Context, args: argparse.Namespace) -> None:
    """Check FILE without storing it; print the rules in the order they would run."""
    scope = await _scope(ctx, args)
    try:
        rules = await ctx.admin.rules.check(scope, ctx.read(args.file))
    except InvalidRules as e:
        _refused(ctx, args.file, e)
    ctx.out.write(f"{args.file}: valid as {scope.what}: {len(rules.rules)} rule(s)\n")
    for r in rules.ordered():
        ctx.out.write(f"  {r.priority:2d} {r.name}\n")
    for r in rules.rules:
        if not r.enabled:
            ctx.out.write(f"   - {r.name} (priority 0: disabled)\n")


def _section(ctx: Context, section: Section) -> None:
    out, outcome, title, note = ctx.out, section.outcome, section.title, section.note
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
    data = ctx.read(args.message, binary=True, limit=MAX_MESSAGE)
    found = await ctx.admin.rules.explain(
        data, args.to, sender=args.sender or "", ip=args.ip or "", auth=args.auth
    )
    for step in found.steps:
        if isinstance(step, Section):
            _section(ctx, step)
        else:
            ctx.out.write(step + "\n")
    ctx.out.write("actions that would run:\n")
    for line in found.actions or ["(none: delivered as is)"]:
        ctx.out.write(f"  {line}\n")
    if found.reply_days is not None:
        ctx.out.write(f"  (a reply goes at most once per sender per {found.reply_days} days)\n")
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE = re.compile(r"^(\d{1,6})([smhdw]?)$")


def since_seconds(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``2w`` or plain seconds, for ``--since``."""
    m = _SINCE.match(text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration such as 7d, 12h, 30m or 2w")
    return float(int(m.group(1)) * _UNITS[m.group(2) or "s"])


def _side(acts: tuple[tuple[str, str], ...]) -> list[str]:
    if not acts:
        return ["(no rule fires: delivered as is)"]
    return [f"rule {rule!r}: {action}" for rule, action in acts]


async def rules_replay(ctx: Context, args: argparse.Namespace) -> int:
    """Run the current rule set, and a proposed one, over the delivery history of the last
    ``--since`` and print the messages whose outcome would change (without ``--proposed``:
    those a current rule fires on). Delivers, replies and remembers nothing."""
    try:
        since = since_seconds(args.since)
    except argparse.ArgumentTypeError as e:
        ctx.fail(f"--since {e}")
    scope = await _scope(ctx, args)
    proposed = ctx.read(args.proposed) if args.proposed else None
    now = time.time()
    records = read_history(ctx.config.base_dir, now - since, now)
    try:
        found = await ctx.admin.rules.replay(scope, records, proposed)
    except InvalidRules as e:
        _refused(ctx, args.proposed or "-", e)
    out = ctx.out
    for m in found.changed:
        r = m.record
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.when))
        to = r.account if r.level == "local" else ", ".join(r.recipients)
        subject = m.subject
        out.write(f"{when} {r.msg_id} from <{r.sender}> to {to}")
        out.write(f" subject {subject!r}\n" if subject else "\n")
        label = "current: " if proposed is not None else "rules:   "
        for line in _side(m.current):
            out.write(f"  {label} {line}\n")
            label = "         "
        if proposed is not None:
            label = "proposed:"
            for line in _side(m.proposed):
                out.write(f"  {label} {line}\n")
                label = "         "
    what = "would change" if proposed is not None else "met a rule"
    out.write(
        f"{found.seen} message(s) of the last {args.since} replayed for {scope.what}; "
        f"{len(found.changed)} {what}\n"
    )
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
    p = g.add_parser(
        "replay",
        help="run the current and a proposed rule set over the delivery history; print the "
        "messages whose outcome would change",
    )
    _scope_args(p)
    p.add_argument(
        "--since",
        required=True,
        metavar="AGE",
        help="how far back: 7d, 12h, 30m, 2w (rules.history_days bounds what is kept)",
    )
    p.add_argument("--proposed", metavar="FILE", help="the proposed rule set ('-' = stdin)")
    p.set_defaults(handler=rules_replay)
