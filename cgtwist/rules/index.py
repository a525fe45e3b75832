"""The rule index: which rules of a rule set can fire for a message, found without trying each.

Owns a pre-filter built once per rule set (RuleSet builds it with its run order). A rule fires
only when all its conditions hold, so one condition that cannot hold rules it out; for each
rule the index keeps one *positive picture condition* (``is``/``in`` on a header field, an
address, a route, a tag...) and files its pictures by what every match must contain: the whole
value (``spam.example``), its start (``bounce-*``), its end (``*@spam.example``) or, for
``*word*``, the longest piece. Per message each subject's values are looked up once in those
tables, a few dictionary look-ups instead of a picture match per rule, and only the rules
found, with those that have no such condition (``Message Size``, ``not in``, ``Each ...``,
remembered lists, ``Human Generated``), are evaluated, in run order, exactly as without the
index. The index only ever answers "maybe": a rule it names still has all its conditions
checked, so it can never make a rule fire. It must not decide anything itself, nor read
message facts other than through the values it is handed. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

if TYPE_CHECKING:  # the model builds the index: no import of it at run time
    from cgtwist.rules.model import Condition, Rule

# positions of rules in run order, by looked-up text
_Table = dict[str, list[int]]


@dataclass(frozen=True)
class _Subject:
    """The pictures filed for one condition subject (``From``, ``Header Field: List-Id``...).

    ``condition``: one of the indexed conditions on that subject, whose values the caller
    reads (the same for all of them: MessageFacts keeps them under the condition's key)."""

    condition: Condition
    exact: _Table
    starts: tuple[tuple[int, _Table], ...]  # (length, table of prefixes of that length)
    ends: tuple[tuple[int, _Table], ...]
    inside: tuple[tuple[str, tuple[int, ...]], ...]  # (piece, positions) for *piece*
    # The first (last) characters, as many as the shortest prefix (suffix) has, of every
    # prefix (suffix): a value that does not start (end) with one of them fits no table.
    heads: frozenset[str] = frozenset()
    tails: frozenset[str] = frozenset()

    def found(self, folded: Sequence[str], out: set[int]) -> None:
        """Add to ``out`` the positions whose picture may fit one of ``folded`` (casefolded)."""
        exact, starts, ends, inside = self.exact, self.starts, self.ends, self.inside
        head = starts[0][0] if starts else 0
        tail = ends[0][0] if ends else 0
        for t in folded:
            hit = exact.get(t)
            if hit:
                out.update(hit)
            n = len(t)
            if head and n >= head and t[:head] in self.heads:
                for length, table in starts:
                    if length > n:
                        break
                    hit = table.get(t[:length])
                    if hit:
                        out.update(hit)
            if tail and n >= tail and t[n - tail :] in self.tails:
                for length, table in ends:
                    if length > n:
                        break
                    hit = table.get(t[n - length :])
                    if hit:
                        out.update(hit)
            for piece, positions in inside:
                if piece in t:
                    out.update(positions)


@dataclass(frozen=True)
class RuleIndex:
    """``RuleIndex.build(ordered)``; ``candidates(values)`` the rules that may fire, in order.

    ``values(condition)`` gives the casefolded values the condition's subject offers the
    message (the evaluator's per-message memo)."""

    ordered: tuple[Rule, ...]
    subjects: tuple[_Subject, ...]
    always: frozenset[int]  # rules without an indexable condition: always tried

    @classmethod
    def build(
        cls,
        ordered: Iterable[Rule],
        unfiled: frozenset[str] = frozenset(),
        weak: frozenset[str] = frozenset(),
    ) -> RuleIndex:
        """``unfiled``: condition kinds never used to file a rule (the Router's routes, which
        the caller looks up only when a rule tried asks for them); ``weak``: kinds whose
        values are a few words most messages share (``Source is "trusted"``), used only
        when a rule has nothing better."""
        rules = tuple(ordered)
        by_key: dict[str, list[tuple[Condition, int]]] = {}
        always: set[int] = set()
        for i, rule in enumerate(rules):
            best = _best(rule, unfiled, weak)
            if best is None:
                always.add(i)
            else:
                by_key.setdefault(best.key, []).append((best, i))
        subjects = tuple(_subject(entries) for entries in by_key.values())
        return cls(rules, subjects, frozenset(always))

    def candidates(self, values: Callable[[Condition], Sequence[str]]) -> list[Rule]:
        """The rules that may fire, in run order (a rule left out cannot fire)."""
        if not self.subjects:
            return list(self.ordered)
        found = set(self.always)
        for s in self.subjects:
            s.found(values(s.condition), found)
        ordered = self.ordered
        return [ordered[i] for i in sorted(found)]


def indexable(c: Condition) -> bool:
    """A condition the index can file: it holds only if one of the subject's values fits one
    of its pictures (not a negation, not "every value", no remembered list)."""
    return c.picture and not c.negative and not c.each and not c.plan[1]


def _best(rule: Rule, unfiled: frozenset[str], weak: frozenset[str]) -> Condition | None:
    """The rule's indexable condition whose pictures name the most (the fewest messages get
    past it); None when it has none, or only ``*``."""
    best, score = None, 0
    for c in rule.conditions:
        if not indexable(c) or not c.plan[0] or c.kind in unfiled:
            continue
        s = min(_anchor(p)[2] for p in c.plan[0])
        if c.kind in weak:
            s = min(s, 1)
        if s > score:
            best, score = c, s
    return best


def _anchor(picture: tuple[str, ...]) -> tuple[str, str, int]:
    """How a compiled picture is filed: ("exact"|"start"|"end"|"inside", the text every
    matching value has there, and a score: how much it names; 0 for "*", never filed)."""
    if len(picture) == 1:
        return "exact", picture[0], len(picture[0]) + 1
    first, last = picture[0], picture[-1]
    if first or last:
        if len(first) >= len(last):
            return "start", first, len(first)
        return "end", last, len(last)
    middle = max(picture, key=len)
    return "inside", middle, len(middle)


def _subject(entries: list[tuple[Condition, int]]) -> _Subject:
    exact: _Table = {}
    starts: dict[int, _Table] = {}
    ends: dict[int, _Table] = {}
    inside: dict[str, list[int]] = {}
    for c, i in entries:
        for picture in c.plan[0]:
            how, text, _score = _anchor(picture)
            if how == "exact":
                exact.setdefault(text, []).append(i)
            elif how == "start":
                starts.setdefault(len(text), {}).setdefault(text, []).append(i)
            elif how == "end":
                ends.setdefault(len(text), {}).setdefault(text, []).append(i)
            else:
                inside.setdefault(text, []).append(i)
    head = min(starts, default=0)
    tail = min(ends, default=0)
    return _Subject(
        entries[0][0],
        exact,
        tuple(sorted(starts.items())),
        tuple(sorted(ends.items())),
        tuple((piece, tuple(positions)) for piece, positions in inside.items()),
        frozenset(text[:head] for table in starts.values() for text in table),
        frozenset(text[len(text) - tail :] for table in ends.values() for text in table),
    )
