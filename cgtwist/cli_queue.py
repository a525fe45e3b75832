"""``cgtwist-admin queue``: list, show, retry, hold, release, drop and bounce spooled messages.

Owns only the command-line edge of queue administration (issue 5 part 7): turning arguments into
calls of the queue operations WebAdmin makes too (cgtwist.admin.queue, control commands of the
running server) and the replies into readable text. It never touches the spool itself
except to read a message's size from its spool header; every change is made by the server, so
these commands need it running (otherwise: one line on stderr, exit status 1).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Optional, Sequence, TypeVar

from cgtwist import paths
from cgtwist.admin import AdminError, ServerDown
from cgtwist.admin.queue import ID_RE

if TYPE_CHECKING:  # the CLI imports this module; no import back at run time
    from cgtwist.cli import Context

T = TypeVar("T")

_HEADER_RE = re.compile(rb"^CGTWIST-SPOOL [0-9]+ \S+ [0-9]+ ([0-9]+)\n")


# ---- formatting (pure: replies in, text out) --------------------------------------------------


def duration(seconds: Optional[float]) -> str:
    """``42s``, ``3m05s``, ``2h14m``, ``3d04h``: compact, sortable by eye."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size_text(size: Optional[int]) -> str:
    if size is None:
        return "-"
    if size < 1024:
        return f"{size}"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f}K"
    return f"{size / 1048576:.1f}M"


def timestamp(t: Optional[float]) -> str:
    """An absolute time in UTC, as the server's log writes them."""
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t))) + "Z"


def _next(job: Optional[Mapping[str, Any]], now: float) -> str:
    if job is None:
        return ""
    state = job.get("state", "")
    when = job.get("next_attempt")
    if state == "waiting" and when is not None:
        return f"next {timestamp(when)} (in {duration(float(when) - now)})"
    return str({"due": "next: now", "running": "delivering now", "held": "held"}.get(state, state))


def _jobs_by_queue(info: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(j.get("queue")): j for j in info.get("queues") or []}


def _recipient_line(r: Mapping[str, Any], jobs: Mapping[str, Mapping[str, Any]], now: float) -> str:
    route = str(r.get("route") or "")
    state = str(r.get("state", "?"))
    parts = [f"{r.get('address', '?')}", state]
    if route:
        parts.append(route)
    if state == "pending":
        job = jobs.get(route)
        if job is not None:
            parts.append(f"attempts {job.get('attempts', 0)}")
            parts.append(_next(job, now))
        elif not route:
            parts.append("routing")
    detail = str(r.get("detail") or "")
    line = "  ".join(p for p in parts if p)
    return f'{line}  "{detail}"' if detail else line


def format_list(
    reply: Mapping[str, Any], now: float, sizes: Optional[Callable[[str], Optional[int]]] = None
) -> str:
    """The ``queue list`` table: one header line per message (id, age, size, sender, flags),
    then one indented line per recipient (address, state, queue, attempts, next attempt, last
    reply), then a summary line."""
    messages = list(reply.get("messages") or [])
    lines: list[str] = []
    if messages:
        lines.append(f"{'ID':<30} {'AGE':>7} {'SIZE':>7}  SENDER")
    for info in messages:
        msg_id = str(info.get("id", "?"))
        size = sizes(msg_id) if sizes is not None else None
        sender = info.get("sender") or "<>"
        flags = "  HELD" if info.get("held") else ""
        lines.append(
            f"{msg_id:<30} {duration(info.get('age')):>7} {size_text(size):>7}  {sender}{flags}"
        )
        jobs = _jobs_by_queue(info)
        for r in info.get("recipients") or []:
            lines.append("    " + _recipient_line(r, jobs, now))
    shown = len(messages)
    backlog = int(reply.get("backlog") or 0)
    summary = f"{shown} message(s) shown; {reply.get('active', shown)} in the active queue"
    if backlog:
        summary += f", {backlog} more in the backlog (not listed)"
    lines.append(summary)
    return "\n".join(lines) + "\n"


def _history_line(h: Mapping[str, Any]) -> str:
    when = timestamp(h.get("t"))
    if "host" in h or "ip" in h:  # a host-level attempt from the SMTP module
        host = str(h.get("host") or "?")
        ip = str(h.get("ip") or "")
        where = f"{host} [{ip}]" if ip and ip != host else host
        tls = h.get("tls") or "no TLS"
        return f'{when}  {where}  {tls}  "{h.get("reply", "")}"'
    if h.get("res") == "warned":
        return f"{when}  delay warning sent to the sender"
    queue = str(h.get("q") or "")
    results = []
    for rec in h.get("r") or []:
        address, state, detail = (list(rec) + ["", "", ""])[:3]
        results.append(f"{address} {state}" + (f' "{detail}"' if detail else ""))
    return f"{when}  {queue}  {'; '.join(results)}".rstrip()


def format_show(info: Mapping[str, Any], now: float, size: Optional[int] = None) -> str:
    """``queue show``: envelope, submission info, per-recipient state and queue, and the
    delivery attempt history (time, host, TLS, reply) oldest first."""
    lines = [f"Message {info.get('id', '?')}" + ("  HELD" if info.get("held") else "")]
    if info.get("state") == "backlog":
        lines.append("  (in the backlog: not yet loaded into the active queue)")
    queued = info.get("queued")
    age = info.get("age")
    if age is None and queued is not None:
        age = now - float(queued)
    lines.append(f"  queued:   {timestamp(queued)} ({duration(age)} ago)")
    lines.append(f"  size:     {size_text(size)}")
    lines.append(f"  sender:   {info.get('sender') or '<>'}")
    for key, value in sorted((info.get("submit") or {}).items()):
        lines.append(f"  {key + ':':<9} {value}")
    lines.append("Recipients:")
    jobs = _jobs_by_queue(info)
    for r in info.get("recipients") or []:
        lines.append("  " + _recipient_line(r, jobs, now))
    if jobs:
        lines.append("Queues:")
        for name, job in jobs.items():
            nxt = _next(job, now)
            lines.append(
                f"  {name}  {job.get('state', '?')}  attempts {job.get('attempts', 0)}"
                + (f"  {nxt}" if nxt and nxt != job.get("state") else "")
            )
    history = list(info.get("history") or [])
    lines.append("History:" if history else "History: no delivery attempts yet")
    for h in sorted(history, key=lambda x: float(x.get("t") or 0)):
        lines.append("  " + _history_line(h))
    return "\n".join(lines) + "\n"


# ---- talking to the server --------------------------------------------------------------------


def spool_size(base_dir: str) -> Callable[[str], Optional[int]]:
    """Size of a spooled message's data, read from its spool header (None if unreadable)."""

    def size(msg_id: str) -> Optional[int]:
        if not ID_RE.match(msg_id):
            return None
        try:
            with open(os.path.join(base_dir, paths.QUEUE_DIR, msg_id + ".msg"), "rb") as f:
                m = _HEADER_RE.match(f.read(256))
        except OSError:
            return None
        return int(m.group(1)) if m else None

    return size


async def _ask(ctx: Context, operation: Awaitable[T]) -> T:
    """One queue operation of the running server; not running: one clear line."""
    try:
        return await operation
    except ServerDown:
        raise AdminError(
            "the server is not running (no answer on "
            f"{ctx.config.control_socket}); queue commands need a running server"
        ) from None


async def queue_list(ctx: Context, args: argparse.Namespace) -> None:
    reply = await _ask(
        ctx,
        ctx.admin.queue.messages(
            queue=args.queue,
            sender=args.sender,
            recipient=args.recipient,
            min_age=args.older_than,
            max_age=args.newer_than,
            held=True if args.held else None,
            limit=args.limit,
        ),
    )
    ctx.out.write(format_list(reply, time.time(), spool_size(ctx.config.base_dir)))


async def queue_queues(ctx: Context, args: argparse.Namespace) -> None:
    queues = await _ask(ctx, ctx.admin.queue.queues())
    now = time.time()
    for q in queues:
        extra = ""
        if q.get("resume_at") is not None:
            extra = (
                f"  until {timestamp(q['resume_at'])} (in {duration(float(q['resume_at']) - now)})"
            )
        err = f'  "{q["last_error"]}"' if q.get("last_error") else ""
        ctx.out.write(
            f"{q.get('queue')}  {q.get('state')}  due {q.get('due', 0)}  waiting "
            f"{q.get('waiting', 0)}  active {q.get('active', 0)}  failures "
            f"{q.get('failures', 0)}{extra}{err}\n"
        )
    if not queues:
        ctx.out.write("no logical queues\n")


async def queue_show(ctx: Context, args: argparse.Namespace) -> None:
    info = await _ask(ctx, ctx.admin.queue.show(args.id))
    size = spool_size(ctx.config.base_dir)(args.id)
    ctx.out.write(format_show(info, time.time(), size))


async def queue_retry(ctx: Context, args: argparse.Namespace) -> None:
    if args.all == bool(args.id):
        ctx.fail("queue retry needs a message id or --all")
    target = "all" if args.all else args.id
    reply = await _ask(ctx, ctx.admin.queue.act("retry", target))
    ctx.out.write(f"{reply.get('retried', 0)} delivery(ies) of {target} made due now\n")


def _simple(action: str, done: str) -> Callable[[Context, argparse.Namespace], Any]:
    async def handler(ctx: Context, args: argparse.Namespace) -> None:
        reply = await _ask(ctx, ctx.admin.queue.act(action, args.id))
        extra = (
            f" ({reply['bounced']} recipient(s) failed, sender notified)"
            if "bounced" in reply
            else ""
        )
        ctx.out.write(f"{args.id} {done}{extra}\n")

    handler.__name__ = "queue_" + action
    return handler


queue_hold = _simple("hold", "held: no new delivery attempts until released")
queue_release = _simple("release", "released: deliveries are due now")
queue_drop = _simple("drop", "dropped without notification")
queue_bounce = _simple("bounce", "returned to the sender")


def register(subparsers: Any) -> None:
    """Add the ``queue`` group to cgtwist-admin (called by cgtwist.cli.build_parser)."""
    g = subparsers.add_parser("queue", help="the mail queue of the running server").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = g.add_parser("list", help="list queued messages (filters combine)")
    p.add_argument("--queue", metavar="Q", help="logical queue, e.g. SMTP(example.com) (substring)")
    p.add_argument("--sender", metavar="S", help="sender address (substring)")
    p.add_argument("--recipient", metavar="R", help="recipient address (substring)")
    p.add_argument("--older-than", metavar="SECONDS", type=float, help="queued at least this long")
    p.add_argument("--newer-than", metavar="SECONDS", type=float, help="queued at most this long")
    p.add_argument("--held", action="store_true", help="only held messages")
    p.add_argument(
        "--limit", type=int, default=None, help="at most this many (server default 1000)"
    )
    p.set_defaults(handler=queue_list, needs_store=False)
    g.add_parser("queues", help="logical queues with their state").set_defaults(
        handler=queue_queues, needs_store=False
    )
    p = g.add_parser("show", help="envelope, recipient states and delivery history of ID")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=queue_show, needs_store=False)
    p = g.add_parser("retry", help="try ID (or --all) now instead of at its next retry time")
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--all", action="store_true", help="every queued message")
    p.set_defaults(handler=queue_retry, needs_store=False)
    actions: Sequence[tuple[str, str, Any]] = (
        ("hold", "start no delivery of ID until it is released", queue_hold),
        ("release", "undo hold: deliver ID now", queue_release),
        ("drop", "delete ID without telling anyone", queue_drop),
        ("bounce", "fail ID's undelivered recipients now and send the sender a DSN", queue_bounce),
    )
    for name, text, fn in actions:
        p = g.add_parser(name, help=text)
        p.add_argument("id", metavar="ID")
        p.set_defaults(handler=fn, needs_store=False)
