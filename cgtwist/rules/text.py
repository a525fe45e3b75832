"""The text form of a rule set: versioned, one rule per block, one line per part, diffable.

Owns printing a RuleSet and parsing it back (``parse(format(rs)) == rs``). The form, which the
CLI, the tests and later the WebAdmin editor share::

    version 1

    rule "Junk by SPF"
      priority 7
      if SPF Result in "fail, softfail"
      if Human Generated
      do Tag Subject "[SPAM]"
      do Stop Processing

Names are CommuniGate's; parameters are double-quoted with JSON escapes (so a reply text can
hold line breaks); ``#`` starts a comment line. A parse error names the line and the problem.
No I/O.
"""

from __future__ import annotations

import json

from cgtwist.rules.model import (
    ACTIONS,
    CONDITIONS,
    FLAG,
    FORMAT_VERSION,
    IS,
    IS_NOT,
    OPERATIONS,
    Action,
    Condition,
    Rule,
    RuleError,
    RuleSet,
)

MAX_LINES = 20000

_SUBJECTS = sorted(CONDITIONS, key=len, reverse=True)
_ACTIONS = sorted(ACTIONS, key=len, reverse=True)
_DECODER = json.JSONDecoder()


class RuleSyntaxError(RuleError):
    """A problem in the text form, at ``line`` (1-based)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


# Characters str.splitlines() breaks at that JSON leaves raw: escaped, so one part is one line.
_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_BREAKS)


def format_condition(c: Condition) -> str:
    """One condition's line of the text form, without its indent (``if ...``)."""
    if c.kind == FLAG:
        return f"if {'not ' if c.op == IS_NOT else ''}{c.subject}"
    return f"if {c.subject} {c.op} {_quote(c.param)}"


def format_action(a: Action) -> str:
    """One action's line of the text form, without its indent (``do ...``)."""
    return f"do {a.name}" + (f" {_quote(a.param)}" if a.param else "")


def format_rules(rules: RuleSet) -> str:
    """The text form of ``rules``, in the order written (not the run order)."""
    out = [f"version {FORMAT_VERSION}"]
    for r in rules.rules:
        out.append("")
        out.append(f"rule {_quote(r.name)}")
        out.append(f"  priority {r.priority}")
        out.extend(f"  {format_condition(c)}" for c in r.conditions)
        out.extend(f"  {format_action(a)}" for a in r.actions)
    return "\n".join(out) + "\n"


def _word(text: str, names: list[str]) -> tuple[str, str]:
    """The longest of ``names`` that starts ``text`` as whole words (any case), and the rest."""
    low = text.lower()
    for name in names:
        n = len(name)
        if low.startswith(name.lower()) and (len(text) == n or text[n] == " "):
            return name, text[n:].lstrip(" ")
    return "", text


def _string(text: str, lineno: int, what: str) -> str:
    if not text.startswith('"'):
        raise RuleSyntaxError(lineno, f"{what}: expected a double-quoted parameter")
    try:
        value, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError as e:
        raise RuleSyntaxError(lineno, f"{what}: bad quoted text ({e.msg})") from None
    if not isinstance(value, str):
        raise RuleSyntaxError(lineno, f"{what}: expected a double-quoted parameter")
    if text[end:].strip():
        raise RuleSyntaxError(lineno, f"{what}: unexpected {text[end:].strip()[:40]!r} after it")
    return value


class _Block:
    def __init__(self, name: str, lineno: int) -> None:
        self.name, self.lineno = name, lineno
        self.priority: int | None = None
        self.conditions: list[Condition] = []
        self.actions: list[Action] = []


def parse_rules(text: str) -> RuleSet:
    """Parse the text form; RuleSyntaxError names the first bad line and what is wrong."""
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise RuleSyntaxError(MAX_LINES + 1, f"more than {MAX_LINES} lines")
    version_seen = False
    blocks: list[_Block] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if not version_seen:
                if keyword != "version":
                    raise RuleSyntaxError(
                        lineno, f"the text starts with 'version {FORMAT_VERSION}'"
                    )
                if rest != str(FORMAT_VERSION):
                    raise RuleSyntaxError(
                        lineno,
                        f"version {rest!r} is not known (this server reads {FORMAT_VERSION})",
                    )
                version_seen = True
            elif keyword == "rule":
                blocks.append(_Block(_string(rest, lineno, "rule name"), lineno))
            elif not blocks:
                raise RuleSyntaxError(lineno, f"{keyword!r} before the first 'rule'")
            elif keyword == "priority":
                _priority(blocks[-1], rest, lineno)
            elif keyword == "if":
                blocks[-1].conditions.append(_condition(rest, lineno))
            elif keyword == "do":
                blocks[-1].actions.append(_action(rest, lineno))
            else:
                raise RuleSyntaxError(
                    lineno, f"unknown line {keyword[:40]!r} (rule, priority, if or do)"
                )
        except RuleSyntaxError:
            raise
        except RuleError as e:
            raise RuleSyntaxError(lineno, str(e)) from None
    if not version_seen:
        raise RuleSyntaxError(1, f"empty: the text starts with 'version {FORMAT_VERSION}'")
    rules = []
    for b in blocks:
        try:
            rules.append(
                Rule(
                    b.name,
                    5 if b.priority is None else b.priority,
                    tuple(b.conditions),
                    tuple(b.actions),
                )
            )
        except RuleError as e:
            raise RuleSyntaxError(b.lineno, str(e)) from None
    try:
        return RuleSet(tuple(rules))
    except RuleError as e:
        raise RuleSyntaxError(blocks[-1].lineno if blocks else 1, str(e)) from None


def _priority(block: _Block, rest: str, lineno: int) -> None:
    if block.priority is not None:
        raise RuleSyntaxError(lineno, "a second priority for this rule")
    if not rest.isdigit() or len(rest) > 2:
        raise RuleSyntaxError(lineno, f"priority {rest[:20]!r}: a number from 0 to 10")
    block.priority = int(rest)


def _condition(rest: str, lineno: int) -> Condition:
    negated = False
    subject, after = _word(rest, _SUBJECTS)
    if not subject and rest.lower().startswith("not "):
        subject, after = _word(rest[4:].lstrip(" "), _SUBJECTS)
        negated = True
    if not subject:
        raise RuleSyntaxError(lineno, f"unknown condition in {rest[:60]!r}")
    if CONDITIONS[subject] == FLAG:
        if after:
            raise RuleSyntaxError(lineno, f"{subject} takes no operation or parameter")
        return Condition(subject, IS_NOT if negated else IS)
    if negated:
        raise RuleSyntaxError(lineno, f"'not' goes in the operation: {subject} is not ...")
    op, param = _word(after, list(OPERATIONS))
    if not op:
        raise RuleSyntaxError(
            lineno,
            f"{subject}: expected an operation ({', '.join(OPERATIONS)}), got {after[:30]!r}",
        )
    return Condition(subject, op, _string(param, lineno, f"{subject} {op}"))


def _action(rest: str, lineno: int) -> Action:
    name, param = _word(rest, _ACTIONS)
    if not name:
        raise RuleSyntaxError(lineno, f"unknown action in {rest[:60]!r}")
    return Action(name, _string(param, lineno, name) if param else "")
