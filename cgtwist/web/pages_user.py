"""WebUser: logging in and out, and an account's own page (its password, for now).

Owns the pages every account has under ``/``: the login form (shared by WebAdmin), the
account's page and its password change, which ends every web session of the account and,
when the user leaves the box ticked, its mail (IMAP, POP3, SMTP) sessions too (cgtwist.web.
pages_sessions lists and ends them one by one). A webmail will sit beside these later. It must not administer other accounts (cgtwist.web.pages_admin).
"""

from __future__ import annotations

import re
import secrets

from cgtwist.logs import Logger
from cgtwist.storage.storebase import InvalidValue
from cgtwist.web.login import MAX_PASSWORD, LoginRefused
from cgtwist.web.pages_sessions import end_mail_sessions
from cgtwist.web.render import Reply, redirect
from cgtwist.web.rights import Rights
from cgtwist.web.site import LOGIN_COOKIE, Req, Route

log = Logger(namespace="cgtwist.web")


def _safe_next(target: str) -> str:
    """A local path to go to after the login; anything else (another site) is ignored."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _login_page(req: Req, error: str = "", status: int = 200, name: str = "") -> Reply:
    pre = req.cookies.get(LOGIN_COOKIE, "")
    cookies: dict[str, str | None] = {}
    if not re.fullmatch(r"[A-Za-z0-9_-]{20,64}", pre):
        pre = secrets.token_urlsafe(24)
        cookies[LOGIN_COOKIE] = pre
    reply = req.page(
        "login.html",
        status=status,
        error=error,
        changed=req.query.get("changed") == "1",
        name=name,
        login_token=req.panel.login.form_token(pre),
        next=_safe_next(req.query.get("next", "") or req.form.get("next", "")),
    )
    reply.cookies.update(cookies)
    return reply


async def login_form(req: Req) -> Reply:
    if req.session is not None and not req.query.get("next"):
        return redirect("/admin/" if req.session.rights.any_admin else "/")
    return _login_page(req)


async def login(req: Req) -> Reply:
    panel = req.panel
    pre = req.cookies.get(LOGIN_COOKIE, "")
    if not panel.login.form_token_ok(pre, req.form.get("csrf", "")):
        log.warn("web: login from {peer} without a valid form token; refused", peer=req.peer)
        return _login_page(req, "The login form expired; please try again.", 403)
    name = req.form.get("name", "")
    try:
        account, fingerprint = await panel.login.check(name, req.form.get("password", ""), req.peer)
    except LoginRefused as e:
        return _login_page(req, str(e), 401, name=name[:320])
    rights = Rights.of(account, panel.main_domain)
    if req.session is not None:  # a new login replaces the old session (no fixation)
        panel.sessions.end(req.session.id)
    session = panel.sessions.create(
        account.address, rights, req.peer, fingerprint, secure=req.secure
    )
    log.info(
        "web: login {account} from {peer} ({role})",
        account=account.address,
        peer=req.peer,
        role="server administrator"
        if rights.server_admin
        else "domain administrator"
        if rights.domains
        else "user",
    )
    target = _safe_next(req.form.get("next", ""))
    if target.startswith("/admin") and not rights.any_admin:
        target = ""
    reply = redirect(target or ("/admin/" if rights.any_admin else "/"))
    reply.cookies["session"] = session.id
    reply.cookies[LOGIN_COOKIE] = None
    return reply


async def logout(req: Req) -> Reply:
    assert req.session is not None
    req.panel.sessions.end(req.session.id)
    log.info("web: logout {account} from {peer}", account=req.session.account, peer=req.peer)
    reply = redirect("/login")
    reply.cookies["session"] = None
    return reply


async def home(req: Req) -> Reply:
    name, _, domain = req.account.partition("@")
    info = await req.panel.store.get_account_info(name, domain)
    quota = await req.panel.admin.quota.report(name, domain)  # counted off the reactor
    return req.page("user.html", info=info, quota=quota, **_session_counts(req), error="")


def _session_counts(req: Req) -> dict[str, int]:
    return {
        "sessions": len(req.panel.sessions.of_account(req.account)),
        "mail_sessions": len(req.panel.active.of_account(req.account)),
    }


async def change_password(req: Req) -> Reply:
    """An account's own new password, held to the account password policy
    (``password.min_length``/``min_classes``: the one the store checks for cgtwist-admin and
    WebAdmin too); a refusal shows the policy's reason on the account's page."""
    panel = req.panel
    name, _, domain = req.account.partition("@")
    current = req.form.get("current", "")
    new, again = req.form.get("new", ""), req.form.get("again", "")
    error = ""
    if new != again:
        error = "The new password and its repetition differ."
    elif not new:
        error = "Enter the new password."
    elif len(new) > MAX_PASSWORD:
        error = f"The new password must have at most {MAX_PASSWORD} characters."
    elif not await panel.login.verify(req.account, current, req.peer):
        error = "The current password is wrong."
    else:
        try:
            await panel.acting(req.account).set_password(name, domain, new)
        except InvalidValue as e:  # the policy's reason ("too short: at least 10 characters")
            error = str(e).capitalize() + "."
    if error:
        info = await panel.store.get_account_info(name, domain)
        quota = await panel.admin.quota.report(name, domain)
        counts = _session_counts(req)
        return req.page("user.html", status=400, info=info, quota=quota, **counts, error=error)
    ended = panel.sessions.end_account(req.account)
    # Someone else may know the old password: their mail sessions go too unless unticked.
    mail = end_mail_sessions(req) if req.form.get("end_mail") == "1" else 0
    log.info(
        "web: {account} changed its password; {n} web and {m} mail session(s) ended",
        account=req.account,
        n=ended,
        m=mail,
    )
    reply = redirect("/login?changed=1")
    reply.cookies["session"] = None
    return reply


def routes() -> list[Route]:
    return [
        Route("GET", re.compile(r"/login"), login_form, "public"),
        Route("POST", re.compile(r"/login"), login, "public", csrf=False),
        Route("POST", re.compile(r"/logout"), logout, "user"),
        Route("GET", re.compile(r"/"), home, "user"),
        Route("POST", re.compile(r"/password"), change_password, "user"),
    ]
