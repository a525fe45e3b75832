"""Tests for cgtwist.storage.lists: lists, subscribers, held and digest posts (delta 004).

Every test runs on SQLite; the same tests run on PostgreSQL when CGTWIST_TEST_PG_URL is set.
"""

from __future__ import annotations

import threading
from typing import Any
from unittest import mock

from cgtwist.errors import AlreadyExists, NotFound
from cgtwist.lists import csvio
from cgtwist.lists.model import Subscriber
from cgtwist.storage import lists as storage_lists
from cgtwist.storage.lists import DIGEST, HELD, ListStore
from tests.storage.dbcase import DatabaseCase


class ListStoreTestsMixin:
    async def open_lists(self: Any) -> ListStore:
        store = await self.open_store()
        await store.add_domain("example.org")
        await store.add_domain_alias("alias.org", "example.org")
        self.clock = [1000.0]
        return ListStore(store.db, now=lambda: self.clock[0])

    async def test_add_show_set_remove(self: Any) -> None:
        """A list is created in one of our domains with defaults, changed field by field,
        refused twice or in an unknown domain, and removed."""
        lists = await self.open_lists()
        await lists.add_list("dev@example.org", {"owner": "alice@example.org"})
        lst = await lists.get_list("dev@example.org")
        self.assertEqual(
            (lst.address, lst.owner, lst.policy),
            ("dev@example.org", "alice@example.org", "subscribers"),
        )
        with self.assertRaises(AlreadyExists):
            await lists.add_list("dev@example.org")
        with self.assertRaises(NotFound):
            await lists.add_list("dev@nowhere.org")
        with self.assertRaises(ValueError):
            await lists.set_list("dev@example.org", {"policy": "everyone"})
        with self.assertRaises(ValueError):
            await lists.set_list("dev@example.org", {"colour": "red"})
        lst = await lists.set_list("dev@example.org", {"policy": "moderated", "size_limit": 1000})
        self.assertEqual((lst.policy, lst.size_limit), ("moderated", 1000))
        self.assertEqual([x.address for x in await lists.list_lists()], ["dev@example.org"])
        await lists.remove_list("dev@example.org")
        self.assertIsNone(await lists.get_list("dev@example.org"))

    async def test_one_name_space_per_domain(self: Any) -> None:
        """A list, an account, an alias and a forwarder or group never share a name: the
        Router would silently let one hide the other (a list before a group, an account
        before a list), so whichever comes second is refused, in either order."""
        store = await self.open_store()
        await store.add_domain("example.org")
        lists = ListStore(store.db)
        await store.add_group("group", "team", "example.org", ["bob@example.org"])
        await store.add_account("alice", "example.org", "pw")
        await store.add_alias("info", "example.org", "alice@example.org")
        for taken, what in (
            ("team", "forwarder or group"),
            ("alice", "account"),
            ("info", "alias"),
        ):
            with self.assertRaises(AlreadyExists) as e:
                await lists.add_list(f"{taken}@example.org")
            self.assertIn(
                f"is an {what}" if what[0] in "aeiou" else f"is a {what}", str(e.exception)
            )
        await lists.add_list("dev@example.org")
        for add in (
            lambda: store.add_group("group", "dev", "example.org", ["bob@example.org"]),
            lambda: store.add_account("dev", "example.org", "pw"),
            lambda: store.add_alias("dev", "example.org", "alice@example.org"),
        ):
            with self.assertRaises(AlreadyExists) as e:
                await add()
            self.assertIn("dev@example.org is a mailing list", str(e.exception))

    async def test_find_list_roles_and_domain_alias(self: Any) -> None:
        """Routing finds the list behind each of its addresses, also through a domain alias;
        a list named like a role address of another list wins for its own name."""
        lists = await self.open_lists()
        await lists.add_list("dev@example.org")
        for local in (
            "dev",
            "DEV-on",
            "dev-off",
            "dev-request",
            "dev-bounce",
            "dev-bounce+b=x.org",
        ):
            self.assertEqual(await lists.find_list(local, "example.org"), "dev@example.org", local)
        self.assertEqual(await lists.find_list("dev", "alias.org"), "dev@example.org")
        self.assertIsNone(await lists.find_list("ops", "example.org"))
        self.assertIsNone(await lists.find_list("dev", "other.org"))
        await lists.add_list("dev-on@example.org")
        self.assertEqual(await lists.find_list("dev-on", "example.org"), "dev-on@example.org")

    async def test_subscribers_put_update_remove_and_csv_roundtrip(self: Any) -> None:
        """Subscribers are added, updated in place, exported and imported back as CSV."""
        lists = await self.open_lists()
        await lists.add_list("dev@example.org")
        await lists.put_subscribers(
            "dev@example.org",
            [Subscriber("bob@Example.NET"), Subscriber("carol@example.net", mode="digest")],
        )
        await lists.put_subscribers("dev@example.org", [Subscriber("bob@example.net", "null")])
        subs = await lists.subscribers("dev@example.org")
        self.assertEqual(
            [(s.address, s.mode) for s in subs],
            [("bob@example.net", "null"), ("carol@example.net", "digest")],
        )
        text = csvio.export(subs)
        self.assertTrue(await lists.remove_subscriber("dev@example.org", "bob@example.net"))
        self.assertFalse(await lists.remove_subscriber("dev@example.org", "bob@example.net"))
        await lists.put_subscribers("dev@example.org", csvio.parse(text), replace=True)
        self.assertEqual(await lists.subscribers("dev@example.org"), subs)
        self.assertEqual(
            [s.address for s in await lists.subscribers("dev@example.org", "digest")],
            ["carol@example.net"],
        )
        with self.assertRaises(ValueError):
            await lists.put_subscribers("dev@example.org", [Subscriber("bob@example.net", "loud")])

    async def test_csv_export_is_built_in_the_database_thread(self: Any) -> None:
        """The export of a whole list (WebAdmin's, in the server) turns rows into text in the
        database's thread, never on the reactor thread, and gives what csvio.export gives."""
        lists = await self.open_lists()
        await lists.add_list("big@example.org")
        await lists.put_subscribers(
            "big@example.org", [Subscriber(f"u{i}@example.net") for i in range(50)]
        )
        threads: list[threading.Thread] = []
        real = csvio.export

        def spy(subs: list[Subscriber]) -> str:
            threads.append(threading.current_thread())
            return real(subs)

        with mock.patch.object(csvio, "export", spy):
            text = await lists.subscribers_csv("big@example.org")
        self.assertEqual(text, real(await lists.subscribers("big@example.org")))
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())

    async def test_csv_import_is_parsed_in_the_database_thread_all_or_none(self: Any) -> None:
        """WebAdmin's CSV import runs in the server: the text is parsed in the database's
        thread, not on the reactor; a bad row names its line and nothing is written."""
        lists = await self.open_lists()
        await lists.add_list("big@example.org")
        threads: list[threading.Thread] = []
        real = csvio.parse

        def spy(text: str) -> list[Subscriber]:
            threads.append(threading.current_thread())
            return real(text)

        with mock.patch.object(csvio, "parse", spy):
            n = await lists.import_csv("big@example.org", "a@example.net\nb@example.net\n")
        self.assertEqual(n, 2)
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())
        with self.assertRaisesRegex(ValueError, "line 2"):
            await lists.import_csv("big@example.org", "c@example.net\nnot an address\n")
        subs = await lists.subscribers("big@example.org")
        self.assertEqual([s.address for s in subs], ["a@example.net", "b@example.net"])
        await lists.import_csv("big@example.org", "c@example.net\n", replace=True)
        subs = await lists.subscribers("big@example.org")
        self.assertEqual([s.address for s in subs], ["c@example.net"])

    async def test_subscribers_become_objects_in_the_database_thread(self: Any) -> None:
        """The LIST agent's expansion reads every subscriber: the rows are made Subscribers in
        the database's thread, not on the reactor thread."""
        lists = await self.open_lists()
        await lists.add_list("big@example.org")
        await lists.put_subscribers("big@example.org", [Subscriber("a@example.net")])
        threads: list[threading.Thread] = []
        real = storage_lists._sub_of

        def spy(row: Any) -> Subscriber:
            threads.append(threading.current_thread())
            return real(row)

        with mock.patch.object(storage_lists, "_sub_of", spy):
            subs = await lists.subscribers("big@example.org")
        self.assertEqual([s.address for s in subs], ["a@example.net"])
        self.assertTrue(threads)
        self.assertNotIn(threading.main_thread(), threads)

    async def test_subscriber_page_counts_and_cuts_in_sql(self: Any) -> None:
        """A page of subscribers: the total, how many have the search text anywhere in their
        address (any case; % and _ are plain characters), and the first of those by address."""
        lists = await self.open_lists()
        await lists.add_list("big@example.org")
        await lists.put_subscribers(
            "big@example.org",
            [Subscriber(f"user{i:03d}@example.net") for i in range(120)]
            + [Subscriber("Odd_One@example.com"), Subscriber("pct%x@example.com")],
        )
        total, matching, subs = await lists.subscriber_page("big@example.org", "", 5)
        self.assertEqual((total, matching), (122, 122))
        self.assertEqual(
            [s.address for s in subs],
            ["Odd_One@example.com", "pct%x@example.com"]
            + [f"user{i:03d}@example.net" for i in range(3)],
        )
        total, matching, subs = await lists.subscriber_page("big@example.org", "USER11", 3)
        self.assertEqual((total, matching), (122, 10))
        self.assertEqual(
            [s.address for s in subs],
            ["user110@example.net", "user111@example.net", "user112@example.net"],
        )
        _, matching, subs = await lists.subscriber_page("big@example.org", "d_o", 10)
        self.assertEqual((matching, [s.address for s in subs]), (1, ["Odd_One@example.com"]))
        _, matching, _subs = await lists.subscriber_page("big@example.org", "%", 10)
        self.assertEqual(matching, 1)
        with self.assertRaises(NotFound):
            await lists.subscriber_page("none@example.org")

    async def test_held_and_digest_posts(self: Any) -> None:
        """A held post is taken once; digest posts are taken together with a new issue number."""
        lists = await self.open_lists()
        await lists.add_list("dev@example.org")
        data = b"Subject: hi\r\n\r\n\xff\x00binary\r\n"
        hid = await lists.keep("dev@example.org", HELD, "bob@example.net", "hi", data)
        [held] = await lists.kept("dev@example.org", HELD)
        self.assertEqual((held.id, held.sender, held.subject), (hid, "bob@example.net", "hi"))
        self.assertEqual((await lists.take("dev@example.org", HELD, hid)).data, data)
        self.assertIsNone(await lists.take("dev@example.org", HELD, hid))
        await lists.keep("dev@example.org", DIGEST, "a@x.org", "one", b"1")
        self.clock[0] += 1
        await lists.keep("dev@example.org", DIGEST, "a@x.org", "two", b"2")
        posts = await lists.kept("dev@example.org", DIGEST, with_data=True)
        self.assertEqual([p.data for p in posts], [b"1", b"2"])
        self.assertEqual(await lists.finish_digest("dev@example.org", [p.id for p in posts]), 1)
        self.assertEqual(await lists.kept("dev@example.org", DIGEST), [])
        self.assertEqual(await lists.finish_digest("dev@example.org", []), 1)
        lst = await lists.get_list("dev@example.org")
        self.assertEqual((lst.last_digest, lst.digest_number), (1001.0, 1))

    async def test_domain_removal_removes_its_lists(self: Any) -> None:
        """A list is an object of its domain: removing the domain removes the list."""
        store = await self.open_store()
        await store.add_domain("gone.org")
        lists = ListStore(store.db)
        await lists.add_list("dev@gone.org")
        await lists.put_subscribers("dev@gone.org", [Subscriber("a@b.org")])
        await store.remove_domain("gone.org", force=True)
        self.assertEqual(await lists.list_lists(), [])


class SQLiteListStoreTests(ListStoreTestsMixin, DatabaseCase):
    engine = "sqlite"


class PostgresListStoreTests(ListStoreTestsMixin, DatabaseCase):
    engine = "postgresql"
