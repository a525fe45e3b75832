"""Real third-party mail clients against a real twistd: fetchmail, mbsync, getmail and mutt.

Each client verifies the server's generated certificate (valid for "localhost") and reads what
SMTP delivered; a user would notice any of these clients failing to log in, fetch, sync flags
or folders. Locally a missing client skips its test; in CI (.ci/run installs them) it fails.
"""

from __future__ import annotations

import imaplib
import os
import smtplib
import ssl
import subprocess
import uuid

import pytest

from tests.e2e.clients import mutt_pipe_first_message, require
from tests.e2e.harness import Server, wait_for

pytestmark = pytest.mark.e2e

HOST = "localhost"


def add_account(server: Server, name: str) -> str:
    server.admin("account", "add", f"{name}@example.test", "--password", f"{name}-secret")
    return f"{name}-secret"


def deliver(server: Server, account: str, subjects: list[str]) -> list[bytes]:
    """Deliver one message per subject over SMTP and wait until all are in the Maildir."""
    sent = []
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        for subject in subjects:
            mid = uuid.uuid4().hex
            msg = (
                f"From: someone@elsewhere.test\r\nTo: {account}@example.test\r\nSubject: {subject}\r\n"
                f"Message-ID: <{mid}@test>\r\n\r\nBody of {subject}.\r\n.leading dot\r\n"
            ).encode()
            s.sendmail("someone@elsewhere.test", [f"{account}@example.test"], msg)
            sent.append(msg)
    server.wait_messages(account, len(subjects))
    return sent


def cert(server: Server) -> str:
    return os.path.join(server.base, "tls", "cert.pem")


def read_dir(path: str) -> list[bytes]:
    out = []
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out.append(f.read())
    return out


def maildir_files(md: str) -> list[str]:
    return [
        os.path.join(md, sub, n)
        for sub in ("new", "cur")
        if os.path.isdir(os.path.join(md, sub))
        for n in os.listdir(os.path.join(md, sub))
    ]


def imap_login(server: Server, user: str, pw: str, ctx: ssl.SSLContext) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(HOST, server.port("imap", tls="implicit"), ssl_context=ctx, timeout=30)
    m.login(user, pw)
    return m


# -- fetchmail -----------------------------------------------------------------------------------
def run_fetchmail(tmp: str, poll: str, user: str, pw: str, server: Server, keep: str) -> str:
    fetchmail = require("fetchmail")
    home = os.path.join(tmp, "home")
    out = os.path.join(tmp, "out")
    os.makedirs(home, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    rc = os.path.join(home, "fetchmailrc")
    with open(rc, "w") as f:
        f.write(
            "set no syslog\n"
            f"{poll}\n"
            f'  user "{user}" there with password "{pw}" is "root" here\n'
            f'  sslproto "tls1.2+" sslcertck sslcertfile "{cert(server)}" sslcommonname "localhost"\n'
            f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n"
            f"  {keep}\n"
        )
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=home, FETCHMAILHOME=home)
    r = subprocess.run(
        [fetchmail, "-f", rc, "-v", "--nodetach"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    # 0: mail fetched; 1: no mail. Anything else is a failure.
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return r.stdout + r.stderr


def test_fetchmail_pop3_stls_downloads_and_deletes(server: Server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """fetchmail upgrades POP3 with STLS, verifies the certificate, hands every message to its MDA
    unchanged (dot-stuffing undone) and deletes them on the server."""
    pw = add_account(server, "fmpop")
    sent = deliver(server, "fmpop", ["fm one", "fm two"])
    log = run_fetchmail(
        str(tmp_path),
        f"poll localhost via 127.0.0.1 with proto POP3 port {server.port('pop3')} uidl",
        "fmpop%example.test",
        pw,
        server,
        "nokeep fetchall",
    )
    assert "STLS" in log
    got = read_dir(str(tmp_path / "out"))
    assert len(got) == 2, log
    for msg in sent:
        # The MDA gets LF line ends; the sender's bytes are the tail of what was stored.
        assert any(g.endswith(msg.replace(b"\r\n", b"\n")) for g in got), (got, msg)
    wait_for(lambda: not maildir_files(server.maildir("fmpop")), 30, "fetchmail's deletions")


def test_fetchmail_imap_implicit_tls_keeps_and_marks_seen(
    server: Server,
    tmp_path,  # type: ignore[no-untyped-def]
    tls_context: ssl.SSLContext,
) -> None:
    """fetchmail over IMAPS (993-style) fetches new mail, leaves it on the server marked \\Seen and
    on the next run fetches nothing again."""
    pw = add_account(server, "fmimap")
    deliver(server, "fmimap", ["imap one", "imap two", "imap three"])
    poll = (
        f"poll localhost via 127.0.0.1 with proto IMAP port {server.port('imap', tls='implicit')}"
    )
    run_fetchmail(str(tmp_path / "a"), poll, "fmimap@example.test", pw, server, "ssl keep")
    assert len(read_dir(str(tmp_path / "a" / "out"))) == 3
    m = imap_login(server, "fmimap", pw, tls_context)
    try:
        m.select("INBOX", readonly=True)
        typ, data = m.search(None, "UNSEEN")
        assert typ == "OK" and data == [b""], data
    finally:
        m.logout()
    run_fetchmail(str(tmp_path / "b"), poll, "fmimap@example.test", pw, server, "ssl keep")
    assert read_dir(str(tmp_path / "b" / "out")) == []
    assert len(maildir_files(server.maildir("fmimap"))) == 3


# -- mbsync (isync) ------------------------------------------------------------------------------
def run_mbsync(tmp: str, server: Server, user: str, pw: str) -> str:
    mbsync = require("mbsync")
    local = os.path.join(tmp, "local")
    os.makedirs(local, exist_ok=True)
    rc = os.path.join(tmp, "mbsyncrc")
    with open(rc, "w") as f:
        f.write(f"""IMAPAccount cg
Host {HOST}
Port {server.port("imap", tls="implicit")}
User {user}
Pass {pw}
SSLType IMAPS
CertificateFile {cert(server)}

IMAPStore cg-remote
Account cg

MaildirStore cg-local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel cg
Far :cg-remote:
Near :cg-local:
Patterns *
Create Both
Sync All
Expunge None
SyncState *
""")
    r = subprocess.run(
        [mbsync, "-c", rc, "-V", "cg"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, HOME=tmp),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return local


def test_mbsync_syncs_folders_and_flags_both_ways(
    server: Server,
    tmp_path,  # type: ignore[no-untyped-def]
    tls_context: ssl.SSLContext,
) -> None:
    """mbsync copies INBOX and a filed folder to a local Maildir; a flag set locally and a folder
    created locally reach the server on the next sync."""
    pw = add_account(server, "syncer")
    deliver(server, "syncer", ["sync one", "sync two", "sync three"])
    m = imap_login(server, "syncer", pw, tls_context)
    try:
        m.create("Projects")
        m.select("INBOX")
        assert m.uid("MOVE", "3", "Projects")[0] == "OK"
    finally:
        m.logout()
    local = run_mbsync(str(tmp_path), server, "syncer@example.test", pw)
    inbox = maildir_files(os.path.join(local, "INBOX"))
    projects = maildir_files(os.path.join(local, "Projects"))
    assert len(inbox) == 2 and len(projects) == 1, os.listdir(local)
    with open(projects[0], "rb") as f:
        assert b"Subject: sync three" in f.read()
    for box in ("Sent", "Drafts", "Trash", "Junk"):
        assert os.path.isdir(os.path.join(local, box)), os.listdir(local)
    # Flag one message locally (Maildir info ":2,F") and create a folder locally.
    path = inbox[0]
    base = os.path.basename(path)
    info = base.split(":2,", 1)[1] if ":2," in base else ""
    name = base.split(":2,", 1)[0]
    os.rename(path, os.path.join(local, "INBOX", "cur", name + ":2," + "".join(sorted(info + "F"))))
    os.makedirs(os.path.join(local, "Local Only", "cur"))
    os.makedirs(os.path.join(local, "Local Only", "new"))
    os.makedirs(os.path.join(local, "Local Only", "tmp"))
    run_mbsync(str(tmp_path), server, "syncer@example.test", pw)
    m = imap_login(server, "syncer", pw, tls_context)
    try:
        m.select("INBOX", readonly=True)
        typ, data = m.search(None, "FLAGGED")
        assert typ == "OK" and len(data[0].split()) == 1, data
        typ, data = m.list('""', '"Local Only"')
        assert typ == "OK" and data[0] is not None and b"Local Only" in data[0], data
    finally:
        m.logout()


# -- getmail -------------------------------------------------------------------------------------
def test_getmail_imaps(server: Server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """getmail retrieves every message over IMAPS, verifying the certificate, and run again
    retrieves nothing new (it remembers what it has seen by UID)."""
    getmail = require("getmail")
    pw = add_account(server, "getter")
    sent = deliver(server, "getter", ["get one", "get two"])
    dest = tmp_path / "out"
    dest.mkdir()
    gdir = tmp_path / "getmail"
    gdir.mkdir()
    (gdir / "getmailrc").write_text(f"""[retriever]
type = SimpleIMAPSSLRetriever
server = {HOST}
port = {server.port("imap", tls="implicit")}
username = getter@example.test
password = {pw}
ca_certs = {cert(server)}
mailboxes = ("INBOX",)

[destination]
# An external MDA: getmail's own Maildir writer refuses to run as root (CI runs as root).
type = MDA_external
path = /bin/sh
arguments = ("-c", "cat > {dest}/msg.$$")
allow_root_commands = true

[options]
read_all = false
delete = false
verbose = 1
""")

    def run() -> str:
        r = subprocess.run(
            [getmail, f"--getmaildir={gdir}", "--rcfile=getmailrc"],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, HOME=str(tmp_path)),
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    out = run()
    got = read_dir(str(dest))
    assert len(got) == 2, out
    for msg in sent:
        # getmail adds headers (some after ours) and keeps CRLF only in places: compare the
        # sender's header lines and body, line ends normalised.
        head, body = msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)
        assert any(
            g.replace(b"\r\n", b"\n").endswith(b"\n\n" + body)
            and all(h in g.replace(b"\r\n", b"\n") for h in head.split(b"\n"))
            for g in got
        ), got
    out = run()
    assert len(read_dir(str(dest))) == 2, out


# -- mutt ----------------------------------------------------------------------------------------
def test_mutt_reads_over_imaps(server: Server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """mutt opens the INBOX over imaps (certificate verified against the server's own), and pipes
    the message SMTP delivered."""
    pw = add_account(server, "muttimap")
    deliver(server, "muttimap", ["read with mutt over imaps"])
    folder = f"imaps://{HOST}:{server.port('imap', tls='implicit')}/INBOX"
    shown = mutt_pipe_first_message(
        folder,
        str(tmp_path / "piped"),
        extra=[
            "-e",
            f"set ssl_ca_certificates_file={cert(server)}",
            "-e",
            "set imap_user=muttimap@example.test",
            "-e",
            f"set imap_pass={pw}",
            "-e",
            "set ssl_force_tls=yes",
            "-e",
            f"set certificate_file={tmp_path}/certs",
            "-e",
            f"set folder={tmp_path}",
        ],
    )
    assert b"Subject: read with mutt over imaps" in shown
    assert b"Body of read with mutt over imaps." in shown


def test_mutt_on_an_empty_folder_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The mutt helper reports a folder in which mutt sees no message as such, at once: mutt's
    error discards the keys pushed to it (the <quit> too), and the helper used to wait out its
    60 s deadline and report only 'did not finish' (how a mutt test failed under load)."""
    require("mutt")
    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    with pytest.raises(AssertionError, match=r"stuck at b'There are no messages\.'"):
        mutt_pipe_first_message(str(md), str(tmp_path / "piped"))
