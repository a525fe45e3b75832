"""The seed's story in a real browser (Debian's chromium through chromedriver and Selenium):
postmaster creates a domain and an account, sets Client IPs, adds a listener, edits the Router
and tests an address, holds and releases a queued message; the new user changes its password in WebUser
and then uses it over SMTP and IMAP, and sets a vacation message that answers mail sent by
smtplib. One browser session; a screenshot of each page goes to
the test's temporary directory."""

from __future__ import annotations

import imaplib
import os
import shutil
import smtplib
import ssl
from typing import Any, Iterator

import pytest

from tests.e2e.harness import POSTMASTER_PASSWORD, Server, wait_for
from tests.e2e.test_outbound_e2e import LISTENERS, Sink, make_message, make_server
from tests.e2e.test_queue_admin_e2e import deferred

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WEB = [
    {"protocol": "http", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
]

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
By = pytest.importorskip("selenium.webdriver.common.by").By
Select = pytest.importorskip("selenium.webdriver.support.select").Select
_exceptions = pytest.importorskip("selenium.common.exceptions")
StaleElementReferenceException = _exceptions.StaleElementReferenceException
WebDriverException = _exceptions.WebDriverException


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Server]:
    srv = make_server(str(tmp_path_factory.mktemp("webstory") / "base"), sink)
    srv.set_listeners(LISTENERS + WEB)
    with srv.running():
        yield srv


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        "--ignore-certificate-errors",  # the server's generated self-signed certificate
        "--window-size=1200,900",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(arg)
    profile = str(tmp_path_factory.mktemp("chromium-profile"))
    options.add_argument(f"--user-data-dir={profile}")
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Story:
    """The browser at the server's HTTPS listener, saving a screenshot of each page."""

    def __init__(self, driver: Any, server: Server, shots: str) -> None:
        self.d = driver
        self.base = f"https://127.0.0.1:{server.port('http', tls='implicit')}"
        self.shots = shots
        self.n = 0

    def shot(self, name: str) -> None:
        self.n += 1
        self.d.save_screenshot(os.path.join(self.shots, f"{self.n:02d}-{name}.png"))

    def open(self, path: str) -> None:
        self.d.get(self.base + path)

    def fill(self, field_id: str, text: str) -> None:
        element = self.d.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(text)

    def press(self, element: Any) -> None:
        """Click ``element`` and wait for the next page to have loaded (every form and link
        here leads to a new page: no scripts)."""
        old = self.d.find_element(By.TAG_NAME, "html")
        element.click()

        def replaced() -> bool:
            try:
                old.is_enabled()  # raises once the old document is gone
                return False
            except StaleElementReferenceException:
                pass
            except WebDriverException as e:
                # While the old document is being torn down, chromedriver can answer "Node
                # with given id does not belong to the document" instead of "stale": the same
                # fact, seen a moment earlier.
                if "does not belong to the document" not in str(e):
                    raise
            return self.d.execute_script("return document.readyState") == "complete"

        wait_for(replaced, 60, "the next page")

    def click(self, text: str, within: str = "") -> None:
        """Press the button labelled ``text`` (the first on the page, or in ``within``)."""
        self.press(self.d.find_element(By.XPATH, f"{within}//button[normalize-space()='{text}']"))

    def link(self, text: str) -> None:
        self.press(self.d.find_element(By.LINK_TEXT, text))

    @property
    def text(self) -> str:
        return str(self.d.find_element(By.TAG_NAME, "body").text)

    def login(self, name: str, password: str) -> None:
        self.fill("name", name)
        self.fill("password", password)
        self.click("Log in")


def test_seed_story(server: Server, sink: Sink, browser: Any, tmp_path: Any) -> None:
    shots = str(tmp_path / "screenshots")
    os.makedirs(shots)
    s = Story(browser, server, shots)

    # Log in as postmaster: WebAdmin asks for the login first.
    s.open("/admin/")
    assert browser.current_url.startswith(s.base + "/login")
    s.shot("login")
    s.login("postmaster@example.test", POSTMASTER_PASSWORD)
    assert browser.current_url == s.base + "/admin/domains"
    s.shot("domains")

    # Users -> Domains: create a domain; its Accounts page opens.
    s.fill("name", "story.test")
    s.click("Create domain")
    assert browser.current_url == s.base + "/admin/domains/story.test/accounts"
    assert "Domain story.test created." in s.text
    assert "story.test" in server.admin("domain", "list").stdout

    # Create an account with a password; its settings page opens.
    s.fill("new-name", "carol")
    s.fill("new-real", "Carol Story")
    s.fill("new-password", "carol-first-pw")
    s.click("Create account")
    assert browser.current_url == s.base + "/admin/domains/story.test/accounts/carol"
    assert "Account carol@story.test created." in s.text
    s.shot("account")
    s.link("story.test")
    assert "carol" in s.text and "Carol Story" in s.text
    s.shot("accounts")
    browser.set_window_size(390, 844)  # a phone
    s.shot("accounts-phone")
    browser.set_window_size(1200, 900)

    # Settings -> Network -> Client IPs: a bad line is named, a good list is stored.
    s.link("Settings")
    s.fill("ips", "192.0.2.0/24\n198.51.100.7-20 ; office\nnot-an-address")
    s.click("Save")
    assert "line 3" in s.text and "not-an-address" in s.text
    s.shot("clientips-error")
    s.fill("ips", "192.0.2.0/24\n198.51.100.7-20 ; office")
    s.click("Save")
    assert "Client IPs saved." in s.text
    assert "192.0.2.0/24" in server.admin("settings", "show", "clients.ips").stdout
    s.shot("clientips")

    # The new WebAdmin pages fit a phone's width: nothing scrolls sideways.
    browser.set_window_size(390, 844)
    for page in (
        "/admin/settings/mail/smtp/receiving",
        "/admin/settings/mail/smtp/delivery",
        "/admin/rules",
        "/admin/statistics",
        "/admin/logs",
    ):
        s.open(page)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, (page, overflow)
        s.shot("phone-" + page.rsplit("/", 1)[1])
    browser.set_window_size(1200, 900)
    s.open("/admin/settings/network/clientips")

    # Settings -> Listeners: add a POP3 listener with implicit TLS; it serves at once.
    s.link("Listeners")
    Select(browser.find_element(By.ID, "protocol")).select_by_value("pop3")
    s.fill("address", "127.0.0.1")
    s.fill("port", "0")
    Select(browser.find_element(By.ID, "tls")).select_by_value("implicit")
    s.click("Add listener")
    assert "Listener pop3 127.0.0.1:0 added." in s.text
    pop3 = wait_for(
        lambda: [p["port"] for p in server.ports() if p["protocol"] == "pop3" and p["bound"]],
        30,
        "the new POP3 listener",
    )[0]
    s.open("/admin/settings/listeners")
    assert f"listening on {pop3}" in s.text
    s.shot("listeners")

    # Router: save a record, then test an address with it.
    s.link("Router")
    s.fill("table", "<*@old.story.test> = *@story.test\n")
    s.click("Save table")
    assert "Router table saved: 1 record(s)." in s.text
    s.fill("address", "carol@old.story.test")
    s.click("Test")
    assert "carol@story.test" in s.text.split("Route:")[1]
    s.shot("router")

    # Queue: a message deferred by the remote end is held, then released and delivered.
    msg_id, marker = deferred(server, sink, "defer.test", "dan@defer.test")
    s.link("Queue")
    assert msg_id in s.text
    s.shot("queue")
    row = f"//tr[td/code[text()='{msg_id}']]"
    s.click("Hold", within=row)
    assert f"Message {msg_id}: hold done." in s.text
    assert "HELD" in server.admin("queue", "list", "--held").stdout
    s.shot("queue-held")
    sink.modes["defer.test"] = "accept"
    s.click("Release", within=row)
    assert f"Message {msg_id}: release done." in s.text
    sink.wait(marker)

    # WebUser: the new account logs in and changes its password.
    s.click("Log out")
    s.open("/")
    s.login("carol@story.test", "carol-first-pw")
    assert browser.current_url == s.base + "/"
    s.shot("webuser")
    s.fill("current", "carol-first-pw")
    s.fill("new", "carol-second-pw")
    s.fill("again", "carol-second-pw")
    s.click("Change password")
    assert browser.current_url.startswith(s.base + "/login")
    assert "The password was changed." in s.text
    s.shot("password-changed")

    # The new password works for mail, the old one no longer does.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    msg, tag = make_message(["carol@story.test"], sender="carol@story.test")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", submission=True), timeout=30) as smtp:
        smtp.starttls(context=ctx)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("carol@story.test", "carol-first-pw")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", submission=True), timeout=30) as smtp:
        smtp.starttls(context=ctx)
        smtp.login("carol@story.test", "carol-second-pw")
        assert not smtp.sendmail("carol@story.test", ["carol@story.test"], msg)
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.port("imap", tls="implicit"), ssl_context=ctx)
    try:
        imap.login("carol@story.test", "carol-second-pw")
        imap.select("INBOX")

        def arrived() -> bool:
            typ, data = imap.search(None, "HEADER", "Message-ID", tag.decode())
            return typ == "OK" and bool(data[0].split())

        wait_for(arrived, 60, "the message in carol's INBOX over IMAP")
    finally:
        imap.logout()

    # WebUser: carol sets a vacation message; mail sent to her by smtplib gets the reply.
    s.open("/")
    s.login("carol@story.test", "carol-second-pw")
    s.link("Vacation")
    away = f"Carol is away until Monday ({tag.decode()[:8]})."
    browser.find_element(By.NAME, "vacation_on").click()
    s.fill("vacation_text", away)
    s.click("Save")
    assert "Saved: vacation message on." in s.text
    assert away in server.admin("rules", "show", "--account", "carol@story.test").stdout
    s.shot("vacation")
    note, tag2 = make_message(["carol@story.test"], sender="alice@example.test")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", submission=True), timeout=30) as smtp:
        smtp.starttls(context=ctx)
        smtp.login("alice@example.test", "alice-secret")
        assert not smtp.sendmail("alice@example.test", ["carol@story.test"], note)
    (reply,) = server.wait_messages("alice", 1, containing=away.encode())
    assert b"Auto-Submitted: auto-replied" in reply and tag2 in reply

    # WebUser's Sessions page: this browser's session, marked, also at a phone's width.
    s.link("Sessions")
    assert "this session" in s.text
    s.shot("sessions")
    browser.set_window_size(390, 844)
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0, overflow
    s.shot("sessions-phone")
    browser.set_window_size(1200, 900)
    assert len(os.listdir(shots)) >= 14
