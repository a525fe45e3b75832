"""Rule sets in the store, with what their actions must remember between messages.

Owns the ``rule_sets``, ``rule_replies`` and ``rule_lists`` tables (schema delta 3): the text
form of the Server, each Domain's and each Account's Rules with a revision every change bumps
(an editor that read revision 4 cannot overwrite revision 5 unknowingly), the vacation memory
(``claim_reply``: at most one reply per sender per interval, decided in one statement so two
deliveries at once cannot both answer), and the lists ``Remember 'From' in`` fills. A text is
parsed and checked for its level before it is stored, so the store never holds a rule set that
cannot run. What an account may do (RulesAllowed) is the caller's (cgtwist.core.rules).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from cgtwist.errors import StoreError
from cgtwist.rules.model import RuleError, check_level
from cgtwist.rules.text import parse_rules
from cgtwist.storage import notify
from cgtwist.storage.database import Cursor, Database

SERVER, DOMAIN, ACCOUNT = "server", "domain", "account"
SCOPES = (SERVER, DOMAIN, ACCOUNT)
MAX_TEXT = 256 * 1024  # a rule set's text form, in characters
MAX_LIST = 10000  # addresses one remembered list keeps (the oldest go first)


class RulesConflict(StoreError):
    """The rule set changed since the revision the editor read."""


class InvalidRules(StoreError, ValueError):
    """The text does not parse, or holds an action its level cannot run."""


@dataclass(frozen=True)
class StoredRules:
    scope: str
    owner: str
    text: str
    revision: int  # 0: none stored yet
    updated: int


def owner_of(scope: str, owner: str) -> str:
    """The row key of a scope's owner: '' for the server, lower-cased names otherwise."""
    if scope not in SCOPES:
        raise InvalidRules(f"unknown rules scope {scope!r} (server, domain or account)")
    o = owner.strip().lower()
    if scope == SERVER:
        return ""
    if not o or len(o) > 320 or any(c.isspace() for c in o) or (scope == ACCOUNT) != ("@" in o):
        what = "an account name@domain" if scope == ACCOUNT else "a domain name"
        raise InvalidRules(f"{scope} rules belong to {what}, not {owner!r}")
    return o


class RuleStore:
    """``RuleStore(db, node, now=time.time)``: rule sets and rule memories in ``db``.

    ``node`` is this server's node name, named in the change announcement (PostgreSQL) that
    makes every node drop its parsed rule sets.
    """

    def __init__(self, db: Database, node: str, now: Callable[[], float] = time.time) -> None:
        self._db = db
        self._node = node
        self._now = now

    # -- rule sets ---------------------------------------------------------------------------
    async def get(self, scope: str, owner: str) -> StoredRules:
        """The stored rule set (revision 0 and empty text when there is none)."""
        key = owner_of(scope, owner)

        def get_txn(cur: Cursor) -> StoredRules:
            row = cur.query_one(
                "SELECT text, revision, updated FROM rule_sets WHERE scope = ? AND owner = ?",
                (scope, key),
            )
            if row is None:
                return StoredRules(scope, key, "", 0, 0)
            return StoredRules(scope, key, str(row[0]), int(row[1]), int(row[2]))

        return await self._db.run_interaction("get_rules", get_txn, readonly=True)

    async def set(self, scope: str, owner: str, text: str, expect: Optional[int] = None) -> int:
        """Store ``text`` (checked first); fires with the new revision. ``expect``: the
        revision the editor started from; another one stored since is RulesConflict."""
        key = owner_of(scope, owner)
        if len(text) > MAX_TEXT:
            raise InvalidRules(f"rules text over {MAX_TEXT} characters")
        try:
            check_level(parse_rules(text), server=scope == SERVER)
        except RuleError as e:
            raise InvalidRules(str(e)) from None
        now = int(self._now())

        def set_txn(cur: Cursor) -> int:
            row = cur.query_one(
                "SELECT revision FROM rule_sets WHERE scope = ? AND owner = ?", (scope, key)
            )
            current = int(row[0]) if row else 0
            if expect is not None and expect != current:
                raise RulesConflict(
                    f"the {scope} rules changed meanwhile (now revision {current}, "
                    f"edited from {expect}): show them again and redo the edit"
                )
            if row is None:
                cur.execute(
                    "INSERT INTO rule_sets (scope, owner, revision, text, updated) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (scope, key, 1, text, now),
                )
            else:
                cur.execute(
                    "UPDATE rule_sets SET revision = ?, text = ?, updated = ? "
                    "WHERE scope = ? AND owner = ?",
                    (current + 1, text, now, scope, key),
                )
            self._announce(cur, "set_rules")
            return current + 1

        return await self._db.run_interaction("set_rules", set_txn)

    async def delete(self, scope: str, owner: str) -> bool:
        """Remove a rule set; fires True if there was one."""
        key = owner_of(scope, owner)

        def delete_txn(cur: Cursor) -> bool:
            cur.execute("DELETE FROM rule_sets WHERE scope = ? AND owner = ?", (scope, key))
            gone = cur.rowcount > 0
            if gone:
                self._announce(cur, "delete_rules")
            return gone

        return await self._db.run_interaction("delete_rules", delete_txn)

    def _announce(self, cur: Cursor, what: str) -> None:
        if cur.engine.announces:
            cur.engine.announce(cur, notify.CHANNEL, notify.encode(what, self._node))

    # -- what actions remember ---------------------------------------------------------------
    async def claim_reply(self, account: str, sender: str, interval: float) -> bool:
        """True (and remembered) when ``account`` has not answered ``sender`` within the last
        ``interval`` seconds: the caller sends the reply. One statement, so two deliveries at
        the same moment never both get True."""
        now = int(self._now())
        since = now - int(interval)
        acct, who = account.lower(), sender.lower()[:320]

        def claim_txn(cur: Cursor) -> bool:
            cur.execute(
                "INSERT INTO rule_replies (account, sender, answered) VALUES (?, ?, ?) "
                "ON CONFLICT (account, sender) DO UPDATE SET answered = excluded.answered "
                "WHERE rule_replies.answered <= ?",
                (acct, who, now, since),
            )
            return cur.rowcount > 0

        return await self._db.run_interaction("claim_reply", claim_txn)

    async def remember(self, owner: str, name: str, address: str) -> None:
        """Add ``address`` to ``owner``'s list ``name`` (Remember 'From' in); a list past
        MAX_LIST entries forgets its oldest."""
        now = int(self._now())
        own, addr = owner.lower(), address.lower()[:320]

        def remember_txn(cur: Cursor) -> None:
            cur.execute(
                cur.engine.upsert("rule_lists", ("owner", "list", "address"), ("added",)),
                (own, name, addr, now),
            )
            row = cur.query_one(
                "SELECT COUNT(*) FROM rule_lists WHERE owner = ? AND list = ?", (own, name)
            )
            extra = int(row[0]) - MAX_LIST if row else 0
            if extra > 0:
                cur.execute(
                    "DELETE FROM rule_lists WHERE owner = ? AND list = ? AND address IN "
                    "(SELECT address FROM rule_lists WHERE owner = ? AND list = ? "
                    "ORDER BY added, address LIMIT ?)",
                    (own, name, own, name, extra),
                )

        return await self._db.run_interaction("remember_address", remember_txn)

    async def remembered(self, owner: str, name: str) -> list[str]:
        own = owner.lower()

        def list_txn(cur: Cursor) -> list[str]:
            rows = cur.query(
                "SELECT address FROM rule_lists WHERE owner = ? AND list = ? ORDER BY address",
                (own, name),
            )
            return [str(r[0]) for r in rows]

        return await self._db.run_interaction("remembered_addresses", list_txn, readonly=True)
