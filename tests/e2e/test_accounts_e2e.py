"""Account settings that take effect, end to end against a real twistd: a domain's maximum
message size refuses a larger message (552 5.3.4 at RCPT for a declared SIZE, after DATA
otherwise) while a smaller one is delivered; ``settings show --effective`` says where each
value comes from; login names go through the Router's ``Access:`` records."""

from __future__ import annotations

import imaplib
import pathlib
import poplib
import smtplib
import ssl

import pytest

from tests.e2e.harness import Server, wait_for

pytestmark = pytest.mark.e2e


def message(size: int) -> bytes:
    head = b"From: someone@elsewhere.test\r\nTo: sizer@example.test\r\nSubject: size\r\n\r\n"
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


def test_domain_max_message_size_refuses_larger_messages(server: Server) -> None:
    server.admin("domain", "add", "small.test")
    server.admin("account", "add", "sizer@small.test", "--password", "Sizer-secret1")
    server.admin("settings", "set", "mail.max_message_size", "1000", "--domain", "small.test")
    out = server.admin("settings", "show", "--effective", "--account", "sizer@small.test").stdout
    assert "mail.max_message_size = 1000  (domain)\n" in out

    big = message(3739)
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.has_extn("size")
        # SIZE declared: refused at RCPT (RFC 1870 §6.2)
        s.mail("someone@elsewhere.test", [f"SIZE={len(big)}"])
        code, text = s.rcpt("sizer@small.test")
        assert (code, text[:5]) == (552, b"5.3.4"), (code, text)
        s.rset()
        # no SIZE: the same message is refused after DATA
        s.mail("someone@elsewhere.test")
        assert s.rcpt("sizer@small.test")[0] == 250
        code, text = s.data(big)
        assert (code, text[:5]) == (552, b"5.3.4"), (code, text)
        # a message within the limit is delivered
        s.mail("someone@elsewhere.test")
        assert s.rcpt("sizer@small.test")[0] == 250
        assert s.data(message(900))[0] == 250
    wait_for(lambda: len(server.messages("sizer", "small.test")) == 1, what="delivery")
    assert len(server.messages("sizer", "small.test")) == 1
    assert "message too big for sizer@small.test" in server.log_text()


def test_login_names_go_through_access_records(
    server: Server, tls_context: ssl.SSLContext, tmp_path: pathlib.Path
) -> None:
    """``router test --access login-alice`` resolves to alice, and logging in with that name
    over IMAP and POP3 opens alice's mailbox; a name routed elsewhere is refused."""
    table = tmp_path / "router.txt"
    table.write_text("Access:<login-*> = *\n<away> = someone@elsewhere.test\n")
    server.admin("router", "set", str(table))
    out = server.admin("router", "test", "--access", "login-alice@example.test").stdout
    assert "alice@example.test" in out
    m = imaplib.IMAP4_SSL(
        "localhost", server.port("imap", tls="implicit"), ssl_context=tls_context, timeout=30
    )
    try:
        assert m.login("login-alice@example.test", "alice-secret")[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
    finally:
        m.logout()
    p = poplib.POP3_SSL(
        "localhost", server.port("pop3", tls="implicit"), context=tls_context, timeout=30
    )
    try:
        p.user("login-alice")
        assert p.pass_("alice-secret").startswith(b"+OK")
    finally:
        p.quit()
    m = imaplib.IMAP4_SSL(
        "localhost", server.port("imap", tls="implicit"), ssl_context=tls_context, timeout=30
    )
    try:
        with pytest.raises(imaplib.IMAP4.error):
            m.login("away", "alice-secret")
    finally:
        m.logout()


def test_mail_service_off_refuses_mail_at_rcpt(server: Server) -> None:
    """An account whose Mail service is off receives nothing: 550 5.2.1 at RCPT."""
    server.admin("account", "add", "quiet@example.test", "--password", "Quiet-secret1")
    server.admin("account", "set", "quiet@example.test", "--services", "imap,pop")
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        s.mail("someone@elsewhere.test")
        code, text = s.rcpt("quiet@example.test")
        assert (code, text[:5]) == (550, b"5.2.1"), (code, text)
        assert s.rcpt("alice@example.test")[0] == 250


def test_forwarders_accept_outside_mail_and_groups_deliver_to_each_member(
    server: Server,
) -> None:
    """An alias to an outside address is refused to outside senders (554: relaying), a
    Forwarder to the same address is accepted from anyone; a Group delivers one copy to each
    member, with its hop marker."""
    server.admin("alias", "add", "oldfriend@example.test", "friend@elsewhere.test")
    server.admin("forwarder", "add", "friend@example.test", "friend@elsewhere.test")
    server.admin("group", "add", "team@example.test", "alice", "bob@example.test")
    listed = server.admin("group", "list").stdout
    assert "team@example.test -> alice@example.test, bob@example.test" in listed
    before = {a: len(server.messages(a)) for a in ("alice", "bob")}
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        s.mail("someone@elsewhere.test")
        assert s.rcpt("oldfriend@example.test")[0] == 554
        assert s.rcpt("friend@example.test")[0] == 250
        s.rset()
        s.sendmail(
            "someone@elsewhere.test",
            ["team@example.test"],
            b"From: someone@elsewhere.test\r\nTo: team@example.test\r\nSubject: team\r\n\r\nhi\r\n",
        )
    for account in ("alice", "bob"):
        wait_for(
            lambda a=account: len(server.messages(a)) == before[a] + 1,
            what=f"group copy for {account}",
        )
        newest = [m for m in server.messages(account) if b"Subject: team" in m]
        assert len(newest) == 1
        assert b"Delivered-To: team@example.test" in newest[0]


def test_max_folders_refuses_imap_create_with_limit(
    server: Server, tls_context: ssl.SSLContext
) -> None:
    """quota.max_folders (here a domain's Account Default) caps IMAP CREATE: NO [LIMIT]."""
    server.admin("domain", "add", "folders.test")
    server.admin("account", "add", "filer@folders.test", "--password", "Filer-secret1")

    def login() -> imaplib.IMAP4_SSL:
        m = imaplib.IMAP4_SSL(
            "localhost", server.port("imap", tls="implicit"), ssl_context=tls_context, timeout=30
        )
        m.login("filer@folders.test", "Filer-secret1")
        return m

    m = login()
    try:
        have = len(m.list()[1]) - 1  # every folder but INBOX (the special-use ones count)
    finally:
        m.logout()
    server.admin("settings", "set", "quota.max_folders", str(have + 1), "--domain", "folders.test")
    m = login()
    try:
        assert m.create("Projects")[0] == "OK"
        typ, data = m.create("More")
        assert typ == "NO" and b"[LIMIT]" in data[0], (typ, data)
    finally:
        m.logout()
