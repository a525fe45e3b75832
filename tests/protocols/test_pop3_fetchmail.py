"""A real third-party POP3 client: fetchmail downloads and deletes over STLS with a checked certificate."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from twisted.internet import reactor, threads
from twisted.trial import unittest

from cgtwist import paths
from cgtwist.mailstore import MailboxNotifier
from cgtwist.protocols.pop3.server import POP3Factory
from cgtwist.settings import SettingsHolder
from cgtwist.tls import ServerTLS
from cgtwist.types import ListenerSpec
from tests.certs import write_pem
from tests.protocols.test_pop3_fakes import FakeStore, deliver, make_portal

FETCHMAIL = shutil.which("fetchmail")


class FetchmailTests(unittest.TestCase):
    if FETCHMAIL is None:
        skip = "fetchmail is not installed (.ci/run installs it)"

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        store = FakeStore()
        store.add("alice", "secret")
        self.portal, _realm = make_portal(self.base, store, MailboxNotifier(reactor))
        self.cert, key = write_pem(os.path.join(self.base, "tls"))
        factory = POP3Factory(
            ListenerSpec("pop3", 0, "127.0.0.1", "starttls"),
            SettingsHolder(),
            self.portal,
            ServerTLS(self.cert, key),
            "localhost",
            clock=reactor,
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        for i in range(3):
            deliver(
                self.base,
                "alice",
                b"From: x@example.org\r\nSubject: fm %d\r\n\r\nline\r\n.dot\r\n" % i,
            )

    def run_fetchmail(self) -> subprocess.CompletedProcess[str]:
        home = os.path.join(self.base, "home")
        out = os.path.join(self.base, "out")
        os.makedirs(home, exist_ok=True)
        os.makedirs(out, exist_ok=True)
        rc = os.path.join(home, "fetchmailrc")
        with open(rc, "w") as f:
            f.write(
                "set no syslog\n"
                f"poll localhost via 127.0.0.1 with proto POP3 port {self.port} uidl\n"
                '  user "alice@example.com" there with password "secret" is "root" here\n'
                f'  sslproto "tls1.2+" sslcertck sslcertfile "{self.cert}" sslcommonname "localhost"\n'
                f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n"
                "  nokeep fetchall\n"
            )
        os.chmod(rc, 0o600)
        env = dict(os.environ, HOME=home, FETCHMAILHOME=home)
        assert FETCHMAIL is not None
        return subprocess.run(
            [FETCHMAIL, "-f", rc, "-v", "--nodetach"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def test_fetchmail_downloads_and_deletes(self) -> None:
        """fetchmail upgrades with STLS, verifies our certificate, fetches all three messages
        (dot-stuffing undone) and deletes them at QUIT."""

        def check(proc: subprocess.CompletedProcess[str]) -> Any:
            self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
            self.assertIn("STLS", proc.stdout + proc.stderr)
            out = os.path.join(self.base, "out")
            bodies = []
            for name in os.listdir(out):
                with open(os.path.join(out, name), "rb") as f:
                    bodies.append(f.read())
            self.assertEqual(len(bodies), 3)
            for body in bodies:
                self.assertIn(b"\n.dot", body)
                self.assertNotIn(b"..dot", body)
            md = paths.maildir(self.base, "example.com", "alice")
            self.assertEqual(
                os.listdir(os.path.join(md, "cur")) + os.listdir(os.path.join(md, "new")), []
            )

        return threads.deferToThread(self.run_fetchmail).addCallback(check)
