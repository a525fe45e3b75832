"""Evaluation: which rules fire for a message, which actions run, and why (the trace).

Owns applying a RuleSet to MessageFacts: rules by priority, conditions in order until one
fails (CommuniGate's order), the actions of each rule that fired, ``Stop Processing``, the
level and ``RulesAllowed`` limits for rules stored before a downgrade, ``Execute`` only when
the administrator allows it, and RFC 3834's "never answer automatic mail" for the reply
actions. The result is data: the actions to run in order and a trace of every condition
checked, for ``rules explain``. It must not run the actions: cgtwist.core.rules does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cgtwist.rules.facts import MessageFacts, decode, machine_generated
from cgtwist.rules.model import (
    ADDRESS,
    DATE,
    DAY,
    DAYS,
    EACH,
    FLAG,
    GREATER,
    HEADER,
    IN,
    IS,
    LESS,
    MAILBOX,
    NEGATIVE,
    NOT_IN,
    NUMBER,
    ROUTE,
    TAGS,
    TEXT,
    TIME,
    Action,
    Condition,
    Rule,
    RuleSet,
    header_param,
    refusal,
    size_value,
)
from cgtwist.rules.pictures import matches_any, split_list

REPLIES = ("Reply with", "Reply to All with")


@dataclass(frozen=True)
class ConditionTrace:
    condition: Condition
    met: bool
    seen: str  # the values the condition looked at, shortened, for the explanation


@dataclass(frozen=True)
class RuleTrace:
    rule: Rule
    conditions: tuple[ConditionTrace, ...]
    fired: bool
    actions: tuple[Action, ...] = ()  # the actions that run
    skipped: tuple[tuple[Action, str], ...] = ()  # actions that do not run, and why
    stopped: bool = False  # Stop Processing: no lower rule was looked at


@dataclass(frozen=True)
class Outcome:
    """The actions to run, in order, and the explanation of how they were chosen."""

    actions: tuple[Action, ...]
    trace: tuple[RuleTrace, ...]

    @property
    def skipped(self) -> list[tuple[Rule, Action, str]]:
        return [(t.rule, a, why) for t in self.trace for a, why in t.skipped]

    def has(self, name: str) -> bool:
        return any(a.name == name for a in self.actions)


def evaluate(
    rules: RuleSet,
    facts: MessageFacts,
    *,
    server: bool,
    allowed: Optional[str] = None,
    execute: bool = False,
) -> Outcome:
    """Apply ``rules`` to ``facts``. ``server``: Server Rules; ``allowed``: the account's
    RulesAllowed (None for server and domain rules); ``execute``: ``rules.execute``."""
    actions: list[Action] = []
    trace: list[RuleTrace] = []
    for rule in rules.ordered():
        checked: list[ConditionTrace] = []
        fired = True
        for c in rule.conditions:
            met, seen = check(c, facts)
            checked.append(ConditionTrace(c, met, seen))
            if not met:
                fired = False
                break
        if not fired:
            trace.append(RuleTrace(rule, tuple(checked), False))
            continue
        run: list[Action] = []
        skipped: list[tuple[Action, str]] = []
        stop = False
        for a in rule.actions:
            why = refusal(a, server, allowed)
            if not why and a.name == "Execute" and not execute:
                why = "Execute is off (server setting rules.execute)"
            if not why and a.name in REPLIES:
                robot = machine_generated(facts)
                if robot:
                    why = f"no automatic reply to automatic mail (RFC 3834): {robot}"
            if why:
                skipped.append((a, why))
                continue
            if a.name == "Stop Processing":
                stop = True
            run.append(a)
        actions.extend(run)
        trace.append(RuleTrace(rule, tuple(checked), True, tuple(run), tuple(skipped), stop))
        if stop:
            break
    return Outcome(tuple(actions), tuple(trace))


def _show(values: list[str]) -> str:
    shown = ", ".join(repr(v[:60]) for v in values[:5])
    more = f" and {len(values) - 5} more" if len(values) > 5 else ""
    return f"[{shown}{more}]"


def check(c: Condition, facts: MessageFacts) -> tuple[bool, str]:
    """Whether ``c`` holds for ``facts``, and the values it looked at."""
    kind = c.kind
    if kind == FLAG:
        human = facts.human_generated
        why = "" if human else f" ({machine_generated(facts)})"
        return (human if c.op == IS else not human), f"{'yes' if human else 'no'}{why}"
    if kind == NUMBER:
        limit = size_value(c.param)
        met = facts.size > limit if c.op == GREATER else facts.size < limit
        return met, f"{facts.size} bytes"
    if kind == MAILBOX:
        exists = c.param.strip().casefold() in facts.mailboxes or (
            c.param.strip().upper() == "INBOX"
        )
        return (exists if c.op == IS else not exists), "exists" if exists else "missing"
    if kind in (DATE, TIME) and c.op in (GREATER, LESS):
        value = facts.now.strftime("%Y-%m-%d" if kind == DATE else "%H:%M")
        bound = c.param.strip()
        return (value > bound if c.op == GREATER else value < bound), value
    values = _values(c, facts)
    if kind == HEADER:
        pictures = [header_param(c.param)[1]]
    else:
        pictures = split_list(c.param) if c.op in (IN, NOT_IN) else [c.param.strip()]
    named = [facts.lists.get(p[1:], frozenset()) for p in pictures if p.startswith("#")]
    if named and kind == ADDRESS:
        pictures = [p for p in pictures if not p.startswith("#")]

        def fits(v: str) -> bool:
            return matches_any(pictures, v) or any(v.lower() in n for n in named)
    else:

        def fits(v: str) -> bool:
            return matches_any(pictures, v)

    if c.subject in EACH:
        positive = bool(values) and all(fits(v) for v in values)
    else:
        positive = any(fits(v) for v in values)
    met = not positive if c.op in NEGATIVE else positive
    if c.subject in EACH and c.op in NEGATIVE:
        met = not any(fits(v) for v in values)
    return met, _show(values)


def _values(c: Condition, facts: MessageFacts) -> list[str]:
    kind, s = c.kind, c.subject
    if kind == ADDRESS:
        if s == "Return-Path":
            return [facts.sender] if facts.sender else []
        if s in ("Any To or Cc", "Each To or Cc"):
            return facts.addresses("To", "Cc")
        if s in ("Any Recipient", "Each Recipient"):
            return list(facts.recipients)
        return facts.addresses(s)
    if kind == TEXT:
        if s == "From Name":
            return facts.display_names("From")
        found = [decode(v) for v in facts.fields(s)]
        return found or [""]
    if kind == HEADER:
        name = header_param(c.param)[0]
        return [decode(v) for v in facts.fields(name)]
    if kind == ROUTE:
        return list(facts.routes)
    if kind == TAGS:
        if s == "Source":
            return sorted(facts.source) + ([facts.client_ip] if facts.client_ip else [])
        if s == "Security":
            return sorted(facts.security)
        if s == "Submit Address":
            return [facts.submit]
        return [facts.spf]
    if kind == DATE:
        return [facts.now.strftime("%Y-%m-%d")]
    if kind == DAY:
        return [DAYS[facts.now.weekday()]]
    if kind == TIME:
        return [facts.now.strftime("%H:%M")]
    return []
