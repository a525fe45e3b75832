"""WebAdmin's account quota with usage and a domain's Forwarders, Groups and mailing Lists
pages, against a real twistd over real sockets (tests/e2e/webclient.py): each change made on
a page is logged with who made it and acts on mail at once; bad input is refused on its
field; rights and the CSRF token are enforced; every page parses as strict HTML5."""

from __future__ import annotations

import re
import uuid
from typing import Iterator

import html5lib
import pytest

from tests.e2e.harness import POSTMASTER_PASSWORD, Server, wait_for
from tests.e2e.webclient import Response, WebClient, form_values

pytestmark = pytest.mark.e2e

LISTENERS = [
    {"protocol": "http", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0},
]
PM = "postmaster@example.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(str(tmp_path_factory.mktemp("webaccounts") / "base"))
    srv.set_listeners(LISTENERS)
    srv.admin("settings", "set", "auth.fail_delays", "[1]")
    srv.admin("domain", "add", "other.test")
    for name in ("user", "friend", "member1", "member2", "quota"):
        srv.admin("account", "add", f"{name}@example.test", "--password", f"{name}-secret-1")
    srv.admin("account", "add", "boss@other.test", "--password", "boss-secret-1")
    srv.admin("settings", "set", "--account", "boss@other.test", "domain_admin", "true")
    srv.admin("account", "add", "staff@other.test", "--password", "staff-secret-1")
    with srv.running():
        yield srv


def logged_in(server: Server, name: str = PM, password: str = POSTMASTER_PASSWORD) -> WebClient:
    c = WebClient(server.port("http", tls="implicit"))
    assert c.login(name, password).status == 303
    return c


def strict_html(r: Response) -> Response:
    html5lib.HTMLParser(strict=True).parse(r.body)
    return r


def message(sender: str, to: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@elsewhere.test>\r\n\r\nHello from outside.\r\n"
    ).encode()


def row(page: str, row_id: str) -> str:
    m = re.search(rf'<tr id="{row_id}"[^>]*>(.*?)</tr>', page, re.S)
    assert m, f"no row {row_id} in the page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", m.group(1))).strip()


def field_error(page: str, name: str) -> str:
    m = re.search(rf'<p class="error" id="{name}-error">(.*?)</p>', page, re.S)
    assert m, f"no error on the field {name}: {page[:2000]}"
    return m.group(1)


def cli_list(server: Server, *args: str) -> str:
    return server.admin(*args).stdout


# ---- quota with usage -------------------------------------------------------------------------


def test_account_page_shows_usage_that_follows_the_mail(server: Server) -> None:
    """The account page (and WebUser's own page) shows the storage and messages the account keeps against the limits
    in force and where each limit comes from; a message delivered to it moves the figures,
    and cgtwist-admin account show agrees (one report for both edges)."""
    server.admin("settings", "set", "--domain", "example.test", "quota.messages", "50")
    server.admin("settings", "set", "--account", "quota@example.test", "quota.storage", "1M")
    c = logged_in(server)
    page = "/admin/domains/example.test/accounts/quota"
    before = strict_html(c.get(page))
    assert before.status == 200, before.body
    assert row(before.body, "quota-storage").startswith("Storage 0 Bytes 0%")
    assert row(before.body, "quota-storage").endswith("account")
    assert "1.0 MiB (1048576 octets)" in row(before.body, "quota-storage")
    assert row(before.body, "quota-messages") == "Messages 0 0% 50 domain"
    assert row(before.body, "quota-grace") == "Grace over quota 86400 s default"

    marker = uuid.uuid4().hex
    body = message("someone@elsewhere.test", "quota@example.test", f"usage {marker}")
    server.send("someone@elsewhere.test", ["quota@example.test"], body + b"x" * 3000 + b"\r\n")
    (stored,) = server.wait_messages("quota", 1, containing=marker.encode())

    def shown() -> str | None:
        text = row(c.get(page).body, "quota-messages")
        return text if text.startswith("Messages 1 ") else None

    assert wait_for(shown, 60, "the account page counting the message") == (
        "Messages 1 2% 50 domain"
    )
    storage = row(c.get(page).body, "quota-storage")
    assert f"({len(stored)} octets)" in storage, storage
    cli = server.admin("account", "show", "quota@example.test").stdout
    assert f'"storage_used": {len(stored)}' in cli and '"messages_limit": 50' in cli
    # WebUser: the account itself sees the same report on its own page.
    mine = strict_html(logged_in(server, "quota@example.test", "quota-secret-1").get("/"))
    assert mine.status == 200, mine.body
    assert row(mine.body, "quota-messages") == "Messages 1 2% 50 domain"
    assert f"({len(stored)} octets)" in row(mine.body, "quota-storage")


def test_account_quota_form_sets_and_inherits_the_limits(server: Server) -> None:
    """The account page sets the account's own quota limits: a bad value is refused on its
    field and nothing is stored (not even the good field beside it); a size with a unit is
    kept in octets; an emptied field goes back to inheriting. Logged with who did it."""
    c = logged_in(server)
    page = "/admin/domains/example.test/accounts/friend"
    action = page + "/quota"
    r = c.submit(page, action, {"storage": "2M", "messages": "many", "grace": ""})
    assert r.status == 400
    strict_html(r)
    assert "quota.messages must be a non-negative integer" in field_error(r.body, "quota-messages")
    assert 'value="2M"' in r.body
    own = server.admin("settings", "show", "--account", "friend@example.test").stdout
    assert "quota." not in own
    r = c.submit(page, action, {"storage": "2M", "messages": "", "grace": "600"})
    assert r.status == 303, r.body
    shown = c.get(page).body
    assert "2.0 MiB (2097152 octets)" in row(shown, "quota-storage")
    assert row(shown, "quota-storage").endswith("account")
    assert row(shown, "quota-grace") == "Grace over quota 600 s account"
    assert form_values(shown, action) == {"csrf": c.get(page).csrf(), "storage": "2097152",
                                          "messages": "", "grace": "600"}  # fmt: skip
    r = c.submit(page, action, {"storage": "", "messages": "", "grace": ""})
    assert r.status == 303
    shown = c.get(page).body
    assert row(shown, "quota-storage").endswith("no limit default")
    assert row(shown, "quota-grace") == "Grace over quota 86400 s default"
    log = server.log_text()
    assert f"change by web {PM}: setting quota.storage of friend@example.test set to 2097152" in log
    assert f"change by web {PM}: setting quota.grace of friend@example.test reset" in log


# ---- forwarders and groups ------------------------------------------------------------------


def test_forwarder_made_on_the_page_forwards_mail_from_outside(server: Server) -> None:
    """A forwarder created on the Forwarders page takes mail from an outside sender and hands
    it to its target; its edit page changes the target, and Remove ends it. Each change is
    logged with the administrator who made it."""
    c = logged_in(server)
    base = "/admin/domains/example.test/forwarders"
    strict_html(c.get(base))
    r = c.submit(base, base, {"name": "sales", "targets": "friend"})
    assert r.status == 303 and r.location == base + "/sales", r.body
    page = strict_html(c.get(base + "/sales"))
    assert "friend@example.test" in page.body
    assert "sales@example.test -> friend@example.test" in cli_list(server, "forwarder", "list")

    marker = uuid.uuid4().hex
    to = "sales@example.test"
    server.send("buyer@elsewhere.test", [to], message("buyer@elsewhere.test", to, marker))
    server.wait_messages("friend", 1, containing=marker.encode())

    form = form_values(page.body, base + "/sales")
    r = c.post(base + "/sales", dict(form, targets="user@example.test\r\n"))
    assert r.status == 303, r.body
    marker2 = uuid.uuid4().hex
    server.send("buyer@elsewhere.test", [to], message("buyer@elsewhere.test", to, marker2))
    server.wait_messages("user", 1, containing=marker2.encode())

    r = c.submit(base + "/sales", base + "/sales/remove", {})
    assert r.status == 303 and r.location == base
    assert "sales@" not in cli_list(server, "forwarder", "list")
    log = server.log_text()
    for change in (
        "forwarder sales@example.test -> friend created",
        "forwarder sales@example.test set to user@example.test",
        "forwarder sales@example.test removed",
    ):
        assert f"change by web {PM}: {change}" in log, change


def test_group_made_on_the_page_delivers_a_copy_to_each_member(server: Server) -> None:
    """A group created on the Groups page delivers one copy to each member."""
    c = logged_in(server)
    base = "/admin/domains/example.test/groups"
    r = c.submit(base, base, {"name": "team", "targets": "member1\nmember2@example.test"})
    assert r.status == 303, r.body
    listing = strict_html(c.get(base)).body
    assert (
        "team@example.test" in listing and "member1@example.test, member2@example.test" in listing
    )
    marker = uuid.uuid4().hex
    to = "team@example.test"
    server.send("boss@elsewhere.test", [to], message("boss@elsewhere.test", to, marker))
    server.wait_messages("member1", 1, containing=marker.encode())
    server.wait_messages("member2", 1, containing=marker.encode())
    assert f"change by web {PM}: group team@example.test -> " in server.log_text()


def test_alias_made_on_the_page_takes_mail_for_its_target(server: Server) -> None:
    """An alias added on the Aliases page delivers to its target; a bad target and a taken
    name are refused on their fields; Remove ends it."""
    c = logged_in(server)
    base = "/admin/domains/example.test/aliases"
    r = c.submit(base, base, {"name": "helpdesk", "target": "two words"})
    assert r.status == 400
    strict_html(r)
    assert "Enter the address" in field_error(r.body, "target")
    r = c.submit(base, base, {"name": "friend", "target": "user"})
    assert r.status == 400 and "friend@example.test" in field_error(r.body, "name")
    assert c.submit(base, base, {"name": "helpdesk", "target": "user"}).status == 303
    assert "helpdesk@example.test" in strict_html(c.get(base)).body
    marker = uuid.uuid4().hex
    to = "helpdesk@example.test"
    server.send("asker@elsewhere.test", [to], message("asker@elsewhere.test", to, marker))
    server.wait_messages("user", 1, containing=marker.encode())
    assert c.submit(base, base + "/remove", {"name": "helpdesk"}).status == 303
    assert "helpdesk" not in cli_list(server, "alias", "list")
    assert f"change by web {PM}: alias helpdesk@example.test -> user created" in server.log_text()


def test_bad_input_is_refused_on_its_field_and_nothing_changes(server: Server) -> None:
    """A bad name, a line that is no address, a name already taken and a forwarder to itself
    are each named beside their field (400), with the typed values kept; nothing is
    created."""
    c = logged_in(server)
    base = "/admin/domains/example.test/forwarders"
    r = c.submit(base, base, {"name": "bad/name", "targets": "friend\nnot an address\n"})
    assert r.status == 400
    strict_html(r)
    assert "Enter a name" in field_error(r.body, "name")
    assert "&#39;not an address&#39; is not an address" in field_error(r.body, "targets")
    assert ">friend\nnot an address\n</textarea>" in r.body  # what was typed stays
    r = c.submit(base, base, {"name": "user", "targets": "friend"})
    assert r.status == 400 and "user@example.test is an account" in field_error(r.body, "name")
    r = c.submit(base, base, {"name": "loop", "targets": "loop@example.test"})
    assert r.status == 400 and "itself" in field_error(r.body, "targets")
    r = c.submit(base, base, {"name": "empty", "targets": "  \n"})
    assert r.status == 400 and "at least one" in field_error(r.body, "targets")
    assert cli_list(server, "forwarder", "list", "example.test") == ""

    c.submit(base, base, {"name": "keep", "targets": "friend"})
    r = c.submit(base + "/keep", base + "/keep", {"targets": "friend\n<bad>"})
    assert r.status == 400 and "is not an address" in field_error(r.body, "targets")
    assert "keep@example.test -> friend@example.test" in cli_list(server, "forwarder", "list")
    assert c.get(base + "/nothere").status == 409
    c.submit(base + "/keep", base + "/keep/remove", {})


def test_rights_and_csrf_on_the_domain_pages(server: Server) -> None:
    """A domain administrator manages the forwarders, groups and lists of its own domain
    only; a user has none of these pages; a POST without the session's CSRF token changes
    nothing."""
    pages = ("aliases", "forwarders", "groups", "lists")
    staff = logged_in(server, "staff@other.test", "staff-secret-1")
    for p in pages:
        assert staff.get(f"/admin/domains/other.test/{p}").status == 403
    boss = logged_in(server, "boss@other.test", "boss-secret-1")
    for p in pages:
        assert strict_html(boss.get(f"/admin/domains/other.test/{p}")).status == 200
        assert boss.get(f"/admin/domains/example.test/{p}").status == 403
    token = boss.get("/admin/domains/other.test/forwarders").csrf()
    for p in pages:
        r = boss.post(
            f"/admin/domains/example.test/{p}", {"csrf": token, "name": "x", "targets": "y"}
        )
        assert r.status == 403, p
    r = boss.post(
        "/admin/domains/other.test/groups", {"csrf": token, "name": "crew", "targets": "staff"}
    )
    assert r.status == 303, r.body
    assert "change by web boss@other.test: group crew@other.test" in server.log_text()
    for p in pages:
        r = boss.post(f"/admin/domains/other.test/{p}", {"name": "forged", "targets": "staff"})
        assert r.status == 403 and "stale or forged" in r.body
    r = boss.post("/admin/domains/other.test/groups/crew/remove", {"csrf": "wrong"})
    assert r.status == 403
    assert "crew@other.test" in cli_list(server, "group", "list")
    assert "forged" not in cli_list(server, "group", "list") + cli_list(server, "forwarder", "list")
    assert "forged" not in cli_list(server, "list", "show")
    boss.submit(
        "/admin/domains/other.test/groups", "/admin/domains/other.test/groups/crew/remove", {}
    )


# ---- mailing lists --------------------------------------------------------------------------


def test_domain_admin_names_only_its_own_accounts_on_a_list(server: Server) -> None:
    """A domain administrator's list may not name another domain's account as owner or
    archive (the archive folder gets a copy of every post): refused on the field; its own
    domain's accounts are fine."""
    boss = logged_in(server, "boss@other.test", "boss-secret-1")
    base = "/admin/domains/other.test/lists"
    r = boss.submit(base, base, {"name": "club", "owner": "user@example.test", "policy": "anyone"})
    assert r.status == 400
    assert "not an account of a domain you administer" in field_error(r.body, "owner")
    assert "club@" not in cli_list(server, "list", "show")
    r = boss.submit(base, base, {"name": "club", "owner": "boss@other.test", "policy": "anyone"})
    assert r.status == 303, r.body
    form = form_values(boss.get(base + "/club").body, base + "/club")
    r = boss.post(base + "/club", dict(form, archive="user@example.test", archive_folder="Club"))
    assert r.status == 400
    assert "not an account of a domain you administer" in field_error(r.body, "archive")
    r = boss.post(base + "/club", dict(form, archive="staff@other.test", archive_folder="Club"))
    assert r.status == 303, r.body
    assert "archive: 'staff@other.test'" in cli_list(server, "list", "show", "club@other.test")
    assert boss.submit(base + "/club", base + "/club/remove", {}).status == 303


def test_list_pages_create_set_subscribe_and_remove(server: Server) -> None:
    """A list created on the Lists page, its settings saved (a bad size and an unknown owner
    refused on their fields), an address subscribed that then gets the list's posts, its mode
    changed, the CSV export, unsubscribing and removal."""
    c = logged_in(server)
    base = "/admin/domains/example.test/lists"
    r = c.submit(base, base, {"name": "news", "owner": "nobody@example.test", "policy": "anyone"})
    assert r.status == 400 and "no such account" in field_error(r.body, "owner")
    r = c.submit(base, base, {"name": "news", "owner": PM, "policy": "anyone"})
    assert r.status == 303 and r.location == base + "/news", r.body
    page = strict_html(c.get(base + "/news")).body
    form = form_values(page, base + "/news")
    assert form["policy"] == "anyone" and form["owner"] == PM

    bad = dict(form, size_limit="lots", archive="nobody@example.test")
    r = c.post(base + "/news", bad)
    assert r.status == 400
    strict_html(r)
    assert "whole number" in field_error(r.body, "size_limit")
    assert 'value="lots"' in r.body
    good = dict(form, subject_tag="[news]", size_limit="100000")
    assert c.post(base + "/news", good).status == 303
    r = c.post(base + "/news", dict(good, archive="nobody@example.test"))
    assert r.status == 400 and "no such account" in field_error(r.body, "archive")
    assert "subject_tag: '[news]'" in cli_list(server, "list", "show", "news@example.test")

    r = c.submit(
        base + "/news", base + "/news/subscribe", {"address": "no address", "mode": "feed"}
    )
    assert r.status == 400 and "not a subscriber address" in field_error(r.body, "sub_address")
    r = c.submit(base + "/news", base + "/news/subscribe", {"address": "user@example.test"})
    assert r.status == 303
    marker = uuid.uuid4().hex
    to = "news@example.test"
    server.send("writer@elsewhere.test", [to], message("writer@elsewhere.test", to, marker))
    (got,) = server.wait_messages("user", 1, containing=marker.encode())
    assert b"Subject: [news] " in got

    r = c.submit(
        base + "/news", base + "/news/subscribe", {"address": "user@example.test", "mode": "digest"}
    )
    assert r.status == 303
    assert "user@example.test  digest" in cli_list(server, "list", "subscribers", to)
    csv = c.get(base + "/news/subscribers.csv")
    assert csv.status == 200 and csv.header("Content-Type").startswith("text/csv")
    assert "user@example.test" in csv.body
    assert (
        c.submit(
            base + "/news", base + "/news/unsubscribe", {"address": "user@example.test"}
        ).status
        == 303
    )
    assert cli_list(server, "list", "subscribers", to) == ""
    assert c.submit(base + "/news", base + "/news/remove", {}).status == 303
    assert "news@" not in cli_list(server, "list", "show")
    log = server.log_text()
    for change in (
        "list news@example.test created",
        "user@example.test subscribed to news@example.test (feed)",
        "list news@example.test removed",
    ):
        assert f"change by web {PM}: {change}" in log, change


def test_list_subscribers_imported_from_an_uploaded_csv_file(server: Server) -> None:
    """An administrator uploads a CSV file (a real multipart form, as a browser's file input
    sends it) and the subscribers are on the list; a file with a bad row is refused naming its
    line and imports nothing; Replace leaves only the file's subscribers; no CSRF token, no
    import."""
    c = logged_in(server)
    base = "/admin/domains/example.test/lists"
    assert c.submit(base, base, {"name": "imported", "owner": PM, "policy": "anyone"}).status == 303
    page = base + "/imported"
    to = "imported@example.test"
    good = b"address,mode,real_name\nann@example.net,feed,Ann\nbob@example.net,digest,\n"
    r = c.upload(page + "/import", {"csrf": c.get(page).csrf()}, {"file": ("subs.csv", good)})
    assert r.status == 303, r.body
    assert "2 subscribers imported" in c.get(page).body
    subscribers = cli_list(server, "list", "subscribers", to)
    assert "ann@example.net  feed" in subscribers and "bob@example.net  digest" in subscribers

    bad = b"carol@example.net\ndave@example.net\nnot an address\n"
    r = c.upload(page + "/import", {"csrf": c.get(page).csrf()}, {"file": ("bad.csv", bad)})
    assert r.status == 400
    strict_html(r)
    assert "line 3" in field_error(r.body, "import")
    assert "carol@" not in cli_list(server, "list", "subscribers", to)

    r = c.upload(page + "/import", {"csrf": "forged"}, {"file": ("x.csv", b"eve@example.net\n")})
    assert r.status == 403
    assert "eve@" not in cli_list(server, "list", "subscribers", to)

    token = c.get(page).csrf()
    r = c.upload(
        page + "/import",
        {"csrf": token, "replace": "on"},
        {"file": ("new.csv", b"carol@example.net\n")},
    )
    assert r.status == 303, r.body
    assert cli_list(server, "list", "subscribers", to).split() == [
        "carol@example.net",
        "feed",
        "active",
    ]
    assert f"change by web {PM}: 1 subscriber(s) imported into {to} (replacing)" in (
        server.log_text()
    )
