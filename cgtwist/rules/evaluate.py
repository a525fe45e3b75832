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
from typing import Callable, Optional, Sequence, cast

from cgtwist.pictures import fits
from cgtwist.rules.facts import MessageFacts, machine_generated
from cgtwist.rules.index import RuleIndex
from cgtwist.rules.model import (
    ADDRESS,
    DATE,
    DAY,
    DAYS,
    FLAG,
    GREATER,
    HEADER,
    IS,
    LESS,
    MAILBOX,
    NUMBER,
    ROUTE,
    TAGS,
    TEXT,
    TIME,
    ZONE,
    Action,
    Condition,
    Rule,
    RuleSet,
    refusal,
)

REPLIES = ("Reply with", "Reply to All with")


@dataclass(frozen=True)
class ConditionTrace:
    """One condition checked: whether it held and what it looked at. ``values`` are kept
    and only rendered (``seen``) when an explanation is printed: no formatting per message."""

    condition: Condition
    met: bool
    values: tuple[str, ...] = ()
    note: str = ""

    @property
    def seen(self) -> str:
        if self.note:
            return self.note
        shown = ", ".join(repr(v[:60]) for v in self.values[:5])
        more = f" and {len(self.values) - 5} more" if len(self.values) > 5 else ""
        return f"[{shown}{more}]"


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
    explain: bool = False,
    indexed: bool = True,
) -> Outcome:
    """Apply ``rules`` to ``facts``. ``server``: Server Rules; ``allowed``: the account's
    RulesAllowed (None for server and domain rules); ``execute``: ``rules.execute``.
    ``explain``: trace every rule and condition checked (``rules explain``); otherwise only
    the rules that fired are in the trace, which is what delivery logs. ``indexed=False``
    tries every rule instead of the index's candidates (the agreement tests, the bench)."""
    actions: list[Action] = []
    trace: list[RuleTrace] = []
    for rule in rules.ordered() if explain or not indexed else tried(rules, facts):
        checked: list[ConditionTrace] = []
        if explain:
            fired = True
            for c in rule.conditions:
                checked.append(check(c, facts))
                if not checked[-1].met:
                    fired = False
                    break
        else:
            fired = True
            for c in rule.conditions:
                if not holds(c, facts):
                    fired = False
                    break
        if not fired:
            if explain:
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


def tried(rules: RuleSet, facts: MessageFacts) -> Sequence[Rule]:
    """The rules ``facts`` can fire, in run order (cgtwist.rules.index): the only ones the
    fast path evaluates. The index never files a rule by a route condition, so a caller may
    look routes up only when one of these asks for them. Kept per message and rule set
    (MessageFacts.memo): the caller's question and the evaluation share one look-up."""
    index = rules.index
    key = ("tried", id(index))
    got = facts._memo.get(key)
    if got is None or cast(tuple[RuleIndex, list[Rule]], got)[0] is not index:
        got = facts._memo[key] = (index, index.candidates(lambda c: _seen(c, facts)[1]))
    return cast(tuple[RuleIndex, list[Rule]], got)[1]


def check(c: Condition, facts: MessageFacts) -> ConditionTrace:
    """Whether ``c`` holds for ``facts``, and the values it looked at."""
    kind = c.kind
    if kind == FLAG:
        human = facts.human_generated
        why = "" if human else f" ({machine_generated(facts)})"
        met = human if c.op == IS else not human
        return ConditionTrace(c, met, note=f"{'yes' if human else 'no'}{why}")
    if kind == NUMBER:
        return ConditionTrace(c, size_fits(c, facts.size), note=f"{facts.size} bytes")
    if kind == MAILBOX:
        exists = c.param.strip().casefold() in facts.mailboxes or (
            c.param.strip().upper() == "INBOX"
        )
        met = exists if c.op == IS else not exists
        return ConditionTrace(c, met, note="exists" if exists else "missing")
    if kind in (DATE, TIME) and c.op in (GREATER, LESS):
        value = facts.now.strftime("%Y-%m-%d" if kind == DATE else "%H:%M")
        bound = c.param.strip()
        return ConditionTrace(c, value > bound if c.op == GREATER else value < bound, (value,))
    return ConditionTrace(c, _picture_met(c, facts), tuple(_values(c, facts)))


def holds(c: Condition, facts: MessageFacts) -> bool:
    """``check`` without the explanation: what runs for every message."""
    if c.picture:
        return _picture_met(c, facts)
    if c.kind == NUMBER:  # no note to format
        return size_fits(c, facts.size)
    return check(c, facts).met


def size_fits(c: Condition, size: int) -> bool:
    """Whether a ``Message Size`` condition holds for a message of ``size`` octets."""
    return size > c.size if c.op == GREATER else size < c.size


def _picture_met(c: Condition, facts: MessageFacts) -> bool:
    """Whether a picture condition holds: the per-message path, so the subject's values are
    read once per message (MessageFacts.memo) and the loops stop at the first answer."""
    pictures, lists, _name = c.plan
    values, folded = _seen(c, facts)
    if lists:
        named = [facts.lists.get(n, frozenset()) for n in lists]
        hits = [
            any(fits(p, t) for p in pictures) or any(v.lower() in n for n in named)
            for t, v in zip(folded, values, strict=True)
        ]
        if c.each:
            return bool(hits) and all(hits)
        return any(hits) != c.negative
    if c.each:
        if not folded:
            return False
        for t in folded:
            for p in pictures:
                if fits(p, t):
                    break
            else:
                return False
        return True
    for t in folded:
        for p in pictures:
            if fits(p, t):
                return not c.negative
    return c.negative


def _seen(c: Condition, facts: MessageFacts) -> tuple[list[str], list[str]]:
    """The values a condition's subject offers, and casefolded: the same field serves many
    conditions (and the index), so once per message (MessageFacts.seen)."""
    seen = facts.seen
    got = seen.get(c.key)
    if got is None:
        values = _READ[c.kind](c, facts)
        got = seen[c.key] = (values, list(map(str.casefold, values)))
    return got


def _values(c: Condition, facts: MessageFacts) -> list[str]:
    return _READ[c.kind](c, facts)


def _address(c: Condition, facts: MessageFacts) -> list[str]:
    s = c.subject
    if s == "Return-Path":
        return [facts.sender] if facts.sender else []
    if s in ("Any To or Cc", "Each To or Cc"):
        return facts.addresses("To", "Cc")
    if s in ("Any Recipient", "Each Recipient"):
        return list(facts.recipients)
    return facts.addresses(s)


def _text(c: Condition, facts: MessageFacts) -> list[str]:
    if c.subject == "From Name":
        return facts.display_names("From")
    return facts.decoded(c.subject) or [""]


def _tags(c: Condition, facts: MessageFacts) -> list[str]:
    s = c.subject
    if s == "Source":
        return sorted(facts.source) + ([facts.client_ip] if facts.client_ip else [])
    if s == "Security":
        return sorted(facts.security)
    if s == "Submit Address":
        return [facts.submit]
    return [facts.spf]


# How each kind of condition reads its subject's values (kinds without values read none).
_READ: dict[str, Callable[[Condition, MessageFacts], list[str]]] = {
    ADDRESS: _address,
    TEXT: _text,
    HEADER: lambda c, facts: facts.decoded(c.plan[2]),
    ROUTE: lambda c, facts: list(facts.routes),
    TAGS: _tags,
    ZONE: lambda c, facts: list(facts.rbl),
    DATE: lambda c, facts: [facts.now.strftime("%Y-%m-%d")],
    DAY: lambda c, facts: [DAYS[facts.now.weekday()]],
    TIME: lambda c, facts: [facts.now.strftime("%H:%M")],
    NUMBER: lambda c, facts: [],
    FLAG: lambda c, facts: [],
    MAILBOX: lambda c, facts: [],
}
