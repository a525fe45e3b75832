"""The Verdict: one per transaction, every check's result and timing, and the final decision.

Pure data plus rendering: the log line an administrator greps, the ``Authentication-Results``
header (RFC 8601) and ``Received-SPF`` (RFC 7208 §9.1). The decision itself is made by
cgtwist.core.protection; the verdict only records it. Rendering never copies peer bytes
unsanitised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from cgtwist.checks.result import LISTED, SKIPPED, CheckResult, clean
from cgtwist.checks.spf import authentication_results_part, received_spf

_AUTHSERV = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")

ACCEPT = "accept"
REJECT = "reject"
TEMPFAIL = "tempfail"


@dataclass
class Verdict:
    """Everything the checks found out about one transaction (or the connection, before MAIL).

    ``tagged`` names checks whose results go into the message's headers.
    """

    session_id: str
    peer: str
    sender: Optional[str] = None
    results: list[CheckResult] = field(default_factory=list)
    tagged: set[str] = field(default_factory=set)
    action: str = ACCEPT
    reply: str = ""
    decided_by: str = ""

    def add(self, result: CheckResult, tag: bool = False) -> CheckResult:
        self.results.append(result)
        if tag:
            self.tagged.add(result.check)
        return result

    def get(self, check: str) -> Optional[CheckResult]:
        """The latest result of ``check`` (None when it did not run)."""
        for r in reversed(self.results):
            if r.check == check:
                return r
        return None

    def refuse(self, check: str, reply: str, temporary: bool) -> None:
        """Record that ``check`` ended the transaction with ``reply``."""
        self.action = TEMPFAIL if temporary else REJECT
        self.reply = reply
        self.decided_by = check

    def log_line(self) -> str:
        """``verdict session=... peer=... sender=... action=... checks=spf=pass(12ms) ...``"""
        checks = " ".join(r.log_text() for r in self.results) or "-"
        sender = "-" if self.sender is None else (clean(self.sender, 254) or "<>")
        line = (
            f"verdict session={clean(self.session_id, 64)} peer={clean(self.peer, 64)} "
            f"sender={sender} action={self.action} checks={checks}"
        )
        if self.decided_by:
            line += f" by={self.decided_by} reply={clean(self.reply, 200)!r}"
        reasons = "; ".join(
            f"{r.check}: {clean(r.reason, 120)}"
            for r in self.results
            if r.reason and r.outcome not in ("pass", "skipped")
        )
        if reasons:
            line += f" reasons={reasons!r}"
        return line

    def facts(self) -> dict[str, str]:
        """What the Rules read of this verdict, for the message's submit record: ``spf`` (the
        SPF result, when SPF ran) and ``rbl`` (the zones that listed the client, when it was
        listed and accepted: protection.rbl.action tag)."""
        out: dict[str, str] = {}
        spf = self.get("spf")
        if spf is not None and spf.outcome != SKIPPED:
            out["spf"] = spf.outcome
        rbl = self.get("rbl")
        if rbl is not None and rbl.outcome == LISTED:
            out["rbl"] = rbl.data.get("zones") or rbl.data.get("zone", "")
        return out

    def authentication_results(self, authserv_id: str) -> str:
        """The value of ``Authentication-Results:`` (RFC 8601 §2.2); ``none`` if nothing ran."""
        server = authserv_id if _AUTHSERV.match(authserv_id or "") else "localhost"
        parts = []
        spf = self.get("spf")
        if spf is not None and "spf" in self.tagged and spf.outcome != "skipped":
            parts.append(authentication_results_part(spf))
        if not parts:
            return f"{server}; none"
        return f"{server}; " + "; ".join(parts)

    def trace_headers(self, authserv_id: str) -> list[bytes]:
        """Header lines (no CRLF) to prepend: Received-SPF and Authentication-Results."""
        out: list[bytes] = []
        spf = self.get("spf")
        if spf is not None and "spf" in self.tagged and spf.outcome != "skipped":
            out.append(b"Received-SPF: " + received_spf(spf).encode("ascii", "replace"))
            out.append(
                b"Authentication-Results: "
                + self.authentication_results(authserv_id).encode("ascii", "replace")
            )
        return out


def claims_our_authserv_id(value: str | bytes, authserv_id: str) -> bool:
    """True when an incoming ``Authentication-Results`` value names our authserv-id.

    RFC 8601 §5: such headers arriving from outside are forgeries and must be removed (or the
    message refused) before ours is added. The SMTP DATA path calls this per header.
    """
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = re.sub(r"\([^()]*\)", " ", text.replace("\r", " ").replace("\n", " "))
    words = text.strip().split(";", 1)[0].split()
    return bool(words) and words[0].strip('"').lower().rstrip(".") == authserv_id.lower().rstrip(
        "."
    )
