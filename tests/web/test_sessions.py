"""Server-side web sessions (cgtwist.web.sessions) on a Clock: expiry and ends."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from cgtwist.web.rights import Rights
from cgtwist.web.sessions import SessionStore

USER = Rights(server_admin=False, domains=frozenset())


class SessionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limits = (60.0, 600.0, 3)
        self.store = SessionStore(self.clock, lambda: self.limits)

    def test_idle_session_expires(self) -> None:
        """A session unused for longer than the idle time is gone; use keeps it alive."""
        s = self.store.create("a@x.test", USER, "192.0.2.1")
        self.clock.advance(59)
        self.assertIs(self.store.get(s.id), s)
        self.clock.advance(59)
        self.assertIs(self.store.get(s.id), s)  # used 59 s ago: still alive
        self.clock.advance(61)
        self.assertIsNone(self.store.get(s.id))
        self.assertEqual(len(self.store), 0)

    def test_lifetime_ends_a_busy_session(self) -> None:
        s = self.store.create("a@x.test", USER, "192.0.2.1")
        for _ in range(10):
            self.clock.advance(59)
            self.assertIsNotNone(self.store.get(s.id))
        self.clock.advance(59)
        self.assertIsNone(self.store.get(s.id))

    def test_settings_apply_to_the_next_lookup(self) -> None:
        s = self.store.create("a@x.test", USER, "192.0.2.1")
        self.clock.advance(30)
        self.limits = (10.0, 600.0, 3)
        self.assertIsNone(self.store.get(s.id))

    def test_end_account_ends_all_of_its_sessions(self) -> None:
        a1 = self.store.create("a@x.test", USER, "192.0.2.1")
        a2 = self.store.create("a@x.test", USER, "192.0.2.2")
        b = self.store.create("b@x.test", USER, "192.0.2.1")
        self.assertEqual(self.store.end_account("a@x.test"), 2)
        self.assertIsNone(self.store.get(a1.id))
        self.assertIsNone(self.store.get(a2.id))
        self.assertIs(self.store.get(b.id), b)

    def test_table_is_bounded(self) -> None:
        """Beyond web.max_sessions the least recently used session ends."""
        first = self.store.create("a@x.test", USER, "192.0.2.1")
        second = self.store.create("b@x.test", USER, "192.0.2.1")
        self.store.create("c@x.test", USER, "192.0.2.1")
        self.store.get(first.id)  # used: now the most recent
        self.store.create("d@x.test", USER, "192.0.2.1")
        self.assertEqual(len(self.store), 3)
        self.assertIsNone(self.store.get(second.id))
        self.assertIsNotNone(self.store.get(first.id))

    def test_csrf_token_compares_exactly(self) -> None:
        s = self.store.create("a@x.test", USER, "192.0.2.1")
        self.assertTrue(s.csrf_ok(s.csrf))
        self.assertFalse(s.csrf_ok(""))
        self.assertFalse(s.csrf_ok(s.csrf[:-1]))
        self.assertNotEqual(s.id, s.csrf)


class HandleTests(unittest.TestCase):
    """What WebUser's Sessions page names a web session by, and ends it with."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = SessionStore(self.clock, lambda: (60.0, 600.0, 10))

    def test_handle_is_not_the_cookie_secret(self) -> None:
        s = self.store.create("a@x.test", USER, "192.0.2.1", secure=True)
        self.assertNotEqual(s.handle, s.id)
        self.assertNotIn(s.handle, s.id)
        self.assertTrue(s.secure)

    def test_only_the_owner_ends_a_session_by_its_handle(self) -> None:
        a = self.store.create("a@x.test", USER, "192.0.2.1")
        self.store.create("b@x.test", USER, "192.0.2.1")
        self.assertIsNone(self.store.end_handle("b@x.test", a.handle))
        self.assertIs(self.store.get(a.id), a)
        self.assertIs(self.store.end_handle("a@x.test", a.handle), a)
        self.assertIsNone(self.store.get(a.id))
        self.assertIsNone(self.store.end_handle("a@x.test", a.handle))

    def test_listing_touches_no_session(self) -> None:
        """Showing the Sessions page does not keep the account's other sessions alive, and an
        expired one is not listed."""
        old = self.store.create("a@x.test", USER, "192.0.2.1")
        self.clock.advance(50)
        new = self.store.create("a@x.test", USER, "192.0.2.2")
        self.assertEqual(self.store.of_account("a@x.test"), [old, new])
        self.clock.advance(20)
        self.assertEqual(self.store.of_account("a@x.test"), [new])
        self.assertIsNone(self.store.get(old.id))
