"""Tests for ``cgtwist-admin list`` (cgtwist.cli_lists), run in-process on a fresh store."""

from __future__ import annotations

import os

from tests.test_cli import CLITestCase


class ListCLITests(CLITestCase):
    async def test_add_show_set_remove(self) -> None:
        """A list is made in one of our domains with an existing owner, shown, changed with
        key=value (a bad key or value is one error line), and removed."""
        await self.cli("account", "add", "alice@example.com", "--password", "pw")
        out, _ = await self.cli(
            "list",
            "add",
            "dev@example.com",
            "--owner",
            "alice@example.com",
            "--set",
            "subject_tag=[dev]",
            "--set",
            "size_limit=1000",
        )
        self.assertIn("list dev@example.com created", out)
        out, _ = await self.cli("list", "show", "dev@example.com")
        self.assertIn("  owner: 'alice@example.com'", out)
        self.assertIn("  subject_tag: '[dev]'", out)
        self.assertIn("  size_limit: 1000", out)
        out, _ = await self.cli(
            "list", "set", "dev@example.com", "policy=moderated", "personalize=true"
        )
        self.assertIn("  policy: 'moderated'", out)
        self.assertIn("  personalize: True", out)
        self.assertIn("policy", await self.error("list", "set", "dev@example.com", "policy=all"))
        self.assertIn("colour", await self.error("list", "set", "dev@example.com", "colour=red"))
        self.assertIn(
            "no such account",
            await self.error("list", "add", "ops@example.com", "--owner", "bob@example.com"),
        )
        self.assertIn("is an account", await self.error("list", "add", "alice@example.com"))
        out, _ = await self.cli("list", "show")
        self.assertEqual(out, "dev@example.com  moderated  \n")
        await self.cli("list", "remove", "dev@example.com")
        self.assertIn("does not exist", await self.error("list", "show", "dev@example.com"))

    async def test_one_name_one_object(self) -> None:
        """A list shares its domain's names with accounts, aliases, forwarders and groups: each
        refuses a name another holds, whichever is made first, since the Router would
        otherwise send the mail of one of them silently to the other."""
        await self.cli("list", "add", "dev@example.com")
        await self.cli("group", "add", "team@example.com", "alice")
        await self.cli("forwarder", "add", "friend@example.com", "x@example.org")
        await self.cli("alias", "add", "info", "alice@example.com")
        for command in (
            ("account", "add", "dev@example.com", "--password", "Secret-pass-1"),
            ("alias", "add", "dev@example.com", "alice@example.com"),
            ("group", "add", "dev@example.com", "alice"),
            ("forwarder", "add", "dev@example.com", "x@example.org"),
        ):
            self.assertIn("dev@example.com is a mailing list", await self.error(*command))
        self.assertIn(
            "is a forwarder or group", await self.error("list", "add", "team@example.com")
        )
        self.assertIn(
            "is a forwarder or group", await self.error("list", "add", "friend@example.com")
        )
        self.assertIn("is an alias", await self.error("list", "add", "info@example.com"))
        self.assertIn("already exists", await self.error("list", "add", "dev@example.com"))
        out, _ = await self.cli("router", "test", "team@example.com")
        self.assertIn("GROUP(team@example.com)", out)

    async def test_subscribers_import_export(self) -> None:
        """Subscribe, change the mode, unsubscribe; a CSV export imports back as it was; a
        bad CSV row is reported by line and nothing of it is imported."""
        await self.cli("list", "add", "dev@example.com")
        await self.cli("list", "subscribe", "dev@example.com", "bob@example.net")
        await self.cli(
            "list", "subscribe", "dev@example.com", "carol@example.net", "--mode", "digest"
        )
        out, _ = await self.cli("list", "subscribers", "dev@example.com")
        self.assertEqual(out, "bob@example.net  feed  active\ncarol@example.net  digest  active\n")
        path = os.path.join(self.base, "subs.csv")
        await self.cli("list", "export", "dev@example.com", path)
        await self.cli("list", "unsubscribe", "dev@example.com", "bob@example.net")
        self.assertIn(
            "not subscribed",
            await self.error("list", "unsubscribe", "dev@example.com", "bob@example.net"),
        )
        out, _ = await self.cli("list", "import", "dev@example.com", path, "--replace")
        self.assertIn("2 subscriber(s) imported", out)
        out, _ = await self.cli("list", "export", "dev@example.com")
        with open(path) as f:
            self.assertEqual(out, f.read())
        err = await self.error(
            "list", "import", "dev@example.com", "-", stdin="a@b.org\nnot an address\n"
        )
        self.assertIn("line 2", err)
        out, _ = await self.cli("list", "subscribers", "dev@example.com", "--mode", "digest")
        self.assertEqual(out, "carol@example.net  digest  active\n")

    async def test_files_and_domains_that_do_not_exist(self) -> None:
        """A CSV file that cannot be read or written, or a domain that does not exist, is one
        plain line (no errno, no traceback), and nothing changes."""
        await self.cli("list", "add", "dev@example.com")
        err = await self.error("list", "import", "dev@example.com", "/nonexistent.csv")
        self.assertEqual(err, "/nonexistent.csv: cannot read: No such file or directory")
        err = await self.error("list", "export", "dev@example.com", "/nonexistent/dir/x.csv")
        self.assertEqual(
            err,
            "/nonexistent/dir/x.csv: cannot write: No such file or directory",
        )
        err = await self.error("list", "show", "--domain", "nowhere.test")
        self.assertEqual(err, "domain nowhere.test does not exist")

    async def test_approve_needs_the_server(self) -> None:
        """Approve and reject are the running server's (it distributes through the spool):
        with none running they fail with one line; held prints nothing for an empty list."""
        await self.cli("list", "add", "dev@example.com")
        out, _ = await self.cli("list", "held", "dev@example.com")
        self.assertEqual(out, "")
        self.assertIn("not running", await self.error("list", "approve", "dev@example.com", "abc"))
