"""Sieve (RFC 5228) scripts compiled into the rule model, so users can bring their filters.

Owns reading a Sieve script (lexer and parser for RFC 5228 §8's grammar) and translating the
part that has an exact CommuniGate-style equivalent: ``if``/``elsif``/``else`` (nested too),
``allof``, ``not``, ``anyof`` of one test, ``true``/``false``; tests ``header``, ``address``,
``envelope`` (RFC 5228 §5.4), ``size``, ``exists`` with ``:is``, ``:contains`` and
``:matches`` (``*`` only) under the default case-insensitive comparator; actions ``keep``,
``fileinto`` (RFC 5228 §4.1), ``redirect``, ``discard``, ``reject`` (RFC 5429), ``stop`` and
``vacation`` (RFC 5230). Anything whose meaning would change is refused with the line and the
reason, never approximated silently; what is dropped without changing delivery (a vacation's
``:days``, ``:subject``) is returned as warnings. No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Union

from cgtwist.rules.model import (
    GREATER,
    IN,
    IS,
    IS_NOT,
    LESS,
    NOT_IN,
    Action,
    Condition,
    Rule,
    RuleError,
    RuleSet,
)

MAX_SCRIPT = 256 * 1024
MAX_DEPTH = 16
EXTENSIONS = frozenset({"fileinto", "reject", "vacation", "envelope"})


class SieveError(RuleError):
    """A script that cannot be read or has no exact equivalent, at ``line``."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


# -- lexer ---------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r]+)|(?P<nl>\n)|(?P<hash>\#[^\n]*)|(?P<bracket>/\*.*?\*/)
    |(?P<text>text:[ \t]*(?:\#[^\n]*)?\r?\n)|(?P<string>"(?:[^"\\]|\\.)*")
    |(?P<number>\d+[KMGkmg]?)|(?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[\[\](){},;])""",
    re.S | re.X,
)


@dataclass
class _Tok:
    kind: str
    value: Union[str, int]
    line: int


def _lex(script: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos, line = 0, 1
    while pos < len(script):
        m = _TOKEN.match(script, pos)
        if m is None:
            raise SieveError(line, f"unexpected {script[pos : pos + 20]!r}")
        kind, text = m.lastgroup or "", m.group()
        if kind == "text":  # RFC 5228 §2.4.2: lines up to a lone ".", dot-stuffed
            end = re.compile(r"^\.\r?$", re.M).search(script, m.end())
            if end is None:
                raise SieveError(line, "text: without its closing '.' line")
            body = script[m.end() : end.start()]
            value = "\n".join(x[1:] if x.startswith("..") else x for x in body.split("\n"))
            out.append(_Tok("string", value.rstrip("\r\n").replace("\r", ""), line))
            line += script.count("\n", pos, end.end())
            pos = end.end()
            continue
        if kind == "string":
            out.append(_Tok("string", re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.S), line))
        elif kind == "number":
            mult = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(text[-1].lower(), 1)
            out.append(_Tok("number", int(text.rstrip("KMGkmg")) * mult, line))
        elif kind in ("tag", "ident", "punct"):
            out.append(_Tok(kind, text.lower() if kind != "punct" else text, line))
        line += text.count("\n")
        pos = m.end()
    return out


# -- parser --------------------------------------------------------------------------------------
@dataclass
class _Test:
    name: str
    line: int
    args: list[Union[str, int, list[str]]] = field(default_factory=list)
    tests: list[_Test] = field(default_factory=list)


@dataclass
class _Command:
    name: str
    line: int
    args: list[Union[str, int, list[str]]] = field(default_factory=list)
    tests: list[_Test] = field(default_factory=list)
    block: Optional[list[_Command]] = None


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks, self.i = toks, 0

    def peek(self) -> Optional[_Tok]:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def line(self) -> int:
        t = self.peek()
        return t.line if t else (self.toks[-1].line if self.toks else 1)

    def take(self, value: Optional[str] = None) -> _Tok:
        t = self.peek()
        if t is None or (value is not None and t.value != value):
            want = repr(value) if value else "more"
            raise SieveError(self.line(), f"expected {want}, got {t.value if t else 'the end'!r}")
        self.i += 1
        return t

    def commands(self, depth: int) -> list[_Command]:
        if depth > MAX_DEPTH:
            raise SieveError(self.line(), f"blocks nested deeper than {MAX_DEPTH}")
        out = []
        while (t := self.peek()) is not None and t.value != "}":
            if t.kind != "ident":
                raise SieveError(t.line, f"expected a command, got {t.value!r}")
            self.i += 1
            cmd = _Command(str(t.value), t.line)
            cmd.args, cmd.tests = self.arguments(depth)
            if (t := self.peek()) is not None and t.value == "{":
                self.take("{")
                cmd.block = self.commands(depth + 1)
                self.take("}")
            else:
                self.take(";")
            out.append(cmd)
        return out

    def arguments(self, depth: int) -> tuple[list[Union[str, int, list[str]]], list[_Test]]:
        args: list[Union[str, int, list[str]]] = []
        while (t := self.peek()) is not None:
            if t.kind == "string":
                args.append([str(self.take().value)])
            elif t.kind in ("number", "tag"):
                args.append(self.take().value)
            elif t.value == "[":
                self.take("[")
                items = [str(self.take().value)]
                while (t := self.peek()) is not None and t.value == ",":
                    self.take(",")
                    items.append(str(self.take().value))
                self.take("]")
                args.append(items)
            else:
                break
        tests: list[_Test] = []
        t = self.peek()
        if t is not None and t.kind == "ident":
            tests = [self.test(depth)]
        elif t is not None and t.value == "(":
            self.take("(")
            tests = [self.test(depth)]
            while (t := self.peek()) is not None and t.value == ",":
                self.take(",")
                tests.append(self.test(depth))
            self.take(")")
        return args, tests

    def test(self, depth: int) -> _Test:
        if depth > MAX_DEPTH:
            raise SieveError(self.line(), f"tests nested deeper than {MAX_DEPTH}")
        t = self.take()
        if t.kind != "ident":
            raise SieveError(t.line, f"expected a test, got {t.value!r}")
        test = _Test(str(t.value), t.line)
        test.args, test.tests = self.arguments(depth + 1)
        return test


# -- translation ---------------------------------------------------------------------------------
_ADDRESS_FIELDS = {
    ("from",): "From",
    ("sender",): "Sender",
    ("to",): "To",
    ("cc",): "Cc",
    ("reply-to",): "Reply-To",
    ("cc", "to"): "Any To or Cc",
}
_TEXT_FIELDS = {"subject": "Subject", "message-id": "Message-ID"}
_NEGATE = {IS: IS_NOT, IS_NOT: IS, IN: NOT_IN, NOT_IN: IN}


def _picture(key: str, match: str, line: int) -> str:
    if "," in key:
        raise SieveError(line, f"key {key!r}: a comma cannot be expressed in a rule picture")
    if match == ":is":
        if "*" in key:
            raise SieveError(line, f":is {key!r}: a literal '*' cannot be expressed")
        return key
    if match == ":contains":
        if "*" in key:
            raise SieveError(line, f":contains {key!r}: a literal '*' cannot be expressed")
        return f"*{key}*"
    if "?" in key or "\\" in key:
        raise SieveError(line, f":matches {key!r}: only '*' wildcards can be expressed")
    return key


def _split(test: _Test) -> tuple[dict[str, Union[str, int]], list[Union[str, int, list[str]]]]:
    tags: dict[str, Union[str, int]] = {}
    rest: list[Union[str, int, list[str]]] = []
    args = list(test.args)
    while args:
        a = args.pop(0)
        if isinstance(a, str) and a.startswith(":"):
            if a == ":comparator":
                value = args.pop(0) if args else None
                if value != ["i;ascii-casemap"]:
                    raise SieveError(test.line, "only the default comparator i;ascii-casemap")
                continue
            if a in (":days", ":subject", ":from", ":addresses", ":handle", ":seconds"):
                tags[a] = str(args.pop(0)) if args else ""
                continue
            tags[a] = a
        else:
            rest.append(a)
    return tags, rest


def _keys(values: list[Union[str, int, list[str]]], n: int, line: int) -> list[list[str]]:
    if len(values) != n or not all(isinstance(v, list) for v in values):
        raise SieveError(line, f"expected {n} string argument(s)")
    return [v for v in values if isinstance(v, list)]


def _string(values: list[Union[str, int, list[str]]], what: str, line: int) -> str:
    (keys,) = _keys(values, 1, line)
    if len(keys) != 1:
        raise SieveError(line, f"{what} takes one string, not a list")
    return keys[0]


_TAGS = {
    "header": {":is", ":contains", ":matches"},
    "address": {":is", ":contains", ":matches", ":all", ":localpart", ":domain"},
    "envelope": {":is", ":contains", ":matches", ":all", ":localpart", ":domain"},
    "size": {":over", ":under"},
    "exists": set(),
}


def _conditions(test: _Test) -> list[Condition]:
    """The conditions equivalent to ``test`` (all must hold); SieveError when there are none."""
    name, line = test.name, test.line
    if name == "true":
        return []
    if name == "allof":
        return [c for t in test.tests for c in _conditions(t)]
    if name == "anyof":
        if len(test.tests) != 1:
            raise SieveError(line, "anyof with several tests has no rule equivalent (split it)")
        return _conditions(test.tests[0])
    if name == "not":
        inner = _conditions(test.tests[0]) if len(test.tests) == 1 else None
        if inner is None or len(inner) != 1:
            raise SieveError(line, "not of anything but one simple test has no rule equivalent")
        return [_negate(inner[0], line)]
    tags, rest = _split(test)
    if name not in _TAGS:
        raise SieveError(line, f"test {name!r} is not supported")
    unknown = sorted(set(tags) - _TAGS[name])
    if unknown:
        raise SieveError(line, f"{name} {unknown[0]} is not supported")
    match = next((t for t in (":is", ":contains", ":matches") if t in tags), ":is")
    if name == "size":
        if len(rest) != 1 or not isinstance(rest[0], int) or not ({":over", ":under"} & set(tags)):
            raise SieveError(line, "size takes :over or :under and a number")
        return [Condition("Message Size", GREATER if ":over" in tags else LESS, str(rest[0]))]
    if name == "exists":
        (names,) = _keys(rest, 1, line)
        return [Condition("Header Field", IS, f"{h}: *") for h in names]
    if name in ("header", "address", "envelope"):
        fields, keys = _keys(rest, 2, line)
        part = next((t for t in (":localpart", ":domain") if t in tags), ":all")
        pictures = [_picture(k, match, line) for k in keys]
        if part == ":localpart":
            pictures = [f"{p}@*" for p in pictures]
        elif part == ":domain":
            pictures = [f"*@{p}" for p in pictures]
        subject = _subject(name, [f.lower() for f in fields], line)
        if subject == "Header Field":
            if len(pictures) != 1:
                raise SieveError(line, "a header test on that field takes one key")
            return [Condition(subject, IS, f"{fields[0]}: {pictures[0]}")]
        op = IS if len(pictures) == 1 else IN
        return [Condition(subject, op, ", ".join(pictures))]
    raise SieveError(line, f"test {name!r} is not supported")


def _subject(test: str, fields: list[str], line: int) -> str:
    key = tuple(sorted(set(fields)))
    if test == "envelope":
        if key == ("from",):
            return "Return-Path"
        if key == ("to",):
            return "Any Recipient"
        raise SieveError(line, "envelope tests 'from' or 'to'")
    if test == "address":
        if key in _ADDRESS_FIELDS:
            return _ADDRESS_FIELDS[key]
        raise SieveError(line, f"address test on {', '.join(fields)} is not supported")
    if len(key) != 1:
        raise SieveError(line, "a header test on several fields has no rule equivalent")
    return _TEXT_FIELDS.get(key[0], "Header Field")


def _negate(c: Condition, line: int) -> Condition:
    if c.op in _NEGATE:
        return Condition(c.subject, _NEGATE[c.op], c.param)
    if c.subject == "Message Size":  # not (> n) is < n + 1
        n = int(c.param)
        return Condition(
            c.subject,
            LESS if c.op == GREATER else GREATER,
            str(n + 1 if c.op == GREATER else max(n - 1, 0)),
        )
    raise SieveError(line, f"{c.subject} {c.op} cannot be negated")


@dataclass
class _Out:
    rules: list[Rule] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keeps: int = 0  # explicit keep
    fileintos: int = 0
    drops: int = 0  # discard and redirect: cancel the implicit keep


def _actions(cmds: list[_Command], out: _Out) -> list[Action]:
    acts: list[Action] = []
    for cmd in cmds:
        name, line = cmd.name, cmd.line
        tags, rest = _split(_Test(name, line, cmd.args))
        if name == "keep":
            out.keeps += 1
        elif name == "fileinto":
            if ":copy" in tags or ":flags" in tags or ":create" in tags:
                raise SieveError(line, "fileinto takes only the folder here")
            acts.append(Action("Store in", _string(rest, name, line)))
            out.fileintos += 1
        elif name == "redirect":
            acts += [Action("Redirect to", _string(rest, name, line)), Action("Discard")]
            out.drops += 1
        elif name == "discard":
            acts.append(Action("Discard"))
            out.drops += 1
        elif name in ("reject", "ereject"):
            text = _string(rest, name, line)
            acts.append(Action("Reject with", " ".join(text.split())[:200] or "rejected"))
        elif name == "stop":
            acts.append(Action("Stop Processing"))
        elif name == "vacation":
            if ":mime" in tags:
                raise SieveError(line, "vacation :mime is not supported")
            for t in (":days", ":seconds", ":subject", ":from", ":addresses", ":handle"):
                if t in tags:
                    out.warnings.append(
                        f"line {line}: vacation {t} ignored (the server answers each sender "
                        "once per rules.reply_interval, with 'Re:' and the account's address)"
                    )
            acts.append(Action("Reply with", _string(rest, name, line)))
        else:
            raise SieveError(line, f"action {name!r} is not supported")
    return acts


def _compile(cmds: list[_Command], prefix: list[Condition], out: _Out) -> None:
    i = 0
    while i < len(cmds):
        cmd = cmds[i]
        if cmd.name == "require":
            names = [x for a in cmd.args if isinstance(a, list) for x in a]
            for ext in names:
                if ext.lower() not in EXTENSIONS:
                    raise SieveError(cmd.line, f"extension {ext!r} is not supported")
            i += 1
            continue
        if cmd.name in ("elsif", "else"):
            raise SieveError(cmd.line, f"{cmd.name} without if")
        if cmd.name != "if":
            j = i
            while j < len(cmds) and cmds[j].name not in ("if", "require", "elsif", "else"):
                j += 1
            acts = _actions(cmds[i:j], out)
            if acts:
                _add(out, prefix, acts, cmds[i].line)
            i = j
            continue
        negated: list[Condition] = []  # an elsif or else runs when no earlier branch did
        while True:
            branch = cmds[i]
            if branch.block is None:
                raise SieveError(branch.line, f"{branch.name} needs a block")
            conds = [] if branch.name == "else" else _conditions(_one_test(branch))
            _compile(branch.block, prefix + negated + conds, out)
            i += 1
            if branch.name == "else" or i >= len(cmds) or cmds[i].name not in ("elsif", "else"):
                break
            if len(conds) != 1:
                raise SieveError(
                    cmds[i].line,
                    f"{cmds[i].name} after a test of {len(conds)} conditions has no rule "
                    "equivalent",
                )
            negated = negated + [_negate(conds[0], branch.line)]


def _one_test(cmd: _Command) -> _Test:
    if len(cmd.tests) != 1 or cmd.args:
        raise SieveError(cmd.line, f"{cmd.name} takes one test")
    return cmd.tests[0]


def _add(out: _Out, conds: list[Condition], acts: list[Action], line: int) -> None:
    try:
        out.rules.append(
            Rule(f"sieve {len(out.rules) + 1} (line {line})", 5, tuple(conds), tuple(acts))
        )
    except RuleError as e:
        raise SieveError(line, str(e)) from None


def compile_sieve(script: str) -> tuple[RuleSet, list[str]]:
    """The rule set equivalent to ``script`` and warnings; SieveError when it has none."""
    if len(script) > MAX_SCRIPT:
        raise SieveError(1, f"script over {MAX_SCRIPT} characters")
    parser = _Parser(_lex(script))
    cmds = parser.commands(0)
    if parser.peek() is not None:
        raise SieveError(parser.line(), "unexpected '}'")
    out = _Out()
    try:
        _compile(cmds, [], out)
    except RuleError as e:
        if isinstance(e, SieveError):
            raise
        raise SieveError(1, str(e)) from None
    if out.drops and (out.keeps or out.fileintos):
        raise SieveError(
            1,
            "discard or redirect together with keep or fileinto: Sieve may keep a copy a "
            "Discard rule would drop; write these rules by hand",
        )
    if out.keeps and out.fileintos:
        raise SieveError(1, "keep together with fileinto stores two copies; rules store one")
    if out.fileintos > 1:
        out.warnings.append(
            "a message several fileinto apply to is stored once, in the first folder "
            "(Sieve files a copy into each)"
        )
    return RuleSet(tuple(out.rules)), out.warnings
