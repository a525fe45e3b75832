"""The end-of-DATA mark: which Server Rules the enqueuer must look at again, and how cheaply.

Owns what the receive-time check (cgtwist.core.rules_receive) and the enqueuer
(cgtwist.core.rules) agree on when no Server Rule fired before the 250: the *unsettled* rules
of a rule set (those with a condition that can see something else at the enqueuer: the
message's size, the trace fields the receiver adds after the check, the clock), the mark
``none-fired@REVISION/i,j`` naming those of them whose other conditions held, and the rules a
mark reopens at the enqueuer. Everything a rule set implies is worked out once per parsed
rule set (``Unsettled``), and a mark's list once per distinct list, so the enqueuer's share
per message is a dictionary look-up and, for size conditions (the usual unsettled kind), a
comparison: no header parsing, no facts built. Pure: it decides nothing about delivery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Optional

from cgtwist.rules.evaluate import holds
from cgtwist.rules.facts import MessageFacts
from cgtwist.rules.model import (
    DATE,
    DAY,
    GREATER,
    HEADER,
    NUMBER,
    ROUTE,
    TIME,
    Condition,
    Rule,
    RuleSet,
)

# The mark the end-of-DATA check leaves in the submit record when no Server Rule of that
# revision fired (cgtwist.core.rules_receive).
NOTHING_FIRED = "none-fired@"
# Header fields the receiver adds after the end-of-DATA check (trace and authentication).
_ADDED_FIELDS = frozenset({"received", "received-spf", "authentication-results"})
_EPOCH = datetime(1970, 1, 1)  # the clock of facts no date condition reads
_NONE = RuleSet()
MAX_PLANS = 256  # distinct mark lists kept per rule set (a list is a subset of its rules)


def nothing_fired(revision: int, still_open: Optional[list[int]] = None) -> str:
    """The mark, e.g. ``none-fired@7/0,3``: ``still_open`` names the unsettled rules (their
    positions in ``Unsettled.ordered``) that can still fire at the enqueuer; without it
    (marks written before it was recorded) all of them can."""
    mark = f"{NOTHING_FIRED}{revision}"
    return mark if still_open is None else mark + "/" + ",".join(map(str, still_open))


def unsettled_condition(c: Condition) -> bool:
    """Whether ``c`` can see something else at the enqueuer than at the end of DATA: the
    message's size and the header fields the receiver adds after the check, and the clock."""
    if c.subject == "Message Size" or c.kind in (DATE, DAY, TIME):
        return True
    return c.kind == HEADER and c.plan[2].lower() in _ADDED_FIELDS


@dataclass(frozen=True)
class _Reopen:
    """What one mark list names: each rule with its unsettled conditions; when those read
    only the size (the usual case), each rule's sizes as one open interval instead, so no
    facts are built at all."""

    picked: tuple[tuple[Rule, tuple[Condition, ...]], ...]
    sizes: Optional[tuple[tuple[Rule, int, float], ...]]  # (rule, above, below)
    headers: bool  # a trace-field condition: the header section is read
    clock: bool  # a date, day or time condition: the clock is read


class Unsettled:
    """``Unsettled(rules)``: the unsettled rules of ``rules`` in run order (``ordered``, the
    positions a mark names), each split once into its settled conditions (those the end of
    DATA decides for good, route conditions aside) and its unsettled ones."""

    def __init__(self, rules: RuleSet) -> None:
        self.source = rules
        self.rules = RuleSet(
            tuple(r for r in rules.rules if any(unsettled_condition(c) for c in r.conditions))
        )
        self.ordered = self.rules.ordered()
        self._settled = tuple(
            tuple(c for c in r.conditions if not unsettled_condition(c) and c.kind != ROUTE)
            for r in self.ordered
        )
        self._open = tuple(
            tuple(c for c in r.conditions if unsettled_condition(c)) for r in self.ordered
        )
        self._plans: dict[str, Optional[_Reopen]] = {}

    def still_open(self, facts: MessageFacts) -> list[int]:
        """The positions of the rules whose settled conditions all hold for ``facts`` (the
        end of DATA): at the enqueuer the others cannot fire, as those conditions see the
        same there. Route conditions count as holding: ``facts`` may have been gathered
        without asking the Router."""
        return [
            i
            for i, settled in enumerate(self._settled)
            if not settled or all(holds(c, facts) for c in settled)
        ]

    def reopened(
        self, listed: str, sender: str, data: bytes, now: Callable[[], datetime]
    ) -> RuleSet:
        """The rules of the mark's ``listed`` positions whose unsettled conditions hold now
        for the message ``data`` (read from its size, the clock ``now()`` and, only when
        asked, its header section); a list this version cannot read: every unsettled rule,
        as for a mark without one."""
        if listed in self._plans:
            plan = self._plans[listed]
        else:
            plan = self._plan(listed)
            if len(self._plans) < MAX_PLANS:
                self._plans[listed] = plan
        if plan is None:
            return self.rules
        if not plan.picked:
            return _NONE
        if plan.sizes is not None:
            size = len(data)
            kept = tuple(r for r, above, below in plan.sizes if above < size < below)
        else:
            facts = MessageFacts(
                sender,
                (),
                data if plan.headers else b"",
                len(data),
                now=now() if plan.clock else _EPOCH,
            )
            kept = tuple(r for r, cs in plan.picked if all(holds(c, facts) for c in cs))
        return RuleSet(kept) if kept else _NONE

    def _plan(self, listed: str) -> Optional[_Reopen]:
        try:
            positions = [int(i) for i in listed.split(",") if i]
            if any(i < 0 for i in positions):
                return None
            picked = tuple((self.ordered[i], self._open[i]) for i in positions)
        except (ValueError, IndexError):
            return None
        kinds = {c.kind for _r, cs in picked for c in cs}
        sizes = tuple((r, *_interval(cs)) for r, cs in picked) if kinds <= {NUMBER} else None
        return _Reopen(picked, sizes, HEADER in kinds, bool(kinds & {DATE, DAY, TIME}))


def _interval(sizes: tuple[Condition, ...]) -> tuple[int, float]:
    """The sizes ``above < size < below`` for which every ``Message Size`` condition of
    ``sizes`` holds (``greater than N``: above N; ``less than N``: below N)."""
    above, below = -1, math.inf
    for c in sizes:
        if c.op == GREATER:
            above = max(above, c.size)
        else:
            below = min(below, c.size)
    return above, below
