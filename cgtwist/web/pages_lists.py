"""The mailing lists' one-click unsubscribe page, ``/lists/unsubscribe`` (RFC 8058).

Owns the public URL that ``lists.unsubscribe_url`` puts into personalised list copies
(``List-Unsubscribe`` with ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``): a POST, as
a mail provider sends it, unsubscribes at once; a GET only shows a button that POSTs, since
link checkers and previews fetch URLs (RFC 8058 §4). The signed token in the URL is the only
authority (no login, no CSRF token); checking it and removing the subscriber is the LIST
agent's (``ListAgent.one_click``), reached through the panel. It must not administer lists.
"""

from __future__ import annotations

import re
import urllib.parse

from cgtwist.logs import Logger
from cgtwist.web.render import Reply
from cgtwist.web.site import Req, Route

log = Logger(namespace="cgtwist.web")

PATH = "/lists/unsubscribe"  # cgtwist.lists.tokens.unsubscribe_url builds it


async def confirm_form(req: Req) -> Reply:
    address, token = req.query.get("list", ""), req.query.get("token", "")
    action = PATH + "?" + urllib.parse.urlencode({"list": address, "token": token})
    return req.page("unsubscribe.html", list=address[:320], action=action, done=False)


async def unsubscribe(req: Req) -> Reply:
    address, token = req.query.get("list", "")[:320], req.query.get("token", "")
    if not await req.panel.unsubscribe(address, token):
        log.info(
            "web: one-click unsubscribe from {list} refused: peer={peer} (bad or expired token)",
            list=address,
            peer=req.peer,
        )
        return req.page(
            "error.html",
            status=400,
            message="This unsubscribe link is not valid: it has expired or was altered. "
            "Reply to a message of the list with 'unsubscribe' instead.",
        )
    log.info("web: one-click unsubscribe from {list} by {peer}", list=address, peer=req.peer)
    return req.page("unsubscribe.html", list=address, done=True)


def routes() -> list[Route]:
    pattern = re.compile(re.escape(PATH))
    return [
        Route("GET", pattern, confirm_form, "public"),
        Route("POST", pattern, unsubscribe, "public", csrf=False),
    ]
