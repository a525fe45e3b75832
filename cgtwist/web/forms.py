"""Form fields as text: decoding, trimming and the small parsers the pages share.

Owns the translation of submitted form values into Python values with a readable error; it
must not render or touch the store.
"""

from __future__ import annotations

from typing import Mapping, Optional

from cgtwist.addresslist import AddressList, AddressListError


class FormError(ValueError):
    """A field's value is not acceptable; the message names the field."""


def field(form: Mapping[str, str], name: str, default: str = "", limit: int = 1000) -> str:
    value = form.get(name, default)
    if len(value) > limit:
        raise FormError(f"{name} is longer than {limit} characters")
    return value


def flag(form: Mapping[str, str], name: str) -> bool:
    """A checkbox: present (any value) is on."""
    return name in form


def line_errors(text: str) -> list[tuple[int, str, str]]:
    """Every line of an address list that does not parse: (line number, its text, why), so
    the page can show each message beside its line rather than only the first."""
    errors = []
    for no, line in enumerate(text.splitlines(), 1):
        try:
            AddressList.parse([line])
        except AddressListError as e:
            why = str(e).split(": ", 1)[1].rsplit(": ", 1)[0] if ": " in str(e) else str(e)
            errors.append((no, line, why))
    return errors


def services(form: Mapping[str, str], names: tuple[str, ...]) -> Optional[list[str]]:
    """Checked service boxes (``svc_mail`` ...); None when the form says "inherit"."""
    if flag(form, "svc_inherit"):
        return None
    return [s for s in names if flag(form, f"svc_{s}")]
