"""Delivery status notifications: RFC 3464 bounces, delay warnings and success reports.

Owns building the ``multipart/report; report-type=delivery-status`` message and handing it to
the submission seam from ``<>``. It decides whether a notification is due (never to ``<>``,
RFC 5321 §6.1; NOTIFY honoured, RFC 3461 §4.1) but never retries or schedules anything: the
queue manager calls it. Every field taken from the original message or a remote server is
reduced to one line of printable ASCII before it goes into a header, so nothing can inject a
header into the DSN. Also owns the textual format of ``Recipient.detail`` that delivery agents
write (``remote_detail``) and that this module reads back (``parse_detail``).
"""

from __future__ import annotations

import email.utils
import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from cgtwist.interfaces import ISubmission
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder
from cgtwist.types import Envelope, Recipient

log = Logger(namespace="cgtwist.delivery.bounce")

# Messages larger than this are returned as headers only unless RET=FULL asked for them, and
# never in full above four times this size.
DEFAULT_MAX_FULL = 1048576

_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_REMOTE = re.compile(r"^remote (?P<host>[^\s\[\]]*)\[(?P<ip>[^\]]*)\]: (?P<reply>.*)$", re.S)
_REPLY = re.compile(
    r"^(?P<code>[245]\d\d)[ -](?:(?P<enh>[245]\.\d{1,3}\.\d{1,3}) )?(?P<text>.*)$", re.S
)
_PLAIN_MAILBOX = re.compile(r'^[^\s<>(),;:\\"\[\]@]+@[^\s<>(),;:\\"\[\]@]+$')
_STATUS_ONLY = re.compile(r"^(?P<enh>[245]\.\d{1,3}\.\d{1,3})(?: (?P<text>.*))?$", re.S)


# --- the Recipient.detail format shared with the delivery agents ------------------------------


_SPACES = re.compile(r" {2,}")


def one_line(text: str, limit: int = 900) -> str:
    """Printable ASCII on one line: CR, LF, controls and non-ASCII become spaces or '?'.

    Used on everything that reaches a header (RFC 5322 §2.2: no bare CR/LF in a field body).
    """
    if text.isascii() and text.isprintable():
        # Nothing to replace (the common case: every remote reply of a delivery), checked
        # in C: the loop below cost 14 us per recipient of a list's distribution.
        return _SPACES.sub(" ", text).strip()[:limit]
    out = []
    for ch in text:
        o = ord(ch)
        if ch in "\r\n\t":
            out.append(" ")
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        else:
            out.append("?")
    s = _SPACES.sub(" ", "".join(out)).strip()
    return s[:limit]


# Appended by the SMTP module to a delivered recipient's detail when NOTIFY=SUCCESS went on to
# a next hop that speaks DSN: that hop reports, we do not (RFC 3461 §6.2.2).
DSN_PASSED = " (DSN passed to next hop)"


def remote_detail(host: str, ip: str, reply: str) -> str:
    """Detail for a reply from a remote SMTP server: ``remote mx.example.com[192.0.2.1]: 550 5.1.1 ...``."""
    return f"remote {one_line(host, 255)}[{one_line(ip, 64)}]: {one_line(reply)}"


@dataclass(frozen=True)
class Diagnosis:
    """What a DSN says about one recipient, read back from ``Recipient.detail``."""

    status: str  # RFC 3463 x.y.z
    diagnostic: str  # "smtp; 550 5.1.1 text" or "x-cgtwist; text" (RFC 3464 §2.3.6)
    remote_mta: str  # host name of the remote MTA, "" if none
    text: str  # human text


def parse_detail(detail: str, action: str) -> Diagnosis:
    """Turn a detail string into DSN fields; the status class follows the action when unknown."""
    default = "5.0.0" if action == "failed" else "4.0.0" if action == "delayed" else "2.0.0"
    detail = one_line(detail or "")
    remote = ""
    m = _REMOTE.match(detail)
    body = detail
    if m:
        remote = m.group("host") or m.group("ip")
        body = m.group("reply")
    r = _REPLY.match(body)
    if r:
        enh = r.group("enh")
        code = r.group("code")
        if not enh:
            enh = f"{code[0]}.0.0"
        return Diagnosis(_status_for(enh, action, default), f"smtp; {body}", remote, body)
    s = _STATUS_ONLY.match(body)
    if s:
        return Diagnosis(
            _status_for(s.group("enh"), action, default), f"x-cgtwist; {body}", remote, body
        )
    return Diagnosis(
        default, f"x-cgtwist; {body}" if body else "", remote, body or "no further detail"
    )


def _status_for(enh: str, action: str, default: str) -> str:
    """Keep the remote code unless its class contradicts the action (a 4.x.x in a failure
    after the lifetime expired is reported as 4.x.x per RFC 3463 §3.1, so only 2.x.x conflicts)."""
    if action in ("failed", "delayed") and enh.startswith("2."):
        return default
    return enh


# --- DSN parameters (RFC 3461) ------------------------------------------------------------------


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: ``+XX`` hex escapes; malformed escapes are kept literally."""

    def rep(m: re.Match[str]) -> str:
        return chr(int(m.group(1), 16))

    return re.sub(r"\+([0-9A-Fa-f]{2})", rep, value)


def notify_wants(recipient: Recipient, action: str) -> bool:
    """Does this recipient's NOTIFY ask for a report of ``action``? (RFC 3461 §4.1)

    No NOTIFY: failures always, delay warnings too (at the MTA's discretion), success never.
    """
    words = {w.strip().upper() for w in (recipient.notify or "").split(",") if w.strip()}
    if "NEVER" in words:
        return False
    if not words:
        return action in ("failed", "delayed")
    if action == "failed":
        return "FAILURE" in words
    if action == "delayed":
        return "DELAY" in words
    return "SUCCESS" in words


def _original_recipient(orcpt: str) -> str:
    """``Original-Recipient`` value from ORCPT ``addr-type;xtext`` (RFC 3464 §2.3.1)."""
    if ";" not in orcpt:
        return ""
    kind, _, value = orcpt.partition(";")
    kind = one_line(kind, 32).strip()
    value = one_line(xtext_decode(value.strip()), 500)
    if not kind or not value or not re.match(r"^[A-Za-z0-9-]+$", kind):
        return ""
    return f"{kind.lower()};{value}"


# --- building the report ------------------------------------------------------------------------


def _header_split(data: bytes) -> bytes:
    """The original's header block (everything before the first empty line), CRLF-terminated."""
    m = re.search(rb"\r?\n\r?\n", data)
    head = data[: m.start()] if m else data
    head = re.sub(rb"\r\n|\r|\n", b"\r\n", head)
    return head + b"\r\n"


def _crlf(data: bytes) -> bytes:
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def _date(t: float) -> str:
    return email.utils.formatdate(t, localtime=False, usegmt=True)


def _arrival(envelope: Envelope) -> Optional[float]:
    for key in ("arrival", "time", "received"):
        raw = envelope.submit.get(key)
        if raw is None:
            continue
        try:
            return float(raw)
        except (TypeError, ValueError):
            try:
                parsed = email.utils.parsedate_to_datetime(str(raw))
                return parsed.timestamp()
            except (TypeError, ValueError):
                continue
    return None


_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Mail Relayed Without Delivery Notification",
    "expanded": "Mail Delivered to a List",
}

_INTRO = {
    "failed": "Your message could not be delivered to one or more recipients.\r\n"
    "It has been returned (or its headers have) in the attachment.",
    "delayed": "Your message has not been delivered yet to one or more recipients.\r\n"
    "The server keeps trying; you do not need to send it again.",
    "delivered": "Your message was delivered to the recipients listed below.",
    "relayed": "Your message was relayed to a system that does not return delivery reports.",
    "expanded": "Your message was delivered to a list and expanded to its members.",
}


def build_dsn(
    *,
    hostname: str,
    envelope: Envelope,
    data: bytes,
    recipients: list[Recipient],
    action: str,
    now: float,
    msg_id: str = "",
    max_full: int = DEFAULT_MAX_FULL,
    boundary_seed: bytes | None = None,
    retry_until: Optional[float] = None,
) -> bytes:
    """Return the complete RFC 3464 report as CRLF bytes (RFC 6522 multipart/report).

    ``action`` applies to every recipient given. ``data`` is the original message; it goes back
    in full for RET=FULL (up to four times ``max_full``), as headers only for RET=HDRS, and by
    size when RET was not given.
    """
    if action not in _ACTIONS:
        raise ValueError(f"unknown DSN action {action!r}")
    host = one_line(hostname, 255) or "localhost"
    sender = one_line(envelope.sender, 500)
    ret = one_line(str(envelope.params.get("RET", "") or ""), 8).upper()
    envid = one_line(xtext_decode(str(envelope.params.get("ENVID", "") or "")), 100)
    if ret == "FULL":
        full = len(data) <= 4 * max_full
    elif ret == "HDRS":
        full = False
    else:
        full = len(data) <= max_full
    if action in ("delayed", "delivered", "relayed", "expanded"):
        full = False  # RFC 3461 §4.3: a non-failure report returns headers at most
    seed = boundary_seed if boundary_seed is not None else os.urandom(12)
    boundary = f"{int(now)}/{seed.hex()}/{host}"
    returned = _crlf(data) if full else _header_split(data)
    while boundary.encode() in returned:  # RFC 2046 §5.1.1: must not occur in the parts
        boundary += "/" + os.urandom(4).hex()

    diags = [(r, parse_detail(r.detail, action)) for r in recipients]

    # Human-readable part (RFC 3464 §2.1: first part).
    human = [_INTRO[action], "", f"Reporting server: {host}"]
    if msg_id:
        human.append(f"Queue id: {one_line(msg_id, 100)}")
    human.append("")
    for r, dg in diags:
        human.append(f"<{one_line(r.address, 500)}>: {dg.text}")
    if action == "delayed" and retry_until:
        human += ["", f"The server will stop trying at {_date(retry_until)}."]
    human_text = "\r\n".join(human) + "\r\n"

    # Machine-readable part (RFC 3464 §2.2 per-message, §2.3 per-recipient fields).
    status_lines = [f"Reporting-MTA: dns; {host}"]
    if envid:
        status_lines.append(f"Original-Envelope-Id: {envid}")
    arrival = _arrival(envelope)
    if arrival is not None:
        status_lines.append(f"Arrival-Date: {_date(arrival)}")
    status_lines.append("")
    for r, dg in diags:
        orig = _original_recipient(r.orcpt)
        if orig:
            status_lines.append(f"Original-Recipient: {orig}")
        status_lines.append(f"Final-Recipient: rfc822; {one_line(r.address, 500)}")
        status_lines.append(f"Action: {action}")
        status_lines.append(f"Status: {dg.status}")
        if dg.remote_mta:
            status_lines.append(f"Remote-MTA: dns; {dg.remote_mta}")
        if dg.diagnostic:
            status_lines.append(f"Diagnostic-Code: {dg.diagnostic}")
        status_lines.append(f"Last-Attempt-Date: {_date(now)}")
        if action == "delayed" and retry_until:
            status_lines.append(f"Will-Retry-Until: {_date(retry_until)}")
        status_lines.append("")
    status_text = "\r\n".join(status_lines)

    # Only a plain mailbox goes into To:; anything odder stays in the envelope alone.
    to = f"<{sender}>" if _PLAIN_MAILBOX.match(sender) else "undisclosed-recipients:;"
    message_id = f"<{int(now)}.{os.urandom(8).hex()}@{host}>"
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: {to}",
        f"Subject: {_SUBJECTS[action]}",
        f"Date: {_date(now)}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit"
        if _has_8bit(returned)
        else "Content-Transfer-Encoding: 7bit",
    ]
    b = boundary.encode()
    parts = [
        "\r\n".join(head).encode()
        + b"\r\n\r\nThis is a MIME-encapsulated delivery status report.\r\n",
        b"--" + b + b"\r\nContent-Description: Notification\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + human_text.encode(),
        b"--" + b + b"\r\nContent-Description: Delivery report\r\n"
        b"Content-Type: message/delivery-status\r\n\r\n" + status_text.encode(),
    ]
    if full:
        parts.append(
            b"--" + b + b"\r\nContent-Description: Undelivered Message\r\n"
            b"Content-Type: message/rfc822\r\n"
            + (b"Content-Transfer-Encoding: 8bit\r\n" if _has_8bit(returned) else b"")
            + b"\r\n"
            + returned
        )
    else:
        parts.append(
            b"--" + b + b"\r\nContent-Description: Message Headers\r\n"
            b"Content-Type: text/rfc822-headers\r\n"
            + (b"Content-Transfer-Encoding: 8bit\r\n" if _has_8bit(returned) else b"")
            + b"\r\n"
            + returned
        )
    parts.append(b"--" + b + b"--\r\n")
    return b"".join(p if p.endswith(b"\r\n") else p + b"\r\n" for p in parts)


def _has_8bit(data: bytes) -> bool:
    return any(c > 0x7F for c in data)


class Bouncer:
    """Sends DSNs through the submission seam; the queue manager decides when.

    ``bounce`` for recipients that failed for good (or expired), ``delay_warning`` for
    recipients still being retried, ``delivered`` for NOTIFY=SUCCESS reports. Each fires with
    the DSN's message id, or None when no report was due.
    """

    def __init__(
        self,
        submission: ISubmission,
        hostname: str,
        clock: IReactorTime,
        settings: SettingsHolder | None = None,
    ) -> None:
        self.submission: Any = submission
        self.hostname = hostname
        self.clock = clock
        self.settings = settings or SettingsHolder()

    def bounce(
        self, msg_id: str, envelope: Envelope, data: bytes, failed_recipients: list[Recipient]
    ) -> defer.Deferred[Optional[str]]:
        """Report a permanent failure (Action: failed) to the envelope sender."""
        return self._report(msg_id, envelope, data, failed_recipients, "failed", None)

    def delay_warning(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        delayed_recipients: list[Recipient],
        retry_until: Optional[float] = None,
    ) -> defer.Deferred[Optional[str]]:
        """Report that delivery is still being retried (Action: delayed, RFC 3464 §2.3.3)."""
        return self._report(msg_id, envelope, data, delayed_recipients, "delayed", retry_until)

    def delivered(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        action: str = "delivered",
    ) -> defer.Deferred[Optional[str]]:
        """Report success to recipients that asked for NOTIFY=SUCCESS (RFC 3461 §6.2.2).

        Recipients handed by SMTP to a next hop that speaks DSN get no report from us (that hop
        sends it); those handed to one that does not are reported as ``relayed``; the rest (local
        delivery, PIPE) as ``delivered``.
        """
        if action != "delivered":
            return self._report(msg_id, envelope, data, recipients, action, None)
        todo = [r for r in recipients if not r.detail.endswith(DSN_PASSED)]
        relayed = [r for r in todo if (r.route or "").startswith("SMTP(")]
        local = [r for r in todo if not (r.route or "").startswith("SMTP(")]
        ds = []
        if local:
            ds.append(self._report(msg_id, envelope, data, local, "delivered", None))
        if relayed:
            ds.append(self._report(msg_id, envelope, data, relayed, "relayed", None))
        if not ds:
            return defer.succeed(None)

        def first(ids: list[Optional[str]]) -> Optional[str]:
            return next((i for i in ids if i), None)

        return defer.gatherResults(ds, consumeErrors=True).addCallback(first)

    def _report(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        action: str,
        retry_until: Optional[float],
    ) -> defer.Deferred[Optional[str]]:
        if not envelope.sender:
            # RFC 5321 §6.1: never send a notification about a message from <>.
            log.info("{msg_id}: no {action} DSN: null reverse-path", msg_id=msg_id, action=action)
            return defer.succeed(None)
        wanted = [
            r
            for r in recipients
            if notify_wants(r, "delivered" if action in ("relayed", "expanded") else action)
        ]
        if not wanted:
            log.info(
                "{msg_id}: no {action} DSN: NOTIFY does not ask for one",
                msg_id=msg_id,
                action=action,
            )
            return defer.succeed(None)
        max_full = self.settings.current.dsn.max_full_size
        try:
            dsn = build_dsn(
                hostname=self.hostname,
                envelope=envelope,
                data=data,
                recipients=wanted,
                action=action,
                now=self.clock.seconds(),
                msg_id=msg_id,
                max_full=max_full,
                retry_until=retry_until,
            )
        except Exception:
            log.failure("{msg_id}: cannot build {action} DSN", msg_id=msg_id, action=action)
            return defer.fail()
        rcpt = Recipient(address=envelope.sender)
        dsn_env = Envelope(
            sender="", recipients=[rcpt], submit={"protocol": "DSN", "origin": str(msg_id)}
        )
        d = defer.maybeDeferred(self.submission.submit, dsn_env, dsn)

        def done(new_id: Any) -> Any:
            log.info(
                "{msg_id}: {action} DSN to <{sender}> for {count} recipient(s) queued as {dsn_id}",
                msg_id=msg_id,
                action=action,
                sender=one_line(envelope.sender, 200),
                count=len(wanted),
                dsn_id=new_id,
            )
            return new_id

        d.addCallback(done)
        return d
