"""The Router table: parse and render its records (COMMUNIGATE.md a.2).

Pure: no I/O, no twisted. ``parse_table`` turns the ``router.table`` setting's text into a
``Table`` or raises ``RouterParseError`` naming the line; cgtwist.router resolves addresses
against it and re-exports these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from cgtwist.router_address import (
    _CONTROL_RE,
    PIPE_DOMAIN,
    AddressError,
    _lower,
    _scan,
    pipe_command,
    split_address,
)

_RELAY_PREFIXES = {"relay": "Relay", "relayall": "RelayAll", "norelay": "NoRelay"}
_KIND_PREFIXES = {"mail": "Mail", "access": "Access", "signal": "Signal"}
_PREFIX_RE = re.compile(r"([A-Za-z]+)\s*:\s*")


class RouterParseError(ValueError):
    """A bad Router table; ``line`` is the 1-based line number, ``reason`` the problem."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


# --- the table (COMMUNIGATE.md a.2) -------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One table line: ``[relay:][type:]<left> = right [; comment]``; ``left`` is lower-cased."""

    left: str
    right: str
    relay: str = ""  # "", "Relay", "RelayAll" or "NoRelay"
    kind: str = ""  # "", "Mail", "Access" or "Signal"
    comment: str = ""
    line: int = field(default=0, compare=False)

    @property
    def relays(self) -> bool:
        """Relay:/RelayAll: relay the message regardless of its source (dangerous)."""
        return self.relay in ("Relay", "RelayAll")

    @property
    def norelay(self) -> bool:
        return self.relay == "NoRelay"

    @property
    def target(self) -> str:
        """What the right side is: "error", "null", "domain" (``@domain``) or "address"."""
        low = _lower(self.right)
        if low == "error" or low.startswith("error:"):
            return "error"
        if low == "null":
            return "null"
        if self.right.startswith("@") and ":" not in self.right:
            return "domain"
        return "address"

    def applies_to(self, kind: str) -> bool:
        return not self.kind or self.kind.lower() == kind

    def match(self, address: str, main_domain: str) -> Optional[str]:
        """The right side with ``*`` substituted if ``address`` matches the left, else None.

        Case-insensitive; a left side without ``@`` means a name in the main domain [D].
        """
        pattern = self.left if "@" in self.left else f"{self.left}@{main_domain}"
        low = _lower(address)
        if "*" not in pattern:
            return self.right if low == pattern else None
        pre, post = pattern.split("*")
        if len(low) < len(pre) + len(post) or not (low.startswith(pre) and low.endswith(post)):
            return None
        return self.right.replace("*", address[len(pre) : len(address) - len(post)], 1)

    def render(self) -> str:
        prefix = "".join(p + ":" for p in (self.relay, self.kind) if p)
        text = f"{prefix}<{self.left}> = {self.right}"
        return f"{text} ; {self.comment}" if self.comment else text


@dataclass(frozen=True)
class Table:
    """The parsed Router table: records tried top to bottom, the first match wins."""

    records: tuple[Record, ...] = ()

    def render(self) -> str:
        return "".join(r.render() + "\n" for r in self.records)

    def relay_records(self) -> list[Record]:
        return [r for r in self.records if r.relays]


def _split_comment(text: str, line: int) -> tuple[str, str]:
    try:
        for i, c in _scan(text):
            if c == ";":
                return text[:i], text[i + 1 :]
    except AddressError:
        raise RouterParseError(line, "unbalanced quotes on the right side") from None
    return text, ""


def parse_record(text: str, line: int = 1) -> Record:
    """Parse one non-empty, non-comment line; raises RouterParseError naming ``line``."""
    rest = text.strip()
    if _CONTROL_RE.search(rest):
        raise RouterParseError(line, "control character in record")
    relay = kind = ""
    while not rest.startswith("<"):
        m = _PREFIX_RE.match(rest)
        if m is None:
            raise RouterParseError(
                line, "expected [prefix:]<left-address> = right, e.g. <*@old.dom> = *@new.dom"
            )
        word = m.group(1).lower()
        if word in _RELAY_PREFIXES and not relay and not kind:
            relay = _RELAY_PREFIXES[word]
        elif word in _KIND_PREFIXES and not kind:
            kind = _KIND_PREFIXES[word]
        elif word in _RELAY_PREFIXES and kind:
            raise RouterParseError(
                line, f"the relay prefix {m.group(1)}: must come before the type prefix"
            )
        elif word in _RELAY_PREFIXES or word in _KIND_PREFIXES:
            raise RouterParseError(
                line, f"more than one {'relay' if word in _RELAY_PREFIXES else 'type'} prefix"
            )
        else:
            raise RouterParseError(
                line,
                f"unknown prefix {m.group(1)}: (want Relay:, RelayAll:, NoRelay:, Mail:, Access:, Signal:)",
            )
        rest = rest[m.end() :]
    close = rest.find(">")
    if close < 0:
        raise RouterParseError(line, "missing '>' after the left address")
    left = _lower(rest[1:close].strip())
    if not left:
        raise RouterParseError(line, "empty left address")
    if any(c.isspace() or c == "<" for c in left):
        raise RouterParseError(line, "white space or '<' in the left address")
    if left.count("*") > 1:
        raise RouterParseError(line, "more than one '*' on the left side")
    rest = rest[close + 1 :].lstrip()
    if not rest.startswith("="):
        raise RouterParseError(line, "expected '=' after <left-address>")
    right, comment = _split_comment(rest[1:], line)
    right, comment = right.strip(), comment.strip()
    record = Record(left=left, right=right, relay=relay, kind=kind, comment=comment, line=line)
    _check_right(record, line)
    return record


def _check_right(record: Record, line: int) -> None:
    right = record.right
    if not right:
        raise RouterParseError(line, "empty right side")
    stars = right.count("*")
    if stars > 1:
        raise RouterParseError(line, "more than one '*' on the right side")
    if stars and "*" not in record.left:
        raise RouterParseError(line, "'*' on the right side but none on the left")
    if record.target in ("error", "null"):
        return
    sample = right.replace("*", "x")
    if record.target == "domain":
        sample = "x" + sample
    try:
        local, domain = split_address(sample)
        if domain == PIPE_DOMAIN:
            pipe_command(sample)
    except ValueError as e:
        raise RouterParseError(line, f"bad right address {right!r}: {e}") from None


def parse_table(text: str) -> Table:
    """Parse the whole table; blank lines and lines starting with ``;`` or ``#`` are ignored.

    Raises RouterParseError for the first bad line (line numbers count ``\\n``-separated lines).
    """
    records = []
    for no, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line and line[0] not in ";#":
            records.append(parse_record(line, no))
    return Table(tuple(records))
