"""The quota report of cgtwist.admin.quota: the limits in force with where each comes from,
and the usage from the source the edge injects (the CLI's Maildir scan, the server's count)."""

from __future__ import annotations

import os

from twisted.internet import defer

from cgtwist.admin import AdminError
from cgtwist.admin.quota import QuotaAdmin, maildir_usage
from cgtwist.mailstore.quota import Usage
from tests.admin.test_operations import AdminCase


class QuotaReportTests(AdminCase):
    async def test_limits_with_their_source_and_the_injected_usage(self) -> None:
        """An account's own storage limit, its domain's message limit and the default grace
        are each reported with where they come from, beside the usage the source counts
        (asked with the account's name and domain)."""
        admin = await self.admin()
        await admin.add_account("alice", "example.com", "alice-secret-1")
        await admin.set_setting("quota.storage", 5000, account=("alice", "example.com"))
        await admin.set_setting("quota.messages", 40, domain="example.com")
        asked: list[tuple[str, str]] = []

        async def usage(name: str, domain: str) -> Usage:
            asked.append((name, domain))
            return Usage(octets=1250, messages=3)

        report = await QuotaAdmin(admin.effective_settings, usage).report("alice", "example.com")
        self.assertEqual(asked, [("alice", "example.com")])
        self.assertEqual(
            (report.storage.limit, report.storage.source, report.storage.used),
            (5000, "account", 1250),
        )
        self.assertEqual(report.storage.percent, 25)
        self.assertEqual(
            (report.messages.limit, report.messages.source, report.messages.used), (40, "domain", 3)
        )
        self.assertEqual((report.grace.limit, report.grace.source), (86400, "default"))
        self.assertEqual(report.error, "")

    async def test_missing_account_is_refused(self) -> None:
        admin = await self.admin()
        with self.assertRaises(AdminError):
            await admin.quota.report("nobody", "example.com")

    async def test_maildir_scan_runs_in_the_given_thread_runner(self) -> None:
        """The CLI's source counts the Maildir through the runner it is given (a thread
        there), never inline: the messages of cur/ and new/ with their sizes."""
        base = self.mktemp()
        maildir = os.path.join(base, "Domains", "example.com", "alice", "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, sub))
        with open(os.path.join(maildir, "new", "1.key,S=100"), "wb") as f:
            f.write(b"x" * 100)
        with open(os.path.join(maildir, "cur", "2.key:2,S"), "wb") as f:
            f.write(b"y" * 30)
        ran: list[object] = []

        def in_thread(fn: object, *args: object) -> defer.Deferred[Usage]:
            ran.append(fn)
            assert callable(fn)
            return defer.succeed(fn(*args))

        source = maildir_usage(base, in_thread)
        self.assertEqual(await source("alice", "example.com"), Usage(130, 2))
        self.assertEqual(len(ran), 1)

    async def test_unreadable_maildir_reports_an_error_not_a_traceback(self) -> None:
        """A Maildir that cannot be read gives the report's ``error`` (the CLI prints it,
        the account page shows it) and no usage figure."""
        admin = await self.admin()
        await admin.add_account("bob", "example.com", "bob-secret-12")
        failing = maildir_usage("/base", lambda fn, *a: defer.fail(OSError("denied")))
        report = await QuotaAdmin(admin.effective_settings, failing).report("bob", "example.com")
        self.assertIn("cannot count the Maildir", report.error)
        self.assertIsNone(report.storage.used)
        self.assertNotIn("storage_used", report.as_dict())
