"""The rule model: conditions, actions, rules and rule sets, with CommuniGate's names.

Owns what a valid rule is: the names of conditions and actions, which operations each
condition takes, what each action's parameter must look like, where an action may run
(server or account level) and which ``RulesAllowed`` class it needs. Values are frozen and
checked when built (``check_*`` raise RuleError with the problem); evaluation and the text
form live beside it. No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from cgtwist.pictures import matches, pieces, split_list
from cgtwist.rules.index import RuleIndex

FORMAT_VERSION = 1
MAX_PRIORITY = 10  # CommuniGate: 0 (disabled) .. 10, higher runs first


class RuleError(ValueError):
    """A rule that cannot be: the message names the rule part and the problem."""


# -- conditions ---------------------------------------------------------------------------------
IS, IS_NOT, IN, NOT_IN, GREATER, LESS = (
    "is",
    "is not",
    "in",
    "not in",
    "greater than",
    "less than",
)
PICTURE_OPS = (IS, IS_NOT, IN, NOT_IN)
ORDER_OPS = (GREATER, LESS)
OPERATIONS = (IS_NOT, NOT_IN, IS, IN, GREATER, LESS)  # longest first, for the parser
NEGATIVE = (IS_NOT, NOT_IN)

# Kinds: how a condition's values are found and compared (cgtwist.rules.evaluate).
ADDRESS, TEXT, HEADER, NUMBER, ROUTE, TAGS, FLAG, MAILBOX, DATE, DAY, TIME, ZONE = (
    "address",
    "text",
    "header",
    "number",
    "route",
    "tags",
    "flag",
    "mailbox",
    "date",
    "day",
    "time",
    "zone",
)

CONDITIONS: dict[str, str] = {
    "From": ADDRESS,
    "Sender": ADDRESS,
    "Return-Path": ADDRESS,
    "To": ADDRESS,
    "Cc": ADDRESS,
    "Any To or Cc": ADDRESS,
    "Each To or Cc": ADDRESS,
    "Reply-To": ADDRESS,
    "Any Recipient": ADDRESS,
    "Each Recipient": ADDRESS,
    "From Name": TEXT,
    "Subject": TEXT,
    "Message-ID": TEXT,
    "Header Field": HEADER,
    "Message Size": NUMBER,
    "Any Route": ROUTE,
    "Each Route": ROUTE,
    "Source": TAGS,
    "Security": TAGS,
    "Submit Address": TAGS,
    "SPF Result": TAGS,
    "RBL Listed": ZONE,  # the DNSBL zones that listed the client (protection.rbl.action tag)
    "Human Generated": FLAG,
    "Existing Mailbox": MAILBOX,
    "Current Date": DATE,
    "Current Day": DAY,
    "Current Time": TIME,
}
# Kinds compared as pictures against the subject's values (DATE and TIME too, with is/in).
PICTURE_KINDS = frozenset({ADDRESS, TEXT, HEADER, ROUTE, TAGS, DAY, ZONE})
# Multi-valued subjects whose positive operations need every value to match.
EACH = frozenset({"Each To or Cc", "Each Recipient", "Each Route"})

OPS_OF_KIND: dict[str, tuple[str, ...]] = {
    ADDRESS: PICTURE_OPS,
    TEXT: PICTURE_OPS,
    HEADER: PICTURE_OPS,
    NUMBER: ORDER_OPS,
    ROUTE: PICTURE_OPS,
    TAGS: PICTURE_OPS,
    FLAG: (IS, IS_NOT),
    MAILBOX: (IS, IS_NOT),
    DATE: PICTURE_OPS + ORDER_OPS,
    DAY: PICTURE_OPS,
    TIME: PICTURE_OPS + ORDER_OPS,
    ZONE: PICTURE_OPS,
}

# The words a TAGS condition can meet (anything else could never match: refused).
TAG_WORDS: dict[str, frozenset[str]] = {
    "Source": frozenset({"trusted", "authenticated", "client", "local", "remote"}),
    "Security": frozenset({"tls", "cleartext", "authenticated"}),
    "Submit Address": frozenset({"smtp", "pipe", "dsn", "rule", "local"}),
    "SPF Result": frozenset(
        {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}
    ),
}
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_SIZE_RE = re.compile(r"^(\d{1,12})\s*([KMG]?)$", re.IGNORECASE)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_FIELD_RE = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 §3.6.8 ftext
_LIST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ADDRESS_RE = re.compile(r"^[^\s@<>\"(),;:\\\[\]]{1,64}@[A-Za-z0-9.-]{1,253}$")
_ZONE_PICTURE_RE = re.compile(r"^[A-Za-z0-9*_.-]{1,253}$")  # a DNS zone, '*' for any part
# RFC 3501 §9 flag-keyword (an atom), as IMAP APPEND and STORE take it (cgtwist.mailstore).
_KEYWORD_RE = re.compile(r"^[!#$&'+-\[^-z|}~]{1,64}$")
_PROGRAM_RE = re.compile(r"^[^/\\.\x00-\x1f][^/\\\x00-\x1f]{0,255}$")  # PIPE rules (no path)
MAX_PARAM = 4096


def size_value(param: str) -> int:
    """``Message Size`` parameters: bytes, or with K/M/G (powers of 1024)."""
    m = _SIZE_RE.match(param.strip())
    if not m:
        raise RuleError(f"size {param!r}: a number of bytes, optionally with K, M or G")
    return int(m.group(1)) << 10 * " KMG".index((m.group(2) or " ").upper())


def header_param(param: str) -> tuple[str, str]:
    """``Header Field`` parameters are ``Name: picture``."""
    name, sep, picture = param.partition(":")
    name = name.strip()
    if not sep or not _FIELD_RE.match(name):
        raise RuleError(f"header field {param!r}: write it as 'Name: picture'")
    return name, picture.strip()


@dataclass(frozen=True)
class Condition:
    """``subject op param``; FLAG conditions (Human Generated) have no parameter."""

    subject: str
    op: str
    param: str = ""
    # Compiled once (pictures split at "*" and casefolded, remembered lists named, the header
    # field name): evaluation does no parsing per message.
    plan: tuple[tuple[tuple[str, ...], ...], tuple[str, ...], str] = field(
        init=False, compare=False, repr=False, hash=False, default=((), (), "")
    )
    # Worked out once for the evaluator's per-message path: whether the condition is a
    # picture match, the key its subject's values are kept under in MessageFacts, and whether
    # it is negative / needs every value to match.
    picture: bool = field(init=False, compare=False, repr=False, hash=False, default=False)
    key: str = field(init=False, compare=False, repr=False, hash=False, default="")
    negative: bool = field(init=False, compare=False, repr=False, hash=False, default=False)
    each: bool = field(init=False, compare=False, repr=False, hash=False, default=False)
    size: int = field(init=False, compare=False, repr=False, hash=False, default=0)  # NUMBER
    kind: str = field(init=False, compare=False, repr=False, hash=False, default="")

    def __post_init__(self) -> None:
        check_condition(self)
        kind = CONDITIONS[self.subject]
        object.__setattr__(self, "kind", kind)  # read for every condition of every message
        plan = _compile(self)
        object.__setattr__(self, "plan", plan)
        object.__setattr__(
            self,
            "picture",
            kind in PICTURE_KINDS or (kind in (DATE, TIME) and self.op not in ORDER_OPS),
        )
        # A string (its hash is kept): subjects and field names hold no colon.
        object.__setattr__(self, "key", f"{self.subject}:{plan[2]}")
        object.__setattr__(self, "negative", self.op in NEGATIVE)
        object.__setattr__(self, "each", self.subject in EACH and self.op not in NEGATIVE)
        if kind == NUMBER:
            object.__setattr__(self, "size", size_value(self.param))


def _compile(c: Condition) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...], str]:
    name = ""
    if c.kind == HEADER:
        name, picture = header_param(c.param)
        items = [picture]
    else:
        items = split_list(c.param) if c.op in (IN, NOT_IN) else [c.param.strip()]
    lists = tuple(p[1:] for p in items if p.startswith("#")) if c.kind == ADDRESS else ()
    if lists:
        items = [p for p in items if not p.startswith("#")]
    return tuple(pieces(p) for p in items), lists, name


def check_condition(c: Condition) -> None:
    kind = CONDITIONS.get(c.subject)
    if kind is None:
        raise RuleError(f"unknown condition {c.subject!r}")
    if c.op not in OPS_OF_KIND[kind]:
        allowed = ", ".join(repr(o) for o in OPS_OF_KIND[kind])
        raise RuleError(f"{c.subject} takes {allowed}, not {c.op!r}")
    if len(c.param) > MAX_PARAM or "\n" in c.param or "\r" in c.param:
        raise RuleError(f"{c.subject}: parameter too long or on several lines")
    if kind == FLAG:
        if c.param:
            raise RuleError(f"{c.subject} takes no parameter")
        return
    if not c.param.strip() and kind not in (ADDRESS, TEXT, HEADER):
        raise RuleError(f"{c.subject} needs a parameter")
    values = split_list(c.param) if c.op in (IN, NOT_IN) else [c.param.strip()]
    if kind == ADDRESS and c.op in (IN, NOT_IN):
        for v in values:
            if v.startswith("#") and not _LIST_RE.match(v[1:]):
                raise RuleError(f"{c.subject} {v!r}: '#' names a remembered list (letters, digits)")
    if kind == NUMBER:
        size_value(c.param)
    elif kind == HEADER:
        header_param(c.param)
    elif kind == TAGS:
        words = TAG_WORDS[c.subject]
        for v in values:
            if c.subject == "Source" and any(ch.isdigit() or ch == ":" for ch in v):
                continue  # a Client IP picture, e.g. 192.0.2.*
            if not any(_fits(v, w) for w in words):
                raise RuleError(
                    f"{c.subject} {v!r} never matches (known: {', '.join(sorted(words))})"
                )
    elif kind == MAILBOX:
        if "*" in c.param or "%" in c.param:
            raise RuleError(f"{c.subject} names one mailbox, without wildcards")
    elif kind == DATE and c.op in ORDER_OPS and not _DATE_RE.match(c.param.strip()):
        raise RuleError(f"{c.subject} {c.param!r}: compare with a date as YYYY-MM-DD")
    elif kind == TIME and c.op in ORDER_OPS and not _TIME_RE.match(c.param.strip()):
        raise RuleError(f"{c.subject} {c.param!r}: compare with a time as HH:MM (24 hours)")
    elif kind == DAY:
        for v in values:
            if not any(_fits(v, d) for d in DAYS):
                raise RuleError(f"{c.subject} {v!r} never matches a day name")
    elif kind == ZONE:
        for v in values:
            if not _ZONE_PICTURE_RE.match(v):
                raise RuleError(f"{c.subject} {v!r}: a DNSBL zone name, '*' for any")


def _fits(picture: str, word: str) -> bool:
    return matches(picture, word)


# -- actions ------------------------------------------------------------------------------------
# RulesAllowed classes, CommuniGate's names, weakest first.
ALLOWED_NONE, ALLOWED_FILTER, ALLOWED_NO_REDIRECT, ALLOWED_ANY = (
    "None",
    "Filter Only",
    "No Redirect",
    "Any",
)
ALLOWED_LEVELS = (ALLOWED_NONE, ALLOWED_FILTER, ALLOWED_NO_REDIRECT, ALLOWED_ANY)

# Parameter kinds of actions.
P_NONE, P_TEXT, P_FOLDER, P_FLAGS, P_HEADER, P_ADDRESSES, P_LIST, P_PROGRAM = (
    "none",
    "text",
    "folder",
    "flags",
    "header",
    "addresses",
    "list",
    "program",
)


@dataclass(frozen=True)
class ActionSpec:
    """What an action takes, where it may run and the RulesAllowed class it needs."""

    param: str
    needs: str  # the weakest RulesAllowed class that permits it
    server: bool = True  # may appear in Server Rules
    account: bool = True  # may appear in Domain and Account Rules


ACTIONS: dict[str, ActionSpec] = {
    "Store in": ActionSpec(P_FOLDER, ALLOWED_FILTER, server=False),
    "Mark": ActionSpec(P_FLAGS, ALLOWED_FILTER, server=False),
    "Add Header": ActionSpec(P_HEADER, ALLOWED_FILTER),
    "Tag Subject": ActionSpec(P_TEXT, ALLOWED_FILTER),
    "Reject with": ActionSpec(P_TEXT, ALLOWED_FILTER),
    "Discard": ActionSpec(P_NONE, ALLOWED_FILTER),
    "Stop Processing": ActionSpec(P_NONE, ALLOWED_FILTER),
    "Remember 'From' in": ActionSpec(P_LIST, ALLOWED_FILTER),
    "Reply with": ActionSpec(P_TEXT, ALLOWED_NO_REDIRECT),
    "Reply to All with": ActionSpec(P_TEXT, ALLOWED_NO_REDIRECT),
    "Redirect to": ActionSpec(P_ADDRESSES, ALLOWED_ANY),
    "Forward to": ActionSpec(P_ADDRESSES, ALLOWED_ANY),
    "Mirror to": ActionSpec(P_ADDRESSES, ALLOWED_ANY),
    "Execute": ActionSpec(P_PROGRAM, ALLOWED_ANY),
}


# What "Mark" sets, by CommuniGate's and IMAP's names: the system flags a Maildir file name
# carries (maildir(5) info letters). Any other atom (Junk, $Label1) is an IMAP keyword, which
# LOCAL stores in the mailbox's keyword map (Dovecot's dovecot-keywords) as APPEND does.
MARK_FLAGS = {
    "read": "\\Seen",
    "seen": "\\Seen",
    "flagged": "\\Flagged",
    "answered": "\\Answered",
    "deleted": "\\Deleted",
    "draft": "\\Draft",
}


@dataclass(frozen=True)
class Action:
    """``name param``; the parameter is checked against the action's kind when built."""

    name: str
    param: str = ""

    def __post_init__(self) -> None:
        check_action(self)

    @property
    def spec(self) -> ActionSpec:
        return ACTIONS[self.name]

    def addresses(self) -> list[str]:
        return split_list(self.param)

    def flags(self) -> list[str]:
        """Mark's IMAP flags: system flags by their IMAP names (``\\Seen``, ...), keywords as
        written (``Junk``, ``$Label1``)."""
        return [mark_flag(f) for f in split_list(self.param)]


def mark_flag(word: str) -> str:
    """One word of a Mark parameter as the IMAP flag it sets."""
    if word.startswith("\\"):
        return MARK_FLAGS[word[1:].lower()]
    return MARK_FLAGS.get(word.lower(), word)


def check_action(a: Action) -> None:
    spec = ACTIONS.get(a.name)
    if spec is None:
        raise RuleError(f"unknown action {a.name!r}")
    p = a.param
    if len(p) > MAX_PARAM or "\r" in p or ("\n" in p and spec.param != P_TEXT):
        raise RuleError(f"{a.name}: parameter too long or on several lines")
    if spec.param == P_NONE:
        if p:
            raise RuleError(f"{a.name} takes no parameter")
        return
    if not p.strip():
        raise RuleError(f"{a.name} needs a parameter")
    if spec.param == P_FOLDER:
        if (
            p.startswith("/")
            or any(part in ("", ".", "..") for part in p.split("/"))
            or "*" in p
            or "%" in p
        ):
            raise RuleError(f"{a.name} {p!r}: not a usable mailbox name")
    elif spec.param == P_FLAGS:
        for f in split_list(p):
            if f.startswith("\\"):
                if f[1:].lower() not in MARK_FLAGS:
                    raise RuleError(
                        f"{a.name} {f!r}: the system flags are \\Seen, \\Flagged, "
                        "\\Answered, \\Deleted and \\Draft"
                    )
            elif f.lower() not in MARK_FLAGS and not _KEYWORD_RE.match(f):
                raise RuleError(
                    f"{a.name} {f!r}: Read, Flagged, Answered, Deleted, Draft or an IMAP "
                    "keyword (letters, digits, '$', no spaces or ( ) { % * \" ] \\)"
                )
    elif spec.param == P_HEADER:
        name, sep, _value = p.partition(":")
        if not sep or not _FIELD_RE.match(name.strip()) or name != name.strip():
            raise RuleError(f"{a.name} {p!r}: write a header line as 'Name: value'")
    elif spec.param == P_ADDRESSES:
        for addr in split_list(p):
            if not _ADDRESS_RE.match(addr):
                raise RuleError(f"{a.name} {addr!r}: not an address local@domain")
    elif spec.param == P_LIST:
        if not _LIST_RE.match(p):
            raise RuleError(f"{a.name} {p!r}: a list name is letters, digits, '.', '_' or '-'")
    elif spec.param == P_PROGRAM:
        if not _PROGRAM_RE.match(p.strip()):
            raise RuleError(
                f"{a.name} {p!r}: a program name from the PIPE application folder (no path)"
            )


# -- rules ---------------------------------------------------------------------------------------
_NAME_RE = re.compile(r"^[^\x00-\x1f\"\\]{1,100}$")


@dataclass(frozen=True)
class Rule:
    """A named rule: all ``conditions`` must hold for ``actions`` to run; priority 0 = off."""

    name: str
    priority: int = 5
    conditions: tuple[Condition, ...] = ()
    actions: tuple[Action, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or self.name != self.name.strip():
            raise RuleError(f"rule name {self.name!r}: 1 to 100 characters, no quotes or controls")
        if isinstance(self.priority, bool) or not 0 <= self.priority <= MAX_PRIORITY:
            raise RuleError(f"rule {self.name!r}: priority is 0 (disabled) to {MAX_PRIORITY}")
        if not self.actions:
            raise RuleError(f"rule {self.name!r} has no action")

    @property
    def enabled(self) -> bool:
        return self.priority > 0


@dataclass(frozen=True)
class RuleSet:
    """Rules as written; ``ordered()`` is the order they run (higher priority first, then as
    written, which keeps equal priorities in the administrator's order)."""

    rules: tuple[Rule, ...] = field(default_factory=tuple)
    _ordered: tuple[Rule, ...] = field(init=False, compare=False, repr=False, default=())
    # What the enabled rules' conditions make the caller look up per message, worked out
    # once: the Router's routes (Any/Each Route), the mailbox names of Existing Mailbox and
    # the remembered lists (#Name) of address conditions.
    needs_routes: bool = field(init=False, compare=False, repr=False, default=False)
    routed: frozenset[str] = field(init=False, compare=False, repr=False, default=frozenset())
    mailbox_names: frozenset[str] = field(
        init=False, compare=False, repr=False, default=frozenset()
    )
    list_names: tuple[str, ...] = field(init=False, compare=False, repr=False, default=())
    # The enabled rules filed by a condition each must meet (cgtwist.rules.index): the
    # evaluator tries only the rules a message can fire, in the same order.
    index: RuleIndex = field(
        init=False,
        compare=False,
        repr=False,
        default_factory=lambda: RuleIndex((), (), frozenset()),
    )

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for r in self.rules:
            if r.name.casefold() in seen:
                raise RuleError(f"two rules named {r.name!r}")
            seen.add(r.name.casefold())
        ordered = sorted((r for r in self.rules if r.enabled), key=lambda r: -r.priority)
        object.__setattr__(self, "_ordered", tuple(ordered))
        conditions = [c for r in ordered for c in r.conditions]
        routed = frozenset(r.name for r in ordered if any(c.kind == ROUTE for c in r.conditions))
        object.__setattr__(self, "routed", routed)  # the names of the rules that read routes
        object.__setattr__(self, "needs_routes", bool(routed))
        object.__setattr__(
            self,
            "mailbox_names",
            frozenset(c.param.strip() for c in conditions if c.kind == MAILBOX),
        )
        lists = dict.fromkeys(n for c in conditions for n in c.plan[1])
        object.__setattr__(self, "list_names", tuple(lists))
        # Not filed by routes: RulesRunner looks them up only for the rules a message tries.
        index = RuleIndex.build(ordered, frozenset({ROUTE}), frozenset({TAGS, DAY, DATE, TIME}))
        object.__setattr__(self, "index", index)

    def ordered(self) -> tuple[Rule, ...]:
        return self._ordered


def check_level(rules: RuleSet, server: bool, allowed: Optional[str] = None) -> None:
    """Refuse actions that cannot run at this level, or that ``allowed`` does not permit.

    ``server``: Server Rules (the enqueuer; no mailbox to store into). ``allowed``: the
    account's RulesAllowed (None for server and domain rule sets, which the administrator
    writes).
    """
    for r in rules.rules:
        for a in r.actions:
            why = refusal(a, server, allowed)
            if why:
                raise RuleError(f"rule {r.name!r}: {why}")


def refusal(action: Action, server: bool, allowed: Optional[str]) -> str:
    """Why ``action`` may not run here, or "" when it may."""
    spec = action.spec
    if server and not spec.server:
        return f"{action.name} needs a mailbox: it belongs in Domain or Account Rules"
    if not server and not spec.account:
        return f"{action.name} runs only in Server Rules"
    if allowed is not None:
        if allowed not in ALLOWED_LEVELS:
            return f"unknown RulesAllowed {allowed!r}"
        if ALLOWED_LEVELS.index(allowed) < ALLOWED_LEVELS.index(spec.needs):
            return f"{action.name} needs RulesAllowed {spec.needs!r} (the account has {allowed!r})"
    return ""
