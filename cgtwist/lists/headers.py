"""The copy a list distributes: RFC 2369 headers, Precedence, subject tag, Reply-To, footer.

Owns turning a post (the octets as received, CRLF) into the copy every subscriber gets, and
reading the few header fields the LIST agent decides on (From, Subject, List-Id for loops;
their values read by cgtwist.message.headers). Works on the header block as octets, field by
field, so the body is passed through untouched (a footer is added to a plain-text body only:
appended to a MIME multipart or an encoded body it would corrupt it).
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from cgtwist.lists.addresses import OFF, ON, REQUEST, role_address
from cgtwist.lists.model import MailingList
from cgtwist.message.headers import decoded, header_fields, unfolded

# Fields a list replaces on its copies (RFC 2369 §3, RFC 2919, RFC 8058); Return-Path is the
# final MTA's to add.
_REPLACED = {
    b"list-id",
    b"list-post",
    b"list-help",
    b"list-subscribe",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"list-owner",
    b"list-archive",
    b"precedence",
    b"return-path",
}
# A field's name as RFC 5322 §3.6.8 and §4.5.3 spell it (cgtwist.message.headers reads the same).
_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


@dataclass(frozen=True)
class Field:
    name: bytes  # lower-case
    raw: bytes  # the whole field with its folded lines, ending in CRLF


def split_message(data: bytes) -> tuple[list[Field], bytes]:
    """Header fields and the body (without the empty line) of a CRLF message."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        head, body = data if data.endswith(b"\r\n") else data + b"\r\n", b""
    else:
        head, body = data[: end + 2], data[end + 4 :]
    fields: list[Field] = []
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = Field(last.name, last.raw + line + b"\r\n")
            continue
        m = _NAME.match(line)
        name = m.group(1).lower() if m else b""
        fields.append(Field(name, line + b"\r\n"))
    return fields, body


def field_value(fields: Iterable[Field], name: str) -> Optional[str]:
    """The value of the first field ``name`` as text, or None."""
    key = name.lower().encode("ascii")
    for f in fields:
        if f.name == key:
            return _text(f.raw)
    return None


def _text(raw: bytes) -> str:
    """A raw field's value as cgtwist.message.headers reads it: unfolded (RFC 5322 §2.2.3),
    UTF-8, encoded words decoded (RFC 2047); undecodable text kept as it came."""
    return next((decoded(unfolded(value)) for _name, value in header_fields(raw)), "")


def sender_of(fields: Iterable[Field]) -> str:
    """The From: address, lower-case domain ("" when there is none)."""
    value = field_value(fields, "From") or ""
    _name, addr = email.utils.parseaddr(value)
    local, at, domain = addr.rpartition("@")
    return f"{local}@{domain.lower()}" if at else ""


def list_id(lst: MailingList) -> str:
    """RFC 2919 §3: ``"description" <name.domain>``."""
    ident = f"<{lst.name}.{lst.domain}>"
    desc = lst.description.replace('"', "'")
    return f'"{desc}" {ident}' if desc else ident


def rfc2369_fields(lst: MailingList, one_click: str = "", unsubscribe_token: str = "") -> bytes:
    """List-Id, the RFC 2369 fields and Precedence; RFC 8058 one-click when a URL is given."""
    post = f"<mailto:{lst.address}>"
    req = role_address(lst.address, REQUEST)
    unsub_subject = "unsubscribe" + (f"%20{unsubscribe_token}" if unsubscribe_token else "")
    unsub = f"<mailto:{role_address(lst.address, OFF)}?subject={unsub_subject}>"
    if one_click:
        unsub = f"<{one_click}>, {unsub}"
    lines = [
        f"List-Id: {list_id(lst)}",
        f"List-Post: {post}",
        f"List-Help: <mailto:{req}?subject=help>",
        f"List-Subscribe: <mailto:{role_address(lst.address, ON)}?subject=subscribe>",
        f"List-Unsubscribe: {unsub}",
    ]
    if one_click:
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")  # RFC 8058 §3.1
    if lst.owner:
        lines.append(f"List-Owner: <mailto:{role_address(lst.address, 'owner')}>")
    lines.append("Precedence: list")
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


def is_our_copy(fields: Iterable[Field], lst: MailingList) -> bool:
    """Does the message already carry this list's List-Id (a loop back into the list)?"""
    value = field_value(fields, "List-Id") or ""
    return f"<{lst.name}.{lst.domain}>" in value.lower()


def _tagged_subject(raw: bytes, tag: str) -> bytes:
    if tag.lower() in _text(raw).lower():
        return raw
    name, _colon, value = raw.partition(b":")
    return name + b": " + f"{tag} ".encode() + value.lstrip(b" \t")


def _footer_fits(fields: list[Field]) -> bool:
    ctype = (field_value(fields, "Content-Type") or "text/plain").lower()
    cte = (field_value(fields, "Content-Transfer-Encoding") or "7bit").lower().strip()
    return ctype.startswith("text/plain") and cte in ("7bit", "8bit")


@dataclass(frozen=True)
class Prepared:
    """A post made ready for the subscribers once: every field but the RFC 2369 block, which
    alone differs between subscribers when the list personalises (their unsubscribe token)."""

    head: bytes  # the post's own fields as the copies carry them
    body: bytes
    subject: str  # the copies' Subject (decoded, tagged), for the digest

    def copy(self, lst: MailingList, one_click: str = "", unsubscribe_token: str = "") -> bytes:
        """One subscriber's copy (or everyone's, without a token)."""
        return rfc2369_fields(lst, one_click, unsubscribe_token) + self.head + b"\r\n" + self.body


def prepare(data: bytes, lst: MailingList) -> Prepared:
    """Read ``data`` once for its copies: fields the list replaces dropped, the subject
    tagged, Reply-To set, the footer added to a plain-text body."""
    fields, body = split_message(data)
    out = [f for f in fields if f.name not in _REPLACED]
    if lst.subject_tag:
        tagged = False
        for i, f in enumerate(out):
            if f.name == b"subject":
                out[i] = Field(f.name, _tagged_subject(f.raw, lst.subject_tag))
                tagged = True
                break
        if not tagged:
            out.append(Field(b"subject", f"Subject: {lst.subject_tag}\r\n".encode()))
    if lst.reply_to != "none":
        who = lst.address if lst.reply_to == "list" else sender_of(fields)
        out = [f for f in out if f.name != b"reply-to"]
        if who:
            out.append(Field(b"reply-to", f"Reply-To: <{who}>\r\n".encode()))
    if lst.footer and _footer_fits(fields):
        text = lst.footer.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
        sep = b"" if not body or body.endswith(b"\r\n") else b"\r\n"
        body = body + sep + b"-- \r\n" + text + (b"" if text.endswith(b"\r\n") else b"\r\n")
    return Prepared(b"".join(f.raw for f in out), body, field_value(out, "Subject") or "")


def distribution_copy(
    data: bytes,
    lst: MailingList,
    one_click: str = "",
    unsubscribe_token: str = "",
) -> bytes:
    """The copy of ``data`` the subscribers of ``lst`` receive."""
    return prepare(data, lst).copy(lst, one_click, unsubscribe_token)


def notice(
    sender: str, to: str, subject: str, text: str, date: str, msg_id: str, extra: str = ""
) -> bytes:
    """A short text/plain message from the list (confirmations, owner notices, replies)."""
    body = text.replace("\r\n", "\n").replace("\n", "\r\n")
    head = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: {msg_id}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        "Auto-Submitted: auto-replied\r\nPrecedence: list\r\n" + extra
    )
    return (head + "\r\n" + body + ("" if body.endswith("\r\n") else "\r\n")).encode("utf-8")
