"""The facts a message offers to rule conditions, read from its envelope and header section.

Owns turning (envelope, message bytes, what the server knows about the source) into plain
values: header fields, addresses, size, routes, source and security words, the SPF result
our own ``Authentication-Results`` recorded, whether a human sent it (RFC 3834), existing
mailboxes and the clock. Reading is bounded (only the header section, at most
``MAX_HEADER_BYTES``, at most ``MAX_VALUES`` addresses per field) so a hostile message costs
little. No I/O: the caller passes what it looked up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import getaddresses
from typing import Callable, Hashable, Iterable, Mapping, Optional, TypeVar, cast

from cgtwist.message.headers import decoded, header_block, header_fields, unfolded

T = TypeVar("T")
_MISSING = object()
_EPOCH = datetime(1970, 1, 1)
_NO_VALUES: list[str] = []
_NO_NAMES: frozenset[str] = frozenset()
_AR = "authentication-results"
MAX_VALUES = 1000
_SPF_RE = re.compile(r"\bspf\s*=\s*([A-Za-z]+)")


@dataclass(eq=False)
class MessageFacts:
    """Everything a condition can look at, read-only once built (not a frozen dataclass: its
    ``__init__`` would set each of the 20 fields through ``object.__setattr__``, some 30,000
    instructions per message, more than the rest of building it). ``head`` is the message (or its header section):
    its fields are read on the first question about one (``headers``: lower-case name and
    unfolded value, in order), so a message whose rules ask about none is never parsed;
    ``mailboxes`` the casefolded names of the account's mailboxes that a condition asked
    about and that exist (LOCAL only); ``lists`` the remembered address lists (``#Name`` in
    an ``in`` condition) the conditions name, lower-cased. ``recorded_spf``: the SPF result
    the receiver recorded (``message_facts``); without one, ``spf`` is read from our own
    ``Authentication-Results`` (``authserv_id``), again only when a condition asks."""

    sender: str
    recipients: tuple[str, ...]
    head: bytes = b""
    size: int = 0
    routes: tuple[str, ...] = ()
    source: frozenset[str] = frozenset()
    client_ip: str = ""
    security: frozenset[str] = frozenset()
    submit: str = "smtp"
    recorded_spf: str = ""
    authserv_id: str = ""
    rbl: tuple[str, ...] = ()  # the DNSBL zones that listed the client
    mailboxes: frozenset[str] = frozenset()
    lists: Mapping[str, frozenset[str]] = field(default_factory=dict)
    now: datetime = _EPOCH

    # Parsed once per message, however many conditions ask.
    # A key names what ``make`` builds, so the value under it is always that type (``memo``).
    _memo: dict[Hashable, object] = field(default_factory=dict, compare=False, repr=False)
    # The same, typed, for what every message's conditions read: the values each condition
    # subject offers, plain and casefolded, by Condition.key (cgtwist.rules.evaluate fills
    # it, so a field is read once per subject however many conditions name it), and the
    # field index.
    seen: dict[str, tuple[list[str], list[str]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _index: Optional[dict[str, list[str]]] = field(default=None, compare=False, repr=False)

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()`` once per message and key: what many conditions read is derived once.
        A key is used with one ``make`` (one result type) only."""
        hit = self._memo.get(key, _MISSING)
        if hit is _MISSING:
            hit = self._memo[key] = make()
        return cast(T, hit)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self.memo("headers", lambda: parse_headers(self.head))

    @property
    def spf(self) -> str:
        if self.recorded_spf:
            return self.recorded_spf
        return self.memo("spf", lambda: spf_result(self.field_values(_AR), self.authserv_id))

    def field_values(self, name: str) -> list[str]:
        """The unfolded values of the fields named ``name`` (lower-case), in order: the
        message's fields are read once, on the first question (the caller must not change
        the list)."""
        index = self._index
        if index is None:
            index = self._index = field_index(self.head)  # once, on the first question
        return index.get(name, _NO_VALUES)

    def field_names(self) -> list[str]:
        """The lower-case names of the message's fields, each once, in order of first use."""
        self.field_values("")
        return list(self._index or ())

    def fields(self, name: str) -> list[str]:
        return list(self.field_values(name.lower()))

    def _parsed(self, names: tuple[str, ...]) -> list[tuple[str, str]]:
        values = [v for n in names for v in self.field_values(n.lower())]
        return parse_addresses(values) if values else []

    def addresses(self, *names: str) -> list[str]:
        return [a for _name, a in self._parsed(names) if a]

    def display_names(self, name: str) -> list[str]:
        return [decoded(n) for n, _a in self._parsed((name,)) if n]

    def decoded(self, name: str) -> list[str]:
        return [decoded(v) for v in self.field_values(name.lower())]

    @property
    def human_generated(self) -> bool:
        return not machine_generated(self)


# The two forms nearly every address field takes, ``local@domain`` and ``Name <local@domain>``
# with nothing RFC 5322 quotes, comments or groups could change: read with one match each
# (getaddresses costs some 15 microseconds a field); anything else goes to getaddresses.
_ADDR = r"[^\s<>()\[\],;:\\\"@]+@[^\s<>()\[\],;:\\\"@]+"
_BARE = re.compile(rf"[ \t]*({_ADDR})[ \t]*\Z")
_SPECIALS = re.compile(r'[<>()\[\];:\\"]')
_NAMED = re.compile(rf"([^<>()\[\],;:\\\"@]*)<({_ADDR})>[ \t]*\Z")


def parse_addresses(values: Iterable[str]) -> list[tuple[str, str]]:
    """(display name, address) of each address in the field ``values``, as getaddresses
    reads them, at most MAX_VALUES."""
    out: list[tuple[str, str]] = []
    for v in values:
        m = _BARE.match(v)
        if m is not None:
            out.append(("", m.group(1)))
            continue
        if "," in v and _SPECIALS.search(v) is None:
            # a, b, c: a list of bare addresses (every item one, none empty)
            items = [_BARE.match(item) for item in v.split(",")]
            if all(items):
                out.extend(("", i.group(1)) for i in items if i is not None)
                continue
        m = _NAMED.match(v)
        if m is not None:
            out.append((" ".join(m.group(1).split()), m.group(2)))
            continue
        out.extend(getaddresses([v]))
        if len(out) >= MAX_VALUES:
            break
    return out[:MAX_VALUES]


def machine_generated(facts: MessageFacts) -> str:
    """Why the message is automatic (RFC 3834 §2 and §3.1.8, RFC 2369 lists), or ""."""
    if not facts.sender:
        return "empty return-path"
    local = facts.sender.rpartition("@")[0].lower()
    if (
        local in ("mailer-daemon", "postmaster", "listserv", "majordomo")
        or local.startswith("owner-")
        or local.endswith("-request")
    ):
        return f"sender {facts.sender} is a robot address"
    for value in facts.fields("Auto-Submitted"):
        if value.strip().split(";")[0].strip().lower() != "no":
            return f"Auto-Submitted: {value.strip()[:40]}"
    for value in facts.fields("Precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return f"Precedence: {value.strip()}"
    for n in facts.field_names():
        if n.startswith("list-"):
            return f"{_title(n)} present (a mailing list)"
    return ""


def _title(name: str) -> str:
    """A lower-case field name as it is usually written (``list-id`` -> ``List-Id``)."""
    return "-".join(part.capitalize() for part in name.split("-"))


def parse_headers(data: bytes) -> tuple[tuple[str, str], ...]:
    """(lower-case name, unfolded value) for each field of the header section, up to the first
    empty line or ``MAX_HEADER_BYTES`` (cgtwist.message.headers reads the fields). Values
    are UTF-8 (RFC 6532), folding undone: each line's blanks trimmed, lines joined by a space."""
    return tuple((name, unfolded(value)) for name, value in header_fields(header_block(data)))


def field_index(data: bytes) -> dict[str, list[str]]:
    """``parse_headers`` as a dictionary: the unfolded values of each field name, in order
    (names in the order of their first field). A header section made only of fields and
    their continuation lines (nearly every one) is split by two regular expressions in C,
    which read it exactly as cgtwist.message.headers does (tests/rules/test_facts.py checks
    that on any octets); any other goes through that parser."""
    block = header_block(data)
    text = block.decode("latin-1")
    if _PLAIN.fullmatch(text) is None:
        index: dict[str, list[str]] = {}
        for name, value in header_fields(block):
            index.setdefault(name, []).append(unfolded(value))
        return index
    index = {}
    for name, first, more in _FIELD.findall(text):
        if more:  # folded (RFC 5322 §2.2.3): each line's blanks trimmed, joined by a space
            lines = more[:-1].split("\n")
            value = " ".join([first.strip(), *(line.strip() for line in lines)]).strip()
        else:
            value = first.strip()
        if not value.isascii():
            value = value.encode("latin-1").decode("utf-8", "replace")  # RFC 6532
        index.setdefault(name.lower(), []).append(value)
    return index


# A field: its name (RFC 5322 §3.6.8, blanks before the colon allowed as §4.5.3), the rest of
# its line, its continuation lines; _PLAIN: a header section of nothing else.
_FIELD = re.compile(r"([!-9;-~]+)[ \t]*:([^\n]*)\n((?:[ \t][^\n]*\n)*)")
_PLAIN = re.compile(r"(?:[!-9;-~]+[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*)*")


def spf_result(values: Iterable[str], authserv_id: str) -> str:
    """The SPF result our own ``Authentication-Results`` (RFC 8601) recorded, or "none":
    ``values`` are the message's fields of that name, in order.

    Only the field naming ``authserv_id`` counts: the SMTP receiver removes forged ones
    (RFC 8601 §5) before adding its own, so a sender cannot claim a pass.
    """
    want = authserv_id.lower().rstrip(".")
    for value in values:
        server = value.split(";", 1)[0].strip().split()
        if not server or server[0].strip('"').lower().rstrip(".") != want:
            continue
        m = _SPF_RE.search(value)
        return m.group(1).lower() if m else "none"
    return "none"


SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})


def message_facts(
    sender: str,
    recipients: Iterable[str],
    submit: Mapping[str, str],
    data: bytes,
    *,
    authserv_id: str,
    now: datetime,
    routes: Iterable[str] = (),
    client_ip: bool = False,
    mailboxes: Iterable[str] = (),
    lists: Optional[Mapping[str, Iterable[str]]] = None,
    size: Optional[int] = None,
) -> MessageFacts:
    """The facts of one message. ``submit`` is the envelope's submit record (peer,
    protocol, account, tls, and what the receiver's checks found: ``spf``, ``rbl``,
    cgtwist.checks.verdict.Verdict.facts, which no sender can forge; a message without an SPF
    result there, received before it was recorded, falls back to our own
    ``Authentication-Results``); ``client_ip`` whether the peer is one of the Client IPs.
    Nothing of ``data`` is read here: its fields are parsed when a condition first asks."""
    protocol = (submit.get("protocol") or "").upper()
    authenticated = bool(submit.get("account")) or protocol.endswith("A")
    local = protocol in ("PIPE", "DSN", "RULE", "LOCAL") or bool(submit.get("trusted"))
    source = {"local" if local else "remote"}
    if authenticated:
        source.add("authenticated")
    if client_ip:
        source.add("client")
    if authenticated or client_ip or local:
        source.add("trusted")
    security = {"tls" if submit.get("tls") else "cleartext"}
    if authenticated:
        security.add("authenticated")
    if protocol in ("PIPE", "DSN", "RULE", "LOCAL"):
        tag = protocol.lower()
    else:
        tag = "smtp"
    spf = (submit.get("spf") or "").lower()
    return MessageFacts(
        sender=sender,
        recipients=tuple(recipients),
        head=data,
        size=len(data) if size is None else size,
        routes=tuple(routes),
        source=frozenset(source),
        client_ip=submit.get("peer", "") or "",
        security=frozenset(security),
        submit=tag,
        recorded_spf=spf if spf in SPF_RESULTS else "",
        authserv_id=authserv_id,
        rbl=tuple(z for z in (submit.get("rbl") or "").split(",") if z),
        mailboxes=frozenset(map(str.casefold, mailboxes)) if mailboxes else _NO_NAMES,
        lists={k: frozenset(a.lower() for a in v) for k, v in lists.items()} if lists else {},
        now=now,
    )
