"""The server's list of logged-in mail sessions (cgtwist.activesessions): per account, and
ended only by the account it belongs to."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.activesessions import ActiveSessions


class ActiveSessionsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.now = 1000.0
        self.sessions = ActiveSessions(lambda: self.now)
        self.ended: list[tuple[str, str]] = []

    def add(self, account: str, protocol: str = "imap", ip: str = "192.0.2.1") -> str:
        s = self.sessions.add(
            account, protocol, ip, True, lambda why: self.ended.append((account, why))
        )
        self.now += 1
        return s.id

    def test_lists_an_accounts_sessions_oldest_first(self) -> None:
        """Each account sees its own sessions, with their protocol, address and start time,
        whatever case its name was given in."""
        first = self.add("Alice@Example.test", "pop3")
        second = self.add("alice@example.test", "imap", "192.0.2.2")
        self.add("bob@example.test")
        listed = self.sessions.of_account("alice@EXAMPLE.test")
        self.assertEqual([s.id for s in listed], [first, second])
        self.assertEqual(
            [(s.protocol, s.peer, s.since, s.secure) for s in listed],
            [("pop3", "192.0.2.1", 1000.0, True), ("imap", "192.0.2.2", 1001.0, True)],
        )
        self.assertEqual(len(self.sessions), 3)

    def test_only_the_owner_ends_a_session(self) -> None:
        """Knowing another account's session id is not enough to end it."""
        victim = self.add("alice@example.test")
        self.add("bob@example.test")
        self.assertIsNone(self.sessions.end("bob@example.test", victim, "no"))
        self.assertEqual(self.ended, [])
        self.assertEqual(len(self.sessions.of_account("alice@example.test")), 1)
        ended = self.sessions.end("alice@example.test", victim, "Ended by its owner")
        self.assertIsNotNone(ended)
        self.assertEqual(self.ended, [("alice@example.test", "Ended by its owner")])
        self.assertEqual(self.sessions.of_account("alice@example.test"), [])
        self.assertIsNone(self.sessions.end("alice@example.test", victim, "again"))

    def test_remove_forgets_the_account_once_empty(self) -> None:
        """A session's end (however often reported) leaves nothing behind."""
        sid = self.add("alice@example.test")
        (session,) = self.sessions.of_account("alice@example.test")
        self.assertEqual(session.id, sid)
        self.sessions.remove(session)
        self.sessions.remove(session)
        self.assertEqual(len(self.sessions), 0)
        self.assertEqual(self.sessions._by_account, {})
