"""Tests for ``cgtwist-admin rules`` (cgtwist.cli_rules), in-process against a fresh store."""

from __future__ import annotations

import os

from tests.test_cli import CLITestCase

SERVER = """version 1

rule "Junk by SPF"
  priority 7
  if SPF Result in "fail, softfail"
  do Tag Subject "[SPAM]"
  do Stop Processing

rule "Big"
  priority 3
  if Message Size greater than "1M"
  do Add Header "X-Big: yes"
"""
ACCOUNT = """version 1

rule "Lists"
  priority 5
  if Header Field is "List-Id: *"
  do Store in "Lists"

rule "Vacation"
  priority 2
  if Human Generated
  do Reply with "I am away until Monday."
"""
LIST_MAIL = (
    b"Authentication-Results: mail.example.com; spf=pass smtp.mailfrom=x@lists.example\r\n"
    b"From: dev@lists.example\r\nTo: bob@example.com\r\nList-Id: <dev.lists.example>\r\n"
    b"Subject: [dev] release\r\n\r\nbody\r\n"
)
SPAM = (
    b"Authentication-Results: mail.example.com; spf=softfail smtp.mailfrom=x@spam.example\r\n"
    b"From: x@spam.example\r\nTo: bob@example.com\r\nSubject: offer\r\n\r\nbody\r\n"
)


class RulesCLITests(CLITestCase):
    def write(self, name: str, content: str | bytes) -> str:
        path = os.path.join(self.base, name)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        return path

    async def test_set_show_roundtrip_per_scope(self) -> None:
        """What is set is shown back byte for byte, per scope, with its revision."""
        await self.cli("account", "add", "bob@example.com", "--password", "pw1")
        await self.cli("rules", "set", "--server", self.write("s.rules", SERVER))
        out, _ = await self.cli(
            "rules", "set", "--account", "bob@example.com", self.write("a.rules", ACCOUNT)
        )
        self.assertIn("2 rule(s), revision 1", out)
        out, err = await self.cli("rules", "show", "--server")
        self.assertEqual(out, SERVER)
        self.assertIn("revision 1", err)
        out, _ = await self.cli("rules", "show", "--account", "bob@example.com")
        self.assertEqual(out, ACCOUNT)
        _, err = await self.cli("rules", "show", "--domain", "example.com")
        self.assertIn("none set", err)
        out, _ = await self.cli("rules", "delete", "--server")
        self.assertIn("the Server Rules removed", out)
        _, err = await self.cli("rules", "show", "--server")
        self.assertIn("none set", err)
        self.assertIn("none set", await self.error("rules", "delete", "--server"))

    async def test_errors_name_file_and_line(self) -> None:
        """A bad rule set is refused with FILE:line: problem and nothing is stored."""
        bad = self.write("bad.rules", 'version 1\nrule "x"\n  if Frm is "a"\n  do Discard\n')
        err = await self.error("rules", "set", "--server", bad)
        self.assertIn("bad.rules:3: unknown condition", err)
        store = self.write("store.rules", ACCOUNT)
        err = await self.error("rules", "test", "--server", store)
        self.assertIn("Store in needs a mailbox", err)
        err = await self.error("rules", "show", "--account", "nobody@example.com")
        self.assertIn("no account", err)
        _, err = await self.cli("rules", "show", "--server")
        self.assertIn("none set", err)

    async def test_rules_allowed_refuses_at_set(self) -> None:
        """An account whose RulesAllowed is Filter Only cannot store a Reply or a Redirect."""
        await self.cli("account", "add", "bob@example.com", "--password", "pw1")
        await self.cli(
            "settings", "set", "--account", "bob@example.com", "rules.allowed", "Filter Only"
        )
        err = await self.error(
            "rules", "set", "--account", "bob@example.com", self.write("a.rules", ACCOUNT)
        )
        self.assertIn("Reply with needs RulesAllowed 'No Redirect'", err)

    async def test_stale_revision_is_refused(self) -> None:
        """--expect-revision protects an edit from overwriting a newer one."""
        path = self.write("s.rules", SERVER)
        await self.cli("rules", "set", "--server", path, "--expect-revision", "0")
        err = await self.error("rules", "set", "--server", path, "--expect-revision", "0")
        self.assertIn("changed meanwhile", err)

    async def test_test_prints_run_order(self) -> None:
        """rules test lists the rules by priority without storing anything."""
        out, _ = await self.cli("rules", "test", "--server", self.write("s.rules", SERVER))
        self.assertIn("valid as the Server Rules: 2 rule(s)", out)
        self.assertLess(out.index("Junk by SPF"), out.index("Big"))
        _, err = await self.cli("rules", "show", "--server")
        self.assertIn("none set", err)

    async def test_explain_refuses_what_smtp_would_refuse(self) -> None:
        """explain with an empty or malformed --to/--from or a --ip that is no address is one
        clear line, as the SMTP module would refuse it, not a route of "ERROR()"."""
        mail = self.write("m.eml", LIST_MAIL)
        err = await self.error("rules", "explain", mail, "--to", "")
        self.assertIn("not a recipient address: ''", err)
        err = await self.error("rules", "explain", mail, "--to", "bad address")
        self.assertIn("not a recipient address: 'bad address'", err)
        err = await self.error("rules", "explain", mail, "--to", "b@example.com", "--from", "a b")
        self.assertIn("not a sender address: 'a b'", err)
        err = await self.error("rules", "explain", mail, "--to", "b@example.com", "--ip", "x")
        self.assertIn("not an IP address: 'x'", err)
        err = await self.error("rules", "explain", "/nonexistent.eml", "--to", "b@example.com")
        self.assertEqual(err, "/nonexistent.eml: cannot read: No such file or directory")

    async def test_explain(self) -> None:
        """explain prints each rule, each condition's outcome and the actions; no delivery."""
        await self.cli("account", "add", "bob@example.com", "--password", "pw1")
        await self.cli("rules", "set", "--server", self.write("s.rules", SERVER))
        await self.cli(
            "rules", "set", "--account", "bob@example.com", self.write("a.rules", ACCOUNT)
        )
        out, _ = await self.cli(
            "rules",
            "explain",
            self.write("spam.eml", SPAM),
            "--to",
            "bob@example.com",
            "--from",
            "x@spam.example",
            "--ip",
            "192.0.2.9",
        )
        self.assertIn("rule 'Junk by SPF' (priority 7): FIRED", out)
        self.assertIn('if SPF Result in "fail, softfail": yes', out)
        self.assertIn("(Stop Processing: no lower rule is looked at)", out)
        self.assertIn("route of bob@example.com: LOCAL(bob@example.com)", out)
        self.assertIn("rule 'Lists' (priority 5): not fired", out)
        self.assertIn("server: Tag Subject [SPAM]", out)
        self.assertIn("account: Reply with I am away until Monday.", out)
        out, _ = await self.cli(
            "rules",
            "explain",
            self.write("list.eml", LIST_MAIL),
            "--to",
            "bob@example.com",
            "--from",
            "x-bounces@lists.example",
        )
        self.assertIn("rule 'Lists' (priority 5): FIRED", out)
        self.assertIn("account: Store in Lists", out)
        self.assertIn("if Human Generated: no  no (List-Id present", out)
        self.assertFalse(
            os.path.exists(os.path.join(self.base, "Accounts", "example.com", "bob", "new"))
        )

    async def test_explain_prints_rules_in_their_text_form(self) -> None:
        """explain writes conditions and actions as the text form does (one line each,
        JSON escapes), so a vacation text of several lines or with quotes stays one line
        that can be pasted back into a rules file."""
        await self.cli("account", "add", "bob@example.com", "--password", "pw1")
        vacation = (
            'version 1\n\nrule "Away"\n  priority 5\n  if Subject is not "say \\"hi\\""\n'
            '  do Reply with "Away until Monday.\\nUrgent: call \\"Ops\\"."\n'
        )
        await self.cli("rules", "set", "--account", "bob@example.com", self.write("v", vacation))
        out, _ = await self.cli(
            "rules",
            "explain",
            self.write("m.eml", SPAM),
            "--to",
            "bob@example.com",
            "--from",
            "x@spam.example",
        )
        self.assertIn('    if Subject is not "say \\"hi\\"": yes', out)
        self.assertIn('    do Reply with "Away until Monday.\\nUrgent: call \\"Ops\\"."\n', out)

    async def test_import_sieve(self) -> None:
        """A Sieve script becomes the account's rules; --dry-run prints them; a script with no
        exact equivalent is refused with FILE:line."""
        await self.cli("account", "add", "bob@example.com", "--password", "pw1")
        script = self.write(
            "f.sieve",
            'require "fileinto";\nif header :contains "List-Id" "dev" {\n  fileinto "Lists";\n}\n',
        )
        out, _ = await self.cli(
            "rules", "import-sieve", "--account", "bob@example.com", script, "--dry-run"
        )
        self.assertIn('if Header Field is "List-Id: *dev*"', out)
        _, err = await self.cli("rules", "show", "--account", "bob@example.com")
        self.assertIn("none set", err)
        out, _ = await self.cli("rules", "import-sieve", "--account", "bob@example.com", script)
        self.assertIn("stored from Sieve: 1 rule(s), revision 1", out)
        out, _ = await self.cli("rules", "show", "--account", "bob@example.com")
        self.assertIn('do Store in "Lists"', out)
        bad = self.write("bad.sieve", 'require "fileinto";\n\nif body :contains "x" { discard; }\n')
        err = await self.error("rules", "import-sieve", "--account", "bob@example.com", bad)
        self.assertIn("bad.sieve:3: test 'body' is not supported", err)
