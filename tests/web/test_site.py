"""The web panel in-process on a real socket and a real SQLite store: the failure paths an
end-to-end server cannot easily reach (the database going away under a logged-in session)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from cgtwist.admin import Admin
from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.core.auth import AccountChecker
from cgtwist.errors import StoreUnavailable
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec
from cgtwist.web.panel import WebPanel
from tests.e2e.webclient import WebClient
from tests.storage.dbcase import DatabaseCase

PASSWORD = "pm-web-secret"


class SiteCase(DatabaseCase):
    def _in_thread(self, fn: Any, *args: Any) -> Any:
        self.threaded = getattr(self, "threaded", []) + [fn.__name__]
        return deferToThread(fn, *args)

    async def serve(self, clients: bool = True, **overrides: Any) -> WebClient:
        self.store = store = await self.open_store("example.com")
        await store.bootstrap({"CGTWIST_POSTMASTER_PASSWORD": PASSWORD})
        settings = SettingsHolder(Settings(overrides))
        panel = WebPanel(
            store=store,
            admin=Admin(store, "example.com", "default", changed=lambda what, change: None),
            settings=settings,
            clock=reactor,
            checker=AccountChecker(store),
            penalty=AuthPenalty(reactor, settings),
            is_client_ip=lambda ip: clients,  # plain HTTP served, no connection cap
            listening=list,
            main_domain="example.com",
            hostname="mail.example.com",
            in_thread=self._in_thread,
            unsubscribe=lambda address, token: defer.succeed(False),
        )
        self.panel = panel
        site = panel.site(ListenerSpec("http", 0, "127.0.0.1", "none"))
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        return WebClient(port.getHost().port, secure=False)


class DatabaseOutageTests(SiteCase):
    async def test_outage_under_a_session_is_a_503_without_traceback(self) -> None:
        """With the store down, a logged-in page answers 503 "try again" and the log has one
        warning, not a traceback; when it is back the session still works."""
        client = await self.serve()
        r = await deferToThread(client.login, "postmaster", PASSWORD)
        self.assertEqual(r.status, 303)
        db = self.store.db
        real = db.run_interaction

        def down(*args: Any, **kw: Any) -> Any:
            raise StoreUnavailable("database frozen (test)")

        db.run_interaction = down  # type: ignore[method-assign]
        try:
            r = await deferToThread(client.get, "/admin/domains")
        finally:
            db.run_interaction = real  # type: ignore[method-assign]
        self.assertEqual(r.status, 503)
        self.assertIn("database is unavailable", r.body)
        self.assertFalse([e for e in self.events if "log_failure" in e])
        self.assertTrue(
            [e for e in self.events if "database unavailable" in str(e.get("log_format", ""))]
        )
        r = await deferToThread(client.get, "/admin/domains")
        self.assertEqual(r.status, 200)

    async def test_bad_utf8_and_unknown_paths(self) -> None:
        """A path that is not UTF-8 is a 400 and an unknown one a 404, both as pages."""
        client = await self.serve()
        r = await deferToThread(client.get, "/admin/%ff%fe")
        self.assertEqual(r.status, 400)
        r = await deferToThread(client.get, "/nowhere")
        self.assertEqual(r.status, 404)
        self.assertIn("No such page", r.body)
        self.assertFalse([e for e in self.events if "log_failure" in e])


def hold_connections(port: int, count: int) -> list[bool]:
    """Open ``count`` connections and tell for each whether the server closed it. The last
    one asks for a page (waiting up to 10 s for the answer or the close), which shows the
    server has accepted them all; the others, idle, are then open unless already closed."""
    import socket

    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    try:
        last = socks[-1]
        try:
            last.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            last_closed = last.recv(1) == b""
        except ConnectionError:
            last_closed = True
        closed = []
        for s in socks[:-1]:
            s.setblocking(False)
            try:
                closed.append(s.recv(1) == b"")
            except BlockingIOError:
                closed.append(False)
        return closed + [last_closed]
    finally:
        for s in socks:
            s.close()


class ConnectionLimitTests(SiteCase):
    async def test_one_address_holds_at_most_the_limit(self) -> None:
        """With web.max_connections_per_ip 2, a third connection from one address is closed
        at once and logged; closing one frees its slot."""
        await self.serve(clients=False, **{"web.max_connections_per_ip": 2})
        closed = await deferToThread(hold_connections, self.port, 3)
        self.assertEqual(closed, [False, False, True])
        self.assertTrue(
            [e for e in self.events if "web.max_connections_per_ip" in str(e.get("log_format"))]
        )
        deadline = reactor.seconds() + 30
        while self.panel.open_connections and reactor.seconds() < deadline:
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.panel.open_connections, {})  # every close was counted
        closed = await deferToThread(hold_connections, self.port, 2)
        self.assertEqual(closed, [False, False])

    async def test_client_ips_are_not_capped(self) -> None:
        await self.serve(clients=True, **{"web.max_connections_per_ip": 2})
        closed = await deferToThread(hold_connections, self.port, 4)
        self.assertEqual(closed, [False, False, False, False])


class AddressListTests(SiteCase):
    async def test_a_pasted_list_is_checked_off_the_reactor(self) -> None:
        """Checking every line of a pasted address list (up to 100,000 of them: seconds of
        CPU) runs in a thread, and each bad line comes back named."""
        client = await self.serve()
        await deferToThread(client.login, "postmaster", PASSWORD)
        page = "/admin/settings/network/clientips"
        text = "\n".join(f"10.0.{i // 256}.{i % 256}" for i in range(2000)) + "\nbad-line"
        r = await deferToThread(client.submit, page, page, {"ips": text})
        self.assertEqual(r.status, 400)
        self.assertIn("line 2001: <code>bad-line</code>", r.body)
        self.assertIn("line_errors", self.threaded)


class TextLimitTests(SiteCase):
    async def test_a_router_table_over_web_max_text_size_is_refused(self) -> None:
        """A Router table longer than web.max_text_size is refused with the limit, and the
        stored table is left alone."""
        client = await self.serve(**{"web.max_text_size": 100})
        await deferToThread(client.login, "postmaster", PASSWORD)
        table = "".join(f"<u{i}@old.test> = u{i}@new.test\n" for i in range(10))
        r = await deferToThread(client.submit, "/admin/router", "/admin/router", {"table": table})
        self.assertEqual(r.status, 400)
        self.assertIn("table is longer than 100 characters", r.body)
        self.assertEqual(await self.panel.admin.router.table(), "")


class OwnPasswordTests(SiteCase):
    async def test_webuser_holds_its_own_password_to_the_account_policy(self) -> None:
        """An account changing its own password in WebUser meets the same policy as
        ``account passwd`` (here the domain's password.min_length 12): the page answers 400
        with the policy's reason, and the old password still logs in."""
        client = await self.serve()
        await self.store.add_account("user", "example.com", "user-old-secret")
        await self.store.set_domain_setting("example.com", "password.min_length", 12)
        await deferToThread(client.login, "user@example.com", "user-old-secret")
        form = {"current": "user-old-secret", "new": "short-pw-1", "again": "short-pw-1"}
        r = await deferToThread(client.submit, "/", "/password", form)
        self.assertEqual(r.status, 400)
        self.assertIn("The password is too short: at least 12 characters.", r.body)
        self.assertIn('name="current"', r.body)  # the account's own page, not an error page
        self.assertIsNotNone(
            await self.store.verify_password("user", "example.com", "user-old-secret")
        )

    def test_the_web_password_setting_is_gone(self) -> None:
        """WebUser has no password policy of its own: web.min_password_length is refused as
        unknown, not stored and ignored."""
        from cgtwist import settings

        with self.assertRaisesRegex(ValueError, "unknown setting 'web.min_password_length'"):
            settings.validate("web.min_password_length", 8)


class FormInputTests(SiteCase):
    async def test_a_bad_port_or_an_empty_address_is_a_plain_answer(self) -> None:
        """Removing a listener with a port that is no number says so (not Python's int()
        message), and testing an empty address in the Router asks for one."""
        client = await self.serve()
        await deferToThread(client.login, "postmaster", PASSWORD)
        page = "/admin/settings/listeners"
        form = {"protocol": "smtp", "address": "0.0.0.0", "port": "abc", "tls": "none"}
        r = await deferToThread(client.submit, page, page + "/remove", form)
        self.assertEqual(r.status, 400)
        self.assertIn("The port is a number (1-65535).", r.body)
        self.assertNotIn("invalid literal", r.body)
        form = {"table": "", "address": " "}
        r = await deferToThread(client.submit, "/admin/router", "/admin/router/test", form)
        self.assertIn("Enter an address to test.", r.body)
        self.assertNotIn("ERROR()", r.body)
