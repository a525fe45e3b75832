"""Dovecot and a running cgtwist share one Maildir: each sees what the other wrote.

A user moving between cgtwist and Dovecot (or an administrator running both on one mail
store) notices whether the same messages, flags, keywords and folders are there. Dovecot's
``imap`` binary runs pre-authenticated on the very Maildir the real server delivered into over
SMTP and organised over IMAP; then Dovecot changes flags, expunges and appends, and an IMAP
client of the still-running cgtwist sees those changes with its old UIDs intact. Skipped when
Dovecot is not installed (.ci/run does not install it: apt package dovecot-imapd).
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import smtplib
import ssl
import subprocess
import uuid

import pytest

from tests.e2e.harness import Server

pytestmark = pytest.mark.e2e

DOVECOT_IMAP = "/usr/lib/dovecot/imap"


def skip_reason() -> str | None:
    if not os.path.exists(DOVECOT_IMAP):
        return "Dovecot is not installed (apt package dovecot-imapd)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            return "running as root without a 'nobody' user (Dovecot refuses root)"
        if shutil.which("setpriv") is None:
            return "running as root without setpriv (Dovecot refuses root)"
    return None


if (_reason := skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)


def dovecot(md: str, script: bytes) -> str:
    """Run Dovecot's imap pre-authenticated on ``md`` (as nobody when we are root)."""
    cmd = [DOVECOT_IMAP, "-o", f"mail_location=maildir:{md}"]
    env = {"HOME": os.path.dirname(md), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        parent = os.path.dirname(md)
        while parent != os.path.dirname(parent):  # pytest's temporary directories are 0700
            mode = os.stat(parent).st_mode
            if not mode & 0o001:
                os.chmod(parent, (mode & 0o7777) | 0o001)
            parent = os.path.dirname(parent)
        # The server runs as root and keeps working on files nobody owns; Dovecot needs to
        # write its index and rename files, so the account's tree goes to nobody.
        for root, dirs, files in os.walk(os.path.dirname(md)):
            for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.chown(n, nobody.pw_uid, nobody.pw_gid)
        cmd = [
            "setpriv",
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            *cmd,
        ]
        env["USER"] = "nobody"
    else:
        env["USER"] = pwd.getpwuid(os.geteuid()).pw_name
    proc = subprocess.run(cmd, input=script, env=env, capture_output=True, timeout=60)
    out = proc.stdout.decode("utf-8", "replace")
    assert not re.search(r"^[a-z] (NO|BAD) ", out, re.M), out + proc.stderr.decode(
        "utf-8", "replace"
    )
    return out


def dovecot_messages(out: str) -> dict[int, tuple[set[str], bytes]]:
    """{sequence number: (flags without \\Recent, BODY[])} from a Dovecot FETCH transcript."""
    raw = out.encode()
    found: dict[int, tuple[set[str], bytes]] = {}
    for mo in re.finditer(rb"\* (\d+) FETCH \(FLAGS \(([^)]*)\) BODY\[\] \{(\d+)\}\r\n", raw):
        size = int(mo.group(3))
        body = raw[mo.end() : mo.end() + size]
        found[int(mo.group(1))] = (set(mo.group(2).decode().split()) - {"\\Recent"}, body)
    return found


def cg_messages(m: imaplib.IMAP4, box: str) -> dict[int, tuple[set[str], bytes]]:
    """{UID: (flags, BODY[])} of ``box`` from cgtwist, in sequence order (dict order)."""
    typ, _ = m.select(box, readonly=True)
    assert typ == "OK"
    typ, data = m.fetch("1:*", "(UID FLAGS BODY.PEEK[])")
    assert typ == "OK", data
    out: dict[int, tuple[set[str], bytes]] = {}
    for item in data:
        if isinstance(item, tuple):
            head = item[0]
            uid = int(re.search(rb"UID (\d+)", head).group(1))  # type: ignore[union-attr]
            flags = re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split()  # type: ignore[union-attr]
            out[uid] = (set(flags) - {"\\Recent"}, item[1])
    return out


def test_dovecot_and_cgtwist_share_one_maildir(server: Server, tls_context: ssl.SSLContext) -> None:
    """Dovecot reads the mail cgtwist delivered and organised (bodies byte-exact, flags, keyword,
    folders incl. non-ASCII), and cgtwist, still running, then sees Dovecot's flag change,
    expunge and append while the surviving messages keep their UIDs."""
    server.admin("account", "add", "shared@example.test", "--password", "shared-secret")
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        for subject in ("one", "two", "three", "four"):
            msg = (
                f"From: someone@elsewhere.test\r\nTo: shared@example.test\r\nSubject: {subject}\r\n"
                f"Message-ID: <{uuid.uuid4().hex}@test>\r\n\r\nBody {subject}\r\n"
            ).encode()
            s.sendmail("someone@elsewhere.test", ["shared@example.test"], msg)
    server.wait_messages("shared", 4)
    m = imaplib.IMAP4_SSL(
        "localhost", server.port("imap", tls="implicit"), ssl_context=tls_context, timeout=30
    )
    try:
        m.login("shared@example.test", "shared-secret")
        assert m.create("Work")[0] == "OK"
        assert m.create("Caf&AOk-")[0] == "OK"  # "Café" in modified UTF-7 (RFC 3501 §5.1.3)
        m.select("INBOX")
        assert m.uid("STORE", "1", "+FLAGS", "(\\Seen)")[0] == "OK"
        assert m.uid("STORE", "2", "+FLAGS", "(\\Flagged $Label1)")[0] == "OK"
        assert m.uid("MOVE", "4", "Work")[0] == "OK"
        assert m.uid("COPY", "3", "Caf&AOk-")[0] == "OK"
        inbox = cg_messages(m, "INBOX")
        work = cg_messages(m, "Work")
    finally:
        m.logout()
    assert list(inbox) == [1, 2, 3] and len(work) == 1

    md = server.maildir("shared")
    out = dovecot(
        md,
        b'a LIST "" "*"\r\nb EXAMINE INBOX\r\nc FETCH 1:* (FLAGS BODY[])\r\n'
        b"d EXAMINE Work\r\ne FETCH 1:* (FLAGS BODY[])\r\n"
        b'f STATUS "Caf&AOk-" (MESSAGES)\r\ng LOGOUT\r\n',
    )
    for name in ("INBOX", "Work", "Caf&AOk-", "Sent", "Drafts", "Trash", "Junk"):
        assert re.search(rf'\* LIST \([^)]*\) "[./]" "?{re.escape(name)}"?\r\n', out), (name, out)
    assert re.search(r'\* STATUS "?Caf&AOk-"? \(MESSAGES 1\)', out), out
    inbox_part, work_part = out.split("d OK", 1)
    assert [(f, b) for f, b in dovecot_messages(inbox_part).values()] == list(inbox.values())
    assert [(f, b) for f, b in dovecot_messages(work_part).values()] == list(work.values())

    # Now Dovecot writes: answer message 1, expunge message 3, append to Work.
    appended = b"From: dovecot@example.test\r\nSubject: from dovecot\r\n\r\nwritten by Dovecot\r\n"
    dovecot(
        md,
        b"a SELECT INBOX\r\nb STORE 1 +FLAGS (\\Answered)\r\nc STORE 3 +FLAGS (\\Deleted)\r\n"
        b"d EXPUNGE\r\ne APPEND Work (\\Seen) {%d}\r\n%s\r\nf LOGOUT\r\n"
        % (len(appended), appended),
    )
    m = imaplib.IMAP4_SSL(
        "localhost", server.port("imap", tls="implicit"), ssl_context=tls_context, timeout=30
    )
    try:
        m.login("shared@example.test", "shared-secret")
        after = cg_messages(m, "INBOX")
        work_after = cg_messages(m, "Work")
    finally:
        m.logout()
    assert list(after) == [1, 2], after  # old UIDs kept; UID 3 expunged by Dovecot
    assert after[1] == (inbox[1][0] | {"\\Answered"}, inbox[1][1])
    assert after[2] == inbox[2]
    assert list(work_after)[:1] == list(work)  # the moved message keeps its UID
    assert [v for v in work_after.values()][1:] == [({"\\Seen"}, appended)]
