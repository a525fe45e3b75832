"""The spine end to end: a real twistd process, real sockets, real TLS, Python's smtplib.

A message sent on 25 (plain and STARTTLS), 587 (AUTH after STARTTLS) or 465 (implicit TLS) ends
up byte-exact, plus trace headers, in the recipient's Maildir.
"""

from __future__ import annotations

import contextlib
import json
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from typing import Any, Iterator

import pytest

from tests.e2e.harness import BIN, POSTMASTER_PASSWORD, Server, wait_for

pytestmark = pytest.mark.e2e


def make_message(sender: str, rcpt: str, body: str = "Hello.\r\n") -> bytes:
    mid = uuid.uuid4().hex
    return (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: test {mid}\r\nMessage-ID: <{mid}@test>\r\n"
        f"\r\n{body}"
    ).encode()


def split_trace(delivered: bytes, original: bytes) -> bytes:
    """The part of a delivered message before the client's bytes: our added headers."""
    assert delivered.endswith(original), "message body was altered"
    return delivered[: len(delivered) - len(original)]


def find(server: Server, account: str, marker: bytes, count: int = 1) -> list[bytes]:
    return server.wait_messages(account, count, 30, marker)


def test_port_25_plain_delivers_byte_exact(server: Server) -> None:
    """Inbound mail without TLS is accepted for a local account and lands in Maildir new/."""
    msg = make_message(
        "someone@elsewhere.test", "alice@example.test", "Line one.\r\n.dot line\r\n\r\nend\r\n"
    )
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.elsewhere.test")
        s.sendmail("someone@elsewhere.test", ["alice@example.test"], msg)
    (delivered,) = find(server, "alice", msg.split(b"Message-ID: ")[1].split(b"\r\n")[0])
    trace = split_trace(delivered, msg)
    assert b"Received: from client.elsewhere.test" in trace
    assert b"Return-Path: <someone@elsewhere.test>" in trace


def test_port_25_starttls(server: Server, tls_context: ssl.SSLContext) -> None:
    """STARTTLS on the MX port is offered and works with a verifying client."""
    msg = make_message("someone@elsewhere.test", "bob@example.test")
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        assert not s.has_extn("auth"), "AUTH must not be offered before TLS"
        s._host = "localhost"  # verify the certificate's name
        s.starttls(context=tls_context)
        s.ehlo("client.test")
        assert s.has_extn("auth")
        s.sendmail("someone@elsewhere.test", ["bob@example.test"], msg)
    (delivered,) = find(server, "bob", msg.split(b"Message-ID: ")[1].split(b"\r\n")[0])
    assert b"with ESMTPS" in split_trace(delivered, msg)


def test_submission_requires_auth(server: Server, tls_context: ssl.SSLContext) -> None:
    """On 587 MAIL before AUTH gets 530; after STARTTLS and AUTH the message is accepted."""
    port = server.port("smtp", submission=True)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        code, _ = s.mail("alice@example.test")
        assert code == 530
        s.rset()
        s._host = "localhost"
        s.starttls(context=tls_context)
        s.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("alice@example.test", "wrong-password")
    msg = make_message("alice@example.test", "bob@example.test")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        s._host = "localhost"
        s.starttls(context=tls_context)
        s.ehlo("client.test")
        s.login("alice@example.test", "alice-secret")
        s.sendmail("alice@example.test", ["bob@example.test"], msg)
    (delivered,) = find(server, "bob", msg.split(b"Message-ID: ")[1].split(b"\r\n")[0])
    assert b"with ESMTPSA" in split_trace(delivered, msg)


def test_smtps_implicit_tls_with_percent_login(server: Server, tls_context: ssl.SSLContext) -> None:
    """465 speaks TLS from the first byte; 'user%domain' logins work for clients that cut at '@'."""
    msg = make_message("bob@example.test", "alice@example.test")
    with smtplib.SMTP_SSL(
        "localhost",
        server.port("smtp", tls="implicit", submission=True),
        context=tls_context,
        timeout=30,
    ) as s:
        s.ehlo("client.test")
        s.login("bob%example.test", "bob-secret")
        s.sendmail("bob@example.test", ["alice@example.test"], msg)
    find(server, "alice", msg.split(b"Message-ID: ")[1].split(b"\r\n")[0])


def test_unknown_user_and_relay_are_refused(server: Server) -> None:
    """No backscatter and no open relay: 550 5.1.1 for unknown locals, 554 5.7.1 for relaying."""
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        s.mail("someone@elsewhere.test")
        code, text = s.rcpt("nobody@example.test")
        assert code == 550 and b"5.1.1" in text
        code, text = s.rcpt("victim@elsewhere.test")
        assert code == 554 and b"5.7.1" in text


def test_account_added_while_running_receives_at_once(server: Server) -> None:
    """cgtwist-admin changes apply without a restart."""
    server.admin("account", "add", "carol@example.test", "--password", "carol-secret")
    msg = make_message("someone@elsewhere.test", "carol@example.test")
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.sendmail("someone@elsewhere.test", ["carol@example.test"], msg)
    find(server, "carol", msg.split(b"Message-ID: ")[1].split(b"\r\n")[0])


def test_settings_change_applies_without_restart(server: Server) -> None:
    """Lowering the recipient limit with the CLI is enforced on the next transaction."""
    server.admin("settings", "set", "smtp.max_recipients", "1")
    try:
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
            s.ehlo("client.test")
            s.mail("someone@elsewhere.test")
            assert s.rcpt("alice@example.test")[0] == 250
            code, text = s.rcpt("bob@example.test")
            assert code == 452, (code, text)
    finally:
        server.admin("settings", "unset", "smtp.max_recipients")


def test_twistd_help_lists_cgtwist() -> None:
    """After install, 'twistd --help' shows the cgtwist plugin."""
    out = subprocess.run(
        [f"{BIN}/twistd", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "cgtwist" in out
    out = subprocess.run(
        [f"{BIN}/twistd", "cgtwist", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--base-dir" in out and "--config" in out


def test_bad_config_is_one_line_and_nonzero(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A typo in the bootstrap file stops twistd with file, line and key, not a traceback."""
    conf = tmp_path / "bad.conf"
    conf.write_text('[server]\nbase_dir = "x"\nbogus = 1\n')
    r = subprocess.run(
        [f"{BIN}/twistd", "-n", "cgtwist", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert f"{conf}:3: server.bogus: unknown key" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_delivered_mail_is_readable_by_mutt(server: Server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """mutt opens the account's Maildir and shows the message delivered over SMTP."""
    from tests.e2e.clients import mutt_pipe_first_message

    server.admin("account", "add", "muttreader@example.test", "--password", "m-secret")
    msg = make_message(
        "someone@elsewhere.test", "muttreader@example.test", "Read me with mutt.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.sendmail("someone@elsewhere.test", ["muttreader@example.test"], msg)
    server.wait_messages("muttreader", 1)
    shown = mutt_pipe_first_message(server.maildir("muttreader"), str(tmp_path / "piped"))
    assert b"Subject: test " in shown
    assert b"Read me with mutt." in shown


def test_dsn_success_notification(server: Server, tls_context: ssl.SSLContext) -> None:
    """RFC 3461: a sender asking NOTIFY=SUCCESS gets a 'delivered' report once the message is
    in the recipient's Maildir; the report is a multipart/report from <>."""
    import email

    server.admin("account", "add", "dsnsender@example.test", "--password", "dsn-secret")
    server.admin("account", "add", "dsnrcpt@example.test", "--password", "dsn-secret2")
    msg = make_message("dsnsender@example.test", "dsnrcpt@example.test")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", submission=True), timeout=30) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn")
        s._host = "localhost"
        s.starttls(context=tls_context)
        s.ehlo("client.test")
        s.login("dsnsender@example.test", "dsn-secret")
        s.sendmail(
            "dsnsender@example.test",
            ["dsnrcpt@example.test"],
            msg,
            mail_options=["RET=HDRS", "ENVID=env-42"],
            rcpt_options=["NOTIFY=SUCCESS"],
        )
    server.wait_messages("dsnrcpt", 1)
    (report,) = server.wait_messages("dsnsender", 1)
    parsed = email.message_from_bytes(report)
    assert parsed.get_content_type() == "multipart/report"
    assert b"Return-Path: <>" in report
    status = [p for p in parsed.walk() if p.get_content_type() == "message/delivery-status"]
    assert status, "no delivery-status part"
    text = report.decode(errors="replace")
    assert "Action: delivered" in text
    assert "env-42" in text


@contextlib.contextmanager
def settings(server: Server, **values: Any) -> Iterator[None]:
    """Set dynamic settings (dots spelled ``__``) with the CLI for the block, then unset them."""
    keys = [k.replace("__", ".") for k in values]
    for key, value in zip(keys, values.values(), strict=True):
        server.admin("settings", "set", key, json.dumps(value))
    try:
        yield
    finally:
        for key in keys:
            server.admin("settings", "unset", key)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return out
        out += chunk


def test_early_talker_gets_554(server: Server) -> None:
    """With a greeting pause, a client that talks before the banner (a bot) gets 554 and is
    closed without any of its commands answered; a patient client gets the banner after the
    pause and sends as usual."""
    with settings(server, smtp__greeting_delay=2):
        with socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=30) as sock:
            sock.sendall(
                b"EHLO bot.example\r\nMAIL FROM:<bot@elsewhere.test>\r\n"
                b"RCPT TO:<alice@example.test>\r\nDATA\r\n"
            )
            assert read_all(sock) == b"554 5.5.1 Protocol error: talked before the greeting\r\n"
        msg = make_message("someone@elsewhere.test", "alice@example.test")
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
            s.ehlo("client.elsewhere.test")
            s.sendmail("someone@elsewhere.test", ["alice@example.test"], msg)
        find(server, "alice", msg.split(b"Message-ID: ")[1].split(b"\r\n")[0])
    assert "pregreet traffic from peer=127.0.0.1" in server.log_text()


def test_trickling_client_is_dropped(server: Server) -> None:
    """A client trickling a command line byte by byte (each byte well within the idle timeout)
    is dropped at the command deadline with 421 4.4.2; a normal client is served meanwhile."""
    with settings(server, smtp__command_deadline=2, smtp__idle_timeout=30):
        with socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=30) as sock:
            assert sock.recv(4096).startswith(b"220 ")
            sock.settimeout(0.4)  # the trickle's pace: one byte per 0.4 s unless the server speaks
            reply = b""
            started = time.monotonic()
            for byte in b"EHLO trickle.elsewhere.test and on and on and on and on and on":
                try:
                    sock.sendall(bytes([byte]))
                    reply = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if reply:
                    break
            assert reply.startswith(b"421 4.4.2"), reply
            assert time.monotonic() - started < 20
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
            assert s.noop()[0] == 250
    wait_for(
        lambda: "command deadline exceeded: peer=127.0.0.1" in server.log_text(),
        10,
        "the deadline's log line",
    )


def test_trickled_data_is_dropped(server: Server) -> None:
    """DATA trickled at a few octets a second is cut at the DATA deadline (421 4.4.2) and
    nothing is delivered."""
    with settings(server, smtp__data_deadline=2, smtp__data_min_rate=1000, smtp__data_timeout=30):
        with socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=30) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"220 ")
            sock.sendall(b"HELO trickle.elsewhere.test\r\n")
            assert f.readline().startswith(b"250 ")
            sock.sendall(b"MAIL FROM:<someone@elsewhere.test>\r\n")
            assert f.readline().startswith(b"250 ")
            sock.sendall(b"RCPT TO:<bob@example.test>\r\n")
            assert f.readline().startswith(b"250 ")
            sock.sendall(b"DATA\r\n")
            assert f.readline().startswith(b"354 ")
            sock.settimeout(0.4)
            reply = b""
            for _ in range(50):
                try:
                    sock.sendall(b"Subject: trickled-data-marker\r\n")
                    reply = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if reply:
                    break
            assert reply.startswith(b"421 4.4.2"), reply
    wait_for(lambda: "DATA deadline exceeded" in server.log_text(), 10, "the deadline's log line")
    assert not any(b"trickled-data-marker" in m for m in server.messages("bob"))


def submission(
    server: Server, tls_context: ssl.SSLContext, user: str, password: str
) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", server.port("smtp", submission=True), timeout=30)
    s.ehlo("client.test")
    s._host = "localhost"  # type: ignore[attr-defined]  # the certificate's name
    s.starttls(context=tls_context)
    s.ehlo("client.test")
    s.login(user, password)
    return s


def test_sender_ownership_on_submission(server: Server, tls_context: ssl.SSLContext) -> None:
    """RELIABILITY.md #44: alice, authenticated on 587, gets 553 5.7.1 for MAIL FROM bob's
    address; her own address, her alias and <> pass. An account's smtp.send_as allows more, and
    postmaster (an administrator) may send as any address of its domain."""
    server.admin("alias", "add", "ally@example.test", "alice@example.test")
    with submission(server, tls_context, "alice@example.test", "alice-secret") as s:
        code, text = s.mail("bob@example.test")
        assert (code, text) == (
            553,
            b"5.7.1 <bob@example.test>: Sender address rejected: not owned by alice@example.test",
        )
        code, _ = s.mail("ceo@elsewhere.test")
        assert code == 553
        for own in ["alice@example.test", "ally@example.test", ""]:
            assert s.mail(own)[0] == 250, own
            s.rset()
        msg = make_message("ally@example.test", "bob@example.test")
        s.sendmail("ally@example.test", ["bob@example.test"], msg)
    find(server, "bob", msg.split(b"Message-ID: ")[1].split(b"\r\n")[0])
    server.admin(
        "settings",
        "set",
        "--account",
        "alice@example.test",
        "smtp.send_as",
        json.dumps("*@lists.example.test"),
    )
    with submission(server, tls_context, "alice@example.test", "alice-secret") as s:
        assert s.mail("dev@lists.example.test")[0] == 250
    with submission(server, tls_context, "postmaster@example.test", POSTMASTER_PASSWORD) as s:
        assert s.mail("bob@example.test")[0] == 250
        s.rset()
        assert s.mail("someone@elsewhere.test")[0] == 553
    assert (
        "sender not owned: peer=127.0.0.1 account=alice@example.test MAIL FROM <bob@example.test>"
        in server.log_text()
    )


def test_from_header_check(server: Server, tls_context: ssl.SSLContext) -> None:
    """With smtp.check_from_header on, a message whose From: is not the account's gets 550 5.7.1
    after DATA and is not delivered; off (the default), only the envelope is checked."""
    forged = make_message("bob@example.test", "bob@example.test")
    with submission(server, tls_context, "alice@example.test", "alice-secret") as s:
        s.sendmail("alice@example.test", ["bob@example.test"], forged)  # off: accepted
    find(server, "bob", forged.split(b"Message-ID: ")[1].split(b"\r\n")[0])
    with settings(server, smtp__check_from_header=True):
        forged = make_message("bob@example.test", "bob@example.test")
        with submission(server, tls_context, "alice@example.test", "alice-secret") as s:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                s.sendmail("alice@example.test", ["bob@example.test"], forged)
            assert refused.value.smtp_code == 550
            assert refused.value.smtp_error.startswith(b"5.7.1 From: header address rejected")
            mine = make_message("alice@example.test", "bob@example.test")
            s.sendmail("alice@example.test", ["bob@example.test"], mine)
        find(server, "bob", mine.split(b"Message-ID: ")[1].split(b"\r\n")[0])
    marker = forged.split(b"Message-ID: ")[1].split(b"\r\n")[0]
    assert not any(marker in m for m in server.messages("bob"))
