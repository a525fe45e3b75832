"""The web panel (WebAdmin, WebUser) against a real server over real sockets: the HTTPS
redirect, cookies and headers, CSRF, rights, session ends, login throttling shared with IMAP,
HTML validity of every page. No browser: tests/e2e/webclient.py speaks HTTP."""

from __future__ import annotations

import imaplib
import re
import ssl
from typing import Iterator

import html5lib
import pytest

from tests.e2e.harness import POSTMASTER_PASSWORD, Server, wait_for
from tests.e2e.webclient import Response, WebClient

pytestmark = pytest.mark.e2e

LISTENERS = [
    {"protocol": "http", "address": "127.0.0.1", "port": 0, "tls": "none"},
    {"protocol": "http", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0},
    {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
]
PM = "postmaster@example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(str(tmp_path_factory.mktemp("web") / "base"))
    srv.set_listeners(LISTENERS)
    srv.admin("settings", "set", "auth.fail_delays", "[1]")
    srv.admin("domain", "add", "other.test")
    srv.admin("account", "add", "user@example.test", "--password", "user-secret-1")
    srv.admin("account", "add", "boss@other.test", "--password", "boss-secret-1")
    srv.admin("settings", "set", "--account", "boss@other.test", "domain_admin", "true")
    srv.admin("account", "add", "root@other.test", "--password", "root-secret-1", "--admin")
    srv.admin("account", "add", "staff@other.test", "--password", "staff-secret-1")
    srv.admin("account", "add", "ops@example.test", "--password", "ops-secret-1", "--admin")
    with srv.running():
        yield srv


def https(server: Server) -> WebClient:
    return WebClient(server.port("http", tls="implicit"))


def admin_client(server: Server) -> WebClient:
    c = https(server)
    r = c.login(PM, POSTMASTER_PASSWORD)
    assert r.status == 303 and r.location == "/admin/", (r.status, r.body)
    return c


def domains(server: Server) -> str:
    return server.admin("domain", "list").stdout


def strict_html(r: Response) -> None:
    """The page parses as HTML5 without a single parse error."""
    parser = html5lib.HTMLParser(strict=True)
    parser.parse(r.body)


def test_plain_http_redirects_to_https_except_for_client_ips(server: Server) -> None:
    """Plain HTTP answers only a redirect to the HTTPS listener, unless the browser is on a
    Client IP; the change of Client IPs applies at once."""
    plain = WebClient(server.port("http", tls="none"), secure=False)
    r = plain.get("/admin/domains?x=1")
    assert r.status == 301
    port = server.port("http", tls="implicit")
    assert r.location == f"https://127.0.0.1:{port}/admin/domains?x=1"
    assert r.body.count("<form") == 0
    server.admin("settings", "set", "clients.ips", "127.0.0.1")
    try:
        r = plain.get("/login")
        assert r.status == 200 and "password" in r.body
        r = plain.login(PM, POSTMASTER_PASSWORD)
        assert r.status == 303
        (cookie,) = [c for c in r.set_cookies() if c.startswith("cgtwist_session=")]
        assert "Secure" not in cookie  # the browser would never send it back over HTTP
    finally:
        server.admin("settings", "unset", "clients.ips")
    assert plain.get("/login").status == 301


def test_cookie_and_security_headers(server: Server) -> None:
    """The session cookie is __Host-, Secure, HttpOnly, SameSite=Strict; every page forbids
    framing and scripts and is never cached."""
    c = https(server)
    r = c.login(PM, POSTMASTER_PASSWORD)
    (cookie,) = [x for x in r.set_cookies() if x.startswith("__Host-cgtwist_session=")]
    attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= attrs, cookie
    for path in ("/admin/domains", "/", "/admin/router"):
        page = c.get(path)
        assert page.status == 200
        csp = page.header("Content-Security-Policy")
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "script-src" not in csp
        assert page.header("X-Frame-Options") == "DENY"
        assert page.header("Cache-Control") == "no-store"


def test_every_post_needs_the_csrf_token(server: Server) -> None:
    """A POST without the session's token, or with another session's, changes nothing."""
    c = admin_client(server)
    other = admin_client(server)
    r = c.post("/admin/domains", {"name": "forged.test"})
    assert r.status == 403 and "stale or forged" in r.body
    r = c.post("/admin/domains", {"name": "forged.test", "csrf": other.get("/").csrf()})
    assert r.status == 403
    assert "forged.test" not in domains(server)
    r = c.submit("/admin/domains", "/admin/domains", {"name": "made.test"})
    assert r.status == 303
    assert "made.test" in domains(server)
    # The login form has its own token, bound to a pre-login cookie.
    fresh = https(server)
    r = fresh.post("/login", {"name": PM, "password": POSTMASTER_PASSWORD, "csrf": "x"})
    assert r.status == 403 and not any("session" in k for k in fresh.cookies)


def test_rights(server: Server) -> None:
    """Users have WebUser only; a domain administrator manages its own domain's accounts
    and nothing else, and never a server administrator's account."""
    user = https(server)
    assert user.login("user@example.test", "user-secret-1").location == "/"
    assert user.get("/").status == 200
    assert user.get("/admin/domains").status == 403
    assert user.submit("/", "/admin/domains", {"name": "u.test"}).status == 403

    boss = https(server)
    assert boss.login("boss@other.test", "boss-secret-1").location == "/admin/"
    listing = boss.get("/admin/domains").body
    assert "other.test" in listing and "example.test" not in listing
    own = boss.get("/admin/domains/other.test/accounts")
    assert own.status == 200
    strict_html(own)
    assert "/accounts/root/remove" not in own.body  # no buttons that could only fail
    assert "/accounts/staff/remove" in own.body
    assert boss.get("/admin/domains/example.test/accounts").status == 403
    token = boss.get("/admin/domains/other.test/accounts").csrf()
    r = boss.post(
        "/admin/domains/example.test/accounts",
        {"csrf": token, "name": "intruder", "password": "pw-intruder-1"},
    )
    assert r.status == 403
    r = boss.post(
        "/admin/domains/other.test/accounts/root/password", {"csrf": token, "password": "mine-now"}
    )
    assert r.status == 403
    assert boss.get("/admin/domains/other.test/accounts/root").status == 403
    r = boss.post(
        "/admin/domains/other.test/accounts/staff/password",
        {"csrf": token, "password": "staff-secret-2"},
    )
    assert r.status == 303
    for page in ("/admin/router", "/admin/queue", "/admin/settings/network/clientips"):
        assert boss.get(page).status == 403, page
    assert boss.post("/admin/domains", {"csrf": token, "name": "b.test"}).status == 403
    assert "b.test" not in domains(server)
    log = server.log_text()
    assert "change by web boss@other.test: password of staff@other.test changed" in log


def test_sessions_end_at_logout_password_change_and_idle_time(server: Server) -> None:
    """Logging out ends the session; a password change ends every session of the account;
    a session ends after web.session_lifetime seconds however busy (idle expiry, which
    polling would postpone, is tests/web/test_sessions.py on a Clock)."""
    a = https(server)
    a.login("user@example.test", "user-secret-1")
    stale = dict(a.cookies)
    a.submit("/", "/logout", {})
    replay = https(server)
    replay.cookies = stale
    assert replay.get("/").status == 303

    first, second = https(server), https(server)
    first.login("user@example.test", "user-secret-1")
    second.login("user@example.test", "user-secret-1")
    r = first.submit(
        "/",
        "/password",
        {"current": "user-secret-1", "new": "user-secret-2", "again": "user-secret-2"},
    )
    assert r.status == 303 and r.location == "/login?changed=1"
    assert second.get("/").status == 303
    assert first.get("/").status == 303
    assert second.login("user@example.test", "user-secret-2").location == "/"

    server.admin("settings", "set", "web.session_lifetime", "1")
    try:
        busy = https(server)
        busy.login("user@example.test", "user-secret-2")
        wait_for(lambda: busy.get("/").status == 303, 30, "the session to reach its lifetime")
    finally:
        server.admin("settings", "unset", "web.session_lifetime")


def test_sessions_follow_changes_made_with_cgtwist_admin(server: Server) -> None:
    """Rights follow the account's flags at each request, and a password set (or a disable)
    with cgtwist-admin while the server runs ends the account's web sessions too."""
    ops = https(server)
    assert ops.login("ops@example.test", "ops-secret-1").location == "/admin/"
    assert ops.get("/admin/router").status == 200
    server.admin("settings", "unset", "admin", "--account", "ops@example.test")
    assert ops.get("/admin/router").status == 403
    assert ops.get("/").status == 200
    server.admin("account", "passwd", "ops@example.test", "--password", "ops-secret-2")
    r = ops.get("/")
    assert r.status == 303 and r.location.startswith("/login")
    assert ops.login("ops@example.test", "ops-secret-2").location == "/"
    server.admin("account", "set", "ops@example.test", "--disable")
    assert ops.get("/").status == 303
    log = server.log_text()
    assert "sessions of ops@example.test ended" in log
    # cgtwist-admin's changes are in the server's log too, with the Unix user.
    assert re.search(r"change by cgtwist-admin \(\w+\): password of ops@example\.test changed", log)


def test_failed_logins_throttle_across_protocols(server: Server) -> None:
    """A wrong IMAP password and a wrong web password count against the same host: the web
    failure is this host's second, and is delayed as such (fail2ban-readable line)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.port("imap", tls="implicit"), ssl_context=ctx)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("ghost1@example.test", "wrong-1")
    finally:
        imap.shutdown()
    c = https(server)
    r = c.login("ghost2@example.test", "wrong-2")
    assert r.status == 401 and "Wrong name or password" in r.body
    line = wait_for(
        lambda: re.search(
            r"auth failed: ip=127\.0\.0\.1 login=ghost2@example\.test protocol=http "
            r"failures=(\d+) delay=(\S+)",
            server.log_text(),
        ),
        30,
        "the web failure's log line",
    )
    assert int(line.group(1)) >= 2, line.group(0)
    assert line.group(2) == "1"
    assert c.login(PM, POSTMASTER_PASSWORD).status == 303  # a success clears the host


def test_http_listeners_rebind_live(server: Server) -> None:
    """An http listener added to the listeners setting serves at once, and one removed stops
    accepting, without a restart."""
    extra = {"protocol": "http", "address": "127.0.0.2", "port": 0, "tls": "implicit"}
    server.set_listeners(LISTENERS + [extra])
    try:
        entry = wait_for(
            lambda: [p for p in server.ports() if p["address"] == "127.0.0.2" and p["bound"]],
            30,
            "the new http listener",
        )[0]
        page = WebClient(int(entry["port"]), host="127.0.0.2").get("/login")
        assert page.status == 200 and "Log in" in page.body
        assert page.header("Server") == "cgtwist"
    finally:
        server.set_listeners(LISTENERS)
    wait_for(
        lambda: not [p for p in server.ports() if p["address"] == "127.0.0.2"],
        30,
        "the removed listener to go",
    )
    with pytest.raises(OSError):
        WebClient(int(entry["port"]), host="127.0.0.2").get("/login")


def test_blacklisted_ips_page_stores_the_setting(server: Server) -> None:
    """Settings -> Network has the other address lists too; each saves its own setting."""
    c = admin_client(server)
    r = c.submit(
        "/admin/settings/network/blacklisted",
        "/admin/settings/network/blacklisted",
        {"ips": "203.0.113.0/24 ; abuse"},
    )
    assert r.status == 303
    try:
        shown = server.admin("settings", "show", "protection.blacklist.ips").stdout
        assert "203.0.113.0/24" in shown
        assert "Blacklisted IPs saved." in c.get(r.location).body
        assert c.get("/admin/settings/network/nonsense").status == 400
    finally:
        server.admin("settings", "unset", "protection.blacklist.ips")


def test_domain_aliases(server: Server) -> None:
    """A domain alias is created and removed on the Domains page."""
    c = admin_client(server)
    r = c.submit(
        "/admin/domains", "/admin/domains", {"name": "alias.test", "alias_of": "other.test"}
    )
    assert r.status == 303
    assert "(aliases: alias.test)" in domains(server)
    page = c.get("/admin/domains")
    strict_html(page)
    assert "alias.test is now another name of other.test." in page.body
    r = c.post("/admin/domains/remove", {"csrf": page.csrf(), "name": "alias.test"})
    assert r.status == 303
    assert "alias.test" not in domains(server)


def test_listeners_page_adds_and_removes_a_listener(server: Server) -> None:
    """Settings -> Listeners adds a socket that serves at once and removes it again; a wrong
    entry is refused with the reason and nothing changes."""
    c = admin_client(server)
    page = "/admin/settings/listeners"
    r = c.submit(
        page, page, {"protocol": "http", "address": "127.0.0.3", "port": "0", "tls": "implicit"}
    )
    assert r.status == 303
    try:
        entry = wait_for(
            lambda: [p for p in server.ports() if p["address"] == "127.0.0.3" and p["bound"]],
            30,
            "the listener added on the page",
        )[0]
        assert WebClient(int(entry["port"]), host="127.0.0.3").get("/login").status == 200
        listing = c.get(page)
        strict_html(listing)
        assert f"listening on {entry['port']}" in listing.body
        bad = c.submit(
            page, page, {"protocol": "http", "address": "127.0.0.3", "port": "1", "tls": "starttls"}
        )
        assert bad.status == 400 and "HTTP has no STARTTLS" in bad.body
    finally:
        r = c.submit(
            page,
            page + "/remove",
            {
                "protocol": "http",
                "address": "127.0.0.3",
                "port": "0",
                "tls": "implicit",
                "submission": "0",
            },
        )
    assert r.status == 303
    wait_for(
        lambda: not [p for p in server.ports() if p["address"] == "127.0.0.3"],
        30,
        "the listener removed on the page to go",
    )
    assert "change by web postmaster@example.test: setting listeners set to" in server.log_text()


def test_oversized_form_is_refused(server: Server) -> None:
    c = admin_client(server)
    token = c.get("/admin/router").csrf()
    body = ("csrf=" + token + "&table=" + "x" * 1_100_000).encode()
    r = c.request("POST", "/admin/router", body=body)
    assert r.status == 413


def test_every_page_is_valid_html_and_shows_no_hash(server: Server) -> None:
    """Each page parses as strict HTML5 and none shows a password hash."""
    c = admin_client(server)
    pages = [
        c.get("/login?next=/admin/"),
        c.get("/"),
        c.get("/admin/domains"),
        c.get("/admin/domains/example.test/accounts"),
        c.get("/admin/domains/example.test/accounts?q=post"),
        c.get("/admin/domains/example.test/accounts/user"),
        c.get("/admin/settings/network/clientips"),
        c.get("/admin/settings/network/blacklisted"),
        c.submit(
            "/admin/settings/network/clientips",
            "/admin/settings/network/clientips",
            {"ips": "10.0.0.0/8\nnot-an-ip\n192.0.2.1-192.0.2.0"},
        ),
        c.get("/admin/router"),
        c.submit(
            "/admin/router",
            "/admin/router/test",
            {"table": "<*@old.test> = *@example.test\n", "address": "x@old.test"},
        ),
        c.submit("/admin/router", "/admin/router", {"table": "no such record\n"}),
        c.get("/admin/queue"),
        c.get("/no/such/page"),
        https(server).login("nobody@example.test", "wrong"),
    ]
    for page in pages:
        strict_html(page)
        assert "$argon2" not in page.body
    invalid = pages[8]
    assert invalid.status == 400
    assert "line 2: <code>not-an-ip</code>" in invalid.body
    assert "line 3: <code>192.0.2.1-192.0.2.0</code>: range ends before it starts" in invalid.body
    assert "Route: <strong>" in pages[10].body and "x@example.test" in pages[10].body
