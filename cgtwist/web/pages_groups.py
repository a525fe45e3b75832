"""WebAdmin: a domain's Forwarders and Groups, under ``/admin/domains/<domain>/forwarders``
and ``.../groups``.

Owns these pages' forms: list, create, edit the addresses (a forwarder's targets, a group's
members) and remove, each a cgtwist.admin operation made as the session's account (logged
with it). A forwarder hands mail on to its targets; a group delivers a copy to each member
(docs/ACCOUNTS.md). Rights: server administrators and the domain's administrators. Bad input
is shown on its field (the name, or each address line that is not an address), and nothing
is changed. It must not talk SQL or decide routing.
"""

from __future__ import annotations

import re
from typing import Optional

from cgtwist.errors import AlreadyExists, InvalidName
from cgtwist.paths import check_account
from cgtwist.storage.groups import MAX_TARGETS
from cgtwist.storage.tables import check_target_address
from cgtwist.web import forms
from cgtwist.web.render import Reply, redirect, url_part
from cgtwist.web.site import Req, Route

# path segment -> (kind in the store, singular title, plural title, what the addresses are)
KINDS = {
    "forwarders": ("forwarder", "Forwarder", "Forwarders", "Targets"),
    "groups": ("group", "Group", "Groups", "Members"),
}
EXPLAIN = {
    "forwarder": "Mail to a forwarder goes on to its targets (accepted from any sender, as "
    "CommuniGate's Forwarders). A bare name is in this domain.",
    "group": "Mail to a group is delivered as a copy to each member. A bare name is in this "
    "domain.",
}


def _base(domain: str, segment: str) -> str:
    return f"/admin/domains/{url_part(domain)}/{segment}"


def _kind(segment: str) -> tuple[str, str, str, str]:
    found = KINDS.get(segment)
    if found is None:
        raise forms.FormError(f"no such page {segment!r}")
    return found


def _titles(domain: str, segment: str) -> dict[str, str]:
    """What the list page and a forwarder's or group's own page both show: the domain, the
    kind and its titles, the explanation and the page's base path."""
    kind, single, plural, what = _kind(segment)
    return {
        "domain": domain,
        "segment": segment,
        "kind": kind,
        "single": single,
        "plural": plural,
        "what": what,
        "explain": EXPLAIN[kind],
        "base": _base(domain, segment),
    }


def _lines(text: str) -> list[str]:
    """One address a line (commas too, as people paste them); blank lines dropped."""
    return [x.strip() for line in text.splitlines() for x in line.split(",") if x.strip()]


def _address_errors(lines: list[str], domain: str) -> list[str]:
    """Why each address line is refused (none: all are addresses), checked as the store
    checks them, so the page can name every bad line at once."""
    errors = []
    for line in lines:
        try:
            check_target_address(line, domain)
        except ValueError:
            errors.append(f"{line[:100]!r} is not an address")
    if not lines:
        errors.append("Enter at least one address.")
    if len(lines) > MAX_TARGETS:
        errors.append(f"At most {MAX_TARGETS} addresses.")
    return errors


def _listing(
    req: Req,
    domain: str,
    segment: str,
    groups: list[tuple[str, tuple[str, ...]]],
    errors: Optional[dict[str, str]] = None,
    values: Optional[dict[str, str]] = None,
) -> Reply:
    return req.page(
        "groups.html",
        status=400 if errors else 200,
        **_titles(domain, segment),
        groups=[(a.rpartition("@")[0], targets) for a, targets in groups],
        errors=errors or {},
        values=values or {"name": "", "targets": ""},
    )


async def listing(req: Req, domain: str, segment: str) -> Reply:
    req.require_domain(domain)
    kind = _kind(segment)[0]
    return _listing(req, domain, segment, await req.panel.admin.groups(kind, domain))


async def create(req: Req, domain: str, segment: str) -> Reply:
    req.require_domain(domain)
    kind, single, _plural, _what = _kind(segment)
    raw_name = forms.field(req.form, "name", limit=64).strip()
    text = forms.field(req.form, "targets", limit=req.panel.max_text())
    values = {"name": raw_name, "targets": text}
    errors: dict[str, str] = {}
    try:
        name = check_account(raw_name)
    except InvalidName:
        name = ""
        errors["name"] = (
            "Enter a name: letters, digits, dot, dash, underscore."
            if raw_name
            else "Enter the name of the new " + single.lower() + "."
        )
    lines = _lines(text)
    bad = await req.panel.in_thread(_address_errors, lines, domain)
    if bad:
        errors["targets"] = "; ".join(bad)
    if not errors:
        try:
            await req.panel.acting(req.account).add_group(kind, name, domain, lines)
        except (AlreadyExists, ValueError) as e:  # the name is taken; sends to itself
            errors["targets" if "itself" in str(e) else "name"] = str(e)
    if errors:
        groups = await req.panel.admin.groups(kind, domain)
        return _listing(req, domain, segment, groups, errors, values)
    req.note(f"{single} {name}@{domain} created.")
    return redirect(f"{_base(domain, segment)}/{url_part(name)}")


def _edit_page(
    req: Req,
    domain: str,
    segment: str,
    name: str,
    targets: str,
    error: str = "",
) -> Reply:
    return req.page(
        "group.html",
        status=400 if error else 200,
        **_titles(domain, segment),
        name=name,
        targets=targets,
        error=error,
        url=f"{_base(domain, segment)}/{url_part(name)}",
    )


async def edit(req: Req, domain: str, segment: str, name: str) -> Reply:
    req.require_domain(domain)
    kind = _kind(segment)[0]
    targets = await req.panel.admin.group(kind, name, domain)
    return _edit_page(req, domain, segment, name, "\n".join(targets))


async def save(req: Req, domain: str, segment: str, name: str) -> Reply:
    req.require_domain(domain)
    kind, single, _plural, _what = _kind(segment)
    await req.panel.admin.group(kind, name, domain)  # exists (else "does not exist", 409)
    text = forms.field(req.form, "targets", limit=req.panel.max_text())
    lines = _lines(text)
    bad = await req.panel.in_thread(_address_errors, lines, domain)
    if bad:
        return _edit_page(req, domain, segment, name, text, "; ".join(bad))
    try:
        await req.panel.acting(req.account).set_group(kind, name, domain, lines)
    except ValueError as e:  # sends to itself, and what else the store refuses
        return _edit_page(req, domain, segment, name, text, str(e))
    req.note(f"{single} {name}@{domain} saved: {len(lines)} address(es).")
    return redirect(f"{_base(domain, segment)}/{url_part(name)}")


async def remove(req: Req, domain: str, segment: str, name: str) -> Reply:
    req.require_domain(domain)
    kind, single, _plural, _what = _kind(segment)
    await req.panel.acting(req.account).remove_group(kind, name, domain)
    req.note(f"{single} {name}@{domain} removed.")
    return redirect(_base(domain, segment))


def routes() -> list[Route]:
    base = r"/admin/domains/(?P<domain>[^/]+)/(?P<segment>forwarders|groups)"
    one = base + r"/(?P<name>[^/]+)"
    return [
        Route("GET", re.compile(base), listing, "admin"),
        Route("POST", re.compile(base), create, "admin"),
        Route("GET", re.compile(one), edit, "admin"),
        Route("POST", re.compile(one), save, "admin"),
        Route("POST", re.compile(one + "/remove"), remove, "admin"),
    ]
