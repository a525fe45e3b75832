"""The admin service layer (cgtwist.admin) on a real SQLite store: what the CLI and the web
pages both rely on."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import task
from twisted.logger import globalLogPublisher

from cgtwist.admin import Admin, AdminError, ServerDown
from cgtwist.admin.router import TableError
from cgtwist.errors import StoreError
from cgtwist.storage import directory
from tests.storage.dbcase import DatabaseCase


class AdminCase(DatabaseCase):
    async def admin(self, actor: str = "tester") -> Admin:
        self.store = await self.open_store("example.com")
        await self.store.bootstrap({"CGTWIST_POSTMASTER_PASSWORD": "pm-secret"})
        self.changed: list[str] = []

        def changed(what: str, change: str) -> Optional[dict[str, Any]]:
            self.changed.append(what)
            return None

        return Admin(self.store, "example.com", "default", changed, actor=actor)

    def add_many(self, domain: str, count: int) -> Any:
        """``count`` accounts u000000.. in one transaction (faster than add_account)."""

        def txn(cur: Any) -> None:
            did = cur.query_one("SELECT id FROM domains WHERE name = ?", (domain,))[0]
            for i in range(count):
                cur.execute(
                    "INSERT INTO accounts (domain_id, name, real_name, created) VALUES (?, ?, ?, 0)",
                    (did, f"u{i:06d}", f"User Number {i}"),
                )

        return self.store.db.run_interaction("add_many", txn)


class OperationsTests(AdminCase):
    async def test_change_is_logged_with_its_actor_and_told_to_the_server(self) -> None:
        """Every change names who made it in the log and tells the server what changed."""
        admin = await self.admin("web postmaster@example.com")
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "cgtwist.admin":
                lines.append(event["log_format"].format(**event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        await admin.add_domain("new.test")
        generated = await admin.add_account("bob", "new.test", "s3cret!pw")
        self.assertIsNone(generated)
        self.assertEqual(self.changed, ["domain", "account"])
        self.assertEqual(
            lines,
            [
                "change by web postmaster@example.com: domain new.test created",
                "change by web postmaster@example.com: account bob@new.test created",
            ],
        )

    async def test_add_account_without_password_returns_a_generated_one(self) -> None:
        admin = await self.admin()
        password = await admin.add_account("carol", "example.com")
        self.assertTrue(password)
        assert password is not None
        self.assertIsNotNone(await self.store.verify_password("carol", "example.com", password))

    async def test_account_info_never_holds_the_hash(self) -> None:
        """No operation hands a password hash to an edge (the web would show it)."""
        admin = await self.admin()
        await admin.add_account("dave", "example.com", "pw-dave-1")
        info = await admin.account("dave", "example.com")
        page = await admin.account_page("example.com")
        for row in [info, *page.accounts]:
            self.assertNotIn("password", row)
            self.assertNotIn("$argon2", repr(row))

    async def test_domains_with_their_aliases_and_counts(self) -> None:
        """Every domain comes back sorted with its aliases, account count and which is the
        main one (read in one transaction)."""
        admin = await self.admin()
        await admin.add_domain("b.test")
        await admin.add_domain("a.test")
        await admin.add_domain("alias.test", alias_of="b.test")
        await admin.add_account("u", "b.test", "Secret-12345")
        found = {d["name"]: d for d in await admin.domains()}
        self.assertEqual(list(found), ["a.test", "b.test", "example.com"])
        self.assertEqual(
            (found["b.test"]["aliases"], found["b.test"]["accounts"]), (["alias.test"], 1)
        )
        self.assertEqual([n for n, d in found.items() if d["main"]], ["example.com"])

    async def test_errors_carry_a_message(self) -> None:
        admin = await self.admin()
        with self.assertRaisesRegex(AdminError, "domain nowhere.test does not exist"):
            await admin.domain("nowhere.test")
        with self.assertRaisesRegex(AdminError, "account nobody@example.com does not exist"):
            await admin.set_password("nobody", "example.com", "x")

    async def test_queue_needs_the_server(self) -> None:
        admin = await self.admin()
        with self.assertRaises(ServerDown):
            await admin.queue.messages()
        with self.assertRaisesRegex(AdminError, "not a message id"):
            await admin.queue.act("hold", "../etc")

    async def test_a_name_belongs_to_one_object_of_its_domain(self) -> None:
        """An account, an alias, a forwarder or group and a mailing list share their domain's
        names: none of them is created over a name another one holds (which would get the
        mail is otherwise up to the Router's order), whichever is created first."""
        admin = await self.admin()
        await admin.lists.add("dev@example.com", {})
        await admin.add_group("forwarder", "fw", "example.com", ["a@elsewhere.test"])
        for create in (
            admin.add_account("dev", "example.com", "Secret-12345"),
            admin.add_alias("dev", "example.com", "postmaster"),
            admin.add_group("group", "dev", "example.com", ["a@elsewhere.test"]),
        ):
            with self.assertRaisesRegex(StoreError, "dev@example.com is a mailing list"):
                await create
        with self.assertRaisesRegex(StoreError, "fw@example.com is a forwarder or group"):
            await admin.lists.add("fw@example.com", {})
        with self.assertRaisesRegex(StoreError, "postmaster@example.com is an account"):
            await admin.lists.add("postmaster@example.com", {})

    async def test_lists_are_managed_here_for_every_edge(self) -> None:
        """A list is created, subscribed to and removed through Admin.lists; creating and
        removing it tell the server (its Router caches which names are lists); a name an
        account holds is refused; approving a held post needs the running server."""
        admin = await self.admin()
        with self.assertRaisesRegex(StoreError, "postmaster@example.com is an account"):
            await admin.lists.add("postmaster@example.com", {})
        await admin.lists.add("news@example.com", {"description": "News"})
        await admin.lists.subscribe("news@example.com", "reader@elsewhere.test")
        self.assertEqual(
            [s.address for s in await admin.lists.subscribers("news@example.com")],
            ["reader@elsewhere.test"],
        )
        with self.assertRaisesRegex(StoreError, "not subscribed"):
            await admin.lists.unsubscribe("news@example.com", "other@elsewhere.test")
        with self.assertRaises(ServerDown):
            await admin.lists.decide("news@example.com", "1", approve=True)
        await admin.lists.remove("news@example.com")
        self.assertEqual(self.changed, ["lists", "lists"])
        self.assertEqual(await admin.lists.all(), [])

    async def test_forwarders_groups_and_effective_settings(self) -> None:
        """Forwarders and groups are changed here and each change tells the server; the
        effective settings of an account or domain that does not exist are a clear error."""
        admin = await self.admin()
        await admin.add_group("forwarder", "sales", "example.com", ["a@elsewhere.test"])
        await admin.set_group("forwarder", "sales", "example.com", ["b@elsewhere.test"])
        self.assertEqual(
            await admin.groups("forwarder"), [("sales@example.com", ("b@elsewhere.test",))]
        )
        await admin.remove_group("forwarder", "sales", "example.com")
        self.assertEqual(self.changed, ["forwarder"] * 3)
        eff = await admin.effective_settings("example.com", "postmaster")
        self.assertIn("password.min_length", eff.sources)
        with self.assertRaisesRegex(AdminError, "account nobody@example.com does not exist"):
            await admin.effective_settings("example.com", "nobody")
        with self.assertRaisesRegex(StoreError, "domain nowhere.test does not exist"):
            await admin.effective_settings("nowhere.test")

    async def test_rules_are_scoped_checked_stored_and_told(self) -> None:
        """A rule set is named by an existing domain or account, checked as the server would
        run it, stored with a revision and told to the server; explain runs the rules on a
        message without delivering it."""
        self.store = await self.open_store("example.com")
        await self.store.bootstrap({"CGTWIST_POSTMASTER_PASSWORD": "pm-secret"})
        changed: list[str] = []
        admin = Admin(
            self.store,
            "example.com",
            "default",
            lambda what, change: changed.append(what),
            clock=task.Clock(),
            hostname="mail.example.com",
        )
        with self.assertRaisesRegex(AdminError, "no account nobody@example.com"):
            await admin.rules.scope(account="nobody")
        with self.assertRaisesRegex(AdminError, "no domain nowhere.test"):
            await admin.rules.scope(domain="nowhere.test")
        server = await admin.rules.scope()
        with self.assertRaisesRegex(AdminError, "the Server Rules: none set"):
            await admin.rules.delete(server)
        text = 'version 1\n\nrule "Big"\n  priority 3\n  if Message Size greater than "1"\n'
        text += '  do Add Header "X-Big: yes"\n'
        rules, revision = await admin.rules.set(server, text)
        self.assertEqual((len(rules.rules), revision, changed), (1, 1, ["rules"]))
        self.assertEqual((await admin.rules.get(server)).text, text)
        found = await admin.rules.explain(b"Subject: x\r\n\r\nbody\r\n", "postmaster")
        self.assertEqual(found.actions, ["server: Add Header X-Big: yes"])

    async def test_router_table_errors_name_the_line(self) -> None:
        admin = await self.admin()
        with self.assertRaises(TableError) as caught:
            await admin.router.set_table("<a> = b\nthis is not a record\n")
        self.assertEqual(caught.exception.line, 2)
        stored = await admin.router.set_table("<*@old.test> = *@example.com\n")
        self.assertEqual(stored.records, 1)
        result = await admin.router.test("someone@old.test")
        self.assertIn("someone@example.com", str(result.route))
        self.assertEqual(self.changed, ["router"])


class AccountPageTests(AdminCase):
    async def test_pages_forward_and_back(self) -> None:
        """Pages follow each other by name; the previous page of page 2 is page 1."""
        admin = await self.admin()
        await self.add_many("example.com", 25)
        first = await admin.account_page("example.com", limit=10)
        self.assertEqual(first.total, 27)  # with postmaster and pbx
        self.assertEqual(first.accounts[0]["name"], "pbx")
        self.assertTrue(first.has_next)
        self.assertFalse(first.has_previous)
        second = await admin.account_page("example.com", limit=10, after=first.last)
        self.assertEqual(second.accounts[0]["name"], "u000008")
        self.assertTrue(second.has_previous)
        back = await admin.account_page("example.com", limit=10, before=second.first)
        self.assertEqual(back.accounts, first.accounts)
        self.assertFalse(back.has_previous)
        last = await admin.account_page("example.com", limit=10, after="u000016")
        self.assertEqual(len(last.accounts), 8)
        self.assertFalse(last.has_next)

    async def test_search_matches_name_or_real_name_literally(self) -> None:
        """Search is a substring of the name or (any case) the real name; % and _ are text."""
        admin = await self.admin()
        await self.add_many("example.com", 30)
        page = await admin.account_page("example.com", search="NUMBER 2")
        names = [a["name"] for a in page.accounts]
        self.assertEqual(names, ["u000002", *[f"u0000{i}" for i in range(20, 30)]])
        self.assertEqual((page.matching, page.total), (11, 32))
        self.assertIsNone(page.searched)  # a domain this small is searched whole
        self.assertEqual((await admin.account_page("example.com", search="u%0")).matching, 0)
        self.assertEqual((await admin.account_page("example.com", search="_")).matching, 0)

    async def test_a_search_looks_at_a_bounded_window_per_page(self) -> None:
        """A substring search (no index serves it) looks at ``search_rows`` accounts per page,
        not the whole domain: the real name is lower-cased once per account looked at, and a
        search nobody matches costs each page its window, not 1,002 rows (and again for a
        count). Next searches on from where the page stopped, until the domain's end."""
        await self.admin()
        await self.add_many("example.com", 1000)
        looked: list[str] = []

        def counted(cur: Any, *args: Any) -> directory.AccountPage:
            # SQLite lets an application function replace LOWER(): count its calls
            conn = cur._txn.connection
            conn.create_function("lower", 1, lambda t: looked.append(t) or str(t).lower())
            try:
                return directory.account_page_txn(cur, *args)
            finally:
                conn.create_function("lower", 1, None)

        def page(after: Any) -> Any:
            return self.store.db.run_interaction(
                "page", counted, "example.com", "number 999", 10, after, None, 100
            )

        first = await page(None)
        self.assertLessEqual(len(looked), 100)
        self.assertEqual(first.accounts, [])
        self.assertIsNone(first.matching)
        self.assertEqual(first.searched, ("pbx", "u000097"))  # pbx, postmaster, u000000..
        self.assertTrue(first.has_next)
        found, pages, current = [], 1, first
        while current.has_next:
            looked.clear()
            current = await page(current.next_after)
            self.assertLessEqual(len(looked), 100)
            found += [a["name"] for a in current.accounts]
            pages += 1
        self.assertEqual((found, pages), (["u000999"], 11))
        self.assertEqual(current.searched, ("u000998", "u000999"))
        self.assertEqual(current.accounts[0]["real_name"], "User Number 999")

    async def test_a_window_ending_at_the_domains_end_is_the_last_page(self) -> None:
        """When a search's window reaches exactly the last account, that page has no Next
        (no empty page after it)."""
        admin = await self.admin()
        await self.add_many("example.com", 98)  # 100 with postmaster and pbx
        first = await admin.account_page("example.com", search="zzz", search_rows=50)
        self.assertEqual((first.accounts, first.searched), ([], ("pbx", "u000047")))
        second = await admin.account_page(
            "example.com", search="zzz", after=first.next_after, search_rows=50
        )
        self.assertEqual(second.searched, ("u000048", "u000097"))
        self.assertFalse(second.has_next)
        self.assertEqual(second.previous_before, "u000048")

    async def test_search_pages_back_and_forth_meet_every_match_once(self) -> None:
        """Paging a windowed search forward and then back from the last page visits each
        match exactly once, in name order, whatever the windows' sizes."""
        admin = await self.admin()
        await self.add_many("example.com", 300)
        want = [f"u{i:06d}" for i in range(300) if "7" in str(i)]
        seen: list[str] = []
        page = await admin.account_page("example.com", search="7", limit=7, search_rows=60)
        while True:
            seen += [a["name"] for a in page.accounts]
            if not page.has_next:
                break
            page = await admin.account_page(
                "example.com", search="7", limit=7, after=page.next_after, search_rows=60
            )
        self.assertEqual(seen, want)
        back = [a["name"] for a in page.accounts]  # the last page, then each one before it
        while page.has_previous:
            page = await admin.account_page(
                "example.com", search="7", limit=7, before=page.previous_before, search_rows=60
            )
            back = [a["name"] for a in page.accounts] + back
        self.assertEqual(back, want)

    async def test_paging_walks_the_index_not_the_table(self) -> None:
        """The page query is a range on the (domain, name) index: its cost does not grow with
        the page number (no OFFSET), so page 2,000 of 100,000 accounts is as cheap as page 1."""
        await self.admin()
        await self.add_many("example.com", 10)

        def plan(cur: Any) -> list[str]:
            sql = (
                directory.tables.ACCOUNT_COLUMNS
                + "WHERE a.domain_id = ? AND a.name > ? ORDER BY a.name LIMIT ?"
            )
            return [str(r[-1]) for r in cur.query("EXPLAIN QUERY PLAN " + sql, (1, "u", 51))]

        steps = await self.store.db.run_interaction("plan", plan, readonly=True)
        self.assertTrue(any("USING INDEX" in s and "name>?" in s for s in steps), steps)
        self.assertFalse(any("TEMP B-TREE" in s for s in steps), steps)  # no sort step

    async def test_unknown_domain(self) -> None:
        admin = await self.admin()
        with self.assertRaisesRegex(Exception, "domain none.test does not exist"):
            await admin.account_page("none.test")


class OperationsPostgresTests(OperationsTests):
    engine = "postgresql"


class AccountPagePostgresTests(AccountPageTests):
    """The same paging and search SQL on PostgreSQL (LIKE is case-sensitive there: the
    real name is compared lower-cased)."""

    engine = "postgresql"

    async def test_a_search_looks_at_a_bounded_window_per_page(self) -> None:
        """SQLite's LOWER() count; the windows themselves are checked by the next test."""

    async def test_paging_walks_the_index_not_the_table(self) -> None:
        """SQLite's plan check; PostgreSQL plans by statistics."""
