"""A domain's Forwarders, Groups and account quota in a real browser (Debian's chromium
through chromedriver and Selenium, as tests/e2e/test_web_browser_e2e.py): postmaster opens
a domain's Forwarders tab, creates a forwarder, and mail from an outside sender (smtplib)
arrives at its target; creates a group, and a message reaches each member; the account
page shows the delivered mail in its quota usage; the pages fit a phone's width. A
screenshot of each page goes to the test's temporary directory."""

from __future__ import annotations

import os
import uuid
from typing import Any, Iterator

import pytest

from tests.e2e.harness import POSTMASTER_PASSWORD, Server
from tests.e2e.test_web_browser_e2e import Story
from tests.e2e.test_web_browser_e2e import browser as browser  # the module's fixture

pytestmark = pytest.mark.e2e

LISTENERS = [
    {"protocol": "http", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(str(tmp_path_factory.mktemp("webgroups") / "base"))
    srv.set_listeners(LISTENERS)
    for name in ("sales-desk", "ann", "bob"):
        srv.admin("account", "add", f"{name}@example.test", "--password", f"{name}-secret-1")
    srv.admin("list", "add", "news@example.test", "--owner", "postmaster@example.test")
    srv.admin(
        "list", "subscribe", "news@example.test", "a.very.long.subscriber.address@elsewhere.test"
    )
    with srv.running():
        yield srv


def message(to: str, marker: str) -> bytes:
    return (
        f"From: customer@elsewhere.test\r\nTo: {to}\r\nSubject: {marker}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@elsewhere.test>\r\n\r\nHello.\r\n"
    ).encode()


def test_forwarder_and_group_story(server: Server, browser: Any, tmp_path: Any) -> None:
    shots = str(tmp_path / "screenshots")
    os.makedirs(shots)
    s = Story(browser, server, shots)
    s.open("/admin/")
    s.login("postmaster@example.test", POSTMASTER_PASSWORD)
    s.link("example.test")
    s.link("Forwarders")
    assert browser.current_url == s.base + "/admin/domains/example.test/forwarders"
    s.shot("forwarders")

    # A bad address is named on its field; nothing is created.
    s.fill("new-name", "sales")
    s.fill("new-targets", "sales desk")
    s.click("Create forwarder")
    assert "'sales desk' is not an address" in s.text
    assert server.admin("forwarder", "list").stdout == ""
    s.shot("forwarder-error")

    # Create the forwarder; its page opens; mail from outside reaches the target.
    s.fill("new-targets", "sales-desk")
    s.click("Create forwarder")
    assert browser.current_url == s.base + "/admin/domains/example.test/forwarders/sales"
    assert "Forwarder sales@example.test created." in s.text
    s.shot("forwarder")
    marker = uuid.uuid4().hex
    server.send(
        "customer@elsewhere.test", ["sales@example.test"], message("sales@example.test", marker)
    )
    server.wait_messages("sales-desk", 1, containing=marker.encode())

    # Groups: create one with two members; one message, a copy to each.
    s.link("Domains")
    s.link("example.test")
    s.link("Groups")
    s.fill("new-name", "team")
    s.fill("new-targets", "ann\nbob@example.test")
    s.click("Create group")
    assert "Group team@example.test created." in s.text
    s.link("Groups")
    assert "team@example.test" in s.text and "ann@example.test, bob@example.test" in s.text
    s.shot("groups")
    marker = uuid.uuid4().hex
    server.send(
        "customer@elsewhere.test", ["team@example.test"], message("team@example.test", marker)
    )
    server.wait_messages("ann", 1, containing=marker.encode())
    server.wait_messages("bob", 1, containing=marker.encode())

    # The target's account page counts the forwarded message in its quota usage.
    s.open("/admin/domains/example.test/accounts/sales-desk")
    used = browser.find_element("id", "quota-messages").text
    assert used.startswith("Messages 1"), used
    s.shot("account-quota")

    # Every new page fits a phone: nothing scrolls sideways.
    browser.set_window_size(390, 844)
    try:
        for page in (
            "/admin/domains/example.test/forwarders",
            "/admin/domains/example.test/forwarders/sales",
            "/admin/domains/example.test/groups",
            "/admin/domains/example.test/lists",
            "/admin/domains/example.test/lists/news",
            "/admin/domains/example.test/accounts/sales-desk",
        ):
            s.open(page)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (page, overflow)
            s.shot("phone-" + page.rsplit("/", 1)[1])
    finally:
        browser.set_window_size(1200, 900)

    # Remove the forwarder.
    s.open("/admin/domains/example.test/forwarders/sales")
    s.click("Remove forwarder sales@example.test")
    assert "Forwarder sales@example.test removed." in s.text
    assert "sales@" not in server.admin("forwarder", "list").stdout
