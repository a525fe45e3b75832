"""Validation of the receiving-protection, AUTH-penalty, send-as and Router settings before they
are stored.

Pure: no I/O, no twisted. Each function here is the ``check`` of one or more fields declared in
``cgtwist.settings``, so ``cgtwist-admin settings set`` (server, domain or account level)
refuses a value the running server could not use, with a readable reason; address lists,
sender lists and the Router table name the offending line. Also owns the vocabulary the checks share (modes, check names, SPF
results and actions) so cgtwist.core.protection and this module cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Optional

from cgtwist.addresslist import AddressList, AddressListError
from cgtwist.pictures import split_list
from cgtwist.router_table import RouterParseError, parse_table

MODES = ("off", "nonclients", "all")
CHECKS = ("blacklist", "rbl", "returnpath", "spf", "reverse_connect")
SPF_ACTIONS = ("reject", "tempfail", "tag", "accept")
# RFC 7208 §2.6: the seven results.
SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
# RFC 5321 §4.2.2/§3.1: codes that make sense for refusing a listed client at connect.
RBL_CODES = (421, 450, 451, 550, 554)
# What a listing does: refuse the connection, or accept and record it for the Server Rules'
# RBL Listed condition (cgtwist.rules).
RBL_ACTIONS = ("reject", "tag")

_SENDER_ITEM = re.compile(r"^(\*\.|\.|@)?[^\s@\x00-\x1f\x7f]+(@[^\s@\x00-\x1f\x7f]+)?$")
_ZONE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


def parse_rbl_zone(entry: str) -> tuple[str, Optional[AddressList]]:
    """``zen.example`` or ``zen.example=127.0.0.2-127.0.0.9,127.0.0.11`` -> (zone, codes).

    With codes, only those answers count as listings (Postfix ``reject_rbl_client
    zone=...``); others are ignored as "not listed". Raises ValueError for a bad code list.
    """
    zone, _, codes = entry.partition("=")
    zone = zone.strip().strip(".").lower()
    return zone, (AddressList.parse(codes.replace(";", ",")) if codes.strip() else None)


def _lines(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return value.splitlines()
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return list(value)
    raise ValueError(f"{key} must be text (one entry per line) or a list of strings")


def address_list(key: str, value: object) -> None:
    lines = _lines(value, key)
    try:
        AddressList.parse(lines)
    except AddressListError as e:
        raise ValueError(f"{key}: {e}") from None


def sender_list(key: str, value: object) -> None:
    for no, raw in enumerate(_lines(value, key), 1):
        line = raw
        for mark in ("#", ";"):
            line = line.split(mark, 1)[0]
        for item in line.split(","):
            item = item.strip()
            if item and not _SENDER_ITEM.match(item):
                raise ValueError(
                    f"{key}: line {no}: not an address, domain, @domain or *.domain: {item!r}"
                )


# smtp.send_as: an address, or a pattern with * (a picture: cgtwist.pictures).
_SEND_AS_ITEM = re.compile(
    r"^[^\s@<>\"(),;:\\\[\]\x00-\x1f\x7f]+@[^\s@<>\"(),;:\\\[\]\x00-\x1f\x7f]+$"
)
MAX_SEND_AS = 1000


def send_as(key: str, value: object) -> None:
    items = split_list(_lines(value, key))
    if len(items) > MAX_SEND_AS:
        raise ValueError(f"{key}: at most {MAX_SEND_AS} addresses or patterns")
    for item in items:
        if len(item) > 320 or not _SEND_AS_ITEM.match(item):
            raise ValueError(f"{key}: not an address or pattern such as *@example.com: {item!r}")


def mode_map(key: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be an object {{listener or port: {{check: mode}}}}")
    for listener, modes in value.items():
        if not isinstance(modes, Mapping):
            raise ValueError(f"{key}[{listener}] must be an object {{check: mode}}")
        for check, mode in modes.items():
            if check not in CHECKS:
                raise ValueError(
                    f"{key}[{listener}]: unknown check {check!r} (want {', '.join(CHECKS)})"
                )
            if mode not in MODES:
                raise ValueError(f"{key}[{listener}][{check}] must be one of {', '.join(MODES)}")


def spf_actions(key: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be an object {{result: action}}")
    for result, action in value.items():
        if result not in SPF_RESULTS:
            raise ValueError(
                f"{key}: unknown SPF result {result!r} (want {', '.join(SPF_RESULTS)})"
            )
        if action not in SPF_ACTIONS:
            raise ValueError(f"{key}: action for {result} must be one of {', '.join(SPF_ACTIONS)}")


def rbl_zones(key: str, value: object) -> None:
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list of zone names (zone or zone=codes)")
    for no, entry in enumerate(value, 1):
        if not isinstance(entry, str):
            raise ValueError(f"{key}: entry {no} must be a string, not {entry!r}")
        try:
            zone, _codes = parse_rbl_zone(entry)
        except AddressListError as e:
            raise ValueError(f"{key}: entry {no} {entry!r}: return codes {e}") from None
        if not _ZONE.match(zone) or len(zone) > 200:
            raise ValueError(f"{key}: entry {no}: not a DNS zone name: {entry!r}")


def router_table(key: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be the table text")
    try:
        parse_table(value)
    except RouterParseError as e:
        raise ValueError(f"{key}: line {e.line}: {e.reason}") from None


def delays(key: str, value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key} must be a non-empty list of seconds")
    for d in value:
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 300:
            raise ValueError(
                f"{key}: each delay must be a number of seconds from 0 to 300, not {d!r}"
            )


def positive_number(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a positive number of seconds")


def number(low: float, high: float) -> Callable[[str, object], None]:
    """A check for a number of seconds (or a factor) from ``low`` to ``high``."""

    def check(key: str, value: object) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high
        ):
            raise ValueError(f"{key} must be a number from {low:g} to {high:g}, not {value!r}")

    return check


def mode(key: str, value: object) -> None:
    if value not in MODES:
        raise ValueError(f"{key} must be one of {', '.join(MODES)}, not {value!r}")


def rbl_action(key: str, value: object) -> None:
    if value not in RBL_ACTIONS:
        raise ValueError(f"{key} must be one of {', '.join(RBL_ACTIONS)}, not {value!r}")


def rbl_code(key: str, value: object) -> None:
    if value not in RBL_CODES or isinstance(value, bool):
        raise ValueError(f"{key} must be one of {', '.join(map(str, RBL_CODES))}")
