"""How a dynamic setting is declared and checked: one dataclass field per setting.

Pure: no I/O, no twisted. ``cgtwist.settings`` declares every section as a frozen dataclass
whose fields are made with ``setting(default, doc, ...)``; this module walks those classes into
one catalogue of ``Spec`` (the dotted name an administrator types, the path of attributes the
code reads, the type, default, description and extra check) and checks a value against its
spec. The catalogue is the one source for validation, ``settings show`` and the store's names.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, TypeGuard, TypeVar

T = TypeVar("T")

# A field's own rule: called with (name, value), raises ValueError with the reason; a rule
# that returns something other than None gives the value to keep instead (``octets``: "10M").
Check = Callable[[str, object], object]


def setting(
    default: T,
    doc: str,
    *,
    check: Optional[Check] = None,
    name: str = "",
    node: bool = False,
    secret: bool = False,
) -> T:
    """One setting: its default, the one-line description ``settings show KEY`` prints, an
    optional ``check`` run before the type's own rule, the dotted ``name`` when it is not the
    attribute's (the top-level ``listeners``), whether it is kept per ``node``
    (docs/CLUSTER.md) and whether its value is ``secret`` (never logged)."""
    meta = {"doc": doc, "check": check, "name": name, "node": node, "secret": secret}
    if isinstance(default, (list, dict)):
        # A fresh copy per instance: a caller that mutates what it read cannot change the default.
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Spec:
    """One setting as the catalogue knows it."""

    name: str  # "smtp.max_recipients": what the store, the CLI and the logs use
    path: tuple[str, ...]  # ("smtp", "max_recipients"): the attributes the code reads
    kind: Any  # the field's type: bool, int, float, str, list[...], dict[...], Optional[...]
    default: Any
    doc: str
    check: Optional[Check]
    node: bool
    secret: bool


def is_section(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


@functools.cache
def _layout(cls: type) -> tuple[tuple[str, Optional[type], dataclasses.Field[object]], ...]:
    """(attribute, section class or None, dataclass field) for each field of ``cls`` that is
    a section or a setting, computed once per class."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Optional[type], dataclasses.Field[object]]] = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if is_section(kind):
            out.append((f.name, kind, f))
        elif "doc" in f.metadata:
            out.append((f.name, None, f))
    return tuple(out)


def fields_of(
    cls: type, accepted: Mapping[tuple[str, ...], Any], path: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The constructor arguments of the settings class ``cls`` (at ``path`` below the root):
    each setting's value from ``accepted`` (by attribute path, checked already), else a fresh
    copy of its default; each section built the same way."""
    out: dict[str, Any] = {}
    for name, section, f in _layout(cls):
        here = path + (name,)
        if section is not None:
            out[name] = section(**fields_of(section, accepted, here))
        elif here in accepted:
            out[name] = accepted[here]
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = f.default_factory()
        else:
            out[name] = copy.deepcopy(f.default)
    return out


def walk(cls: type, prefix: str = "", path: tuple[str, ...] = ()) -> Iterator[Spec]:
    """Every setting under the dataclass ``cls``: sections nest, their names join with dots."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if is_section(kind):
            yield from walk(kind, f"{prefix}{f.name}.", path + (f.name,))
            continue
        if "doc" not in f.metadata:  # not a setting (e.g. the overrides kept beside them)
            continue
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = f.default
        yield Spec(
            name=f.metadata["name"] or prefix + f.name,
            path=path + (f.name,),
            kind=kind,
            default=default,
            doc=f.metadata["doc"],
            check=f.metadata["check"],
            node=f.metadata["node"],
            secret=f.metadata["secret"],
        )


_UNIONS = (typing.Union, types.UnionType)


def _base(kind: Any) -> Any:
    """The outer type a JSON value must have: list for list[int], dict for dict[...], and the
    non-None member of Optional[X] (None itself is then allowed)."""
    origin = typing.get_origin(kind)
    if origin in _UNIONS:
        members = [a for a in typing.get_args(kind) if a is not type(None)]
        return _base(members[0]) if len(members) == 1 else Any
    return origin or kind


def check_value(spec: Spec, value: object) -> Any:
    """Check ``value`` for ``spec``: the field's own check, then its type's rule (the messages
    ``cgtwist-admin settings set`` has always printed). Returns the value or raises ValueError."""
    key = spec.name
    if spec.check is not None:
        normal = spec.check(key, value)
        if normal is not None:
            value = normal
    if value is None and typing.get_origin(spec.kind) in _UNIONS:
        return value
    base = _base(spec.kind)
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer")
    elif base is list:
        if not isinstance(value, list):
            raise ValueError(f"{key} must be a list")
    elif base is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
    return value


def is_count(value: object) -> TypeGuard[int]:
    """A value the generic integer rule accepts (range checks act only on these)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def at_most(high: int, why: str) -> Check:
    """A check refusing a count above ``high`` with ``why`` as the message."""

    def check(key: str, value: object) -> None:
        if is_count(value) and value > high:
            raise ValueError(why)

    return check


def seconds_list(key: str, value: object) -> None:
    """A check refusing a list with an entry that is not a number of seconds (>= 0)."""
    if isinstance(value, list):
        for entry in value:
            if isinstance(entry, bool) or not isinstance(entry, (int, float)) or entry < 0:
                raise ValueError(f"{key}: each entry must be a number of seconds, not {entry!r}")


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def octets(key: str, value: object) -> object:
    """A check for a size in octets that also takes a text with a K, M, G or T suffix (powers
    of 1024, as the Rules' ``Message Size``): ``"500M"`` is kept as 524288000. None (keep the
    value as it is) for anything else, which the type's own rule then judges."""
    if not isinstance(value, str):
        return None
    text = value.strip().upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in ("K", "M", "G", "T") else ""
    number = text[: len(text) - len(unit)]
    if not number.isdigit() or len(number) > 15:
        raise ValueError(f"{key}: a size in octets, optionally with K, M, G or T, not {value!r}")
    return int(number) * _UNITS[unit]


def at_least(low: int, why: str) -> Check:
    """A check refusing a count below ``low`` with ``why`` as the message."""

    def check(key: str, value: object) -> None:
        if is_count(value) and value < low:
            raise ValueError(why)

    return check
