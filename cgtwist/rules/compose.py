"""Messages the rule actions make: edited copies, redirected and forwarded resends, replies.

Owns the bytes: ``Add Header`` and ``Tag Subject`` edits of the header section (the body is
never touched), the hop marker (``Delivered-To:``, RFC 9228; cgtwist.message.loops writes
it) on every copy a rule sends on, ``Resent-*`` fields for Forward (RFC 5322 §3.6.6), and
automatic replies built as RFC 3834 asks (``Auto-Submitted: auto-replied``,
``In-Reply-To``/``References``, "Re:" subject). No I/O: the caller submits what is built here.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Iterable

from cgtwist.message import loops
from cgtwist.message.headers import decoded
from cgtwist.rules.facts import MessageFacts

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
MAX_SUBJECT = 200


def _eol(data: bytes) -> bytes:
    nl = data.find(b"\n")
    return b"\r\n" if nl > 0 and data[nl - 1 : nl] == b"\r" else b"\n"


def _header_end(data: bytes) -> int:
    """Offset of the empty line ending the header section (len(data) when there is none)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = data.find(sep)
        if i >= 0:
            return i + len(sep) // 2
    return len(data)


def header_line(text: str) -> bytes:
    """One header line from rule text, control characters removed (no injected fields)."""
    return _UNSAFE.sub("", text).encode("utf-8", "replace")


def prepend(data: bytes, lines: Iterable[str]) -> bytes:
    eol = _eol(data)
    head = b"".join(header_line(line) + eol for line in lines if line)
    return head + data


def tag_subject(data: bytes, tags: list[str]) -> bytes:
    """Put each tag before the Subject (once: a subject already tagged is left as it is);
    a message without Subject gets one."""
    if not tags:
        return data
    eol = _eol(data)
    end = _header_end(data)
    head, body = data[:end], data[end:]  # head ends with its last line's line break
    if not head.endswith(b"\n"):
        head += eol
    # RFC 5322 §4.5.3: blanks may stand before the colon (as cgtwist.message.headers reads).
    m = re.search(rb"(?im)^subject[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)\r?\n", head)
    old = re.sub(rb"\r?\n[ \t]", b" ", m.group(1)).strip() if m else b""
    text = decoded(old.decode("utf-8", "replace"))
    for tag in reversed(tags):
        t = _UNSAFE.sub("", tag).strip()
        if t and not text.startswith(t):
            text = f"{t} {text}".strip()
    line = _subject_line(text[:MAX_SUBJECT]).replace(b"\r\n", eol) + eol
    if m:  # in place: trace fields stay on top
        return head[: m.start()] + line + head[m.end() :] + body
    return head + line + body


def _subject_line(text: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = text
    return msg.as_bytes().split(b"\r\n\r\n", 1)[0]


def redirected(data: bytes, account: str) -> bytes:
    """A copy for Redirect to / Mirror to: the original with the hop marker."""
    return loops.marked(data, account)


def forwarded(data: bytes, account: str, to: list[str], now: datetime, hostname: str) -> bytes:
    """A copy for Forward to: Resent-* fields (RFC 5322 §3.6.6) and the hop marker."""
    return prepend(
        loops.marked(data, account),
        [
            f"Resent-From: {account}",
            f"Resent-To: {', '.join(to)}",
            f"Resent-Date: {format_datetime(now)}",
            f"Resent-Message-ID: {make_msgid(domain=hostname)}",
        ],
    )


def reply(
    facts: MessageFacts,
    account: str,
    text: str,
    to: list[str],
    now: datetime,
    hostname: str,
    real_name: str = "",
) -> bytes:
    """An automatic reply from ``account`` (RFC 3834 §3): the rule's text as the body; the
    account's ``real_name`` (its Real Name setting) is the From: field's display name."""
    msg = EmailMessage(policy=SMTP)
    name = " ".join(_UNSAFE.sub(" ", real_name).split())[:MAX_SUBJECT]
    msg["From"] = Address(display_name=name, addr_spec=account) if name else account
    msg["To"] = ", ".join(to)
    subject = " ".join(decoded(v) for v in facts.fields("Subject")[:1]) or "your message"
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    msg["Subject"] = _UNSAFE.sub("", subject)[:MAX_SUBJECT]
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=hostname)
    original = next((v.strip() for v in facts.fields("Message-ID")), "")
    if original and len(original) < 998 and not _UNSAFE.search(original):
        msg["In-Reply-To"] = original
        refs = " ".join(facts.fields("References"))[:900]
        msg["References"] = f"{refs} {original}".strip() if not _UNSAFE.search(refs) else original
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
    msg["Delivered-To"] = account  # the hop marker: a reply bounced back is not answered
    msg.set_content(text.replace("\r", ""))
    return msg.as_bytes()


def reply_targets(facts: MessageFacts, account: str, to_all: bool) -> list[str]:
    """Who an automatic reply goes to: the return-path (RFC 3834 §4); for Reply to All also
    the From, To and Cc addresses, never the account itself."""
    out = [facts.sender] if facts.sender else []
    if to_all:
        out += facts.addresses("From", "To", "Cc")
    seen: set[str] = set()
    result = []
    for a in out:
        k = a.lower()
        if k and k != account.lower() and k not in seen and "@" in k:
            seen.add(k)
            result.append(a)
    return result[:50]
