"""The log viewer's reading: the end of the server's log file, split into entries and
filtered by level, message id, address and IP.

Owns one bounded read (at most ``max_bytes`` from the end of the file, at most ``max_lines``
entries kept), blocking file I/O meant for a thread (the web panel runs it through
``in_thread``, never on the reactor). The file is twistd's classic format, one entry per
line (``2026-12-07T12:48:22+0000 [system#level] text``), continuation lines starting with a
tab. It must not render.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

LEVELS = ("debug", "info", "warn", "error", "critical")
_RANK = {name: i for i, name in enumerate(LEVELS)}
_ENTRY = re.compile(r"^(\d{4}-\d\d-\d\dT\S+) \[([^\]]*)\] ?(.*)$", re.S)


@dataclass(frozen=True)
class Filters:
    level: str = "info"  # this level and above
    msg_id: str = ""
    address: str = ""
    ip: str = ""


@dataclass(frozen=True)
class Entry:
    time: str
    system: str
    level: str
    text: str


@dataclass
class LogView:
    entries: list[Entry] = field(default_factory=list)  # newest first
    read: int = 0  # octets read from the end
    size: int = 0  # of the whole file
    more: bool = False  # more matching entries than shown
    error: str = ""


def level_of(system: str) -> str:
    """``cgtwist.web#warn`` -> ``warn``; a legacy ``-`` system counts as info."""
    _, sep, level = system.rpartition("#")
    return level if sep and level in _RANK else "info"


def _ip_pattern(ip: str) -> Optional[re.Pattern[str]]:
    """The address as a whole token: 10.0.0.1 does not find 10.0.0.12."""
    if not ip:
        return None
    return re.compile(r"(?<![0-9A-Fa-f:.])" + re.escape(ip) + r"(?![0-9A-Fa-f:.]*[0-9A-Fa-f])")


def entries(text: str) -> list[Entry]:
    """The entries of ``text`` in file order; a leading piece of a cut entry is dropped."""
    out: list[Entry] = []
    current: Optional[list[str]] = None
    for line in text.split("\n"):
        if line.startswith("\t") and current is not None:
            current.append(line[1:])
            continue
        found = _ENTRY.match(line)
        if found is None:
            continue  # the cut start of the read, or a foreign line
        if current is not None:
            out.append(_entry(current))
        current = [found.group(1), found.group(2), found.group(3)]
    if current is not None:
        out.append(_entry(current))
    return out


def _entry(parts: list[str]) -> Entry:
    time, system, *text = parts
    return Entry(time, system, level_of(system), "\n".join(text))


def matches(entry: Entry, f: Filters, ip: Optional[re.Pattern[str]]) -> bool:
    if _RANK[entry.level] < _RANK.get(f.level, 0):
        return False
    if f.msg_id and f.msg_id not in entry.text:
        return False
    if f.address and f.address.lower() not in entry.text.lower():
        return False
    return ip is None or ip.search(entry.text) is not None


def tail(path: str, f: Filters, max_bytes: int, max_lines: int) -> LogView:
    """The newest ``max_lines`` entries matching ``f`` among the last ``max_bytes`` octets
    of ``path`` (blocking: run it in a thread)."""
    view = LogView()
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read(max_bytes)
    except OSError as e:
        view.error = f"cannot read {path}: {e.strerror or e}"
        return view
    view.size, view.read = size, len(data)
    ip = _ip_pattern(f.ip)
    found = [e for e in entries(data.decode("utf-8", "replace")) if matches(e, f, ip)]
    found.reverse()
    view.more = len(found) > max_lines
    view.entries = found[:max_lines]
    return view
