"""WebAdmin: a domain's account aliases, under ``/admin/domains/<domain>/aliases``.

Owns the page that lists the domain's aliases (another name of an address: mail to it is
delivered to the target, and the account may log in with it, CommuniGate's Aliases), adds
one and removes one, each a cgtwist.admin operation made as the session's account (logged
with it). Rights: server administrators and the domain's administrators. A bad name or
target is shown on its field and nothing changes. It must not talk SQL.
"""

from __future__ import annotations

import re
from typing import Optional

from cgtwist.errors import AlreadyExists, InvalidName
from cgtwist.paths import check_account
from cgtwist.storage.tables import check_target_address
from cgtwist.web import forms
from cgtwist.web.render import Reply, redirect, url_part
from cgtwist.web.site import Req, Route


def _base(domain: str) -> str:
    return f"/admin/domains/{url_part(domain)}/aliases"


async def _page(
    req: Req,
    domain: str,
    errors: Optional[dict[str, str]] = None,
    values: Optional[dict[str, str]] = None,
) -> Reply:
    aliases = await req.panel.admin.aliases(domain)
    return req.page(
        "aliases.html",
        status=400 if errors else 200,
        domain=domain,
        aliases=[(a.rpartition("@")[0], target) for a, target in aliases],
        base=_base(domain),
        errors=errors or {},
        values=values or {"name": "", "target": ""},
    )


async def listing(req: Req, domain: str) -> Reply:
    req.require_domain(domain)
    await req.panel.admin.domain(domain)  # "does not exist" (409) for an unknown domain
    return await _page(req, domain)


async def create(req: Req, domain: str) -> Reply:
    req.require_domain(domain)
    raw_name = forms.field(req.form, "name", limit=64).strip()
    target = forms.field(req.form, "target", limit=320).strip()
    errors: dict[str, str] = {}
    name = ""
    try:
        name = check_account(raw_name)
    except InvalidName:
        errors["name"] = (
            "Enter a name: letters, digits, dot, dash, underscore."
            if raw_name
            else "Enter the name of the new alias."
        )
    try:
        check_target_address(target, domain)
    except ValueError:
        errors["target"] = "Enter the address (or a name in this domain) it stands for."
    if not errors:
        try:
            await req.panel.acting(req.account).add_alias(name, domain, target)
        except (AlreadyExists, ValueError) as e:  # the name is taken; points to itself
            errors["target" if "itself" in str(e) else "name"] = str(e)
        else:
            req.note(f"Alias {name}@{domain} created.")
            return redirect(_base(domain))
    return await _page(req, domain, errors, {"name": raw_name, "target": target})


async def remove(req: Req, domain: str) -> Reply:
    req.require_domain(domain)
    name = forms.field(req.form, "name", limit=64)
    await req.panel.acting(req.account).remove_alias(name, domain)
    req.note(f"Alias {name}@{domain} removed.")
    return redirect(_base(domain))


def routes() -> list[Route]:
    base = r"/admin/domains/(?P<domain>[^/]+)/aliases"
    return [
        Route("GET", re.compile(base), listing, "admin"),
        Route("POST", re.compile(base), create, "admin"),
        Route("POST", re.compile(base + "/remove"), remove, "admin"),
    ]
