"""The typed outcome every receiving check returns, and safe text for logs and headers.

Pure data: a check's name, its outcome word, a reason for the log and how long it took. The
``clean`` helper strips whatever a peer could use to inject into a log line or header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

# Outcome words shared by the checks (each check documents the subset it uses).
PASS = "pass"  # checked, nothing against the peer
FAIL = "fail"  # checked, the peer failed (meaning depends on the check)
LISTED = "listed"  # RBL/blacklist: the peer is listed
TEMPERROR = "temperror"  # could not decide now (DNS failure, timeout): fail open or 4xx
SKIPPED = "skipped"  # not run (off, client, authenticated, white-holed)
ERROR = "error"  # a broken data source (e.g. RBL 127.255.255.x): treated as not listed

_UNSAFE = re.compile(r"[^\x21-\x7e ]")


def clean(text: object, limit: int = 200) -> str:
    """Printable ASCII only, CR/LF/controls/non-ASCII replaced by ``?``, at most ``limit`` chars."""
    s = _UNSAFE.sub("?", str(text))
    return s if len(s) <= limit else s[: limit - 3] + "..."


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``check`` name, ``outcome`` word, ``reason`` for the log, seconds taken.

    ``data`` holds check-specific extras (e.g. the SPF identity, the RBL zone and code).
    """

    check: str
    outcome: str
    reason: str = ""
    duration: float = 0.0
    data: Mapping[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        """``check=outcome(12ms)`` for the verdict line."""
        ms = int(round(self.duration * 1000))
        return f"{self.check}={self.outcome}({ms}ms)"
