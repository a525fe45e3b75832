"""WebAdmin's log viewer: the newest entries of the server's log file, filtered by level,
message id, address and IP; "follow" is a refresh link that keeps the filters.

Owns the page and its filters' form (a GET: a filtered view can be bookmarked and reloaded);
the reading is cgtwist.web.logview's, done in a thread with the limits of
``web.log_view_bytes`` and ``web.log_view_lines``. Server administrators only: the log names
every account and address.
"""

from __future__ import annotations

import re
import urllib.parse

from cgtwist.web import forms, logview
from cgtwist.web.render import Reply
from cgtwist.web.site import Req, Route


async def logs(req: Req) -> Reply:
    level = req.query.get("level", "info")
    if level not in logview.LEVELS:
        raise forms.FormError(f"The level is one of {', '.join(logview.LEVELS)}.")
    filters = logview.Filters(
        level=level,
        msg_id=forms.field(req.query, "id", limit=100).strip(),
        address=forms.field(req.query, "address", limit=320).strip(),
        ip=forms.field(req.query, "ip", limit=64).strip(),
    )
    web = req.panel.settings.current.web
    path = req.panel.log_file
    view = None
    if path is not None:
        view = await req.panel.in_thread(
            logview.tail, path, filters, web.log_view_bytes, web.log_view_lines
        )
    query = urllib.parse.urlencode(
        {"level": filters.level, "id": filters.msg_id, "address": filters.address, "ip": filters.ip}
    )
    return req.page(
        "logs.html",
        log_path=path,
        view=view,
        filters=filters,
        levels=logview.LEVELS,
        refresh=f"/admin/logs?{query}",
        max_bytes=web.log_view_bytes,
        max_lines=web.log_view_lines,
    )


def routes() -> list[Route]:
    return [Route("GET", re.compile(r"/admin/logs"), logs, "server")]
