"""WebUser's vacation message and forwarding as the Account Rules they are: two rules with
CommuniGate's reserved names, read from and written into the account's rule set, every other
rule of the account left as it is.

Owns the translation, pure (no store, no rendering): ``#Vacation`` is ``Reply with`` the text,
limited to a period by ``Current Date`` conditions; ``#Redirect`` is ``Redirect to`` the
address, plus ``Discard`` unless a copy is kept. Off keeps the rule at priority 0 (written,
never run: the text is there when the user turns it on again); an empty vacation text or
forwarding address removes the rule.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Optional

from cgtwist.rules.model import Action, Condition, Rule, RuleSet

VACATION = "#Vacation"
FORWARDING = "#Redirect"
VACATION_PRIORITY = 6  # before the forwarding rule, so a reply goes even when it discards
FORWARDING_PRIORITY = 5
ONE_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Vacation:
    enabled: bool = False
    text: str = ""
    start: Optional[datetime.date] = None  # first day it replies (inclusive)
    end: Optional[datetime.date] = None  # last day it replies (inclusive)


@dataclass(frozen=True)
class Forwarding:
    enabled: bool = False
    to: str = ""
    keep: bool = True  # a copy stays in the mailbox


def _date(text: str) -> Optional[datetime.date]:
    try:
        return datetime.date.fromisoformat(text.strip())
    except ValueError:
        return None


def _find(rules: RuleSet, name: str) -> Optional[Rule]:
    return next((r for r in rules.rules if r.name == name), None)


def read(rules: RuleSet) -> tuple[Vacation, Forwarding]:
    """The vacation and forwarding the rule set holds (rules written elsewhere with these
    names are read as far as they fit: the first Reply text, the first Redirect address)."""
    vacation = Vacation()
    rule = _find(rules, VACATION)
    if rule is not None:
        text = next((a.param for a in rule.actions if a.name == "Reply with"), "")
        start = end = None
        for c in rule.conditions:
            if c.subject == "Current Date" and c.op == "greater than":
                day = _date(c.param)
                start = day + ONE_DAY if day else None
            elif c.subject == "Current Date" and c.op == "less than":
                day = _date(c.param)
                end = day - ONE_DAY if day else None
        vacation = Vacation(rule.priority > 0, text, start, end)
    forwarding = Forwarding()
    rule = _find(rules, FORWARDING)
    if rule is not None:
        to = next((a.param for a in rule.actions if a.name == "Redirect to"), "")
        keep = not any(a.name == "Discard" for a in rule.actions)
        forwarding = Forwarding(rule.priority > 0, to, keep)
    return vacation, forwarding


def vacation_rule(v: Vacation) -> Optional[Rule]:
    """The ``#Vacation`` rule for ``v`` (None: no text, no rule). RuleError for a text or
    period the rules do not take."""
    if not v.text.strip():
        return None
    conditions = []
    if v.start is not None:  # the rules compare strictly: "after the day before"
        conditions.append(Condition("Current Date", "greater than", str(v.start - ONE_DAY)))
    if v.end is not None:
        conditions.append(Condition("Current Date", "less than", str(v.end + ONE_DAY)))
    return Rule(
        VACATION,
        VACATION_PRIORITY if v.enabled else 0,
        tuple(conditions),
        (Action("Reply with", v.text.replace("\r\n", "\n").strip("\n")),),
    )


def forwarding_rule(f: Forwarding) -> Optional[Rule]:
    """The ``#Redirect`` rule for ``f`` (None: no address, no rule)."""
    if not f.to.strip():
        return None
    actions = [Action("Redirect to", f.to.strip())]
    if not f.keep:
        actions.append(Action("Discard"))
    return Rule(FORWARDING, FORWARDING_PRIORITY if f.enabled else 0, (), tuple(actions))


def apply(rules: RuleSet, vacation: Vacation, forwarding: Forwarding) -> RuleSet:
    """``rules`` with the two rules replaced in place (or added at the end, or removed)."""
    wanted = {VACATION: vacation_rule(vacation), FORWARDING: forwarding_rule(forwarding)}
    out: list[Rule] = []
    for r in rules.rules:
        if r.name in wanted:
            new = wanted.pop(r.name)
            if new is not None:
                out.append(new)
        else:
            out.append(r)
    out.extend(r for r in wanted.values() if r is not None)
    return RuleSet(tuple(out))
