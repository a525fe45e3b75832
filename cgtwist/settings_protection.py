"""Validation of the receiving-protection, AUTH-penalty, send-as and Router settings before they
are stored.

Pure: no I/O, no twisted. ``cgtwist.settings.validate`` calls ``validate`` for every key, so
``cgtwist-admin settings set`` (server, domain or account level) refuses a value the running
server could not use, with a readable reason; address lists, sender lists and the Router table
name the offending line. Also owns the vocabulary the checks share (modes, check names, SPF
results and actions) so cgtwist.core.protection and this module cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from cgtwist.addresslist import AddressList, AddressListError

MODES = ("off", "nonclients", "all")
CHECKS = ("blacklist", "rbl", "returnpath", "spf", "reverse_connect")
SPF_ACTIONS = ("reject", "tempfail", "tag", "accept")
# RFC 7208 §2.6: the seven results.
SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
# RFC 5321 §4.2.2/§3.1: codes that make sense for refusing a listed client at connect.
RBL_CODES = (421, 450, 451, 550, 554)
ADDRESS_LIST_KEYS = (
    "clients.ips",
    "protection.whitehole.ips",
    "protection.blacklist.ips",
    "auth.trusted_ips",
)

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


def _address_list(key: str, value: Any) -> None:
    lines = _lines(value, key)
    try:
        AddressList.parse(lines)
    except AddressListError as e:
        raise ValueError(f"{key}: {e}") from None


def _sender_list(key: str, value: Any) -> None:
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


# smtp.send_as: an address, or a pattern with * (cgtwist.core.senders.wildcard_match).
_SEND_AS_ITEM = re.compile(
    r"^[^\s@<>\"(),;:\\\[\]\x00-\x1f\x7f]+@[^\s@<>\"(),;:\\\[\]\x00-\x1f\x7f]+$"
)
MAX_SEND_AS = 1000


def _send_as(key: str, value: Any) -> None:
    items = [
        item.strip() for line in _lines(value, key) for item in line.split(",") if item.strip()
    ]
    if len(items) > MAX_SEND_AS:
        raise ValueError(f"{key}: at most {MAX_SEND_AS} addresses or patterns")
    for item in items:
        if len(item) > 320 or not _SEND_AS_ITEM.match(item):
            raise ValueError(f"{key}: not an address or pattern such as *@example.com: {item!r}")


def _mode_map(key: str, value: Any) -> None:
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


def _spf_actions(key: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be an object {{result: action}}")
    for result, action in value.items():
        if result not in SPF_RESULTS:
            raise ValueError(
                f"{key}: unknown SPF result {result!r} (want {', '.join(SPF_RESULTS)})"
            )
        if action not in SPF_ACTIONS:
            raise ValueError(f"{key}: action for {result} must be one of {', '.join(SPF_ACTIONS)}")


def _rbl_zones(key: str, value: Any) -> None:
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


def _router_table(key: str, value: Any) -> None:
    from cgtwist import router  # pure, but large: only loaded when the table changes

    if not isinstance(value, str):
        raise ValueError(f"{key} must be the table text")
    try:
        router.parse_table(value)
    except router.RouterParseError as e:
        raise ValueError(f"{key}: line {e.line}: {e.reason}") from None


def _delays(key: str, value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key} must be a non-empty list of seconds")
    for d in value:
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 300:
            raise ValueError(
                f"{key}: each delay must be a number of seconds from 0 to 300, not {d!r}"
            )


def _positive_number(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a positive number of seconds")


def _number(key: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{key} must be a number from {low:g} to {high:g}, not {value!r}")


# Timeouts that may be fractions of a second (tests, fast networks); the generic integer check
# in cgtwist.settings.validate is skipped for them.
FRACTIONAL_KEYS = ("protection.spf.timeout", "protection.reverse_connect.timeout")


def validate(key: str, value: Any) -> Any:
    """Check a value for ``key``; returns it or raises ValueError. Keys not ours pass unchecked."""
    if key in ADDRESS_LIST_KEYS:
        _address_list(key, value)
    elif key == "protection.blacklist.senders":
        _sender_list(key, value)
    elif key.startswith("protection.") and key.endswith(".mode"):
        if value not in MODES:
            raise ValueError(f"{key} must be one of {', '.join(MODES)}, not {value!r}")
    elif key == "protection.listeners":
        _mode_map(key, value)
    elif key == "protection.spf.actions":
        _spf_actions(key, value)
    elif key == "protection.rbl.zones":
        _rbl_zones(key, value)
    elif key == "protection.rbl.code":
        if value not in RBL_CODES or isinstance(value, bool):
            raise ValueError(f"{key} must be one of {', '.join(map(str, RBL_CODES))}")
    elif key in FRACTIONAL_KEYS:
        _positive_number(key, value)
    elif key == "auth.fail_delays":
        _delays(key, value)
    elif key == "smtp.send_as":
        _send_as(key, value)
    elif key in ("auth.account_delay", "auth.account_max_delay"):
        _number(key, value, 0, 300)
    elif key == "auth.account_delay_growth":
        _number(key, value, 1, 10)
    elif key == "router.table":
        _router_table(key, value)
    return value
