"""Tests for cgtwist.types: the frozen values every layer shares."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.types import QueueName, Route


class QueueNameTests(unittest.TestCase):
    def test_parse_reads_what_str_writes(self) -> None:
        """A route's text (as kept in the spool) parses back into the same queue name."""
        for qn in (
            QueueName("LOCAL", "alice@example.com"),
            QueueName("SMTP", "[192.0.2.1]"),
            QueueName("PIPE", "prog (x)"),
            Route("SMTP", "example.org", "bob@example.org").queue_name,
        ):
            self.assertEqual(QueueName.parse(str(qn)), qn)

    def test_parse_refuses_other_text(self) -> None:
        """An empty or malformed route is not a queue name (callers fall back to the address)."""
        for text in (None, "", "LOCAL", "LOCAL(x", "(x)", "LOCAL(x)y"):
            self.assertIsNone(QueueName.parse(text), text)
