"""WebAdmin's Statistics, /metrics, SMTP settings, Rules editors and log viewer, and WebUser's
vacation and forwarding, against a real server over real sockets (tests/e2e/webclient.py):
each page parses as strict HTML5, each change is logged with who made it and applies live."""

from __future__ import annotations

import imaplib
import re
import smtplib
import ssl
import uuid
from typing import Iterator

import html5lib
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import POSTMASTER_PASSWORD, Server, wait_for
from tests.e2e.webclient import Response, WebClient, form_values

pytestmark = pytest.mark.e2e

LISTENERS = [
    {"protocol": "http", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0},
    {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
]
PM = "postmaster@example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(str(tmp_path_factory.mktemp("webpages") / "base"))
    srv.set_listeners(LISTENERS)
    srv.admin("settings", "set", "auth.fail_delays", "[1]")
    srv.admin("domain", "add", "other.test")
    srv.admin("account", "add", "user@example.test", "--password", "user-secret-1")
    srv.admin("account", "add", "friend@example.test", "--password", "friend-secret-1")
    srv.admin("account", "add", "boss@other.test", "--password", "boss-secret-1")
    srv.admin("settings", "set", "--account", "boss@other.test", "domain_admin", "true")
    srv.admin("account", "add", "staff@other.test", "--password", "staff-secret-1")
    with srv.running():
        yield srv


def https(server: Server) -> WebClient:
    return WebClient(server.port("http", tls="implicit"))


def logged_in(server: Server, name: str = PM, password: str = POSTMASTER_PASSWORD) -> WebClient:
    c = https(server)
    assert c.login(name, password).status == 303
    return c


def strict_html(r: Response) -> None:
    html5lib.HTMLParser(strict=True).parse(r.body)


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no {name}{labels} in /metrics")


def message(sender: str, to: str, subject: str, body: str = "Hello.") -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@client.test>\r\n\r\n{body}\r\n"
    ).encode()


# ---- /metrics and Statistics ----------------------------------------------------------------


def test_metrics_need_a_client_ip_or_the_token(server: Server) -> None:
    """/metrics answers a Client IP, or anyone with web.metrics_token as a bearer token;
    everyone else gets 403 (and a log line), whatever token they guess."""
    c = https(server)
    assert c.get("/metrics").status == 403
    server.admin("settings", "set", "web.metrics_token", "scrape-token-1")
    try:
        assert c.get("/metrics", {"Authorization": "Bearer wrong"}).status == 403
        r = c.get("/metrics", {"Authorization": "Bearer scrape-token-1"})
        assert r.status == 200, r.body
        assert r.header("Content-Type").startswith("text/plain; version=0.0.4")
        assert "cgtwist_messages_total" in r.body
    finally:
        server.admin("settings", "unset", "web.metrics_token")
    assert c.get("/metrics", {"Authorization": "Bearer scrape-token-1"}).status == 403
    server.admin("settings", "set", "clients.ips", "127.0.0.1")
    try:
        assert c.get("/metrics").status == 200
    finally:
        server.admin("settings", "unset", "clients.ips")
    assert "web: /metrics refused to 127.0.0.1" in server.log_text()


def test_counters_follow_the_mail(server: Server) -> None:
    """A message taken in and delivered, a refused recipient, a failed IMAP login and the
    connections each move their counter on /metrics, and the Statistics page shows them."""
    server.admin("settings", "set", "clients.ips", "127.0.0.1")
    c = logged_in(server)
    try:
        before = https(server).get("/metrics").body
        marker = uuid.uuid4().hex
        server.send(
            "friend@example.test",
            ["user@example.test"],
            message("friend@example.test", "user@example.test", f"counted {marker}"),
        )
        server.wait_messages("user", 1, containing=marker.encode())
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=60) as s:
            s.ehlo("client.test")
            s.mail("friend@example.test")
            code, _ = s.rcpt("nobody-here@example.test")
            assert code >= 500
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        imap = imaplib.IMAP4_SSL("127.0.0.1", server.port("imap", tls="implicit"), ssl_context=ctx)
        try:
            with pytest.raises(imaplib.IMAP4.error):
                imap.login("user@example.test", "wrong-password")
        finally:
            imap.shutdown()

        def moved() -> str | None:
            after = https(server).get("/metrics").body
            grew = all(
                metric(after, name, **labels) >= metric(before, name, **labels) + 1
                for name, labels in (
                    ("cgtwist_messages_total", {"event": "received"}),
                    ("cgtwist_messages_total", {"event": "delivered"}),
                    ("cgtwist_messages_total", {"event": "rejected"}),
                    ("cgtwist_connections_total", {"protocol": "smtp"}),
                    ("cgtwist_connections_total", {"protocol": "imap"}),
                    ("cgtwist_connections_total", {"protocol": "http"}),
                    ("cgtwist_login_failures_total", {"protocol": "imap"}),
                )
            )
            return after if grew else None

        after = wait_for(moved, 30, "the counters to move")
        assert metric(after, "cgtwist_queue_size", kind="LOCAL") >= 0
        page = c.get("/admin/statistics")
        assert page.status == 200
        strict_html(page)
        assert "Per minute" in page.body and "<meter" in page.body
        received = int(metric(after, "cgtwist_messages_total", event="received"))
        assert f"<dt>Received</dt><dd>{received}</dd>" in page.body
    finally:
        server.admin("settings", "unset", "clients.ips")
    boss = logged_in(server, "boss@other.test", "boss-secret-1")
    assert boss.get("/admin/statistics").status == 403


def test_smtp_workers_counts_reach_the_server(server: Server) -> None:
    """With smtp.workers the SMTP sessions run in worker processes: their connections and
    refusals still reach /metrics (sent up the worker's link)."""
    server.admin("settings", "set", "clients.ips", "127.0.0.1")
    server.admin("settings", "set", "smtp.workers", "1")
    try:
        wait_for(lambda: server.worker_pids(ready=True), 60, "the SMTP worker")
        before = https(server).get("/metrics").body
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=60) as s:
            s.ehlo("client.test")
            s.mail("friend@example.test")
            assert s.rcpt("nobody-here@example.test")[0] >= 500

        def moved() -> bool:
            after = https(server).get("/metrics").body
            return all(
                metric(after, name, **labels) >= metric(before, name, **labels) + 1
                for name, labels in (
                    ("cgtwist_messages_total", {"event": "rejected"}),
                    ("cgtwist_connections_total", {"protocol": "smtp"}),
                )
            )

        wait_for(moved, 30, "the worker's counts on /metrics")
    finally:
        server.admin("settings", "unset", "smtp.workers")
        server.admin("settings", "unset", "clients.ips")
        wait_for(lambda: not server.worker_pids(), 60, "the worker to stop")


# ---- Settings -> Mail -> SMTP ---------------------------------------------------------------


@pytest.mark.parametrize("page", ["receiving", "relaying", "delivery"])
def test_settings_page_round_trips_unchanged(server: Server, page: str) -> None:
    """Each page shows every field with its description, and saving it as shown changes
    nothing (every value reads back as it was written)."""
    c = logged_in(server)
    url = f"/admin/settings/mail/smtp/{page}"
    shown = c.get(url)
    assert shown.status == 200
    strict_html(shown)
    r = c.post(url, form_values(shown.body, url))
    assert r.status == 303, r.body
    assert "Nothing changed." in c.get(url).body


def test_settings_are_checked_logged_and_live(server: Server) -> None:
    """A wrong value is refused with the message on its field and nothing is saved; a right
    one is stored, logged with who made it, and the next SMTP session obeys it."""
    c = logged_in(server)
    url = "/admin/settings/mail/smtp/receiving"
    form = form_values(c.get(url).body, url)
    bad = dict(form, **{"smtp.max_recipients": "many", "smtp.max_errors": "3"})
    r = c.post(url, bad)
    assert r.status == 400
    strict_html(r)
    assert "smtp.max_recipients must be a whole number" in r.body
    assert 'value="many"' in r.body  # the text as typed stays in its field
    assert "smtp.max_errors = 10" in server.admin("settings", "show", "smtp.max_errors").stdout
    r = c.post(url, dict(form, **{"smtp.max_recipients": "2"}))
    assert r.status == 303
    try:
        assert "Receiving saved: smtp.max_recipients." in c.get(url).body
        assert (
            "smtp.max_recipients = 2"
            in server.admin("settings", "show", "smtp.max_recipients").stdout
        )
        assert (
            "change by web postmaster@example.test: setting smtp.max_recipients set to 2"
            in server.log_text()
        )
        with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=60) as s:
            s.ehlo("client.test")
            s.mail("friend@example.test")
            assert s.rcpt("user@example.test")[0] == 250
            assert s.rcpt("friend@example.test")[0] == 250
            assert s.rcpt("postmaster@example.test")[0] == 452
    finally:
        server.admin("settings", "unset", "smtp.max_recipients")


def test_settings_pages_are_for_server_administrators(server: Server) -> None:
    boss = logged_in(server, "boss@other.test", "boss-secret-1")
    assert boss.get("/admin/settings/mail/smtp/receiving").status == 403
    token = boss.get("/admin/domains").csrf()
    r = boss.post("/admin/settings/mail/smtp/relaying", {"csrf": token})
    assert r.status == 403
    c = logged_in(server)
    assert c.get("/admin/settings/mail/smtp/nonsense").status == 400
    r = c.post("/admin/settings/mail/smtp/receiving", {"smtp.max_recipients": "5"})
    assert r.status == 403  # no CSRF token


# ---- Rules ----------------------------------------------------------------------------------

GOOD_RULES = 'version 1\n\nrule "Tag lists"\n  priority 5\n  if Header Field is "List-Id: *"\n  do Tag Subject "[list]"\n'


def test_server_rules_editor(server: Server) -> None:
    """A parse error names its line; a save bumps the revision; saving over a change made
    meanwhile is refused with both texts shown; explain shows each rule's trace."""
    c = logged_in(server)
    page = c.get("/admin/rules")
    assert page.status == 200
    strict_html(page)
    bad = 'version 1\n\nrule "Broken"\n  iff Subject is "x"\n'
    r = c.post("/admin/rules", dict(form_values(page.body, "/admin/rules"), text=bad))
    assert r.status == 400
    strict_html(r)
    assert "line 4" in r.body and "iff Subject is" in r.body
    assert "none set" in server.admin("rules", "show", "--server").stderr
    opened = c.get("/admin/rules")
    form = dict(form_values(opened.body, "/admin/rules"), text=GOOD_RULES)
    r = c.post("/admin/rules", form)
    assert r.status == 303
    assert "The Server Rules saved (revision 1)." in c.get("/admin/rules").body
    assert 'rule "Tag lists"' in server.admin("rules", "show", "--server").stdout
    assert "change by web postmaster@example.test: the Server Rules set" in server.log_text()
    # the same stale form again: revision 1 is stored now, the form says 0
    r = c.post("/admin/rules", dict(form, text=GOOD_RULES + "\n"))
    assert r.status == 409
    strict_html(r)
    assert "changed since you opened them" in r.body
    explained = c.post(
        "/admin/rules/explain",
        {
            "csrf": opened.csrf(),
            "to": "user@example.test",
            "sender": "friend@example.test",
            "ip": "192.0.2.1",
            "message": "From: friend@example.test\nList-Id: <x.lists.test>\nSubject: hi\n\nbody\n",
        },
    )
    assert explained.status == 200
    strict_html(explained)
    assert "Tag lists" in explained.body and "FIRED" in explained.body
    assert "server: Tag Subject [list]" in explained.body
    r = c.post(
        "/admin/rules", dict(form_values(c.get("/admin/rules").body, "/admin/rules"), text="")
    )
    assert r.status == 303
    assert "none set" in server.admin("rules", "show", "--server").stderr


def test_rules_rights(server: Server) -> None:
    """A domain administrator edits its domain's and accounts' rules, not the server's nor
    another domain's; a user edits only its own, within its RulesAllowed."""
    boss = logged_in(server, "boss@other.test", "boss-secret-1")
    assert boss.get("/admin/rules").status == 403
    assert boss.get("/admin/rules/domain/example.test").status == 403
    own = boss.get("/admin/rules/domain/other.test")
    assert own.status == 200
    strict_html(own)
    url = "/admin/rules/account/other.test/staff"
    r = boss.post(url, dict(form_values(boss.get(url).body, url), text=GOOD_RULES))
    assert r.status == 303
    assert "Tag lists" in server.admin("rules", "show", "--account", "staff@other.test").stdout

    user = logged_in(server, "user@example.test", "user-secret-1")
    assert user.get("/admin/rules/account/example.test/user").status == 403
    server.admin(
        "settings", "set", "--account", "user@example.test", "rules.allowed", '"Filter Only"'
    )
    try:
        mine = user.get("/rules")
        strict_html(mine)
        assert "Filter Only" in mine.body
        redirecting = 'version 1\n\nrule "Away"\n  priority 5\n  do Redirect to "x@other.test"\n'
        r = user.post("/rules", dict(form_values(mine.body, "/rules"), text=redirecting))
        assert r.status == 400 and "Redirect to needs RulesAllowed" in r.body
        r = user.post("/rules", dict(form_values(mine.body, "/rules"), text=GOOD_RULES))
        assert r.status == 303
    finally:
        server.admin("settings", "unset", "--account", "user@example.test", "rules.allowed")
        server.admin("rules", "delete", "--account", "user@example.test")


# ---- WebUser: vacation and forwarding --------------------------------------------------------


def test_vacation_reply_and_forwarding(server: Server) -> None:
    """A vacation message set on the page answers mail sent by smtplib; turned off it keeps
    its text; forwarding without a copy sends the mail on and keeps none."""
    user = logged_in(server, "user@example.test", "user-secret-1")
    page = user.get("/autoreply")
    assert page.status == 200
    strict_html(page)
    away = f"Away until Monday {uuid.uuid4().hex}"
    form = dict(form_values(page.body, "/autoreply"), vacation_on="1", vacation_text=away)
    form.pop("forward_keep", None)
    r = user.post("/autoreply", form)
    assert r.status == 303, r.body
    assert "Saved: vacation message on." in user.get("/autoreply").body
    subject = uuid.uuid4().hex
    server.send(
        "friend@example.test",
        ["user@example.test"],
        message("friend@example.test", "user@example.test", subject),
    )
    reply = server.wait_messages("friend", 1, containing=away.encode())[0]
    assert b"Auto-Submitted: auto-replied" in reply and subject.encode() in reply
    assert "change by web user@example.test: the Account Rules of user@example.test set" in (
        server.log_text()
    )

    page = user.get("/autoreply")
    form = form_values(page.body, "/autoreply")
    form.pop("vacation_on")
    form.update(forward_on="1", forward_to="friend@example.test")
    form.pop("forward_keep", None)
    r = user.post("/autoreply", form)
    assert r.status == 303, r.body
    shown = user.get("/autoreply")
    assert away in shown.body  # off, but the text is kept
    stored = server.admin("rules", "show", "--account", "user@example.test").stdout
    assert "priority 0" in stored and 'Redirect to "friend@example.test"' in stored
    assert "Discard" in stored
    forwarded = uuid.uuid4().hex
    before = len(server.messages("user"))
    server.send(
        "postmaster@example.test",
        ["user@example.test"],
        message("postmaster@example.test", "user@example.test", forwarded),
    )
    server.wait_messages("friend", 1, containing=forwarded.encode())
    assert len([m for m in server.messages("user") if forwarded.encode() in m]) == 0
    assert len(server.messages("user")) == before
    r = user.post("/autoreply", {"csrf": shown.csrf(), "revision": "0", "forward_to": ""})
    assert r.status == 409  # the form's revision is old
    server.admin("rules", "delete", "--account", "user@example.test")


# ---- the log viewer ---------------------------------------------------------------------------


def test_log_viewer_filters(server: Server) -> None:
    """The log viewer shows the newest entries, filtered by level, address, message id and
    IP; a wrong level is refused; it is for server administrators."""
    c = logged_in(server)
    marker = uuid.uuid4().hex
    server.send(
        "friend@example.test",
        ["user@example.test"],
        message("friend@example.test", "user@example.test", marker),
    )
    server.wait_messages("user", 1, containing=marker.encode())
    msg_id = wait_for(
        lambda: (
            (m := re.findall(r"queue: (\S+) <user@example\.test> LOCAL", server.log_text()))
            and m[-1]
        ),
        30,
        "a delivery's log line",
    )
    r = c.get("/admin/logs?level=info&address=friend%40example.test")
    assert r.status == 200
    strict_html(r)
    assert "friend@example.test" in r.body
    assert "Log in" not in r.body
    by_id = c.get(f"/admin/logs?level=debug&id={msg_id}")
    strict_html(by_id)
    rows = re.findall(r"<tr class=\"level-\w+\">.*?</tr>", by_id.body, re.S)
    assert rows and all(msg_id in row for row in rows)
    errors = c.get("/admin/logs?level=error")
    assert "level-info" not in errors.body
    assert c.get("/admin/logs?ip=192.0.2.254").body.count('<tr class="level-') == 0
    assert c.get("/admin/logs?level=loud").status == 400
    boss = logged_in(server, "boss@other.test", "boss-secret-1")
    assert boss.get("/admin/logs").status == 403


def test_every_new_form_needs_the_csrf_token(server: Server) -> None:
    """Each POST of these pages without the session's token is refused and changes nothing."""
    c = logged_in(server)
    user = logged_in(server, "user@example.test", "user-secret-1")
    for client, path, form in (
        (c, "/admin/settings/mail/smtp/delivery", {"smtp.relayhost": "evil.test:25"}),
        (c, "/admin/rules", {"revision": "0", "text": GOOD_RULES}),
        (c, "/admin/rules/domain/example.test", {"revision": "0", "text": GOOD_RULES}),
        (c, "/admin/rules/account/example.test/user", {"revision": "0", "text": GOOD_RULES}),
        (c, "/admin/rules/explain", {"to": "user@example.test", "message": "x"}),
        (user, "/rules", {"revision": "0", "text": GOOD_RULES}),
        (user, "/autoreply", {"revision": "0", "vacation_on": "1", "vacation_text": "x"}),
    ):
        r = client.post(path, form)
        assert r.status == 403 and "stale or forged" in r.body, path
    assert "none set" in server.admin("rules", "show", "--account", "user@example.test").stderr
    assert "none set" in server.admin("rules", "show", "--domain", "example.test").stderr
    assert '"evil.test:25"' not in server.admin("settings", "show", "smtp.relayhost").stdout
