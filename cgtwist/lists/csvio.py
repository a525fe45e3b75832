"""Subscribers as CSV: ``address,mode,state,real_name,bounces`` with a header line.

Owns the columns and reading them back: an import takes the same file an export writes (and a
bare list of addresses, one a line); every row is checked and a bad one is reported by line
number rather than half-imported.
"""

from __future__ import annotations

import csv
import io

from cgtwist.lists.model import STATES, Subscriber, check_mode, check_subscriber_address

COLUMNS = ("address", "mode", "state", "real_name", "bounces")


def export(subscribers: list[Subscriber]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for s in subscribers:
        w.writerow((s.address, s.mode, s.state, s.real_name, s.bounces))
    return out.getvalue()


def parse(text: str) -> list[Subscriber]:
    """Subscribers from CSV ``text``; raises ValueError("line N: ...") on the first bad row.
    A byte order mark (spreadsheets save "CSV UTF-8" with one) is not part of the first line."""
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if header and header[0] == "address":
        start, cols = 1, header
    else:
        start, cols = 0, list(COLUMNS)
    out: list[Subscriber] = []
    seen: set[str] = set()
    for n, row in enumerate(rows[start:], start + 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        values = dict(zip(cols, (c.strip() for c in row), strict=False))
        try:
            address = check_subscriber_address(values.get("address", ""))
            mode = check_mode(values.get("mode") or "feed")
            state = (values.get("state") or "active").lower()
            if state not in STATES:
                raise ValueError(f"state must be one of {', '.join(STATES)}")
            bounces = int(values.get("bounces") or 0)
            if bounces < 0:
                raise ValueError("bounces must not be negative")
        except ValueError as e:
            raise ValueError(f"line {n}: {e}") from None
        if address in seen:
            continue
        seen.add(address)
        out.append(Subscriber(address, mode, state, bounces, 0.0, 0.0, values.get("real_name", "")))
    return out
