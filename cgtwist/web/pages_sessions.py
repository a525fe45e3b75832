"""WebUser: the account's active sessions, and ending them.

Owns the ``/sessions`` page: the account's web sessions (cgtwist.web.sessions) and its POP3,
IMAP and authenticated SMTP sessions in this server process (cgtwist.activesessions), each with its protocol,
client address, start time and TLS, the one this browser uses marked, and the forms that end
one of them or all the others. An account sees and ends only its own sessions: both tables
are looked up under the session's account, never by the identifier alone. It must not
administer other accounts (cgtwist.web.pages_admin).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from cgtwist.logs import Logger
from cgtwist.web.render import Reply, redirect
from cgtwist.web.site import Req, Route

log = Logger(namespace="cgtwist.web")

ENDED = "Ended by the account's owner from WebUser"  # the goodbye a mail client shows
PROTOCOL_NAMES = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP", "web": "Web"}


@dataclass(frozen=True)
class Row:
    """One line of the page."""

    id: str  # a web session's handle or a mail session's id: never a cookie's secret
    protocol: str
    peer: str
    since: str
    secure: bool
    this: bool  # the session this page is shown in


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def rows(req: Req) -> list[Row]:
    """The account's sessions, web first, each oldest first."""
    assert req.session is not None
    panel, own = req.panel, req.session
    web = [
        Row(s.handle, "Web", s.peer, _when(s.created), s.secure, s.handle == own.handle)
        for s in panel.sessions.of_account(req.account)
    ]
    mail = [
        Row(
            s.id,
            PROTOCOL_NAMES.get(s.protocol, s.protocol),
            s.peer,
            _when(s.since),
            s.secure,
            False,
        )
        for s in panel.active.of_account(req.account)
    ]
    return web + mail


async def sessions_page(req: Req) -> Reply:
    # With smtp.workers above 0 the SMTP sessions live in the workers, out of this list.
    workers = req.panel.settings.current.smtp.workers
    return req.page("sessions.html", rows=rows(req), smtp_workers=workers)


def _end_one(req: Req, session_id: str) -> str:
    """End ``session_id`` if it is one of the account's; the protocol's name, or "" when it
    is none of theirs (any more)."""
    panel, account = req.panel, req.account
    mail = panel.active.end(account, session_id, ENDED)
    if mail is not None:
        log.info(
            "web: {account} ended its {protocol} session from {ip} (from {peer})",
            account=account,
            protocol=mail.protocol,
            ip=mail.peer,
            peer=req.peer,
        )
        return PROTOCOL_NAMES.get(mail.protocol, mail.protocol)
    web = panel.sessions.end_handle(account, session_id)
    if web is not None:
        log.info(
            "web: {account} ended its web session from {ip} (from {peer})",
            account=account,
            ip=web.peer,
            peer=req.peer,
        )
        return "web"
    return ""


async def end_session(req: Req) -> Reply:
    """End one session of the account's; its own web session is a logout."""
    assert req.session is not None
    session_id = req.form.get("id", "")
    own = req.session.handle == session_id
    ended = _end_one(req, session_id) if session_id else ""
    if not ended:
        log.warn(
            "web: {account} from {peer} asked to end session {id}, which is none of its own",
            account=req.account,
            peer=req.peer,
            id=repr(session_id[:40]),  # as typed, quoted: no line breaks into the log
        )
        return req.page(
            "error.html",
            status=404,
            message="No such session of yours; it may have ended already.",
        )
    if own:
        reply = redirect("/login")
        reply.cookies["session"] = None
        return reply
    req.note(f"The {ended} session has ended.")
    return redirect("/sessions")


def end_mail_sessions(req: Req) -> int:
    """End every POP3, IMAP and SMTP session of the account; how many there were."""
    panel, account = req.panel, req.account
    n = 0
    for s in panel.active.of_account(account):
        if panel.active.end(account, s.id, ENDED) is not None:
            n += 1
    return n


async def end_others(req: Req) -> Reply:
    """End every session of the account but the one this page is shown in."""
    assert req.session is not None
    panel, account, own = req.panel, req.account, req.session
    n = end_mail_sessions(req)
    for w in panel.sessions.of_account(account):
        if w.handle != own.handle and panel.sessions.end_handle(account, w.handle) is not None:
            n += 1
    log.info(
        "web: {account} ended its other sessions from {peer}: {n} ended",
        account=account,
        peer=req.peer,
        n=n,
    )
    req.note(f"{n} other session(s) ended." if n else "There were no other sessions.")
    return redirect("/sessions")


def routes() -> list[Route]:
    return [
        Route("GET", re.compile(r"/sessions"), sessions_page, "user"),
        Route("POST", re.compile(r"/sessions/end"), end_session, "user"),
        Route("POST", re.compile(r"/sessions/end-others"), end_others, "user"),
    ]
