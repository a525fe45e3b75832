"""Digests and indexes: the periodic collection of a list's posts for its digest subscribers.

A digest is ``multipart/digest`` (RFC 2046 §5.1.5): first a text/plain table of contents in
the manner of RFC 1153 (one "Topics" line per message: subject and sender), then each post as
a message/rfc822 part. An index is that table of contents alone. Both are built from the
copies as they were distributed, in the order they were posted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cgtwist.lists.headers import field_value, list_id, rfc2369_fields, split_message
from cgtwist.lists.model import MailingList


@dataclass(frozen=True)
class Post:
    subject: str
    sender: str
    data: bytes


def post_of(data: bytes) -> Post:
    fields, _body = split_message(data)
    return Post(
        (field_value(fields, "Subject") or "(no subject)")[:200],
        (field_value(fields, "From") or "")[:200],
        data,
    )


def _toc(lst: MailingList, posts: list[Post], number: int) -> str:
    title = f"{lst.description or lst.address} Digest, Vol 1, Issue {number}"
    lines = [title, "", "Today's Topics:", ""]
    for i, p in enumerate(posts, 1):
        lines.append(f"  {i:3d}. {p.subject} ({p.sender})")
    lines += ["", "-" * 70, ""]
    return "\r\n".join(lines) + "\r\n"


def _head(lst: MailingList, subject: str, date: str, msg_id: str) -> str:
    return (
        f"From: {lst.address}\r\nTo: {lst.address}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: {msg_id}\r\nMIME-Version: 1.0\r\n"
    )


def build(
    lst: MailingList, posts: list[Post], number: int, date: str, msg_id: str, index: bool
) -> bytes:
    """The digest (``index`` False) or index (True) of ``posts``, issue ``number``."""
    kind = "Index" if index else "Digest"
    subject = f"{lst.subject_tag + ' ' if lst.subject_tag else ''}{lst.name} {kind} #{number}"
    toc = _toc(lst, posts, number)
    head = rfc2369_fields(lst).decode() + _head(lst, subject, date, msg_id)
    if index:
        return (
            head + "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + toc
        ).encode("utf-8")
    seed = b"".join(hashlib.sha256(p.data).digest() for p in posts)
    boundary = "=_digest_" + hashlib.sha256(seed + msg_id.encode()).hexdigest()[:24]
    parts = [
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Description: {list_id(lst)} topics\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n\r\n{toc}".encode()
    ]
    for p in posts:
        # multipart/digest: each part defaults to message/rfc822 (RFC 2046 §5.1.5)
        parts.append(f"\r\n--{boundary}\r\n\r\n".encode() + p.data)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    head += f'Content-Type: multipart/digest; boundary="{boundary}"\r\n\r\n'
    return head.encode("utf-8") + b"".join(parts)
