"""WebAdmin: a domain's mailing lists, under ``/admin/domains/<domain>/lists``.

Owns these pages' forms: list the domain's lists and create one; a list's settings (every
field of ``cgtwist.lists.model.FIELDS``, each checked by ``check_field`` and refused on its
own field), its subscribers (find, subscribe, change the mode, unsubscribe, export and
import as CSV), its held posts (approve or reject: the running server's LIST agent does it), and removal.
Each change is a ``cgtwist.admin.lists`` operation made as the session's account (logged
with it). Rights: server administrators and the domain's administrators. The public
one-click unsubscribe is cgtwist.web.pages_lists; this module must not touch tokens or
deliver mail.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Union

from cgtwist.errors import AlreadyExists, InvalidName, NotFound
from cgtwist.lists.model import FIELDS, MODES, POLICIES, REPLY_TO, check_field
from cgtwist.web import forms
from cgtwist.web.render import Reply, redirect, url_part
from cgtwist.web.site import Req, Route

Value = Union[str, int, bool]  # a list field's value (cgtwist.lists.model.FIELDS)
SHOWN_SUBSCRIBERS = 200  # rows on the page; the CSV export has them all
CHOICES = {"policy": POLICIES, "reply_to": REPLY_TO}
LABELS = {
    "owner": "Owner (account)",
    "description": "Description",
    "policy": "Who may post",
    "size_limit": "Largest post (octets, 0 = no limit)",
    "subject_tag": "Subject tag",
    "footer": "Footer",
    "reply_to": "Reply-To of the copies",
    "digest_interval": "Seconds between digests",
    "archive": "Archive account",
    "archive_folder": "Archive folder",
    "personalize": "One personalised copy per subscriber",
    "confirm_subscribe": "Subscribing by mail needs a confirmation",
}


def _base(domain: str) -> str:
    return f"/admin/domains/{url_part(domain)}/lists"


def _url(domain: str, name: str) -> str:
    return f"{_base(domain)}/{url_part(name)}"


@dataclass(frozen=True)
class FieldView:
    """How the settings form shows one field: ``kind`` is check, number, choice, area or
    text."""

    key: str
    kind: str
    label: str
    doc: str
    choices: tuple[str, ...] = ()


def _fields() -> list[FieldView]:
    """Every list field as the settings form shows it."""
    out = []
    for key, (typ, doc) in FIELDS.items():
        if typ is bool:
            kind = "check"
        elif typ is int:
            kind = "number"
        elif key in CHOICES:
            kind = "choice"
        elif key == "footer":
            kind = "area"
        else:
            kind = "text"
        out.append(FieldView(key, kind, LABELS.get(key, key), doc, CHOICES.get(key, ())))
    return out


def settings_from_form(
    form: Mapping[str, str], keys: Optional[list[str]] = None
) -> tuple[dict[str, Value], dict[str, str]]:
    """The list fields a form submits, typed and checked by ``check_field``, and the error of
    each field that is refused ({} when all are fine). Only ``keys`` (default: every
    field); a checkbox that is absent is off."""
    values: dict[str, Value] = {}
    errors: dict[str, str] = {}
    for key in keys or list(FIELDS):
        typ = FIELDS[key][0]
        value: Value
        if typ is bool:
            value = forms.flag(form, key)
        elif typ is int:
            raw = form.get(key, "").strip()
            if not raw.isdigit() or len(raw) > 12:
                errors[key] = "Enter a whole number (0 or more)."
                continue
            value = int(raw)
        else:
            value = form.get(key, "").replace("\r\n", "\n")
            if key != "footer":
                value = value.strip()
        try:
            values[key] = check_field(key, value)
        except ValueError as e:
            errors[key] = str(e)
    return values, errors


def _foreign_accounts(
    req: Req,
    values: Mapping[str, Value],
    errors: dict[str, str],
    stored: Optional[Mapping[str, object]] = None,
) -> None:
    """A domain administrator names owner and archive accounts of its own domains only: the
    archive account's folder gets a copy of every post, and the owner the held posts and
    bounces, so another domain's account would be written to or told by this list. A value
    a server administrator set (``stored``) may stay."""
    assert req.session is not None
    rights = req.session.rights
    for key in ("owner", "archive"):
        who = values.get(key)
        if stored is not None and who == stored.get(key):
            continue
        if isinstance(who, str) and who and not rights.may_admin(who.rpartition("@")[2]):
            errors[key] = f"{who} is not an account of a domain you administer"


def _owner_error(e: Exception, errors: dict[str, str]) -> bool:
    """Put the store's "owner x: no such account" on its field; False for other errors."""
    text = str(e)
    for key in ("owner", "archive"):
        if text.startswith(key + " "):
            errors[key] = text
            return True
    return False


# ---- the domain's lists ---------------------------------------------------------------------


async def _listing(
    req: Req,
    domain: str,
    errors: Optional[dict[str, str]] = None,
    values: Optional[Mapping[str, str]] = None,
) -> Reply:
    lists = await req.panel.admin.lists.all(domain)
    return req.page(
        "lists.html",
        status=400 if errors else 200,
        domain=domain,
        lists=lists,
        base=_base(domain),
        policies=POLICIES,
        errors=errors or {},
        values=values or {"name": "", "owner": "", "description": "", "policy": "subscribers"},
    )


async def listing(req: Req, domain: str) -> Reply:
    req.require_domain(domain)
    return await _listing(req, domain)


async def create(req: Req, domain: str) -> Reply:
    req.require_domain(domain)
    name = forms.field(req.form, "name", limit=64).strip().lower()
    shown = {k: forms.field(req.form, k, limit=400) for k in ("owner", "description", "policy")}
    values, errors = settings_from_form(req.form, ["owner", "description", "policy"])
    _foreign_accounts(req, values, errors)
    if not name:
        errors["name"] = "Enter the name of the new list."
    if not errors:
        try:
            lst = await req.panel.acting(req.account).lists.add(f"{name}@{domain}", values)
        except (InvalidName, AlreadyExists) as e:
            errors["name"] = str(e)
        except NotFound as e:
            if not _owner_error(e, errors):
                raise
        else:
            req.note(f"List {lst.address} created.")
            return redirect(_url(domain, lst.name))
    return await _listing(req, domain, errors, dict(shown, name=name))


# ---- one list -------------------------------------------------------------------------------


async def _list_page(
    req: Req,
    domain: str,
    name: str,
    errors: Optional[dict[str, str]] = None,
    shown: Optional[Mapping[str, Value]] = None,
) -> Reply:
    lists = req.panel.admin.lists
    lst = await lists.get(f"{name}@{domain}")
    search = forms.field(req.query, "q", limit=100).strip().lower()
    total, matching, subs = await lists.subscriber_page(lst.address, search, SHOWN_SUBSCRIBERS)
    held = await lists.held(lst.address)
    return req.page(
        "list.html",
        status=400 if errors else 200,
        domain=domain,
        lst=lst,
        values=shown or lst.fields(),
        fields=_fields(),
        errors=errors or {},
        total=total,
        matching=matching,
        subscribers=subs,
        search=search,
        modes=MODES,
        held=[(m, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(m.created))) for m in held],
        base=_base(domain),
        url=_url(domain, name),
        body_limit=req.panel.body_limit(),
    )


async def show(req: Req, domain: str, name: str) -> Reply:
    req.require_domain(domain)
    return await _list_page(req, domain, name)


async def save(req: Req, domain: str, name: str) -> Reply:
    req.require_domain(domain)
    address = f"{name}@{domain}"
    lst = await req.panel.admin.lists.get(address)  # exists (else 409)
    values, errors = settings_from_form(req.form)
    _foreign_accounts(req, values, errors, lst.fields())
    if not errors:
        try:
            await req.panel.acting(req.account).lists.set(address, values)
        except NotFound as e:
            if not _owner_error(e, errors):
                raise
        else:
            req.note(f"Settings of {address} saved.")
            return redirect(_url(domain, name))
    shown: dict[str, Value] = {k: req.form.get(k, "") for k in FIELDS}
    shown.update({k: forms.flag(req.form, k) for k, (t, _d) in FIELDS.items() if t is bool})
    return await _list_page(req, domain, name, errors, shown)


async def remove(req: Req, domain: str, name: str) -> Reply:
    req.require_domain(domain)
    await req.panel.acting(req.account).lists.remove(f"{name}@{domain}")
    req.note(f"List {name}@{domain} removed with its subscribers and held posts.")
    return redirect(_base(domain))


async def subscribe(req: Req, domain: str, name: str) -> Reply:
    req.require_domain(domain)
    address = f"{name}@{domain}"
    who = forms.field(req.form, "address", limit=320).strip()
    mode = forms.field(req.form, "mode", limit=20) or "feed"
    real_name = forms.field(req.form, "real_name", limit=200).strip()
    try:
        sub = await req.panel.acting(req.account).lists.subscribe(address, who, mode, real_name)
    except InvalidName:
        raise
    except ValueError as e:  # not an address, no such mode
        key = "mode" if "mode" in str(e) else "address"
        return await _list_page(req, domain, name, {f"sub_{key}": str(e)})
    req.note(f"{sub.address} subscribed to {address} ({sub.mode}).")
    return redirect(_url(domain, name) + "#subscribers")


async def unsubscribe(req: Req, domain: str, name: str) -> Reply:
    req.require_domain(domain)
    address = f"{name}@{domain}"
    who = forms.field(req.form, "address", limit=320)
    await req.panel.acting(req.account).lists.unsubscribe(address, who)
    req.note(f"{who} unsubscribed from {address}.")
    return redirect(_url(domain, name) + "#subscribers")


async def export(req: Req, domain: str, name: str) -> Reply:
    req.require_domain(domain)
    text = await req.panel.admin.lists.export_csv(f"{name}@{domain}")
    return Reply(
        body=text.encode("utf-8"),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}@{domain}.csv"'},
    )


async def import_csv(req: Req, domain: str, name: str) -> Reply:
    """Subscribers from an uploaded CSV file (multipart) or pasted text: the columns of the
    export, or one address a line. All or none: a bad row is named by its line and nothing is
    written. The form is bounded by web.max_request_size (413 above it); the text is parsed
    in the database's thread, not on the server's reactor."""
    req.require_domain(domain)
    address = f"{name}@{domain}"
    limit = req.panel.body_limit()
    text = forms.field(req.form, "file", limit=limit)
    if not text.strip():
        text = forms.field(req.form, "text", limit=limit)
    if not text.strip():
        return await _list_page(
            req, domain, name, {"import": "Choose a CSV file or paste its lines."}
        )
    replace = forms.flag(req.form, "replace")
    try:
        n = await req.panel.acting(req.account).lists.import_csv(address, text, replace)
    except InvalidName:
        raise
    except ValueError as e:  # csvio names the line
        return await _list_page(req, domain, name, {"import": f"Nothing imported: {e}"})
    note = f"{n} subscriber{'' if n == 1 else 's'} imported into {address}"
    req.note(note + ("; everyone not in the file unsubscribed." if replace else "."))
    return redirect(_url(domain, name) + "#subscribers")


async def decide(req: Req, domain: str, name: str) -> Reply:
    req.require_domain(domain)
    address = f"{name}@{domain}"
    msg_id = forms.field(req.form, "id", limit=100)
    approve = forms.field(req.form, "decision", limit=10) == "approve"
    reason = forms.field(req.form, "reason", limit=500).strip() or None
    await req.panel.acting(req.account).lists.decide(address, msg_id, approve, reason)
    req.note(f"Held post {msg_id} {'approved' if approve else 'rejected'}.")
    return redirect(_url(domain, name) + "#held")


def routes() -> list[Route]:
    base = r"/admin/domains/(?P<domain>[^/]+)/lists"
    one = base + r"/(?P<name>[^/]+)"
    return [
        Route("GET", re.compile(base), listing, "admin"),
        Route("POST", re.compile(base), create, "admin"),
        Route("GET", re.compile(one), show, "admin"),
        Route("POST", re.compile(one), save, "admin"),
        Route("POST", re.compile(one + "/remove"), remove, "admin"),
        Route("POST", re.compile(one + "/subscribe"), subscribe, "admin"),
        Route("POST", re.compile(one + "/unsubscribe"), unsubscribe, "admin"),
        Route("GET", re.compile(one + r"/subscribers\.csv"), export, "admin"),
        Route("POST", re.compile(one + "/import"), import_csv, "admin"),
        Route("POST", re.compile(one + "/held"), decide, "admin"),
    ]
