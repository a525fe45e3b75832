"""IMAP THREAD (RFC 5256): base subjects, the ORDEREDSUBJECT and REFERENCES algorithms and the
THREAD response's wire form.

Pure: ``ThreadMessage`` values in (collected by the protocol from the message metadata), a
thread forest or bytes out; never reads a message, never imports twisted.internet. Every walk
over a tree is iterative (a 10,000-message chain of replies must not hit the recursion limit)
and every step is linear or n log n in the number of messages and references, so a large
folder can be threaded in one of the mailstore's threads without surprises.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import InitVar, dataclass, field
from typing import Iterator, Optional

_WSP = re.compile(r"[ \t\r\n]+")
# RFC 5256 §5: subj-blob = "[" *BLOBCHAR "]" *WSP; subj-refwd = ("re" / ("fw" ["d"])) *WSP
# [subj-blob] ":"; subj-leader = (*subj-blob subj-refwd) / WSP (spaces are single here).
_BLOB = r"\[[^\[\]]*\] ?"
_LEADER = re.compile(rf"(?:(?:{_BLOB})*(re|fwd?) ?(?:{_BLOB})?:| )", re.I)
_BLOB_RE = re.compile(_BLOB)
_MSGID = re.compile(r"<([^<>\s]+)>")


def base_subject(subject: str) -> tuple[str, bool]:
    """RFC 5256 §2.1: the base subject of an already decoded subject, and whether the
    extraction found it a reply or forward (a subj-refwd, a "(fwd)" trailer or a
    "[fwd: ...]" wrapper was removed). Linear in the subject's length: the steps move two
    indexes instead of re-slicing the text."""
    s = _WSP.sub(" ", subject)  # step 1 (encoded words are decoded by the caller)
    lo, hi = 0, len(s)
    reply = False
    while True:
        # Step 2: trailing subj-trailer = "(fwd)" / WSP.
        while hi > lo:
            if s[hi - 1] == " ":
                hi -= 1
            elif hi - lo >= 5 and s[hi - 5 : hi].lower() == "(fwd)":
                hi -= 5
                reply = True
            else:
                break
        # Steps 3-5: leaders, then one blob if something is left after it; repeat.
        while True:
            changed = False
            while lo < hi:
                m = _LEADER.match(s, lo, hi)
                if m is None:
                    break
                if m.group(1):
                    reply = True
                lo = m.end()
                changed = True
            m = _BLOB_RE.match(s, lo, hi)
            if m is not None and m.end() < hi:
                lo = m.end()
                changed = True
            if not changed:
                break
        # Step 6: subj-fwd-hdr "[fwd:" ... subj-fwd-trl "]", then again from step 2.
        if hi - lo >= 6 and s[lo : lo + 5].lower() == "[fwd:" and s[hi - 1] == "]":
            lo += 5
            hi -= 1
            reply = True
            continue
        return s[lo:hi], reply


def casemap(text: str) -> str:
    """The key strings are compared by: i;unicode-casemap (RFC 5051), the collation RFC 5256
    requires through I18NLEVEL=1 (RFC 5255 §4.3): each character's titlecase form, then
    canonical decomposition, so "émile", "Émile" and "E\u0301mile" sort as one. For ASCII
    text that is upper case (so "_" sorts after "Z", as i;ascii-casemap has it too)."""
    if text.isascii():
        return text.translate(_UPPER)
    return unicodedata.normalize("NFD", "".join(_title(c) for c in text))


def _title(c: str) -> str:
    """RFC 5051 step 1 uses the simple titlecase mapping (one character for one): a special
    mapping that grows ("ß" -> "Ss") is left out."""
    t = c.title()
    return t if len(t) == 1 else c


_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def message_ids(value: Optional[str]) -> list[str]:
    """The msg-ids (without the angle brackets) of a Message-ID, References or In-Reply-To
    value, in order; text that is no msg-id (comments, phrases) is skipped."""
    return _MSGID.findall(value) if value else []


@dataclass
class ThreadMessage:
    """What threading needs of one message: ``number`` is what the response shows (sequence
    number or UID), ``seq`` the tie-breaker (RFC 5256 §2.2), ``date`` the sent date as epoch
    seconds (INTERNALDATE when Date: is missing or unparsable), ``subject`` the decoded
    Subject, ``references`` the References msg-ids (else In-Reply-To's first)."""

    number: int
    seq: int
    date: float
    message_id: Optional[str]
    references: list[str]
    subject: str
    # (key, reply) when the caller knows them already (cgtwist.protocols.imap.sort keeps them
    # with the message), else they are derived from ``subject``.
    known: InitVar[Optional[tuple[str, bool]]] = None
    key: str = field(init=False)  # the base subject, casemapped
    reply: bool = field(init=False)  # the subject said Re:/Fwd: (RFC 5256 §2.1)

    def __post_init__(self, known: Optional[tuple[str, bool]]) -> None:
        if known is not None:
            self.key, self.reply = known
        else:
            base, self.reply = base_subject(self.subject)
            self.key = casemap(base)


class Node:
    """A thread tree node: a message, or a dummy (``msg`` None) standing for a referenced
    message that is not among those threaded."""

    __slots__ = ("msg", "parent", "children")

    def __init__(self, msg: Optional[ThreadMessage] = None) -> None:
        self.msg = msg
        self.parent: Optional[Node] = None
        self.children: list[Node] = []

    def sort_key(self) -> tuple[float, int]:
        """Sent date, then sequence number; a dummy sorts as its first child (RFC 5256 §3)."""
        node = self
        while node.msg is None:
            node = node.children[0]
        return node.msg.date, node.msg.seq


def _descendants(roots: list[Node]) -> list[Node]:
    """Every node under ``roots``, parents before their children."""
    out: list[Node] = []
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children))
    return out


def _sort_siblings(roots: list[Node]) -> list[Node]:
    """Sort every set of siblings by sent date, children before their parents (a dummy's
    place depends on its first child), then the roots."""
    for node in reversed(_descendants(roots)):
        if len(node.children) > 1:
            node.children.sort(key=Node.sort_key)
    return sorted(roots, key=Node.sort_key)


def ordered_subject(msgs: list[ThreadMessage]) -> list[Node]:
    """THREAD=ORDEREDSUBJECT (RFC 5256 §3): one thread per base subject, its first message
    by sent date at the top and every other one its child; threads by their first date."""
    ordered = sorted(msgs, key=lambda m: (m.key, m.date, m.seq))
    threads: list[Node] = []
    current: Optional[Node] = None
    for m in ordered:
        node = Node(m)
        if current is not None and current.msg is not None and current.msg.key == m.key:
            node.parent = current
            current.children.append(node)
        else:
            current = node
            threads.append(node)
    return sorted(threads, key=Node.sort_key)


def _is_ancestor(node: Node, of: Node) -> bool:
    """True when ``node`` is ``of`` or one of its ancestors."""
    cur: Optional[Node] = of
    while cur is not None:
        if cur is node:
            return True
        cur = cur.parent
    return False


def _detach(node: Node) -> None:
    if node.parent is not None:
        node.parent.children.remove(node)
        node.parent = None


def _attach(parent: Node, child: Node) -> None:
    child.parent = parent
    parent.children.append(child)


def references(msgs: list[ThreadMessage]) -> list[Node]:
    """THREAD=REFERENCES (RFC 5256 §3), steps 1 to 6; ``msgs`` in mailbox order."""
    table: dict[str, Node] = {}
    nodes: list[Node] = []

    def lookup(mid: str) -> Node:
        node = table.get(mid)
        if node is None:
            node = table[mid] = Node()
            nodes.append(node)
        return node

    # (1) Link each message's references, then the message under its last reference.
    for m in sorted(msgs, key=lambda m: m.seq):
        mid = m.message_id
        if mid is not None and mid in table and table[mid].msg is None:
            node = table[mid]
            node.msg = m
        else:
            # No Message-ID, or a duplicate one: a unique node nobody can reference.
            node = Node(m)
            nodes.append(node)
            if mid is not None and mid not in table:
                table[mid] = node
        prev: Optional[Node] = None
        for ref in m.references:
            cur = lookup(ref)
            # (1.A) An existing link stays; none that would make a loop. A node without
            # children can only loop onto itself: no walk up the tree for the new dummies
            # of a long References list.
            if (
                prev is not None
                and cur.parent is None
                and cur is not prev
                and (not cur.children or not _is_ancestor(cur, prev))
            ):
                _attach(prev, cur)
            prev = cur
        # (1.B) The message's own last reference wins over a link other messages made.
        _detach(node)
        if prev is not None and not _is_ancestor(node, prev):
            _attach(prev, node)
    table.clear()  # (3)

    # (2) The root set; (3) prune dummies, bottom-up so promoted children are final.
    roots = [n for n in nodes if n.parent is None]
    for node in reversed(_descendants(roots)):
        if any(c.msg is None for c in node.children):
            kept: list[Node] = []
            for c in node.children:
                if c.msg is not None:
                    kept.append(c)
                    continue
                for g in c.children:  # a dummy's children take its place
                    g.parent = node
                    kept.append(g)
            node.children = kept
    pruned: list[Node] = []
    for r in roots:
        if r.msg is not None or len(r.children) > 1:
            pruned.append(r)
        elif r.children:  # a dummy root with one child: the child is the root
            child = r.children[0]
            child.parent = None
            pruned.append(child)

    # (4) Sort the root set (a dummy by its first child, its children sorted first).
    for r in pruned:
        if r.msg is None:
            r.children.sort(key=Node.sort_key)
    pruned.sort(key=Node.sort_key)

    # (5) Merge threads that have the same base subject.
    def subject_of(r: Node) -> Optional[str]:
        m = r.msg if r.msg is not None else r.children[0].msg
        return m.key if m is not None and m.key else None

    subjects: dict[str, Node] = {}
    for r in pruned:
        key = subject_of(r)
        if key is None:
            continue
        old = subjects.get(key)
        if old is None or (
            old.msg is not None and (r.msg is None or (old.msg.reply and not r.msg.reply))
        ):
            subjects[key] = r
    merged: list[Node] = []
    for r in pruned:
        if r.parent is not None:  # already put under another thread (or a new dummy)
            continue
        key = subject_of(r)
        if key is None:
            merged.append(r)
            continue
        top = subjects[key]
        if top is r:
            merged.append(r)
            continue
        if top.msg is None and r.msg is None:
            for c in r.children:
                _attach(top, c)
            r.children = []
        elif top.msg is None or (r.msg is not None and r.msg.reply and not top.msg.reply):
            _attach(top, r)
        else:
            dummy = Node()
            merged.append(dummy)
            _attach(dummy, top)
            _attach(dummy, r)
            subjects[key] = dummy
    # (6) Sort every set of siblings, youngest generation first (the order of the roots so
    # far does not matter; a table entry wrapped in a new dummy is no longer a root).
    return _sort_siblings([r for r in merged if r.parent is None])


def render(threads: list[Node]) -> bytes:
    """The THREAD response's thread lists (RFC 5256 §4): ``(3 6 (4 23)(44 7 96))``; a chain
    of only children is written flat, a dummy as its nested lists alone."""
    out: list[bytes] = []
    for root in threads:
        out.extend(_thread_tokens(root))
    return b"".join(out)


def _thread_tokens(root: Node) -> Iterator[bytes]:
    stack: list[object] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            yield item
            continue
        assert isinstance(item, Node)
        yield b"("
        node: Node = item
        first = True
        while True:
            if node.msg is not None:
                yield (b"%d" if first else b" %d") % node.msg.number
                first = False
            if len(node.children) == 1 and node.msg is not None:
                node = node.children[0]
                continue
            if node.children and not first:
                yield b" "
            stack.append(b")")
            stack.extend(reversed(node.children))
            break
