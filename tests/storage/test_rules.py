"""Tests for rule sets in the store: text with revisions, vacation memory, remembered lists.

Every test runs on SQLite; the same tests run on PostgreSQL when CGTWIST_TEST_PG_URL is set.
"""

from __future__ import annotations

from typing import Any

from cgtwist.storage.rules import InvalidRules, RulesConflict, RuleStore
from tests.storage.dbcase import DatabaseCase

TEXT = 'version 1\n\nrule "Lists"\n  priority 5\n  if Header Field is "List-Id: *"\n  do Store in "Lists"\n'
SERVER_TEXT = (
    'version 1\n\nrule "Junk"\n  priority 5\n  if SPF Result is "fail"\n  do Tag Subject "[SPAM]"\n'
)


class RuleStoreTestsMixin:
    async def rules(self: Any, clock: list[float] | None = None) -> RuleStore:
        db = self.open_db()
        await db.migrate()
        now = clock or [1000.0]
        return RuleStore(db, "default", now=lambda: now[0])

    async def test_set_get_with_revisions(self: Any) -> None:
        """Each scope keeps its own text; every change bumps the revision."""
        rs = await self.rules()
        empty = await rs.get("account", "alice@example.com")
        self.assertEqual((empty.text, empty.revision), ("", 0))
        self.assertEqual(await rs.set("account", "Alice@Example.com", TEXT), 1)
        self.assertEqual(await rs.set("domain", "example.com", TEXT), 1)
        self.assertEqual(await rs.set("server", "", SERVER_TEXT), 1)
        self.assertEqual(await rs.set("account", "alice@example.com", TEXT, expect=1), 2)
        got = await rs.get("account", "alice@example.com")
        self.assertEqual((got.text, got.revision), (TEXT, 2))
        self.assertEqual((await rs.get("server", "")).text, SERVER_TEXT)
        self.assertTrue(await rs.delete("domain", "example.com"))
        self.assertFalse(await rs.delete("domain", "example.com"))
        self.assertEqual((await rs.get("domain", "example.com")).revision, 0)

    async def test_stale_edit_is_refused(self: Any) -> None:
        """An editor that read revision 1 cannot overwrite revision 2 unknowingly."""
        rs = await self.rules()
        await rs.set("domain", "example.com", TEXT)
        await rs.set("domain", "example.com", TEXT)
        with self.assertRaises(RulesConflict):
            await rs.set("domain", "example.com", TEXT, expect=1)

    async def test_bad_text_and_level_never_stored(self: Any) -> None:
        """Text that does not parse, or a Store in among Server Rules, is refused and not stored."""
        rs = await self.rules()
        with self.assertRaises(InvalidRules) as cm:
            await rs.set("account", "alice@example.com", 'version 1\nrule "x"\n do Nothing\n')
        self.assertIn("line 3", str(cm.exception))
        with self.assertRaises(InvalidRules):
            await rs.set("server", "", TEXT)
        with self.assertRaises(InvalidRules):
            await rs.set("account", "example.com", TEXT)
        self.assertEqual((await rs.get("server", "")).revision, 0)

    async def test_claim_reply_once_per_interval(self: Any) -> None:
        """A sender is answered once per interval; after it, again once."""
        clock = [1000.0]
        rs = await self.rules(clock)
        self.assertTrue(await rs.claim_reply("alice@example.com", "bob@x.example", 600))
        self.assertFalse(await rs.claim_reply("alice@example.com", "BOB@x.example", 600))
        self.assertTrue(await rs.claim_reply("alice@example.com", "carol@x.example", 600))
        self.assertTrue(await rs.claim_reply("dave@example.com", "bob@x.example", 600))
        clock[0] += 601
        self.assertTrue(await rs.claim_reply("alice@example.com", "bob@x.example", 600))
        self.assertFalse(await rs.claim_reply("alice@example.com", "bob@x.example", 600))

    async def test_remembered_list(self: Any) -> None:
        """Remember 'From' in keeps each address once per owner and list."""
        rs = await self.rules()
        await rs.remember("alice@example.com", "Correspondents", "Bob@x.example")
        await rs.remember("alice@example.com", "Correspondents", "bob@x.example")
        await rs.remember("alice@example.com", "Correspondents", "carol@x.example")
        self.assertEqual(
            await rs.remembered("alice@example.com", "Correspondents"),
            ["bob@x.example", "carol@x.example"],
        )
        self.assertEqual(await rs.remembered("alice@example.com", "Other"), [])


class SQLiteRuleStoreTests(RuleStoreTestsMixin, DatabaseCase):
    engine = "sqlite"


class PostgresRuleStoreTests(RuleStoreTestsMixin, DatabaseCase):
    engine = "postgresql"
