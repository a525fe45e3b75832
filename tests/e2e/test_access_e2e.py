"""Mail access end to end: Python's imaplib and poplib against a real twistd over real TLS.

What a user of a mail client notices: passwords are never accepted on an unencrypted link
(IMAP LOGINDISABLED, POP3 -ERR before STLS), every login form works once encrypted, mail
delivered over SMTP can be read, flagged, moved, deleted and filed into folders, an IDLE
session sees new mail at once, and after a server restart (graceful or a crash) the mailbox
is the same: UIDs, UIDVALIDITY, flags, folders and POP3 UIDLs.
"""

from __future__ import annotations

import base64
import imaplib
import os
import poplib
import re
import socket
import ssl
import uuid
from typing import Iterator

import pytest

from tests.e2e.harness import Server, wait_for

pytestmark = pytest.mark.e2e

# The generated certificate names "localhost", which resolves to 127.0.0.1 only here.
HOST = "localhost"


# -- helpers ---------------------------------------------------------------------------------
def add_account(server: Server, name: str) -> str:
    """A fresh account per test, so tests share one server without sharing a mailbox."""
    server.admin("account", "add", f"{name}@example.test", "--password", f"{name}-secret")
    return f"{name}-secret"


def deliver(server: Server, rcpt: str, subject: str, body: str = "Hello.\r\n") -> bytes:
    """Send one message over SMTP (port 25) and return the bytes the client sent."""
    mid = uuid.uuid4().hex
    msg = (
        f"From: someone@elsewhere.test\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{mid}@test>\r\n\r\n{body}"
    ).encode()
    server.send("someone@elsewhere.test", [rcpt], msg)
    return msg


def deliver_and_wait(
    server: Server, account: str, subjects: list[str], total: int = 0
) -> list[bytes]:
    """Deliver and wait until the INBOX holds ``total`` (default: len(subjects)) message files."""
    sent = [deliver(server, f"{account}@example.test", s) for s in subjects]
    server.wait_messages(account, total or len(subjects))
    return sent


def imap_ssl(server: Server, ctx: ssl.SSLContext) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL(HOST, server.port("imap", tls="implicit"), ssl_context=ctx, timeout=30)


def imap_starttls(server: Server, ctx: ssl.SSLContext) -> imaplib.IMAP4:
    m = imaplib.IMAP4(HOST, server.port("imap"), timeout=30)
    m.starttls(ssl_context=ctx)
    return m


def pop_ssl(server: Server, ctx: ssl.SSLContext) -> poplib.POP3_SSL:
    return poplib.POP3_SSL(HOST, server.port("pop3", tls="implicit"), context=ctx, timeout=30)


def pop_stls(server: Server, ctx: ssl.SSLContext) -> poplib.POP3:
    p = poplib.POP3(HOST, server.port("pop3"), timeout=30)
    p.stls(context=ctx)
    return p


def ok(result: tuple[str, list[object]]) -> list[object]:
    typ, data = result
    assert typ == "OK", data
    return data


def uid_flags(m: imaplib.IMAP4) -> dict[int, set[str]]:
    """{UID: flags} of the selected mailbox."""
    out: dict[int, set[str]] = {}
    for line in ok(m.fetch("1:*", "(UID FLAGS)")):
        if not isinstance(line, bytes):
            continue
        mo = re.search(rb"UID (\d+)", line)
        fl = re.search(rb"FLAGS \(([^)]*)\)", line)
        if mo and fl:
            out[int(mo.group(1))] = set(fl.group(1).decode().split())
    return out


def status(m: imaplib.IMAP4, mailbox: str) -> dict[str, int]:
    (line,) = ok(m.status(mailbox, "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"))
    assert isinstance(line, bytes)
    return {k.decode(): int(v) for k, v in re.findall(rb"([A-Z]+) (\d+)", line.split(b"(", 1)[1])}


def folders(m: imaplib.IMAP4) -> dict[str, str]:
    """{mailbox name: attributes} from LIST "" "*"."""
    out = {}
    for line in ok(m.list('""', "*")):
        assert isinstance(line, bytes)
        mo = re.match(rb'\(([^)]*)\) (?:"[^"]*"|NIL) (.+)$', line)
        assert mo, line
        out[mo.group(2).decode().strip('"')] = mo.group(1).decode()
    return out


def tree_outside(server: Server, account: str) -> set[str]:
    """Every path under Domains/ that is not inside ``account``'s own Maildir."""
    top = os.path.join(server.base, "Domains")
    mine = server.maildir(account)
    out = set()
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) != mine]
        out.update(os.path.join(root, n) for n in dirs + files)
    return out


@pytest.fixture
def ctx(tls_context: ssl.SSLContext) -> ssl.SSLContext:
    return tls_context


# -- plaintext policy and login forms ----------------------------------------------------------
def test_imap_refuses_passwords_before_starttls(server: Server, ctx: ssl.SSLContext) -> None:
    """On 143 the server says LOGINDISABLED and refuses LOGIN until STARTTLS; then it works."""
    pw = add_account(server, "plainimap")
    m = imaplib.IMAP4(HOST, server.port("imap"), timeout=30)
    try:
        assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            m.login("plainimap@example.test", pw)
        m.starttls(ssl_context=ctx)
        assert "LOGINDISABLED" not in m.capabilities
        ok(m.login("plainimap@example.test", pw))
        ok(m.select("INBOX"))
    finally:
        m.logout()


def test_pop3_refuses_passwords_before_stls(server: Server, ctx: ssl.SSLContext) -> None:
    """On 110 USER/PASS gets -ERR before STLS (the password never crosses in clear); after STLS it works."""
    pw = add_account(server, "plainpop")
    p = poplib.POP3(HOST, server.port("pop3"), timeout=30)
    try:
        assert "STLS" in p.capa()
        with pytest.raises(poplib.error_proto):
            p.user("plainpop@example.test")
            p.pass_(pw)
        p.stls(context=ctx)
        p.user("plainpop@example.test")
        assert p.pass_(pw).startswith(b"+OK")
        assert p.stat() == (0, 0)
    finally:
        p.quit()


@pytest.mark.parametrize("form", ["{u}@example.test", "{u}%example.test", "{u}"])
def test_login_forms_imap_and_pop3(server: Server, ctx: ssl.SSLContext, form: str) -> None:
    """user@domain, user%domain (clients that cut at '@') and a bare name in the main domain all
    reach the same mailbox over IMAP STARTTLS, IMAP 993, POP3 STLS and POP3 995."""
    user = "forms" + uuid.uuid4().hex[:6]
    pw = add_account(server, user)
    deliver_and_wait(server, user, ["login forms"])
    login = form.format(u=user)
    for m in (imap_starttls(server, ctx), imap_ssl(server, ctx)):
        try:
            ok(m.login(login, pw))
            assert ok(m.select("INBOX", readonly=True)) == [b"1"]
        finally:
            m.logout()
    for p in (pop_stls(server, ctx), pop_ssl(server, ctx)):
        try:
            p.user(login)
            p.pass_(pw)
            assert p.stat()[0] == 1
        finally:
            p.quit()


def test_wrong_password_and_other_account(server: Server, ctx: ssl.SSLContext) -> None:
    """A wrong password is refused with NO / -ERR and the connection keeps working for a retry."""
    pw = add_account(server, "wrongpw")
    m = imap_ssl(server, ctx)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            m.login("wrongpw@example.test", "not-" + pw)
        ok(m.login("wrongpw@example.test", pw))
    finally:
        m.logout()


# -- reading and organising mail over IMAP -----------------------------------------------------
def test_imap_read_flag_move_delete_and_file(server: Server, ctx: ssl.SSLContext) -> None:
    """A user reads a delivered message byte-exact, flags it, files one into a new folder (MOVE),
    copies one, deletes one, and every change is in the Maildir files Dovecot or mutt would read."""
    pw = add_account(server, "organiser")
    sent = deliver_and_wait(server, "organiser", ["first", "second", "third"])
    m = imap_starttls(server, ctx)
    try:
        ok(m.login("organiser@example.test", pw))
        boxes = folders(m)
        for name, use in (
            ("Sent", "\\Sent"),
            ("Drafts", "\\Drafts"),
            ("Trash", "\\Trash"),
            ("Junk", "\\Junk"),
        ):
            assert use in boxes[name], boxes
        assert ok(m.select("INBOX")) == [b"3"]
        # Read: the body is what the sender sent, after our trace headers; reading marks \Seen.
        data = ok(m.fetch("1", "(BODY[])"))
        body = data[0][1]  # type: ignore[index]
        assert isinstance(body, bytes) and body.endswith(sent[0])
        assert "\\Seen" in uid_flags(m)[1]
        # Flag.
        ok(m.uid("STORE", "2", "+FLAGS", "(\\Flagged $Important)"))
        # File into a new folder with MOVE (RFC 6851) and COPY into another.
        ok(m.create("Projects/2026"))
        ok(m.uid("MOVE", "2", "Projects/2026"))
        ok(m.create("Archive"))
        ok(m.uid("COPY", "3", "Archive"))
        # Delete.
        ok(m.uid("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)"))
        ok(m.expunge())
        assert sorted(uid_flags(m)) == [3]
        boxes = folders(m)
        assert "Projects/2026" in boxes and "Archive" in boxes
        assert "\\HasChildren" in boxes["Projects"]
        ok(m.select("Projects/2026"))
        (moved,) = uid_flags(m).values()
        assert {"\\Flagged", "$Important"} <= moved
        data = ok(m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
        assert b"Subject: second" in data[0][1]  # type: ignore[index]
        ok(m.select("Archive", readonly=True))
        assert len(uid_flags(m)) == 1
    finally:
        m.logout()
    # On disk: INBOX keeps one message, the moved one is in Maildir++ folder with flag F.
    md = server.maildir("organiser")
    assert len(server.messages("organiser")) == 1
    sub = [d for d in os.listdir(md) if d.startswith(".Projects") and "2026" in d]
    assert len(sub) == 1, os.listdir(md)
    files = os.listdir(os.path.join(md, sub[0], "cur")) + os.listdir(
        os.path.join(md, sub[0], "new")
    )
    assert len(files) == 1 and "F" in files[0].rsplit(":2,", 1)[1], files


def test_second_session_sees_changes(server: Server, ctx: ssl.SSLContext) -> None:
    """Two clients on one mailbox: what one appends, flags and expunges the other is told about
    (unsolicited EXISTS, FETCH FLAGS and EXPUNGE, RFC 3501 §7.4.1)."""
    pw = add_account(server, "twosessions")
    a, b = imap_ssl(server, ctx), imap_ssl(server, ctx)
    try:
        ok(a.login("twosessions", pw))
        ok(b.login("twosessions", pw))
        ok(a.select("INBOX"))
        ok(b.select("INBOX"))
        ok(
            a.append(
                "INBOX",
                "(\\Seen)",
                None,
                b"From: a@example.test\r\nSubject: appended\r\n\r\nhi\r\n",
            )
        )
        ok(b.noop())
        assert b"1" in b.untagged_responses.get("EXISTS", [])
        ok(a.select("INBOX"))
        ok(a.store("1", "+FLAGS", "(\\Flagged)"))
        ok(b.noop())
        fetched = b.untagged_responses.get("FETCH", [])
        assert any(b"\\Flagged" in x for x in fetched if isinstance(x, bytes)), fetched
        ok(a.store("1", "+FLAGS", "(\\Deleted)"))
        ok(a.expunge())
        ok(b.noop())
        assert b.untagged_responses.get("EXPUNGE") == [b"1"]
    finally:
        a.logout()
        b.logout()


def test_idle_sees_smtp_delivery_at_once(server: Server, ctx: ssl.SSLContext) -> None:
    """A client in IDLE is told '* 1 EXISTS' as soon as SMTP delivers, without polling."""
    pw = add_account(server, "idler")
    m = imap_ssl(server, ctx)
    try:
        ok(m.login("idler", pw))
        ok(m.select("INBOX"))
        m.send(b"I1 IDLE\r\n")
        assert m.readline().startswith(b"+")
        deliver(server, "idler@example.test", "pushed")
        # The socket timeout (30 s) is the deadline; the push normally arrives in milliseconds.
        line = m.readline()
        assert line.strip() == b"* 1 EXISTS", line
        m.send(b"DONE\r\n")
        while not (line := m.readline()).startswith(b"I1 "):
            pass
        assert line.startswith(b"I1 OK"), line
    finally:
        m.logout()


# -- POP3 --------------------------------------------------------------------------------------
def test_pop3_retr_dele_applies_only_at_quit(server: Server, ctx: ssl.SSLContext) -> None:
    """RETR gives the message; DELE is undone by RSET or a dropped connection and only QUIT deletes."""
    pw = add_account(server, "popper")
    sent = deliver_and_wait(server, "popper", ["one", "two"])
    p = pop_ssl(server, ctx)
    p.user("popper")
    p.pass_(pw)
    _, lines, _ = p.retr(1)
    assert b"\r\n".join(lines).endswith(sent[0].rstrip(b"\r\n"))
    p.dele(1)
    p.rset()
    p.dele(2)
    p.sock.close()  # a dropped connection: nothing is deleted
    assert len(server.messages("popper")) == 2
    p = pop_stls(server, ctx)
    p.user("popper")
    p.pass_(pw)
    assert p.stat()[0] == 2
    _, lines, _ = p.top(2, 0)
    assert b"Subject: two" in lines
    p.dele(2)
    p.quit()
    wait_for(lambda: len(server.messages("popper")) == 1, 30, "DELE applied at QUIT")
    p = pop_ssl(server, ctx)
    p.user("popper")
    p.pass_(pw)
    assert p.stat()[0] == 1
    p.quit()


def test_pop3_mailbox_lock(server: Server, ctx: ssl.SSLContext) -> None:
    """While one POP3 session holds the maildrop a second login is refused, so both cannot delete."""
    pw = add_account(server, "locked")
    first = pop_ssl(server, ctx)
    first.user("locked")
    first.pass_(pw)
    second = pop_ssl(server, ctx)
    try:
        second.user("locked")
        with pytest.raises(poplib.error_proto):
            second.pass_(pw)
    finally:
        first.quit()
        second.close()


# -- restart -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def restart_account(server: Server) -> Iterator[tuple[str, str]]:
    yield "restarter", add_account(server, "restarter")


def snapshot(server: Server, ctx: ssl.SSLContext, pw: str) -> dict[str, object]:
    """Everything a client caches about the mailbox: UIDVALIDITY, UIDs with flags, folders, UIDLs."""
    m = imap_ssl(server, ctx)
    try:
        ok(m.login("restarter", pw))
        boxes = sorted(folders(m))
        per_box = {}
        for box in ("INBOX", "Filed"):
            st = status(m, box)
            ok(m.select(box, readonly=True))
            # \Recent is per session (RFC 3501 §2.3.2), not something a client caches; an
            # EXAMINE shows it for messages no session has taken yet.
            flags = {u: f - {"\\Recent"} for u, f in uid_flags(m).items()}
            per_box[box] = (st["UIDVALIDITY"], st["UIDNEXT"], flags)
    finally:
        m.logout()
    p = pop_ssl(server, ctx)
    try:
        p.user("restarter")
        p.pass_(pw)
        uidl = p.uidl()[1]
    finally:
        p.quit()
    return {"folders": boxes, "boxes": per_box, "uidl": uidl}


def test_restart_keeps_uids_flags_folders_and_uidl(
    server: Server, ctx: ssl.SSLContext, restart_account: tuple[str, str]
) -> None:
    """After a graceful restart and after a crash (SIGKILL) a client finds the same UIDVALIDITY,
    UIDs, flags, folders and POP3 UIDLs, so it does not download everything again."""
    _, pw = restart_account
    deliver_and_wait(server, "restarter", ["r1", "r2", "r3", "r4"])
    m = imap_ssl(server, ctx)
    try:
        ok(m.login("restarter", pw))
        ok(m.create("Filed"))
        ok(m.select("INBOX"))
        ok(m.uid("STORE", "1", "+FLAGS", "(\\Seen \\Answered)"))
        ok(m.uid("STORE", "2", "+FLAGS", "(\\Flagged custom1)"))
        ok(m.uid("MOVE", "3", "Filed"))
        ok(m.uid("STORE", "4", "+FLAGS", "(\\Deleted)"))
        ok(m.expunge())
    finally:
        m.logout()
    deliver_and_wait(server, "restarter", ["r5"], total=3)  # INBOX: UIDs 1, 2, 5
    before = snapshot(server, ctx, pw)
    assert sorted(before["boxes"]["INBOX"][2]) == [1, 2, 5]  # type: ignore[index]
    assert before["boxes"]["INBOX"][2][2] >= {"\\Flagged", "custom1"}  # type: ignore[index]

    server.stop()
    server.start()
    assert snapshot(server, ctx, pw) == before

    # A flag change answered OK just before a crash is still there afterwards; a message
    # delivered after the restart gets a new UID above every old one.
    m = imap_ssl(server, ctx)
    try:
        ok(m.login("restarter", pw))
        ok(m.select("INBOX"))
        ok(m.uid("STORE", "5", "+FLAGS", "(\\Flagged)"))
    finally:
        m.logout()
    server.kill()
    server.start()
    after = snapshot(server, ctx, pw)
    assert after["boxes"]["INBOX"][0] == before["boxes"]["INBOX"][0]  # type: ignore[index]
    assert "\\Flagged" in after["boxes"]["INBOX"][2][5]  # type: ignore[index]
    deliver_and_wait(server, "restarter", ["r6"], total=4)
    m = imap_ssl(server, ctx)
    try:
        ok(m.login("restarter", pw))
        ok(m.select("INBOX"))
        assert sorted(uid_flags(m)) == [1, 2, 5, 6]
    finally:
        m.logout()


def test_server_answers_garbage_and_keeps_serving(server: Server, ctx: ssl.SSLContext) -> None:
    """Nonsense commands get BAD / -ERR, not a traceback or a dropped connection."""
    with socket.create_connection(("127.0.0.1", server.port("imap")), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK")
        s.sendall(b"x1 FROBNICATE\r\nx2 FETCH\r\n\x00\xff\r\nx3 NOOP\r\n")
        replies = [f.readline() for _ in range(4)]
        assert replies[0].startswith(b"x1 BAD") and replies[1].startswith(b"x2 BAD"), replies
        assert replies[3].startswith(b"x3 OK"), replies
        assert not any(b"Traceback" in r for r in replies)
    with socket.create_connection(("127.0.0.1", server.port("pop3")), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        s.sendall(b"FROBNICATE\r\nNOOP\r\nQUIT\r\n")
        assert f.readline().startswith(b"-ERR")
        assert f.readline().startswith((b"+OK", b"-ERR"))
        assert f.readline().startswith(b"+OK")


def test_sasl_plain_logins(server: Server, ctx: ssl.SSLContext) -> None:
    """Clients that use SASL PLAIN (IMAP AUTHENTICATE, POP3 AUTH) log in like LOGIN/USER users."""
    pw = add_account(server, "sasl")
    m = imap_ssl(server, ctx)
    try:
        ok(m.authenticate("PLAIN", lambda _: f"\0sasl%example.test\0{pw}".encode()))
        ok(m.select("INBOX"))
    finally:
        m.logout()
    p = pop_stls(server, ctx)
    try:
        token = base64.b64encode(f"\0sasl@example.test\0{pw}".encode()).decode()
        assert p._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK")
        assert p.stat() == (0, 0)
    finally:
        p.quit()


def test_folder_rename_delete_subscribe(server: Server, ctx: ssl.SSLContext) -> None:
    """Folders a user creates, renames, subscribes and deletes are Maildir++ folders on disk,
    and names that try to leave the account's directory are refused."""
    pw = add_account(server, "folderer")
    add_account(server, "folderer2")
    m = imap_starttls(server, ctx)
    try:
        ok(m.login("folderer", pw))
        ok(m.create("Old"))
        ok(m.append("Old", "(\\Seen)", None, b"Subject: kept\r\n\r\nfiled\r\n"))
        ok(m.rename("Old", "Archive/2025"))
        ok(m.subscribe("Archive/2025"))
        ok(m.create("Scratch"))
        ok(m.delete("Scratch"))
        boxes = folders(m)
        assert "Archive/2025" in boxes and "Old" not in boxes and "Scratch" not in boxes, boxes
        lsub = [x for x in ok(m.lsub('""', "*")) if isinstance(x, bytes)]
        assert any(x.endswith(b"Archive/2025") or x.endswith(b'"Archive/2025"') for x in lsub), lsub
        assert status(m, "Archive/2025")["MESSAGES"] == 1
        before = tree_outside(server, "folderer")
        # "&AC4ALgAv-" is "../" spelled in modified UTF-7 (RFC 3501 §5.1.3 forbids that spelling).
        for evil in (
            "../folderer2",
            "../../folderer2/Maildir",
            "a/../../x",
            "&AC4ALgAv-x",
            "..",
            "INBOX/../..",
        ):
            typ, _ = m.create(evil)
            assert typ == "NO", evil
        assert tree_outside(server, "folderer") == before
    finally:
        m.logout()
    md = server.maildir("folderer")
    subfolders = sorted(d for d in os.listdir(md) if d.startswith("."))
    assert (
        ".Archive.2025" in subfolders and ".Old" not in subfolders and ".Scratch" not in subfolders
    ), subfolders
    assert not [d for d in subfolders if ".." in d[1:] or "x" in d], subfolders
    assert os.listdir(os.path.dirname(md)) == ["Maildir"]
