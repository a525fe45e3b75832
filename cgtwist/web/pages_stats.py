"""WebAdmin's Statistics page and ``/metrics`` (Prometheus text format): the server's
counters (cgtwist.stats), the same figures in both.

Owns who may read ``/metrics`` (a Client IP, or anyone presenting ``web.metrics_token`` as a
bearer token: scrapers have no session) and the page's per-minute table with a bar per minute
(``<meter>``: no script, no inline style, which the Content-Security-Policy forbids). It must
not count anything itself.
"""

from __future__ import annotations

import hmac
import re
import time

from cgtwist.logs import Logger
from cgtwist.stats import CONTENT_TYPE, MESSAGE_EVENTS, PROTOCOLS, QUEUE_KINDS
from cgtwist.web.render import Reply
from cgtwist.web.site import Req, Route

log = Logger(namespace="cgtwist.web")

MINUTES_SHOWN = 15
# The per-minute columns: (counter key, heading)
COLUMNS = tuple((e, e.capitalize()) for e in MESSAGE_EVENTS) + (
    ("connections", "Connections"),
    ("login_failures", "Login failures"),
)


def _plain(status: int, text: str) -> Reply:
    return Reply(status=status, body=text.encode(), content_type="text/plain; charset=utf-8")


def metrics_allowed(req: Req) -> bool:
    """A Client IP, or the configured token as ``Authorization: Bearer <token>`` (compared in
    constant time; an empty setting accepts no token)."""
    if req.panel.is_client_ip(req.peer):
        return True
    token = req.panel.settings.current.web.metrics_token
    scheme, _, given = req.authorization.partition(" ")
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )


async def metrics(req: Req) -> Reply:
    stats = req.panel.stats
    if not metrics_allowed(req):
        log.info(
            "web: /metrics refused to {peer}: not a Client IP and no valid token", peer=req.peer
        )
        return _plain(403, "Forbidden: /metrics is for Client IPs or with web.metrics_token.\n")
    if stats is None:
        return _plain(503, "This process keeps no statistics.\n")
    return Reply(body=stats.exposition(), content_type=CONTENT_TYPE)


async def statistics(req: Req) -> Reply:
    stats = req.panel.stats
    if stats is None:
        return req.page("statistics.html", stats=None)
    minutes = stats.minutes(MINUTES_SHOWN)
    peak = max([m.get(key) for m in minutes for key, _ in COLUMNS] + [1])
    queued, kinds = stats.queue()
    now = req.panel.clock.seconds()
    return req.page(
        "statistics.html",
        stats=stats,
        totals=[(heading, stats.total(key)) for key, heading in COLUMNS],
        protocols=[
            (p, stats.total(f"connections {p}"), stats.total(f"login_failures {p}"))
            for p in PROTOCOLS
        ],
        queued=queued,
        kinds=[(k, kinds.get(k, 0)) for k in sorted(set(QUEUE_KINDS) | set(kinds))],
        columns=COLUMNS,
        minutes=[(time.strftime("%H:%M", time.gmtime(m.start)), m) for m in minutes],
        peak=peak,
        uptime=_duration(now - stats.started),
    )


def _duration(seconds: float) -> str:
    s = int(max(0, seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    return (f"{days} d " if days else "") + f"{hours} h {s // 60} min"


def routes() -> list[Route]:
    return [
        Route("GET", re.compile(r"/metrics"), metrics, "public"),
        Route("GET", re.compile(r"/admin/statistics"), statistics, "server"),
    ]
