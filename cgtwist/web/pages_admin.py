"""WebAdmin: Users -> Domains and Accounts, Settings -> Network -> Client IPs, the Router
table and the Queue monitor, under ``/admin/``.

Owns these pages' forms and what they show; every change is a cgtwist.admin operation made
as the session's account (logged with it). Rights: server administrators see everything;
a domain administrator sees its own domains' accounts and nothing server-wide, and never
touches a server administrator's account. It must not talk SQL or the control socket.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, Mapping, Optional

from cgtwist.account_settings import SCOPED
from cgtwist.admin import AdminError
from cgtwist.admin.router import TableError
from cgtwist.settings_fields import check_value
from cgtwist.storage.tables import SERVICES
from cgtwist.web import forms
from cgtwist.web.render import Reply, redirect, url_part
from cgtwist.web.site import Forbidden, Req, Route

PAGE_SIZE = 50


def _accounts_url(domain: str) -> str:
    return f"/admin/domains/{url_part(domain)}/accounts"


def _account_url(domain: str, name: str) -> str:
    return f"{_accounts_url(domain)}/{url_part(name)}"


async def index(req: Req) -> Reply:
    return redirect("/admin/domains")


# ---- Users -> Domains -----------------------------------------------------------------------


async def domains(req: Req) -> Reply:
    assert req.session is not None
    rights = req.session.rights
    listed = [d for d in await req.panel.admin.domains() if rights.may_admin(d["name"])]
    return req.page("domains.html", domains=listed, form_name="")


async def domain_create(req: Req) -> Reply:
    name = forms.field(req.form, "name", limit=253).strip().lower()
    alias_of = forms.field(req.form, "alias_of", limit=253).strip().lower()
    if not name:
        raise forms.FormError("Enter the name of the new domain.")
    await req.panel.acting(req.account).add_domain(name, alias_of=alias_of or None)
    if alias_of:
        req.note(f"{name} is now another name of {alias_of}.")
        return redirect("/admin/domains")
    req.note(f"Domain {name} created.")
    return redirect(_accounts_url(name))


async def domain_remove(req: Req) -> Reply:
    name = forms.field(req.form, "name", limit=253).strip().lower()
    await req.panel.acting(req.account).remove_domain(name, force=forms.flag(req.form, "force"))
    req.note(f"{name} removed.")
    return redirect("/admin/domains")


# ---- a domain's Accounts --------------------------------------------------------------------


async def accounts(req: Req, domain: str) -> Reply:
    req.require_domain(domain)
    search = forms.field(req.query, "q", limit=100)
    after = req.query.get("after") or None
    before = req.query.get("before") or None
    page = await req.panel.admin.account_page(
        domain,
        search=search,
        limit=PAGE_SIZE,
        after=after,
        before=before,
        search_rows=req.panel.settings.current.web.account_search_rows,
    )
    base = _accounts_url(domain) + ("?q=" + urllib.parse.quote(search) + "&" if search else "?")
    return req.page(
        "accounts.html",
        domain=domain,
        page=page,
        search=search,
        next_url="" if page.next_after is None else base + "after=" + url_part(page.next_after),
        previous_url=""
        if page.previous_before is None
        else base + "before=" + url_part(page.previous_before),
        accounts_url=_accounts_url(domain),
    )


async def account_create(req: Req, domain: str) -> Reply:
    req.require_domain(domain)
    name = forms.field(req.form, "name", limit=64).strip().lower()
    password = forms.field(req.form, "password", limit=1024)
    if not name:
        raise forms.FormError("Enter the name of the new account.")
    if not password:
        raise forms.FormError("Enter a password for the new account.")
    await req.panel.acting(req.account).add_account(
        name, domain, password, real_name=forms.field(req.form, "real_name", limit=200).strip()
    )
    req.note(f"Account {name}@{domain} created.")
    return redirect(_account_url(domain, name))  # its settings next, as CommuniGate does


async def _target(req: Req, domain: str, name: str) -> dict[str, Any]:
    """The account a form acts on, after the rights check: a domain administrator never acts
    on a server administrator (it could take over the server by setting its password)."""
    req.require_domain(domain)
    info = await req.panel.admin.account(name, domain)
    assert req.session is not None
    if not req.session.rights.server_admin and (
        info["settings"].get("admin") or (name == "postmaster" and domain == req.panel.main_domain)
    ):
        raise Forbidden(
            "Only a server administrator may change a server administrator.", req.account
        )
    return info


async def account_remove(req: Req, domain: str, name: str) -> Reply:
    await _target(req, domain, name)
    await req.panel.acting(req.account).remove_account(name, domain)
    ended = req.panel.sessions.end_account(f"{name}@{domain}")
    req.note(f"Account {name}@{domain} removed." + (f" {ended} session(s) ended." if ended else ""))
    return redirect(_accounts_url(domain))


async def account_enable(req: Req, domain: str, name: str) -> Reply:
    await _target(req, domain, name)
    enabled = req.form.get("enabled") == "1"
    await req.panel.acting(req.account).set_account(name, domain, enabled=enabled)
    if not enabled:
        req.panel.sessions.end_account(f"{name}@{domain}")
    req.note(f"Account {name}@{domain} {'enabled' if enabled else 'disabled'}.")
    back = forms.field(req.form, "back", limit=1000)
    return redirect(back if back.startswith(_accounts_url(domain)) else _accounts_url(domain))


# the account page's quota form: field -> the account setting it sets (blank: inherit)
QUOTA_FIELDS = {"storage": "quota.storage", "messages": "quota.messages", "grace": "quota.grace"}


async def _account_page(
    req: Req,
    domain: str,
    name: str,
    info: Mapping[str, object],
    quota_errors: Optional[dict[str, str]] = None,
    quota_values: Optional[dict[str, str]] = None,
) -> Reply:
    quota = await req.panel.admin.quota.report(name, domain)  # counted off the reactor
    if quota_values is None:  # the account's own limits; blank where it inherits
        own = {"storage": quota.storage, "messages": quota.messages, "grace": quota.grace}
        quota_values = {k: str(v.limit) if v.source == "account" else "" for k, v in own.items()}
    return req.page(
        "account.html",
        status=400 if quota_errors else 200,
        domain=domain,
        name=name,
        info=info,
        quota=quota,
        quota_values=quota_values,
        quota_errors=quota_errors or {},
        services=SERVICES,
        accounts_url=_accounts_url(domain),
        account_url=_account_url(domain, name),
    )


async def account(req: Req, domain: str, name: str) -> Reply:
    info = await _target(req, domain, name)
    return await _account_page(req, domain, name, info)


async def account_quota(req: Req, domain: str, name: str) -> Reply:
    """The account's own quota limits: each field blank (inherit from the domain or server)
    or a value checked as ``settings set --account`` checks it; all are checked before any
    is stored, so a refused field changes nothing."""
    info = await _target(req, domain, name)
    typed = {f: forms.field(req.form, f, limit=30).strip() for f in QUOTA_FIELDS}
    checked: dict[str, object] = {}
    errors: dict[str, str] = {}
    for field, key in QUOTA_FIELDS.items():
        text = typed[field]
        if not text:
            continue
        spec = SCOPED[key].spec
        assert spec is not None
        try:
            checked[field] = check_value(spec, int(text) if text.isdigit() else text)
        except ValueError as e:
            errors[field] = str(e)
    if errors:
        return await _account_page(req, domain, name, info, errors, typed)
    admin = req.panel.acting(req.account)
    own = await admin.scoped_settings(account=(name, domain))
    for field, key in QUOTA_FIELDS.items():
        if field in checked:
            if own.get(key) != checked[field]:
                await admin.set_setting(key, checked[field], account=(name, domain))
        elif key in own:
            await admin.unset_setting(key, account=(name, domain))
    req.note(f"Quota of {name}@{domain} saved.")
    return redirect(_account_url(domain, name))


async def account_settings(req: Req, domain: str, name: str) -> Reply:
    await _target(req, domain, name)
    await req.panel.acting(req.account).set_account(
        name,
        domain,
        real_name=forms.field(req.form, "real_name", limit=200).strip(),
        services=forms.services(req.form, SERVICES),
        enabled=forms.flag(req.form, "enabled"),
    )
    if not forms.flag(req.form, "enabled"):
        req.panel.sessions.end_account(f"{name}@{domain}")
    req.note("Settings saved.")
    return redirect(_account_url(domain, name))


async def account_password(req: Req, domain: str, name: str) -> Reply:
    await _target(req, domain, name)
    password = forms.field(req.form, "password", limit=1024)
    if not password:
        raise forms.FormError("Enter the new password.")
    await req.panel.acting(req.account).set_password(name, domain, password)
    ended = req.panel.sessions.end_account(f"{name}@{domain}")
    if f"{name}@{domain}" == req.account:
        reply = redirect("/login?changed=1")
        reply.cookies["session"] = None
        return reply
    req.note(
        f"Password of {name}@{domain} changed." + (f" {ended} session(s) ended." if ended else "")
    )
    return redirect(_account_url(domain, name))


# ---- Settings -> Network: the address lists -------------------------------------------------

# page name -> (setting, title, what the list does)
ADDRESS_LISTS = {
    "clientips": (
        "clients.ips",
        "Client IPs",
        "Networks of your own users: they may relay, skip RBL and blacklist checks and use "
        "plain HTTP here.",
    ),
    "blacklisted": (
        "protection.blacklist.ips",
        "Blacklisted IPs",
        "Hosts refused at connect (554 5.7.1) when blacklisting is on.",
    ),
    "whitehole": (
        "protection.whitehole.ips",
        "White-hole IPs",
        "Hosts never blacklisted or checked against RBLs (partners, backup MX).",
    ),
    "trusted": (
        "auth.trusted_ips",
        "Login-trusted IPs",
        "Hosts whose failed logins are never delayed or capped (besides Client IPs).",
    ),
}


def _address_list(name: str) -> tuple[str, str, str]:
    found = ADDRESS_LISTS.get(name)
    if found is None:
        raise forms.FormError(f"no address list {name!r}")
    return found


def _list_page(req: Req, name: str, value: str, errors: list[Any], status: int = 200) -> Reply:
    _key, title, hint = _address_list(name)
    return req.page(
        "addresslist.html",
        status=status,
        name=name,
        title=title,
        hint=hint,
        lists=[(n, t) for n, (_k, t, _h) in ADDRESS_LISTS.items()],
        value=value,
        errors=errors,
    )


async def address_list(req: Req, name: str) -> Reply:
    key, _title, _hint = _address_list(name)
    stored = await req.panel.admin.setting(key)
    value = stored if isinstance(stored, str) else "\n".join(stored or ())
    return _list_page(req, name, value, [])


async def address_list_save(req: Req, name: str) -> Reply:
    key, title, _hint = _address_list(name)
    text = forms.field(req.form, "ips", limit=req.panel.max_text()).replace("\r\n", "\n")
    errors = await req.panel.in_thread(forms.line_errors, text)
    if errors:
        return _list_page(req, name, text, errors, status=400)
    await req.panel.acting(req.account).set_setting(key, text)
    req.note(f"{title} saved.")
    return redirect(f"/admin/settings/network/{name}")


# ---- Settings -> Listeners ------------------------------------------------------------------

LISTENER_FIELDS = ("protocol", "address", "port", "tls", "submission")


def _listener_key(entry: dict[str, Any]) -> tuple[str, str, int, str, bool]:
    return (
        str(entry.get("protocol", "")),
        str(entry.get("address", "0.0.0.0")),
        int(entry.get("port") or 0),
        str(entry.get("tls", "none" if entry.get("protocol") == "http" else "starttls")),
        bool(entry.get("submission", False)),
    )


async def _listeners(req: Req) -> list[dict[str, Any]]:
    """The configured listeners; when the setting was never changed, the ones running (the
    built-in defaults), so the first edit turns them into an explicit list."""
    stored = await req.panel.admin.setting("listeners")
    if stored is not None:
        return [dict(x) for x in stored]
    return [
        {
            "protocol": e["protocol"],
            "address": e["address"],
            "port": e["configured_port"],
            "tls": e["tls"],
            **({"submission": True} if e.get("submission") else {}),
        }
        for e in req.panel.listening()
    ]


def _listeners_page(req: Req, configured: list[dict[str, Any]], error: str = "") -> Reply:
    state = {_listener_key({**e, "port": e["configured_port"]}): e for e in req.panel.listening()}
    rows = [(entry, state.get(_listener_key(entry))) for entry in configured]
    return req.page(
        "listeners.html",
        status=400 if error else 200,
        rows=rows,
        error=error,
        lists=[(n, t) for n, (_k, t, _h) in ADDRESS_LISTS.items()],
    )


async def listeners(req: Req) -> Reply:
    return _listeners_page(req, await _listeners(req))


async def _store_listeners(req: Req, configured: list[dict[str, Any]], note: str) -> Reply:
    try:
        await req.panel.acting(req.account).set_setting("listeners", configured)
    except ValueError as e:
        return _listeners_page(req, await _listeners(req), str(e))
    req.note(note)
    return redirect("/admin/settings/listeners")


def _port(req: Req) -> int:
    raw = forms.field(req.form, "port", limit=10).strip()
    if not raw.isdigit():
        raise forms.FormError("The port is a number (1-65535).")
    return int(raw)


async def listener_add(req: Req) -> Reply:
    try:
        port = _port(req)
    except forms.FormError as e:
        return _listeners_page(req, await _listeners(req), str(e))
    entry: dict[str, Any] = {
        "protocol": forms.field(req.form, "protocol", limit=10),
        "address": forms.field(req.form, "address", limit=64).strip() or "0.0.0.0",
        "port": port,
        "tls": forms.field(req.form, "tls", limit=10),
    }
    if forms.flag(req.form, "submission"):
        entry["submission"] = True
    configured = await _listeners(req)
    return await _store_listeners(
        req,
        configured + [entry],
        f"Listener {entry['protocol']} {entry['address']}:{entry['port']} added.",
    )


async def listener_remove(req: Req) -> Reply:
    target = (
        forms.field(req.form, "protocol", limit=10),
        forms.field(req.form, "address", limit=64),
        _port(req),
        forms.field(req.form, "tls", limit=10),
        forms.field(req.form, "submission", limit=5) == "1",
    )
    configured = await _listeners(req)
    kept = [e for e in configured if _listener_key(e) != target]
    if len(kept) == len(configured):
        return _listeners_page(req, configured, "That listener is not configured (any more).")
    return await _store_listeners(
        req, kept, f"Listener {target[0]} {target[1]}:{target[2]} removed."
    )


# ---- Router ---------------------------------------------------------------------------------


async def router(req: Req) -> Reply:
    table = await req.panel.admin.router.table()
    return req.page("router.html", table=table, error=None, result=None, test_error="", address="")


async def router_save(req: Req) -> Reply:
    text = forms.field(req.form, "table", limit=req.panel.max_text()).replace("\r\n", "\n")
    try:
        stored = await req.panel.acting(req.account).router.set_table(text)
    except TableError as e:
        return req.page(
            "router.html", status=400, table=text, error=e, result=None, test_error="", address=""
        )
    req.note(f"Router table saved: {stored.records} record(s).")
    for line, warning in stored.warnings:
        req.note(f"Warning, line {line}: {warning}")
    return redirect("/admin/router")


async def router_test(req: Req) -> Reply:
    text = forms.field(req.form, "table", limit=req.panel.max_text()).replace("\r\n", "\n")
    address = forms.field(req.form, "address", limit=320).strip()
    error = None
    result = None
    test_error = ""
    try:
        if not address:
            raise AdminError("Enter an address to test.")
        result = await req.panel.admin.router.test(
            address, access=forms.flag(req.form, "access"), text=text
        )
    except TableError as e:
        error = e
    except AdminError as e:
        test_error = str(e)
    return req.page(
        "router.html",
        table=text,
        error=error,
        result=result,
        test_error=test_error,
        address=address,
    )


# ---- Queue ----------------------------------------------------------------------------------


async def queue(req: Req) -> Reply:
    held = {"held": True, "active": False}.get(req.query.get("show", ""))
    listing = await req.panel.admin.queue.messages(
        held=held, recipient=req.query.get("rcpt") or None, limit=200
    )
    queues = await req.panel.admin.queue.queues()
    return req.page(
        "queue.html",
        messages=listing.get("messages") or [],
        active=listing.get("active", 0),
        backlog=listing.get("backlog", 0),
        queues=queues,
        show=req.query.get("show", ""),
        rcpt=req.query.get("rcpt", ""),
        now=req.panel.clock.seconds(),
    )


async def queue_act(req: Req, action: str) -> Reply:
    msg_id = forms.field(req.form, "id", limit=64)
    await req.panel.acting(req.account).queue.act(action, msg_id)
    req.note(f"Message {msg_id}: {action} done.")
    return redirect("/admin/queue")


def routes() -> list[Route]:
    d = r"(?P<domain>[^/]+)"
    a = r"(?P<name>[^/]+)"
    acc = rf"/admin/domains/{d}/accounts"
    return [
        Route("GET", re.compile(r"/admin/?"), index, "admin"),
        Route("GET", re.compile(r"/admin/domains"), domains, "admin"),
        Route("POST", re.compile(r"/admin/domains"), domain_create, "server"),
        Route("POST", re.compile(r"/admin/domains/remove"), domain_remove, "server"),
        Route("GET", re.compile(acc), accounts, "admin"),
        Route("POST", re.compile(acc), account_create, "admin"),
        Route("GET", re.compile(rf"{acc}/{a}"), account, "admin"),
        Route("POST", re.compile(rf"{acc}/{a}"), account_settings, "admin"),
        Route("POST", re.compile(rf"{acc}/{a}/remove"), account_remove, "admin"),
        Route("POST", re.compile(rf"{acc}/{a}/enable"), account_enable, "admin"),
        Route("POST", re.compile(rf"{acc}/{a}/password"), account_password, "admin"),
        Route("POST", re.compile(rf"{acc}/{a}/quota"), account_quota, "admin"),
        Route("GET", re.compile(r"/admin/settings/network/(?P<name>\w+)"), address_list, "server"),
        Route(
            "POST",
            re.compile(r"/admin/settings/network/(?P<name>\w+)"),
            address_list_save,
            "server",
        ),
        Route("GET", re.compile(r"/admin/settings/listeners"), listeners, "server"),
        Route("POST", re.compile(r"/admin/settings/listeners"), listener_add, "server"),
        Route("POST", re.compile(r"/admin/settings/listeners/remove"), listener_remove, "server"),
        Route("GET", re.compile(r"/admin/router"), router, "server"),
        Route("POST", re.compile(r"/admin/router"), router_save, "server"),
        Route("POST", re.compile(r"/admin/router/test"), router_test, "server"),
        Route("GET", re.compile(r"/admin/queue"), queue, "server"),
        Route(
            "POST",
            re.compile(r"/admin/queue/(?P<action>hold|release|retry|drop|bounce)"),
            queue_act,
            "server",
        ),
    ]
