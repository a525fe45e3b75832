"""Tests for cgtwist-admin (cgtwist.cli), run as a real subprocess against a temporary base dir."""

from __future__ import annotations

import argparse
import io
import json
import os
import pwd
import subprocess
import sys
import types
from typing import Any, Optional

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from cgtwist import cli, config, control
from cgtwist.storage.store import ENV_POSTMASTER_PASSWORD, open_store
from tests.storage.dbcase import DatabaseCase, fast_hasher, temp_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CLITestCase(unittest.TestCase):
    """A fresh base directory with a config file naming example.com as the main domain.

    ``cli()`` runs cgtwist-admin in-process (fast); ``run_cli()`` as a real subprocess.
    """

    postmaster_password: Optional[str] = "pm"
    init_store = True  # run ``cgtwist-admin init`` first, as an administrator would

    def setUp(self) -> Any:
        self.base = temp_dir(self)
        self.conf = os.path.join(self.base, "cgtwist.conf")
        with open(self.conf, "w") as f:
            f.write(
                '[server]\nbase_dir = "."\nmain_domain = "example.com"\n'
                'hostname = "mail.example.com"\n'
            )
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("CGTWIST_CONFIG", ENV_POSTMASTER_PASSWORD)
        }
        self.env["PYTHONPATH"] = ROOT + os.pathsep + self.env.get("PYTHONPATH", "")
        if self.postmaster_password is not None:
            self.env[ENV_POSTMASTER_PASSWORD] = self.postmaster_password
        old = os.environ.get(ENV_POSTMASTER_PASSWORD)
        self.addCleanup(_restore_env, ENV_POSTMASTER_PASSWORD, old)
        os.environ.pop(ENV_POSTMASTER_PASSWORD, None)
        if self.postmaster_password is not None:
            os.environ[ENV_POSTMASTER_PASSWORD] = self.postmaster_password
        self.hasher = fast_hasher()
        if self.init_store:
            return defer.ensureDeferred(self.cli("init"))
        return None

    async def cli(self, *args: str, stdin: str = "", code: int = 0) -> tuple[str, str]:
        """Run cgtwist-admin in-process; check the exit status and that no traceback shows."""
        out, err = io.StringIO(), io.StringIO()
        rc = await cli.execute(
            reactor, ["--config", self.conf, *args], out, err, io.StringIO(stdin), self.hasher
        )
        self.assertNotIn("Traceback", err.getvalue())
        self.assertEqual(rc, code, f"{args}: {out.getvalue()!r} {err.getvalue()!r}")
        return out.getvalue(), err.getvalue()

    async def error(self, *args: str, stdin: str = "") -> str:
        """Run a command that must fail: exit status 1 and exactly one line on stderr."""
        _, err = await self.cli(*args, stdin=stdin, code=1)
        return _one_error_line(self, err)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cgtwist.cli", "--config", self.conf, *args]

    def run_cli(self, *args: str, code: int = 0) -> tuple[str, str]:
        """Run the real cgtwist-admin process; check its status and that no traceback shows."""
        p = subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.base,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        self.assertNotIn("Traceback", p.stderr)
        self.assertEqual(p.returncode, code, f"{args}: {p.stdout!r} {p.stderr!r}")
        return p.stdout, p.stderr

    async def verify(self, address: str, password: str) -> Optional[str]:
        """Log in through the store, as the running server would, after the CLI's change."""
        store = await open_store(
            "sqlite:///" + os.path.join(self.base, "cgtwist.db"),
            "example.com",
            reactor,
            hasher=self.hasher,
        )
        try:
            name, _, domain = address.partition("@")
            account = await store.verify_password(name, domain, password)
            return account.address if account else None
        finally:
            store.close()


def _restore_env(key: str, value: Optional[str]) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _one_error_line(case: unittest.TestCase, err: str) -> str:
    lines = err.splitlines()
    case.assertEqual(len(lines), 1, err)
    case.assertTrue(lines[0].startswith("cgtwist-admin: error: "), err)
    return lines[0][len("cgtwist-admin: error: ") :]


class ProcessTests(CLITestCase):
    """The real console script: init, no store, exit statuses, one-line errors."""

    postmaster_password = None
    init_store = False

    async def test_init_creates_the_store_and_prints_the_postmaster_password_once(self) -> None:
        """``init`` creates the store and says so, with the generated postmaster password;
        run again it changes nothing and prints no password."""
        out, err = self.run_cli("init")
        db = os.path.join(self.base, "cgtwist.db")
        self.assertIn(f"created the store at sqlite:{db}\n", out)
        self.assertIn("main domain: example.com\n", out)
        self.assertIn("created postmaster@example.com (administrator) with password: ", out)
        password = out.split("with password: ")[1].split()[0]
        self.assertEqual(
            await self.verify("postmaster@example.com", password), "postmaster@example.com"
        )
        out2, err2 = self.run_cli("init")
        self.assertEqual(out2, "")
        self.assertEqual(err2, f"cgtwist-admin: the store at sqlite:{db} exists already\n")
        out, _ = self.run_cli("domain", "list")
        self.assertEqual(out, "example.com  [main]\n")
        _, err = self.run_cli("domain", "add", "example.org")
        self.assertNotIn("password", err)
        self.assertIn("the server is not running; the change applies when it starts", err)

    def test_commands_without_a_store_create_nothing(self) -> None:
        """A read-only ``domain list`` (or any change) on a base directory without a store
        says "no store at PATH" and exits 1; it does not create a store with a random
        postmaster password nobody saw."""
        before = sorted(os.listdir(self.base))
        for args in (
            ("domain", "list"),
            ("account", "add", "alice", "--password", "x"),
            ("settings", "show"),
        ):
            _, err = self.run_cli(*args, code=1)
            db = os.path.join(self.base, "cgtwist.db")
            self.assertTrue(_one_error_line(self, err).startswith(f"no store at sqlite:{db} "), err)
            self.assertIn("init", err)
        self.assertEqual(sorted(os.listdir(self.base)), before)

    def test_files_are_private_to_the_user(self) -> None:
        """Run from a shell with umask 022, cgtwist-admin creates the store 0600 ([server]
        umask); a store an older version left 0644 is tightened, saying so."""
        env = dict(self.env)
        p = subprocess.run(
            ["sh", "-c", 'umask 022 && exec "$@"', "sh", *self.argv("init")],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.base,
            timeout=60,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        db = os.path.join(self.base, "cgtwist.db")
        self.assertEqual(os.stat(db).st_mode & 0o777, 0o600)
        os.chmod(db, 0o644)
        p = subprocess.run(
            ["sh", "-c", 'umask 022 && exec "$@"', "sh", *self.argv("domain", "list")],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.base,
            timeout=60,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"cgtwist-admin: file mode of {db} tightened from 0644 to 0600", p.stderr)
        self.assertEqual(os.stat(db).st_mode & 0o777, 0o600)

    def test_exit_statuses(self) -> None:
        """Usage errors exit 2; refused changes and a broken config exit 1 with one line."""
        _, err = self.run_cli("account", "frobnicate", code=2)
        self.assertIn("usage:", err)
        self.run_cli("init")
        _, err = self.run_cli("account", "add", "../x", code=1)
        self.assertIn("invalid account name", _one_error_line(self, err))
        with open(self.conf, "a") as f:
            f.write("[log]\nbogus = 1\n")
        _, err = self.run_cli("domain", "list", code=1)
        self.assertEqual(err, f"{self.conf}:6: log.bogus: unknown key\n")


class BootstrapTests(CLITestCase):
    init_store = False

    async def test_postmaster_password_from_environment(self) -> None:
        """With CGTWIST_POSTMASTER_PASSWORD set no password is printed and that one works."""
        out, err = await self.cli("init")
        self.assertIn("with the password in $CGTWIST_POSTMASTER_PASSWORD", out)
        self.assertNotIn("pm", (out + err).replace("postmaster", "").replace("cgtwist-admin", ""))
        self.assertEqual(
            await self.verify("postmaster@example.com", "pm"), "postmaster@example.com"
        )


class AccountTests(CLITestCase):
    async def test_account_lifecycle(self) -> None:
        """add (given, stdin, generated), list, show, passwd, remove: each visible to logins."""
        await self.cli(
            "account", "add", "alice", "--password", "alice-pw", "--real-name", "Alice Liddell"
        )
        await self.cli("domain", "add", "Example.ORG")
        await self.cli(
            "account", "add", "bob%example.org", "--password-stdin", "--admin", stdin="bob-pw\n"
        )
        out, _ = await self.cli("account", "add", "carol@example.org", "--services", "mail,imap")
        self.assertTrue(out.startswith("password for carol@example.org: "), out)
        carol_pw = out.split(": ", 1)[1].strip()
        self.assertGreaterEqual(len(carol_pw), 12)

        out, _ = await self.cli("account", "list")
        self.assertEqual(
            out,
            "alice@example.com  Alice Liddell\npbx@example.com  PBX  [service]\n"
            "postmaster@example.com  Postmaster  [admin]\n",
        )
        out, _ = await self.cli("account", "list", "example.org")
        self.assertEqual(out, "bob@example.org  [admin]\ncarol@example.org\n")
        info = json.loads((await self.cli("account", "show", "carol@example.org"))[0])
        self.assertEqual(info["services"], ["imap", "mail"])
        # usage counted from the Maildir (none yet) beside the quota settings in force
        self.assertEqual(
            info["quota"],
            {
                "storage_used": 0,
                "storage_limit": 0,
                "messages_used": 0,
                "messages_limit": 0,
                "grace": 86400,
            },
        )
        self.assertNotIn("password", info)
        self.assertNotIn(carol_pw, json.dumps(info))

        self.assertEqual(await self.verify("alice@example.com", "alice-pw"), "alice@example.com")
        self.assertEqual(await self.verify("bob@example.org", "bob-pw"), "bob@example.org")
        self.assertEqual(await self.verify("carol@example.org", carol_pw), "carol@example.org")

        await self.cli("account", "passwd", "alice", "--password-stdin", stdin="new-pw\n")
        self.assertIsNone(await self.verify("alice@example.com", "alice-pw"))
        self.assertEqual(await self.verify("alice@example.com", "new-pw"), "alice@example.com")

        await self.cli("account", "set", "alice", "--disable")
        self.assertIsNone(await self.verify("alice@example.com", "new-pw"))
        await self.cli("account", "set", "alice", "--enable", "--real-name", "A. L.")
        self.assertEqual(await self.verify("alice@example.com", "new-pw"), "alice@example.com")

        await self.cli("account", "remove", "alice@example.com")
        self.assertIsNone(await self.verify("alice@example.com", "new-pw"))

    async def test_import_password_hash(self) -> None:
        """--password-hash imports a Dovecot SHA512-CRYPT hash; logins work with it."""
        stored = (
            "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIF"
            "NjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        )
        out, _ = await self.cli("account", "add", "alice", "--password-hash", stored)
        self.assertEqual(out, "")
        self.assertEqual(
            await self.verify("alice@example.com", "Hello world!"), "alice@example.com"
        )
        await self.cli("account", "passwd", "alice", "--password", "x")
        await self.cli("account", "passwd", "alice", "--password-hash", stored)
        self.assertEqual(
            await self.verify("alice@example.com", "Hello world!"), "alice@example.com"
        )
        self.assertIn(
            "unsupported password hash",
            await self.error("account", "add", "bob", "--password-hash", "plain"),
        )

    async def test_errors(self) -> None:
        """Bad input is one clear line on stderr and exit status 1, never a traceback."""
        await self.cli("account", "add", "alice", "--password", "x")
        self.assertEqual(
            await self.error("account", "add", "alice", "--password", "y"),
            "account alice@example.com already exists",
        )
        self.assertEqual(
            await self.error("account", "add", "bob@nowhere.org", "--password", "y"),
            "domain nowhere.org does not exist",
        )
        self.assertIn("invalid account name", await self.error("account", "add", "../x"))
        self.assertIn("invalid", await self.error("account", "add", "a/b@example.com"))
        self.assertIn("invalid", await self.error("domain", "add", "../etc"))
        self.assertIn(
            "unknown service", await self.error("account", "add", "z", "--services", "ftp")
        )
        self.assertIn("does not exist", await self.error("account", "remove", "ghost"))
        self.assertIn(
            "does not exist", await self.error("account", "passwd", "ghost", "--password", "x")
        )
        self.assertIn("main domain", await self.error("domain", "remove", "example.com", "--force"))
        self.assertIn("administrator", await self.error("account", "remove", "postmaster"))
        self.assertIn(
            "no password", await self.error("account", "passwd", "alice", "--password-stdin")
        )
        self.assertIn(
            "must not be empty", await self.error("account", "passwd", "alice", "--password", "")
        )

    async def test_database_owned_by_base_dir_owner(self) -> None:
        """Run as root, the database it creates belongs to the base directory's owner, so a
        server that dropped root (twistd --uid) can still write it."""
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root")
        os.chown(self.base, 4321, 4321)
        await self.cli("domain", "list")
        self.assertEqual(os.stat(os.path.join(self.base, "cgtwist.db")).st_uid, 4321)

    async def test_database_unavailable(self) -> None:
        """A database that cannot be opened is one line naming the problem, exit status 1."""
        db = os.path.join(self.base, "cgtwist.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        os.makedirs(db)
        err = await self.error("domain", "list")
        self.assertTrue(err.startswith("database unavailable: "), err)

    async def test_usage_errors_exit_2(self) -> None:
        """Unknown groups, actions or missing arguments are usage errors (exit status 2)."""
        for args in (
            ("bogus",),
            ("account",),
            ("account", "frobnicate"),
            ("alias", "add", "x"),
            ("account", "add", "a", "--password", "x", "--password-stdin"),
        ):
            _, err = await self.cli(*args, code=2)
            self.assertIn("usage:", err)


class DomainAliasSettingsTests(CLITestCase):
    async def test_domains(self) -> None:
        """Domains and domain aliases are added, listed and removed; non-empty needs --force."""
        await self.cli("domain", "add", "example.org")
        await self.cli("domain", "add", "example.net", "--alias-of", "example.org")
        out, _ = await self.cli("domain", "list")
        self.assertEqual(out, "example.com  [main]\nexample.org  (aliases: example.net)\n")
        await self.cli("account", "add", "bob@example.net", "--password", "x")
        self.assertEqual(await self.verify("bob@example.org", "x"), "bob@example.org")
        self.assertIn("1 account", await self.error("domain", "remove", "example.org"))
        await self.cli("domain", "set", "example.org", "--services", "mail")
        info = json.loads((await self.cli("domain", "show", "example.org"))[0])
        self.assertEqual(info["services"], ["mail"])
        await self.cli("domain", "remove", "example.net")
        await self.cli("domain", "remove", "example.org", "--force")
        self.assertEqual((await self.cli("domain", "list"))[0], "example.com  [main]\n")
        self.assertIn("already exists", await self.error("domain", "add", "example.com"))

    async def test_aliases(self) -> None:
        """Aliases are added, listed and removed; clashes and bad targets are refused."""
        await self.cli("account", "add", "alice", "--password", "x")
        await self.cli("alias", "add", "info", "alice")
        await self.cli("alias", "add", "sales@example.com", "someone@elsewhere.org")
        out, _ = await self.cli("alias", "list")
        self.assertEqual(
            out,
            "info@example.com -> alice@example.com\nsales@example.com -> someone@elsewhere.org\n",
        )
        self.assertIn("is an account", await self.error("alias", "add", "alice", "x@y.org"))
        self.assertIn("invalid alias target", await self.error("alias", "add", "a", "b c@d.org"))
        await self.cli("alias", "remove", "info")
        self.assertIn("does not exist", await self.error("alias", "remove", "info"))
        self.assertEqual(
            (await self.cli("alias", "list", "example.com"))[0],
            "sales@example.com -> someone@elsewhere.org\n",
        )

    async def test_settings(self) -> None:
        """settings show/set/unset validate values (JSON) and report defaults."""
        out, _ = await self.cli("settings", "show")
        self.assertIn("smtp.max_recipients = 100  (default)\n", out)
        await self.cli("settings", "set", "smtp.max_recipients", "5")
        await self.cli("settings", "set", "queue.retry_schedule", "[10, 20]")
        out, _ = await self.cli("settings", "show", "smtp.max_recipients")
        self.assertTrue(out.startswith("smtp.max_recipients = 5\n"), out)
        self.assertIn(
            "non-negative integer",
            await self.error("settings", "set", "smtp.max_recipients", "lots"),
        )
        self.assertIn("unknown setting", await self.error("settings", "set", "no.such", "1"))
        self.assertIn("unknown setting", await self.error("settings", "show", "no.such"))
        await self.cli("settings", "unset", "smtp.max_recipients")
        out, _ = await self.cli("settings", "show", "smtp.max_recipients")
        self.assertTrue(out.startswith("smtp.max_recipients = 100  (default)\n"), out)

    async def test_account_and_domain_settings_nothing_reads_are_refused(self) -> None:
        """``settings set --account/--domain`` stores only keys the server reads (today the
        account's ``admin`` flag and ``smtp.send_as``); any other key is refused with one line naming it and what
        is allowed, and nothing is stored. ``unset`` still removes any key."""
        await self.cli("account", "add", "alice", "--password", "x")
        self.assertEqual(
            await self.error("settings", "set", "nonsense.key", "1", "--account", "alice"),
            "unknown account setting 'nonsense.key' (known: admin, domain_admin, "
            "mail.max_message_size, password.min_classes, password.min_length, "
            "quota.grace, quota.max_folders, quota.messages, quota.storage, rules.allowed, "
            "smtp.send_as)",
        )
        self.assertEqual(
            await self.error(
                "settings", "set", "MaxAccountSize", '"10M"', "--domain", "example.com"
            ),
            "unknown domain setting 'MaxAccountSize' (known: mail.max_message_size, "
            "password.min_classes, password.min_length, quota.grace, quota.max_folders, "
            "quota.messages, quota.storage, rules.allowed)",
        )
        self.assertIn(
            "a server setting: set it without --domain/--account",
            await self.error(
                "settings", "set", "smtp.max_message_size", "1000", "--domain", "example.com"
            ),
        )
        self.assertIn(
            "must be true or false",
            await self.error("settings", "set", "admin", '"yes"', "--account", "alice"),
        )
        self.assertEqual((await self.cli("settings", "show", "--account", "alice"))[0], "")
        self.assertEqual((await self.cli("settings", "show", "--domain", "example.com"))[0], "")
        await self.cli("settings", "set", "admin", "true", "--account", "alice")
        self.assertEqual(
            (await self.cli("settings", "show", "--account", "alice"))[0], "admin = true\n"
        )
        self.assertIn("alice@example.com  [admin]", (await self.cli("account", "list"))[0])
        await self.cli("settings", "unset", "admin", "--account", "alice")
        self.assertEqual((await self.cli("settings", "show", "--account", "alice"))[0], "")

    async def test_unsupported_services_and_listeners_are_refused(self) -> None:
        """The webmail service and an https listener protocol do nothing in cgtwist (HTTPS is
        http with tls implicit): they are refused with one line saying what is allowed, as is
        a listener key nothing reads."""
        self.assertEqual(
            await self.error(
                "account", "add", "bob", "--password", "x", "--services", "mail,webmail"
            ),
            "unknown service 'webmail' (known: mail, pop, imap, relay, roaming)",
        )
        self.assertIn(
            "unknown service 'webmail'",
            await self.error("domain", "set", "example.com", "--services", "webmail"),
        )
        https = '[{"protocol": "https", "address": "127.0.0.1", "port": 9010}]'
        self.assertEqual(
            await self.error("settings", "set", "listeners", https),
            "listener protocol must be smtp, pop3, imap or http, not 'https' "
            "(HTTPS is http with tls implicit)",
        )
        typo = '[{"protocol": "smtp", "adress": "127.0.0.1", "port": 2525}]'
        self.assertEqual(
            await self.error("settings", "set", "listeners", typo),
            "unknown listener key 'adress' (known: protocol, address, port, tls, "
            "submission, allow_plain_auth)",
        )
        self.assertIn("(default)", (await self.cli("settings", "show", "listeners"))[0])


class NodeSettingsTests(CLITestCase):
    """Node settings (docs/CLUSTER.md): this node's by default, another's with --node."""

    async def test_listeners_per_node(self) -> None:
        """listeners set without --node are this node's ("default" here); --node reaches
        another node's row, shown by 'settings show --node' and 'node list'."""
        mine = '[{"protocol": "smtp", "address": "127.0.0.2", "port": 2525}]'
        theirs = '[{"protocol": "imap", "address": "127.0.0.3", "port": 2143}]'
        await self.cli("settings", "set", "listeners", mine)
        await self.cli("settings", "set", "listeners", theirs, "--node", "mx2")
        out, _ = await self.cli("settings", "show", "listeners")
        self.assertIn('"127.0.0.2"', out.splitlines()[0])
        self.assertIn("(node default)", out.splitlines()[0])
        out, _ = await self.cli("settings", "show", "listeners", "--node", "mx2")
        self.assertIn('"127.0.0.3"', out.splitlines()[0])
        self.assertIn("(node mx2)", out.splitlines()[0])
        out, _ = await self.cli("node", "list")
        self.assertEqual(
            [line.split()[0] for line in out.splitlines() if not line.startswith(" ")],
            ["default", "mx2"],
        )
        self.assertIn("(this node)", out.splitlines()[0])
        await self.cli("settings", "unset", "listeners", "--node", "mx2")
        out, _ = await self.cli("settings", "show", "listeners", "--node", "mx2")
        self.assertIn("(default)", out)
        await self.cli("settings", "set", "smtp.workers", "2", "--node", "mx3")
        await self.cli("node", "remove", "mx3")
        out, _ = await self.cli("node", "list")
        self.assertNotIn("mx3", out)
        self.assertIn("does not exist", await self.error("node", "remove", "mx3"))
        self.assertIn("own node", await self.error("node", "remove", "default"))

    async def test_cluster_setting_with_node_is_refused(self) -> None:
        """A cluster-wide setting cannot be set for one node: one line says why."""
        self.assertIn(
            "cluster-wide",
            await self.error("settings", "set", "smtp.max_recipients", "5", "--node", "mx2"),
        )
        self.assertIn(
            "invalid node name",
            await self.error("settings", "set", "listeners", "[]", "--node", "MX 2"),
        )


class NotifyTests(CLITestCase):
    """With a server listening on the control socket, each change is announced at once.

    The CLI runs as a subprocess: its control call blocks, and the server is this reactor.
    """

    def setUp(self) -> Any:
        d = super().setUp()
        self.requests: list[dict[str, Any]] = []
        self.reply: dict[str, Any] = {}

        self.listeners: list[dict[str, Any]] = []

        def reload(req: Any) -> dict[str, Any]:
            self.requests.append(dict(req))
            if self.reply:
                raise RuntimeError(self.reply["error"])
            return {"listeners": self.listeners}

        sock = os.path.join(self.base, "cgtwist.ctl")
        port = reactor.listenUNIX(sock, control.ControlFactory({"reload": reload}))  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return d

    async def run_async(self, *args: str) -> tuple[bytes, bytes, int]:
        return await getProcessOutputAndValue(
            sys.executable, self.argv(*args)[1:], env=self.env, path=self.base
        )

    async def test_reload_sent(self) -> None:
        """Each change sends reload naming its group, who made it and what it was (for the
        server's log), and no "not running" note appears."""
        out, err, code = await self.run_async("domain", "add", "example.org")
        self.assertEqual(code, 0, err)
        self.assertNotIn(b"not running", err)
        await self.run_async("account", "add", "a@example.org", "--password", "x")
        await self.run_async("settings", "set", "smtp.max_recipients", "7")
        by = f"cgtwist-admin ({pwd.getpwuid(os.geteuid()).pw_name})"
        self.assertEqual(
            self.requests,
            [
                {
                    "cmd": "reload",
                    "what": "domain",
                    "by": by,
                    "changes": ["domain example.org created"],
                },
                {
                    "cmd": "reload",
                    "what": "account",
                    "by": by,
                    "changes": ["account a@example.org created"],
                },
                {
                    "cmd": "reload",
                    "what": "settings",
                    "by": by,
                    "changes": ["setting smtp.max_recipients set to 7"],
                },
            ],
        )

    async def test_group_changes_name_who_made_them(self) -> None:
        """Forwarder and group changes reach the server's log as every other change does:
        each reload names who made it and what it was."""
        await self.run_async("domain", "add", "example.org")
        out, err, code = await self.run_async("group", "add", "team@example.org", "a", "b")
        self.assertEqual(code, 0, err)
        await self.run_async("group", "set", "team@example.org", "c")
        await self.run_async("forwarder", "add", "fw@example.org", "x@example.net")
        await self.run_async("group", "remove", "team@example.org")
        by = f"cgtwist-admin ({pwd.getpwuid(os.geteuid()).pw_name})"
        self.assertEqual(
            [(r["what"], r.get("by"), r.get("changes")) for r in self.requests[1:]],
            [
                ("group", by, ["group team@example.org -> a, b created"]),
                ("group", by, ["group team@example.org set to c"]),
                ("forwarder", by, ["forwarder fw@example.org -> x@example.net created"]),
                ("group", by, ["group team@example.org removed"]),
            ],
        )

    async def test_server_refusal(self) -> None:
        """A server that fails to apply the change makes the command fail, saying so."""
        self.reply = {"error": "listener busy"}
        out, err, code = await self.run_async("settings", "set", "smtp.max_recipients", "7")
        self.assertEqual(code, 1)
        self.assertIn(b"changed in the store, but the server refused reload: listener busy", err)
        self.assertNotIn(b"Traceback", err)
        self.flushLoggedErrors(RuntimeError)

    async def test_unbound_listener_reported(self) -> None:
        """A reload answer naming a listener that could not bind is printed; after a settings
        change (how listeners change) the exit status is 1, after other changes it stays 0
        (issue 20, item 5: it printed nothing and exited 0)."""
        self.listeners = [
            {"name": "smtp:127.0.0.1:2525", "protocol": "smtp", "bound": True, "port": 2525},
            {
                "name": "imap:127.0.0.1:643",
                "protocol": "imap",
                "bound": False,
                "port": None,
                "error": "permission denied: ports below 1024 need root",
            },
        ]
        out, err, code = await self.run_async(
            "settings",
            "set",
            "listeners",
            json.dumps(
                [
                    {"protocol": "smtp", "address": "127.0.0.1", "port": 2525},
                    {"protocol": "imap", "address": "127.0.0.1", "port": 643},
                ]
            ),
        )
        self.assertEqual(code, 1, err)
        self.assertIn(
            b"listener imap:127.0.0.1:643 is not bound: permission denied: ports "
            b"below 1024 need root",
            err,
        )
        self.assertIn(b"1 listener(s) could not be bound", err)
        self.assertNotIn(b"smtp:127.0.0.1:2525", err)
        out, err, code = await self.run_async("domain", "add", "example.org")
        self.assertEqual(code, 0, err)
        self.assertIn(b"listener imap:127.0.0.1:643 is not bound", err)


class PluginTests(unittest.TestCase):
    def test_plugin_groups_registered(self) -> None:
        """A cgtwist/cli_<group>.py module adds its group; a missing one is skipped."""
        module = types.ModuleType("cgtwist.cli_fake")

        async def hello(ctx: cli.Context, args: argparse.Namespace) -> int:
            return 3

        def register(subparsers: Any) -> None:
            p = subparsers.add_parser("fake").add_subparsers(dest="action", required=True)
            p.add_parser("hello").set_defaults(handler=hello, needs_store=False)

        module.register = register  # type: ignore[attr-defined]
        sys.modules["cgtwist.cli_fake"] = module
        self.addCleanup(sys.modules.pop, "cgtwist.cli_fake")
        self.patch(cli, "PLUGINS", ("cgtwist.cli_fake", "cgtwist.cli_missing"))
        args = cli.build_parser().parse_args(["fake", "hello"])
        self.assertIs(args.handler, hello)
        self.assertFalse(args.needs_store)


class StoreExistsMixin:
    """``cgtwist-admin`` tells a missing store from an existing one without creating it, on
    SQLite (the file) and PostgreSQL (the schema in a database the administrator made)."""

    url: str

    async def test_no_store_then_init(self: Any) -> None:
        conf = os.path.join(temp_dir(self), "cgtwist.conf")
        with open(conf, "w") as f:
            f.write(
                f'[server]\nbase_dir = "{os.path.dirname(conf)}"\nmain_domain = "example.com"\n'
                f'[database]\nurl = "{self.url}"\n'
            )

        async def admin(*args: str) -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            rc = await cli.execute(
                reactor, ["--config", conf, *args], out, err, io.StringIO(), fast_hasher()
            )
            return rc, out.getvalue(), err.getvalue()

        rc, _, err = await admin("domain", "list")
        self.assertEqual(rc, 1)
        self.assertIn("cgtwist-admin: error: no store at ", err)
        cfg = config.load(conf)
        self.assertFalse(await cli.store_exists(cfg, reactor))
        rc, out, _ = await admin("init")
        self.assertEqual(rc, 0)
        self.assertIn("created the store at ", out)
        self.assertTrue(await cli.store_exists(cfg, reactor))
        self.assertEqual((await admin("domain", "list"))[:2], (0, "example.com  [main]\n"))


class SQLiteStoreExistsTests(StoreExistsMixin, DatabaseCase):
    engine = "sqlite"


class PostgresStoreExistsTests(StoreExistsMixin, DatabaseCase):
    engine = "postgresql"


class EffectiveSettingsTests(CLITestCase):
    async def test_show_effective_says_where_each_value_comes_from(self) -> None:
        """``settings show --effective --account A``: every account setting, its value and
        whether it is the default, the server's Account Default, the domain's or its own."""
        await self.cli("account", "add", "alice", "--password", "x")
        await self.cli("settings", "set", "account_defaults.password.min_length", "6")
        await self.cli(
            "settings", "set", "mail.max_message_size", "1000", "--domain", "example.com"
        )
        await self.cli("settings", "set", "rules.allowed", '"No Redirect"', "--account", "alice")
        out, _ = await self.cli("settings", "show", "--effective", "--account", "alice")
        self.assertEqual(
            out,
            "admin = false  (default)\n"
            "domain_admin = false  (default)\n"
            "mail.max_message_size = 1000  (domain)\n"
            "password.min_classes = 0  (default)\n"
            "password.min_length = 6  (server)\n"
            "quota.grace = 86400  (default)\n"
            "quota.max_folders = 0  (default)\n"
            "quota.messages = 0  (default)\n"
            "quota.storage = 0  (default)\n"
            'rules.allowed = "No Redirect"  (account)\n'
            'smtp.send_as = ""  (default)\n',
        )
        out, _ = await self.cli(
            "settings", "show", "--effective", "--domain", "example.com", "rules.allowed"
        )
        self.assertTrue(out.startswith('rules.allowed = "Any"  (default)\n'), out)
        self.assertIn(
            "unknown account setting",
            await self.error("settings", "show", "--effective", "--account", "alice", "quota"),
        )
        self.assertIn(
            "needs --account or --domain", await self.error("settings", "show", "--effective")
        )

    async def test_password_policy_refuses_with_the_reason(self) -> None:
        """``account add``/``passwd`` refuse a password the policy (server, domain, account)
        does not allow, saying why; a generated password is random and always allowed."""
        await self.cli("settings", "set", "password.min_length", "10", "--domain", "example.com")
        self.assertEqual(
            await self.error("account", "add", "alice", "--password", "short"),
            "the password is too short: at least 10 characters",
        )
        self.assertNotIn("alice@", (await self.cli("account", "list"))[0])
        await self.cli("account", "add", "alice", "--password", "longenough1")
        await self.cli("settings", "set", "password.min_classes", "3", "--account", "alice")
        self.assertIn(
            "too simple: mix at least 3",
            await self.error("account", "passwd", "alice", "--password", "longenough2"),
        )
        self.assertEqual(await self.verify("alice@example.com", "longenough1"), "alice@example.com")
        await self.cli("account", "passwd", "alice", "--password", "Longenough2")
        self.assertEqual(await self.verify("alice@example.com", "Longenough2"), "alice@example.com")
        out, _ = await self.cli("account", "add", "bob")
        self.assertIn("password for bob@example.com: ", out)
