"""WebUser's vacation message and forwarding: the form users expect (a text with on/off and
the days it applies; an address with "keep a copy"), stored as the account's own Rules.

Owns the page and its save: the account's rule set is read, the two reserved rules are
replaced (cgtwist.web.autoreply) and the result stored through cgtwist.admin.rules as the
user (checked against the account's RulesAllowed, logged, revision-checked like the rules
editor). It must not build rules itself.
"""

from __future__ import annotations

import datetime
import re
from typing import Optional

from cgtwist.rules.model import RuleError, RuleSet
from cgtwist.rules.text import format_rules, parse_rules
from cgtwist.storage.rules import InvalidRules, RulesConflict
from cgtwist.web import autoreply, forms
from cgtwist.web.render import Reply, redirect
from cgtwist.web.site import Req, Route

CHANGED = "Your rules changed since this page was opened; check the form and save again."


def _day(req: Req, name: str, what: str) -> Optional[datetime.date]:
    raw = forms.field(req.form, name, limit=20).strip()
    if not raw:
        return None
    try:
        return datetime.date.fromisoformat(raw)
    except ValueError:
        raise forms.FormError(f"The {what} is a date as YYYY-MM-DD.") from None


async def _page(
    req: Req,
    vacation: Optional[autoreply.Vacation] = None,
    forwarding: Optional[autoreply.Forwarding] = None,
    revision: Optional[int] = None,
    error: str = "",
    status: int = 200,
) -> Reply:
    rules = req.panel.admin.rules
    scope = await rules.scope(account=req.account)
    stored = await rules.get(scope)
    if vacation is None or forwarding is None:
        try:
            vacation, forwarding = autoreply.read(_parse(stored.text))
        except RuleError:  # stored by an older version: shown empty, the editor has the text
            vacation, forwarding = autoreply.Vacation(), autoreply.Forwarding()
            error = error or "Your rules cannot be read; see My rules."
    interval = req.panel.settings.current.rules.reply_interval
    return req.page(
        "autoreply.html",
        status=status,
        vacation=vacation,
        forwarding=forwarding,
        revision=stored.revision if revision is None else revision,
        error=error,
        reply_days=round(float(interval) / 86400, 1),
    )


async def autoreply_page(req: Req) -> Reply:
    return await _page(req)


async def autoreply_save(req: Req) -> Reply:
    vacation = autoreply.Vacation(
        enabled=forms.flag(req.form, "vacation_on"),
        text=forms.field(req.form, "vacation_text", limit=4000),
        start=_day(req, "vacation_start", "first day"),
        end=_day(req, "vacation_end", "last day"),
    )
    forwarding = autoreply.Forwarding(
        enabled=forms.flag(req.form, "forward_on"),
        to=forms.field(req.form, "forward_to", limit=320).strip(),
        keep=forms.flag(req.form, "forward_keep"),
    )
    raw = forms.field(req.form, "revision", limit=12).strip()
    if not raw.isdigit():
        raise forms.FormError("The form lacks the revision it was read at; reload it.")
    expect = int(raw)

    async def again(error: str, status: int = 400, revision: Optional[int] = None) -> Reply:
        """The form as submitted, with what is wrong (after a conflict, at the revision
        stored now, so saving it again is a deliberate overwrite)."""
        at = expect if revision is None else revision
        return await _page(req, vacation, forwarding, at, error, status)

    if vacation.enabled and not vacation.text.strip():
        return await again("Enter the text of the vacation message.", 400)
    if forwarding.enabled and not forwarding.to:
        return await again("Enter the address to forward to.", 400)
    if vacation.start and vacation.end and vacation.end < vacation.start:
        return await again("The last day is before the first day.", 400)
    rules = req.panel.acting(req.account).rules
    scope = await rules.scope(account=req.account)
    stored = await rules.get(scope)
    if stored.revision != expect:
        return await again(CHANGED, 409, stored.revision)
    try:
        current = _parse(stored.text)
        text = format_rules(autoreply.apply(current, vacation, forwarding))
        if not parse_rules(text).rules:
            if stored.revision:
                await rules.delete(scope)
        else:
            await rules.set(scope, text, expect=expect)
    except (RuleError, InvalidRules) as e:
        return await again(_plain(str(e)), 400)
    except RulesConflict:
        return await again(CHANGED, 409, (await rules.get(scope)).revision)
    parts = []
    if vacation.text.strip():
        parts.append("vacation message " + ("on" if vacation.enabled else "off"))
    if forwarding.to:
        parts.append(f"forwarding to {forwarding.to} " + ("on" if forwarding.enabled else "off"))
    req.note(
        "Saved: " + (", ".join(parts) if parts else "no vacation message, no forwarding") + "."
    )
    return redirect("/autoreply")


def _parse(text: str) -> RuleSet:
    return parse_rules(text) if text.strip() else RuleSet()


def _plain(message: str) -> str:
    """A rules error as a user reads it: without the text form's line number."""
    text = re.sub(r"^line \d+: ", "", message)
    return text[:1].upper() + text[1:]


def routes() -> list[Route]:
    return [
        Route("GET", re.compile(r"/autoreply"), autoreply_page, "user"),
        Route("POST", re.compile(r"/autoreply"), autoreply_save, "user"),
    ]
