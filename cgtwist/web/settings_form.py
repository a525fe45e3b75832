"""Server settings as form fields: which input shows a setting of the typed catalogue
(``cgtwist.settings.SPECS``), how the submitted text becomes a value, and the check the
server itself applies (``settings.validate``, the one ``cgtwist-admin settings set`` uses).

Owns the translation between a ``Spec`` and a form field, pure: no store, no rendering. A
field's error message is the catalogue's own ("smtp.max_recipients must be a non-negative
integer"), so the web and the CLI say the same thing.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Mapping, Optional

from cgtwist import settings as dynamic
from cgtwist.settings_fields import Spec

MODES = ("off", "nonclients", "all")
SECRET_SHOWN = "(set; leave empty to keep it)"


def widget(spec: Spec) -> str:
    """The input a setting is edited in: ``bool`` (checkbox), ``int``, ``float``, ``mode``
    (off/nonclients/all), ``text``, ``lines`` (a list, one item a line), ``textlist`` (a
    list kept as text, one entry a line), ``numbers`` (comma separated), ``json`` (anything else), ``secret`` (never shown, empty keeps it)."""
    if spec.secret:
        return "secret"
    kind = spec.kind
    if kind is bool:
        return "bool"
    if kind is int:
        return "int"
    if kind is float:
        return "float"
    if kind is str:
        return "mode" if spec.name.endswith(".mode") else "text"
    args = typing.get_args(kind)
    if typing.get_origin(kind) is list:
        return "numbers" if args and args[0] in (int, float) else "lines"
    if set(args) == {str, list[str]}:  # an address or pattern list, kept as its text
        return "textlist"
    return "json"


def shown(spec: Spec, value: object) -> str:
    """The value as the field's text."""
    kind = widget(spec)
    if kind == "secret":
        return ""
    if kind == "bool":
        return "1" if value else ""
    if kind in ("lines", "textlist"):
        return "\n".join(map(str, value)) if isinstance(value, list) else str(value or "")
    if kind == "numbers":
        return ", ".join(_number(v) for v in value) if isinstance(value, list) else ""
    if kind == "json":
        return json.dumps(value)
    return str(value)


def _number(v: object) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


class FieldError(ValueError):
    """The submitted text is not a value of the setting; ``str(e)`` is shown on the field."""


def parse(spec: Spec, form: Mapping[str, str], limit: int) -> object:
    """The value the form gives ``spec`` (form field named as the setting), checked as the
    server checks it; FieldError with the message otherwise."""
    key = spec.name
    kind = widget(spec)
    if kind == "bool":
        return key in form
    text = form.get(key, "")
    if len(text) > limit:
        raise FieldError(f"{key} is longer than {limit} characters (web.max_text_size)")
    try:
        value = _convert(kind, key, text.replace("\r\n", "\n"))
        return dynamic.validate(key, value)
    except ValueError as e:
        raise FieldError(str(e)) from None


def _convert(kind: str, key: str, text: str) -> object:
    stripped = text.strip()
    if kind == "int":
        if not stripped.lstrip("-").isdigit():
            raise ValueError(f"{key} must be a whole number")
        return int(stripped)
    if kind == "float":
        try:
            return float(stripped)
        except ValueError:
            raise ValueError(f"{key} must be a number") from None
    if kind == "mode":
        if stripped not in MODES:
            raise ValueError(f"{key} is one of {', '.join(MODES)}")
        return stripped
    if kind == "lines":
        return [line.strip() for line in text.split("\n") if line.strip()]
    if kind == "textlist":
        return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
    if kind == "numbers":
        items = [p.strip() for p in stripped.replace(";", ",").split(",") if p.strip()]
        try:
            return [int(p) if p.isdigit() else float(p) for p in items]
        except ValueError:
            raise ValueError(f"{key} is a list of numbers separated by commas") from None
    if kind in ("json", "secret"):
        return dynamic.parse_cli_value(stripped) if stripped else None
    return stripped


@dataclass(frozen=True)
class Field:
    """One setting on a page: its spec, the text shown, whether it is the default, and the
    error of the last submission."""

    spec: Spec
    text: str
    kind: str
    default: bool
    is_set: bool  # a secret has a value
    error: str = ""

    @property
    def key(self) -> str:
        return self.spec.name


def field_of(
    spec: Spec, value: object, default: bool, text: Optional[str] = None, error: str = ""
) -> Field:
    return Field(
        spec=spec,
        text=shown(spec, value) if text is None else text,
        kind=widget(spec),
        default=default,
        is_set=value not in (None, "", [], {}),
        error=error,
    )
