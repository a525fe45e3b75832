"""Rules end to end: a real twistd, real SMTP, the loopback DNS server and an outbound sink.

A Server Rule tags spam by the SPF result the receiver recorded; a Domain Rule files list mail
into a folder; an Account vacation answers each sender once and never list mail; two accounts
redirecting to each other end with one DSN (5.4.6), not a storm. Every rule set is stored with
``cgtwist-admin rules set`` while the server runs.
"""

from __future__ import annotations

import imaplib
import os
import smtplib
import uuid
from typing import Iterator

import pytest

from tests.e2e.harness import ALL_LISTENERS, DEFAULT_ZONE, Server, wait_for
from tests.e2e.sink import Sink

pytestmark = pytest.mark.e2e

_MX = "MX 10 mail.example.test"
ZONE = dict(
    DEFAULT_ZONE,
    **{
        "spf-pass.test": [_MX, 'TXT "v=spf1 ip4:127.0.0.1 -all"'],
        "spf-softfail.test": [_MX, 'TXT "v=spf1 ~all"'],
        "lists.test": [_MX, 'TXT "v=spf1 ip4:127.0.0.1 -all"'],
        "friends.test": [_MX],
        # 127.0.0.1 is listed in the DNSBL zone rbl.test (RFC 5782 §2.1: 127.0.0.2 = listed)
        "1.0.0.127.rbl.test": ["A 127.0.0.2"],
    },
)

SERVER_RULES = """version 1

rule "Junk by SPF"
  priority 8
  if SPF Result in "fail, softfail"
  do Tag Subject "[SPAM]"
  do Add Header "X-Spam-Flag: YES"
"""
DOMAIN_RULES = """version 1

rule "Lists to folder"
  priority 5
  if Header Field is "List-Id: *"
  do Store in "Lists"
  do Mark "Read"
"""
VACATION = """version 1

rule "Vacation"
  priority 5
  do Reply with "I am away until Monday."
"""


def redirect_to(target: str) -> str:
    return f'version 1\n\nrule "Away"\n  priority 5\n  do Redirect to "{target}"\n  do Discard\n'


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Server]:
    base = str(tmp_path_factory.mktemp("rules"))
    srv = Server(os.path.join(base, "base"), dns_records=ZONE)
    srv.set_listeners(ALL_LISTENERS)
    srv.admin("settings", "set", "smtp.remote_port", str(sink.port))
    with srv.running():
        for name in ("alice", "bob", "dave", "erin", "frank"):
            srv.admin("account", "add", f"{name}@example.test", "--password", f"{name}-secret")
        yield srv


def rules(server: Server, flag: list[str], text: str) -> None:
    path = os.path.join(server.base, f"rules-{uuid.uuid4().hex}.txt")
    with open(path, "w") as f:
        f.write(text)
    server.admin("rules", "set", *flag, path)


def send(server: Server, sender: str, rcpt: str, body: bytes) -> None:
    server.send(sender, [rcpt], body, helo="client.elsewhere.test")


def mail(sender: str, to: str, marker: str, extra: str = "") -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@test>\r\n{extra}\r\n{marker} body\r\n"
    ).encode()


def folder_messages(server: Server, account: str, folder: str) -> list[bytes]:
    return [data for _name, data in folder_files(server, account, folder)]


def folder_files(server: Server, account: str, folder: str) -> list[tuple[str, bytes]]:
    """(sub/name, content) of every message in the account's folder."""
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(server.maildir(account), f".{folder}", sub)
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    out.append((f"{sub}/{name}", f.read()))
    return out


def queue_empty(server: Server) -> bool:
    """Nothing left in the queue: no copy, reply or DSN still on its way."""
    out = server.admin("queue", "list").stdout
    return out.startswith("0 message(s) shown; 0 in the active queue")


def test_server_rule_tags_spam_by_spf(server: Server) -> None:
    """A softfail sender's message arrives once, its Subject tagged and flagged; a pass
    sender's message arrives untouched."""
    rules(server, ["--server"], SERVER_RULES)
    try:
        spam, ham = f"spam-{uuid.uuid4().hex[:8]}", f"ham-{uuid.uuid4().hex[:8]}"
        send(
            server,
            "x@spf-softfail.test",
            "alice@example.test",
            mail("x@spf-softfail.test", "alice@example.test", spam),
        )
        send(
            server,
            "y@spf-pass.test",
            "alice@example.test",
            mail("y@spf-pass.test", "alice@example.test", ham),
        )

        def both() -> list[bytes]:
            found = [m for m in server.messages("alice") if spam.encode() in m or ham.encode() in m]
            return found if len(found) >= 2 else []

        got = wait_for(both, 60, "both messages in alice's INBOX")
        (tagged,) = [m for m in got if spam.encode() in m]
        (clean,) = [m for m in got if ham.encode() in m]
        assert f"Subject: [SPAM] {spam}\r\n".encode() in tagged
        assert b"X-Spam-Flag: YES\r\n" in tagged
        assert b"spf=softfail" in tagged
        assert f"Subject: {ham}\r\n".encode() in clean
        assert b"X-Spam-Flag" not in clean
    finally:
        server.admin("rules", "delete", "--server")


def test_domain_rule_files_list_mail(server: Server) -> None:
    """List mail goes to the Lists folder (created on first use), marked read; other mail to
    INBOX."""
    rules(server, ["--domain", "example.test"], DOMAIN_RULES)
    try:
        listed, direct = f"list-{uuid.uuid4().hex[:8]}", f"direct-{uuid.uuid4().hex[:8]}"
        send(
            server,
            "dev@lists.test",
            "erin@example.test",
            mail("dev@lists.test", "erin@example.test", listed, "List-Id: <dev.lists.test>\r\n"),
        )
        send(
            server,
            "y@spf-pass.test",
            "erin@example.test",
            mail("y@spf-pass.test", "erin@example.test", direct),
        )
        wait_for(lambda: folder_messages(server, "erin", "Lists"), 60, "list mail in erin's Lists")
        server.wait_messages("erin", 1)
        (filed,) = [n for n, m in folder_files(server, "erin", "Lists") if listed.encode() in m]
        assert filed.startswith("cur/") and filed.endswith(":2,S"), filed  # Mark "Read"
        tls = server.tls_context()
        tls.check_hostname = False
        with imaplib.IMAP4_SSL(
            "127.0.0.1", server.port("imap", "implicit"), ssl_context=tls
        ) as imap:
            imap.login("erin@example.test", "erin-secret")
            imap.select("Lists", readonly=True)
            typ, data = imap.search(None, "SEEN", "HEADER", "List-Id", "dev.lists.test")
            assert typ == "OK" and data[0].split(), data
        assert not any(listed.encode() in m for m in server.messages("erin"))
        assert any(direct.encode() in m for m in server.messages("erin"))
    finally:
        server.admin("rules", "delete", "--domain", "example.test")


def test_vacation_replies_once_per_sender_never_to_lists(server: Server, sink: Sink) -> None:
    """Two messages from one sender get one reply (Auto-Submitted, null sender); list mail
    gets none; both are stored."""
    rules(server, ["--account", "bob@example.test"], VACATION)
    tag = uuid.uuid4().hex[:8]
    sender = f"carol-{tag}@elsewhere.test"
    for i in range(2):
        send(server, sender, "bob@example.test", mail(sender, "bob@example.test", f"v{i}-{tag}"))
    send(
        server,
        f"dev-{tag}@elsewhere.test",
        "bob@example.test",
        mail(
            f"dev-{tag}@elsewhere.test",
            "bob@example.test",
            f"vl-{tag}",
            "List-Id: <x.elsewhere.test>\r\nPrecedence: list\r\n",
        ),
    )
    server.wait_messages("bob", 3, 60, tag.encode())
    replies = wait_for(
        lambda: [m for m in sink.messages() if sender in m.recipients], 60, "the reply"
    )
    wait_for(lambda: queue_empty(server), 60, "an empty queue")
    replies = [m for m in sink.messages() if tag in " ".join(m.recipients)]
    assert len(replies) == 1, [r.recipients for r in replies]
    (reply,) = replies
    assert reply.sender == ""
    assert reply.recipients == [sender]
    assert b"Auto-Submitted: auto-replied" in reply.data
    assert b"I am away until Monday." in reply.data
    # The two messages wait in one LOCAL queue whose deliveries run concurrently: on a busy
    # machine the second can be delivered first, and the one reply answers whichever was.
    assert any(f"In-Reply-To: <v{i}-{tag}@test>".encode() in reply.data for i in range(2))


def test_redirect_loop_ends_with_one_dsn(server: Server, sink: Sink) -> None:
    """dave redirects to frank, frank back to dave: frank's copy is never sent back (dave is
    in its Delivered-To), it fails with 5.4.6 and the sender gets one DSN; nothing circles."""
    rules(server, ["--account", "dave@example.test"], redirect_to("frank@example.test"))
    rules(server, ["--account", "frank@example.test"], redirect_to("dave@example.test"))
    tag = uuid.uuid4().hex[:8]
    sender = f"loop-{tag}@elsewhere.test"
    send(server, sender, "dave@example.test", mail(sender, "dave@example.test", f"loop-{tag}"))
    dsns = wait_for(lambda: [m for m in sink.messages() if sender in m.recipients], 60, "the DSN")
    wait_for(lambda: queue_empty(server), 60, "an empty queue")
    dsns = [m for m in sink.messages() if sender in m.recipients]
    assert len(dsns) == 1
    assert dsns[0].sender == ""
    assert b"5.4.6" in dsns[0].data
    assert server.messages("dave") == [] and server.messages("frank") == []
    assert "mail loop" in server.log_text()


REFUSING = """version 1

rule "Friends"
  priority 9
  if From is "*@friends.test"
  do Stop Processing

rule "No offers"
  priority 5
  if Subject is "offer *"
  do Reject with "we take no offers here"

rule "Drop noise"
  priority 5
  if Header Field is "X-Noise: *"
  do Discard
"""


def sent_reply(server: Server, sender: str, rcpt: str, body: bytes) -> tuple[int, bytes]:
    """The reply to the final dot of one message."""
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=60) as s:
        s.ehlo("client.elsewhere.test")
        s.mail(sender)
        s.rcpt(rcpt)
        return s.data(body)


def test_server_rule_rejects_and_discards_before_the_250(server: Server, sink: Sink) -> None:
    """Reject with is the answer to the DATA (550 5.7.1 and the rule's text): nothing is
    queued, stored or bounced; Discard answers 250 and stores nothing; a higher rule's Stop
    Processing lets its message through."""
    rules(server, ["--server"], REFUSING)
    try:
        tag = uuid.uuid4().hex[:8]
        sender = f"seller-{tag}@elsewhere.test"
        offer = mail(sender, "alice@example.test", f"offer {tag}")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=60) as s:
                s.ehlo("client.elsewhere.test")
                s.sendmail(sender, ["alice@example.test"], offer)
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error == b"5.7.1 we take no offers here"
        code, text = sent_reply(
            server,
            sender,
            "alice@example.test",
            mail(sender, "alice@example.test", f"noise-{tag}", "X-Noise: yes\r\n"),
        )
        assert code == 250, text
        friend = f"pal-{tag}@friends.test"
        send(
            server,
            friend,
            "alice@example.test",
            mail(friend, "alice@example.test", f"offer {tag}!"),
        )
        server.wait_messages("alice", 1, 60, f"pal-{tag}".encode())
        wait_for(lambda: queue_empty(server), 60, "an empty queue")
        assert [m for m in server.messages("alice") if tag.encode() in m] == [
            m for m in server.messages("alice") if f"pal-{tag}".encode() in m
        ]
        assert not [m for m in sink.messages() if sender in m.recipients]  # no DSN
        log = server.log_text()
        assert "server rule 'No offers' Reject with before queueing" in log
        assert "server rule 'Drop noise' Discard before queueing" in log
    finally:
        server.admin("rules", "delete", "--server")


RBL_RULES = """version 1

rule "Listed"
  priority 7
  if RBL Listed is "rbl.test"
  do Tag Subject "[RBL]"
"""


def test_rbl_listing_is_a_rule_condition(server: Server) -> None:
    """With protection.rbl.action tag a listed client is accepted and the zone that listed it
    is what the RBL Listed condition sees: the Server Rule tags the subject."""
    server.admin("settings", "set", "protection.rbl.zones", '["rbl.test"]')
    server.admin("settings", "set", "protection.rbl.mode", "all")
    server.admin("settings", "set", "protection.rbl.action", "tag")
    rules(server, ["--server"], RBL_RULES)
    try:
        tag = uuid.uuid4().hex[:8]
        sender = f"y-{tag}@spf-pass.test"
        send(server, sender, "alice@example.test", mail(sender, "alice@example.test", f"rbl-{tag}"))
        (got,) = server.wait_messages("alice", 1, 60, f"rbl-{tag}".encode())
        assert f"Subject: [RBL] rbl-{tag}\r\n".encode() in got
        assert "rbl listing tagged, not refused" in server.log_text()
    finally:
        server.admin("rules", "delete", "--server")
        server.admin("settings", "set", "protection.rbl.zones", "[]")
        server.admin("settings", "set", "protection.rbl.action", "reject")


KEYWORDS = """version 1

rule "Junk keyword"
  priority 5
  if Subject is "junk-*"
  do Mark "Junk, Read"
"""


def test_mark_with_keywords_shows_in_imap(server: Server) -> None:
    """Mark's keywords are stored with the delivered message: IMAP FETCH FLAGS shows the
    keyword and the system flag, and SEARCH KEYWORD finds it."""
    rules(server, ["--account", "frank@example.test"], KEYWORDS)
    try:
        tag = uuid.uuid4().hex[:8]
        sender = f"y-{tag}@spf-pass.test"
        send(
            server, sender, "frank@example.test", mail(sender, "frank@example.test", f"junk-{tag}")
        )
        server.wait_messages("frank", 1, 60, f"junk-{tag}".encode())
        tls = server.tls_context()
        tls.check_hostname = False
        with imaplib.IMAP4_SSL(
            "127.0.0.1", server.port("imap", "implicit"), ssl_context=tls
        ) as imap:
            imap.login("frank@example.test", "frank-secret")
            imap.select("INBOX", readonly=True)
            typ, data = imap.search(None, "KEYWORD", "Junk", "SUBJECT", f"junk-{tag}")
            assert typ == "OK" and len(data[0].split()) == 1, data
            typ, fetched = imap.fetch(data[0].split()[0], "(FLAGS)")
            flags = fetched[0].decode() if isinstance(fetched[0], bytes) else str(fetched[0])
            assert "Junk" in flags and "\\Seen" in flags, flags
    finally:
        server.admin("rules", "delete", "--account", "frank@example.test")


PROPOSED = """version 1

rule "Reports elsewhere"
  priority 5
  if Subject is "report-*"
  do Store in "Reports"
"""


def test_replay_prints_what_a_proposed_rule_set_changes(server: Server) -> None:
    """Messages delivered to erin are kept in the history; replaying a proposed domain rule
    set that files one of them into Reports prints that message, the rule and the old and
    new actions, and nothing for the others."""
    tag = uuid.uuid4().hex[:8]
    sender = f"y-{tag}@spf-pass.test"
    for subject in (f"report-{tag}", f"hello-{tag}", f"lunch-{tag}"):
        send(server, sender, "erin@example.test", mail(sender, "erin@example.test", subject))
    server.wait_messages("erin", 3, 60, tag.encode())
    path = os.path.join(server.base, f"proposed-{tag}.txt")
    with open(path, "w") as f:
        f.write(PROPOSED)

    def replayed() -> str:
        out = server.admin(
            "rules", "replay", "--domain", "example.test", "--since", "1h", "--proposed", path
        ).stdout
        return out if f"report-{tag}" in out else ""

    out = wait_for(replayed, 60, "the delivered messages in the history")
    lines = [line for line in out.splitlines() if tag in line]
    assert len(lines) == 1, out  # only the report changes
    assert f"from <{sender}> to erin@example.test subject 'report-{tag}'" in lines[0]
    block = out[out.index(lines[0]) :].splitlines()
    assert block[1].strip() == "current:  (no rule fires: delivered as is)", out
    assert block[2].strip() == "proposed: rule 'Reports elsewhere': Store in \"Reports\"", out
    assert "would change" in out.splitlines()[-1]
    bad = server.admin("rules", "replay", "--server", "--since", "soon", check=False)
    assert bad.returncode != 0 and "--since" in bad.stderr
