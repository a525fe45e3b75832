"""Rules editors: Server Rules, a domain's and an account's (WebAdmin), an account's own
(WebUser, within its RulesAllowed), and "explain" (paste a message, see every rule's trace).

Owns these pages' forms over the text form of cgtwist.admin.rules (which checks a rule set as
the server runs it, stores it with its revision and tells the server): a parse error is shown
with its line, a save names the revision it was edited from so a change made meanwhile (by
another administrator, the user, cgtwist-admin) is refused rather than overwritten. Rights: a
server administrator edits any rule set; a domain administrator its domain's and its
accounts' (not a server administrator's); a user only its own. It must not parse rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from cgtwist.admin.rules import Explanation, Scope, Section
from cgtwist.rules.text import format_action, format_condition
from cgtwist.storage.rules import InvalidRules, RulesConflict
from cgtwist.types import Account
from cgtwist.web import forms
from cgtwist.web.render import Reply, redirect, url_part
from cgtwist.web.site import Forbidden, Req, Route


@dataclass(frozen=True)
class LineError:
    """A refusal, with the line it names (0: the whole text) and that line's text."""

    message: str
    line: int
    text: str


def line_error(message: str, text: str) -> LineError:
    """``line N: problem`` (the rules' own form) with line N of ``text`` beside it."""
    found = re.match(r"line (\d+): ", message)
    if found is None:
        return LineError(message, 0, "")
    no = int(found.group(1))
    lines = text.splitlines()
    return LineError(message, no, lines[no - 1] if 0 < no <= len(lines) else "")


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---- where each rule set is edited ---------------------------------------------------------


async def _admin_scope(req: Req, domain: str = "", name: str = "") -> tuple[Scope, str]:
    """The rule set an administrator asks for, after the rights check, and its page URL."""
    assert req.session is not None
    rights = req.session.rights
    rules = req.panel.admin.rules
    if not domain:
        if not rights.server_admin:
            raise Forbidden("The Server Rules are for server administrators.", req.account)
        return await rules.scope(), "/admin/rules"
    req.require_domain(domain)
    if not name:
        return await rules.scope(domain=domain), f"/admin/rules/domain/{url_part(domain)}"
    info = await req.panel.admin.account(name, domain)
    if not rights.server_admin and (
        info["settings"].get("admin") or (name == "postmaster" and domain == req.panel.main_domain)
    ):
        raise Forbidden(
            "Only a server administrator may change a server administrator.", req.account
        )
    scope = await rules.scope(account=f"{name}@{domain}")
    return scope, f"/admin/rules/account/{url_part(domain)}/{url_part(name)}"


async def _allowed(req: Req, account: str) -> str:
    name, _, domain = account.partition("@")
    runner = await req.panel.admin.rules.runner()
    return await runner.allowed(Account(name, domain))


async def _editor(
    req: Req,
    scope: Scope,
    url: str,
    *,
    text: Optional[str] = None,
    revision: Optional[int] = None,
    error: Optional[LineError] = None,
    conflict: str = "",
    explanation: Optional[dict[str, object]] = None,
    explain_form: Optional[dict[str, str]] = None,
    status: int = 200,
    user: bool = False,
) -> Reply:
    stored = await req.panel.admin.rules.get(scope)
    allowed = await _allowed(req, scope.owner) if scope.scope == "account" else ""
    return req.page(
        "rules.html",
        status=status,
        what=scope.what,
        url=url,
        text=stored.text if text is None else text,
        revision=stored.revision if revision is None else revision,
        stored=stored,
        error=error,
        conflict=conflict,
        allowed=allowed,
        user=user,
        explanation=explanation,
        explain_form=explain_form or {"to": "", "sender": "", "ip": "", "message": ""},
    )


async def _save(req: Req, scope: Scope, url: str, user: bool = False) -> Reply:
    text = forms.field(req.form, "text", limit=req.panel.max_text()).replace("\r\n", "\n")
    raw = forms.field(req.form, "revision", limit=12).strip()
    if not raw.isdigit():
        raise forms.FormError("The form lacks the revision it was edited from; reload it.")
    expect = int(raw)
    rules = req.panel.acting(req.account).rules
    try:
        if not text.strip():
            current = await rules.get(scope)
            if current.revision != expect:
                raise RulesConflict("changed meanwhile")
            if current.revision:
                await rules.delete(scope)
            req.note(f"{_first_upper(scope.what)} removed.")
            return redirect(url)
        _rules, revision = await rules.set(scope, text, expect=expect)
    except InvalidRules as e:
        return await _editor(
            req,
            scope,
            url,
            text=text,
            revision=expect,
            error=line_error(str(e), text),
            status=400,
            user=user,
        )
    except RulesConflict:
        current = await rules.get(scope)
        return await _editor(
            req,
            scope,
            url,
            text=text,
            revision=current.revision,
            conflict=(
                f"{scope.what} changed since you opened them (now revision {current.revision}). "
                "Your text is below and the stored one beside it: save again to replace "
                "the stored rules with yours."
            ),
            status=409,
            user=user,
        )
    req.note(f"{_first_upper(scope.what)} saved (revision {revision}).")
    return redirect(url)


# ---- WebAdmin -------------------------------------------------------------------------------


async def server_rules(req: Req) -> Reply:
    scope, url = await _admin_scope(req)
    return await _editor(req, scope, url)


async def server_rules_save(req: Req) -> Reply:
    scope, url = await _admin_scope(req)
    return await _save(req, scope, url)


async def domain_rules(req: Req, domain: str) -> Reply:
    scope, url = await _admin_scope(req, domain)
    return await _editor(req, scope, url)


async def domain_rules_save(req: Req, domain: str) -> Reply:
    scope, url = await _admin_scope(req, domain)
    return await _save(req, scope, url)


async def account_rules(req: Req, domain: str, name: str) -> Reply:
    scope, url = await _admin_scope(req, domain, name)
    return await _editor(req, scope, url)


async def account_rules_save(req: Req, domain: str, name: str) -> Reply:
    scope, url = await _admin_scope(req, domain, name)
    return await _save(req, scope, url)


async def choose(req: Req) -> Reply:
    """The chooser's GET form: go to a domain's or an account's rules."""
    target = forms.field(req.query, "target", limit=320).strip().lower()
    if "@" in target:
        name, _, domain = target.partition("@")
        return redirect(f"/admin/rules/account/{url_part(domain)}/{url_part(name)}")
    if target:
        return redirect(f"/admin/rules/domain/{url_part(target)}")
    return redirect("/admin/rules")


def _explanation(found: Explanation) -> dict[str, object]:
    """The explanation as the template shows it: sections with each rule's trace, lines."""
    steps: list[dict[str, object]] = []
    for step in found.steps:
        if not isinstance(step, Section):
            steps.append({"line": step})
            continue
        outcome = step.outcome
        rules = []
        for t in outcome.trace if outcome is not None else ():
            rules.append(
                {
                    "name": t.rule.name,
                    "priority": t.rule.priority,
                    "fired": t.fired,
                    "conditions": [
                        (format_condition(ct.condition), ct.met, ct.seen) for ct in t.conditions
                    ],
                    "unchecked": len(t.rule.conditions) - len(t.conditions),
                    "actions": [format_action(a) for a in t.actions],
                    "skipped": [(a.name, why) for a, why in t.skipped],
                    "stopped": t.stopped,
                }
            )
        steps.append(
            {"title": step.title, "note": step.note, "ran": outcome is not None, "rules": rules}
        )
    return {"steps": steps, "actions": found.actions, "reply_days": found.reply_days}


async def explain(req: Req) -> Reply:
    """Run the rules on a pasted message as if it came to ``to``; delivers nothing."""
    scope, url = await _admin_scope(req)
    form = {
        "to": forms.field(req.form, "to", limit=320).strip(),
        "sender": forms.field(req.form, "sender", limit=320).strip(),
        "ip": forms.field(req.form, "ip", limit=64).strip(),
        "message": forms.field(req.form, "message", limit=req.panel.body_limit()),
    }
    if not form["to"]:
        raise forms.FormError("Enter the recipient the message is explained for.")
    data = form["message"].replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    found = await req.panel.admin.rules.explain(
        data, form["to"], sender=form["sender"], ip=form["ip"], auth=forms.flag(req.form, "auth")
    )
    return await _editor(req, scope, url, explanation=_explanation(found), explain_form=form)


# ---- WebUser --------------------------------------------------------------------------------


async def own_rules(req: Req) -> Reply:
    scope = await req.panel.admin.rules.scope(account=req.account)
    return await _editor(req, scope, "/rules", user=True)


async def own_rules_save(req: Req) -> Reply:
    scope = await req.panel.admin.rules.scope(account=req.account)
    return await _save(req, scope, "/rules", user=True)


def routes() -> list[Route]:
    d = r"(?P<domain>[^/]+)"
    a = r"(?P<name>[^/]+)"
    return [
        Route("GET", re.compile(r"/admin/rules"), server_rules, "server"),
        Route("POST", re.compile(r"/admin/rules"), server_rules_save, "server"),
        Route("GET", re.compile(r"/admin/rules/choose"), choose, "admin"),
        Route("POST", re.compile(r"/admin/rules/explain"), explain, "server"),
        Route("GET", re.compile(rf"/admin/rules/domain/{d}"), domain_rules, "admin"),
        Route("POST", re.compile(rf"/admin/rules/domain/{d}"), domain_rules_save, "admin"),
        Route("GET", re.compile(rf"/admin/rules/account/{d}/{a}"), account_rules, "admin"),
        Route("POST", re.compile(rf"/admin/rules/account/{d}/{a}"), account_rules_save, "admin"),
        Route("GET", re.compile(r"/rules"), own_rules, "user"),
        Route("POST", re.compile(r"/rules"), own_rules_save, "user"),
    ]
