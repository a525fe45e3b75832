"""WebUser's active sessions against a real twistd: an account logged in over IMAP (imaplib),
POP3 (poplib), SMTP submission (smtplib) and the web sees each of them on its Sessions page
and ends the one it picks; the mail client is told so in its protocol (IMAP ``* BYE``, POP3
``-ERR``, SMTP 421) and disconnected.
Another account cannot end it, even with its identifier in hand."""

from __future__ import annotations

import html
import imaplib
import poplib
import re
import smtplib
import ssl
from typing import Iterator

import html5lib
import pytest

from tests.e2e.harness import Server, wait_for
from tests.e2e.webclient import Response, WebClient

pytestmark = pytest.mark.e2e

HOST = "localhost"  # the generated certificate's name; 127.0.0.1 here
LISTENERS = [
    {"protocol": "http", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "submission": True},
    {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "pop3", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
]
USER, PASSWORD = "walker@example.test", "walker-secret-1"
OTHER, OTHER_PASSWORD = "snoop@example.test", "snoop-secret-1"
ROW_RE = re.compile(r"<tr( class=\"this\")?>\s*<td>(\w+)(.*?)</tr>", re.S)
ID_RE = re.compile(r'name="id" value="([^"]*)"')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(str(tmp_path_factory.mktemp("websessions") / "base"))
    srv.set_listeners(LISTENERS)
    srv.admin("account", "add", USER, "--password", PASSWORD)
    srv.admin("account", "add", OTHER, "--password", OTHER_PASSWORD)
    with srv.running():
        yield srv


def web(server: Server, name: str, password: str) -> WebClient:
    c = WebClient(server.port("http", tls="implicit"))
    r = c.login(name, password)
    assert r.status == 303 and r.location == "/", (r.status, r.body[:300])
    return c


def imap(server: Server, ctx: ssl.SSLContext) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(HOST, server.port("imap", tls="implicit"), ssl_context=ctx, timeout=30)
    m.login(USER, PASSWORD)
    return m


def pop(server: Server, ctx: ssl.SSLContext) -> poplib.POP3_SSL:
    p = poplib.POP3_SSL(HOST, server.port("pop3", tls="implicit"), context=ctx, timeout=30)
    p.user(USER)
    p.pass_(PASSWORD)
    return p


def rows(page: Response) -> list[tuple[str, bool, str]]:
    """(protocol, this session, the id its End button posts) for each line of the table."""
    out = []
    for m in ROW_RE.finditer(page.body):
        found = ID_RE.search(m.group(3))
        out.append((m.group(2), bool(m.group(1)), html.unescape(found.group(1)) if found else ""))
    return out


def sessions(c: WebClient) -> list[tuple[str, bool, str]]:
    page = c.get("/sessions")
    assert page.status == 200, page.body[:300]
    html5lib.HTMLParser(strict=True).parse(page.body)
    return rows(page)


def id_of(listed: list[tuple[str, bool, str]], protocol: str) -> str:
    ids = [i for p, _this, i in listed if p == protocol]
    assert len(ids) == 1, listed
    return ids[0]


def test_end_mail_sessions_from_the_sessions_page(server: Server) -> None:
    """The page lists the web session (marked as this one) and the IMAP, POP3 and SMTP
    logins; ending the IMAP one sends imaplib a ``* BYE`` and closes it, the POP3 session
    stays until it is ended too (``-ERR``), then SMTP (421); each is logged with who ended
    it."""
    ctx = server.tls_context()
    m = imap(server, ctx)
    p = pop(server, ctx)
    smtp = smtplib.SMTP(HOST, server.port("smtp", submission=True), timeout=30)
    smtp.starttls(context=ctx)
    smtp.login(USER, PASSWORD)
    c = web(server, USER, PASSWORD)
    listed = sessions(c)
    assert sorted(proto for proto, _this, _id in listed) == ["IMAP", "POP3", "SMTP", "Web"]
    assert [this for proto, this, _id in listed if proto == "Web"] == [True]
    page = c.get("/sessions").body
    assert page.count("<td>TLS</td>") == 4 and "127.0.0.1" in page

    r = c.submit("/sessions", "/sessions/end", {"id": id_of(listed, "IMAP")})
    assert r.status == 303 and r.location == "/sessions", (r.status, r.body[:300])
    # What imaplib reads next is the server's goodbye, then the end of the connection.
    bye = m.readline()
    assert bye.startswith(b"* BYE ") and b"WebUser" in bye, bye
    assert m.readline() == b""
    with pytest.raises(imaplib.IMAP4.abort):
        m.noop()
    m.shutdown()
    left = sessions(c)
    assert sorted(proto for proto, _this, _id in left) == ["POP3", "SMTP", "Web"], left
    assert p.noop().startswith(b"+OK")

    r = c.submit("/sessions", "/sessions/end", {"id": id_of(left, "POP3")})
    assert r.status == 303
    # POP3 has no untagged replies: the goodbye is an -ERR line ahead of any command's reply.
    goodbye = p.file.readline()
    assert goodbye.startswith(b"-ERR ") and b"WebUser" in goodbye, goodbye
    assert p.file.readline() == b""
    p.close()

    smtp_id = id_of(sessions(c), "SMTP")
    assert c.submit("/sessions", "/sessions/end", {"id": smtp_id}).status == 303
    code, text = smtp.getreply()  # RFC 5321 §3.8: 421, then the server closes
    assert code == 421 and b"WebUser" in text, (code, text)
    smtp.close()
    assert sorted(proto for proto, _this, _id in sessions(c)) == ["Web"]

    # "End all other sessions": a second browser and a new IMAP login go, this one stays.
    m = imap(server, ctx)
    other = web(server, USER, PASSWORD)
    r = c.submit("/sessions", "/sessions/end-others", {})
    assert r.status == 303 and r.location == "/sessions"
    assert m.readline().startswith(b"* BYE ")
    m.shutdown()
    assert other.get("/").status == 303
    assert [(proto, this) for proto, this, _id in sessions(c)] == [("Web", True)]
    wait_for(
        lambda: (
            f"web: {USER} ended its imap session from 127.0.0.1" in server.log_text()
            and f"web: {USER} ended its pop3 session from 127.0.0.1" in server.log_text()
            and f"web: {USER} ended its smtp session from 127.0.0.1" in server.log_text()
        ),
        30,
        "the log lines of the three ends",
    )


def test_another_account_cannot_end_a_session_by_its_id(server: Server) -> None:
    """A forged form with the victim's session id, the forger's own valid CSRF token: 404,
    a log line naming the forger, and the victim's IMAP session goes on; so it does after
    a POST from the victim's browser without its CSRF token."""
    ctx = server.tls_context()
    m = imap(server, ctx)
    victim = web(server, USER, PASSWORD)
    target = id_of(sessions(victim), "IMAP")
    snoop = web(server, OTHER, OTHER_PASSWORD)
    assert [proto for proto, _this, _id in sessions(snoop)] == ["Web"]
    r = snoop.submit("/sessions", "/sessions/end", {"id": target})
    assert r.status == 404, (r.status, r.body[:300])
    assert m.noop()[0] == "OK"
    # Nor can a page elsewhere make the victim's own browser post it: no CSRF token, or
    # another session's, is refused.
    assert victim.post("/sessions/end", {"id": target}).status == 403
    forged = {"id": target, "csrf": snoop.get("/sessions").csrf()}
    assert victim.post("/sessions/end", forged).status == 403
    assert m.noop()[0] == "OK"
    assert id_of(sessions(victim), "IMAP") == target
    # A web session's handle is no better a key than a mail session's id.
    phone = web(server, USER, PASSWORD)
    own = [i for proto, this, i in sessions(phone) if this]
    assert own == [""]  # no End button for the session the page is shown in: Log out ends it
    handle = id_of([r for r in sessions(victim) if r[0] == "Web" and not r[1]][-1:], "Web")
    assert snoop.submit("/sessions", "/sessions/end", {"id": handle}).status == 404
    assert phone.get("/").status == 200
    r = victim.submit("/sessions", "/sessions/end", {"id": handle})
    assert r.status == 303
    assert phone.get("/").status == 303  # ended: back to the login page
    wait_for(
        lambda: f"web: {OTHER} from 127.0.0.1 asked to end session" in server.log_text(),
        30,
        "the refusal's log line",
    )
    m.logout()


def test_password_change_ends_the_mail_sessions_when_asked(server: Server) -> None:
    """A new password set in WebUser with "Also end my mail sessions" ticked (as
    it is by default) closes them too: whoever knew the old password is out."""
    ctx = server.tls_context()
    m = imap(server, ctx)
    c = web(server, USER, PASSWORD)
    form = {"current": PASSWORD, "new": "walker-secret-2", "again": "walker-secret-2"}
    r = c.submit("/", "/password", dict(form, end_mail="1"))
    assert r.status == 303 and r.location == "/login?changed=1"
    bye = m.readline()
    assert bye.startswith(b"* BYE "), bye
    c = web(server, USER, "walker-secret-2")
    assert [proto for proto, _this, _id in sessions(c)] == ["Web"]
    # Unticked, the mail sessions stay.
    m2 = imaplib.IMAP4_SSL(HOST, server.port("imap", tls="implicit"), ssl_context=ctx, timeout=30)
    m2.login(USER, "walker-secret-2")
    back = {"current": "walker-secret-2", "new": PASSWORD, "again": PASSWORD}
    assert c.submit("/", "/password", back).status == 303
    assert m2.noop()[0] == "OK"
    m2.logout()
