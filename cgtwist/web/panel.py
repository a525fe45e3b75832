"""The web panel of one server: what every ``http`` listener shares.

Owns the wiring of the web edge: templates, the session table, the login checker, the
routes of WebUser (cgtwist.web.pages_user, pages_autoreply, pages_rules), WebAdmin
(cgtwist.web.pages_admin, pages_aliases, pages_groups, pages_listadmin, pages_settings,
pages_rules, pages_stats, pages_logs), /metrics
(pages_stats) and the lists' one-click unsubscribe (cgtwist.web.pages_lists), the static
files, and the limits
read from the settings at use. The composition root (cgtwist.app) builds one and asks it
for a factory per listener (``site``).
"""

from __future__ import annotations

import os
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.interfaces import IReactorTime

from cgtwist.activesessions import ActiveSessions
from cgtwist.admin import Admin
from cgtwist.interfaces import IAuthPenalty
from cgtwist.logs import Logger
from cgtwist.settings import SettingsHolder
from cgtwist.stats import Statistics
from cgtwist.types import ListenerSpec
from cgtwist.web import (
    pages_admin,
    pages_aliases,
    pages_autoreply,
    pages_groups,
    pages_listadmin,
    pages_lists,
    pages_logs,
    pages_rules,
    pages_sessions,
    pages_settings,
    pages_stats,
    pages_user,
)
from cgtwist.web.login import Login
from cgtwist.web.render import STATIC, Reply, Templates
from cgtwist.web.rights import Rights
from cgtwist.web.sessions import Session, SessionStore
from cgtwist.web.site import PeerLimit, Route, WebSite

log = Logger(namespace="cgtwist.web")

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".png": "image/png"}


class WebPanel:
    """WebAdmin under ``/admin/`` and WebUser under ``/`` for one server.

    ``admin``: the administration operations (changes are logged with the session's account
    as their actor); ``checker``/``penalty``: the logins of the mail protocols and their
    shared throttle; ``is_client_ip``: who may use plain HTTP; ``listening``: the bound
    listeners (cgtwist.listeners.ListenerManager.describe), for the HTTPS redirect;
    ``in_thread(fn, *args)``: runs CPU-heavy form checks (a pasted 100,000-line address
    list) off the reactor, which also serves SMTP, POP3 and IMAP; ``unsubscribe(list,
    token)``: the LIST agent's one-click unsubscribe (cgtwist.web.pages_lists);
    ``stats``: the server's counters (cgtwist.stats) for /metrics and the Statistics page;
    ``log_file``: the server's log file, for the log viewer (None: logging elsewhere);
    ``active``: the server's logged-in IMAP, POP3 and SMTP sessions, which WebUser lists and ends
    (cgtwist.web.pages_sessions; None: none are listed).
    """

    def __init__(
        self,
        *,
        store: Any,
        admin: Admin,
        settings: SettingsHolder,
        clock: IReactorTime,
        checker: Any,
        penalty: IAuthPenalty,
        is_client_ip: Callable[[str], bool],
        listening: Callable[[], list[dict[str, Any]]],
        main_domain: str,
        hostname: str,
        in_thread: Callable[..., Awaitable[Any]],
        unsubscribe: Callable[[str, str], Awaitable[bool]],
        stats: Optional[Statistics] = None,
        log_file: Optional[str] = None,
        active: Optional[ActiveSessions] = None,
    ) -> None:
        self.store = store
        self.admin = admin
        self.settings = settings
        self.clock = clock
        self.is_client_ip = is_client_ip
        self.listening = listening
        self.main_domain = main_domain
        self.hostname = hostname
        self.in_thread = in_thread
        self.unsubscribe = unsubscribe
        self.stats = stats
        self.log_file = log_file
        self.active = active if active is not None else ActiveSessions(clock.seconds)
        self.templates = Templates()
        self.sessions = SessionStore(clock, self.session_limits)
        self.login = Login(checker, penalty, store, main_domain)
        self.routes: list[Route] = (
            pages_user.routes()
            + pages_sessions.routes()
            + pages_admin.routes()
            + pages_settings.routes()
            + pages_rules.routes()
            + pages_autoreply.routes()
            + pages_stats.routes()
            + pages_logs.routes()
            + pages_lists.routes()
            + pages_aliases.routes()
            + pages_groups.routes()
            + pages_listadmin.routes()
        )
        self._static = self._load_static()
        self.open_connections: dict[str, int] = {}  # per peer address, every listener

    @staticmethod
    def _load_static() -> dict[str, tuple[bytes, str]]:
        files = {}
        for name in os.listdir(STATIC):
            kind = STATIC_TYPES.get(os.path.splitext(name)[1])
            if kind is not None:
                with open(os.path.join(STATIC, name), "rb") as f:
                    files[name] = (f.read(), kind)
        return files

    def static(self, name: str) -> Reply:
        found = self._static.get(name)
        if found is None:
            return Reply(status=404, body=b"not found", content_type="text/plain")
        body, kind = found
        return Reply(body=body, content_type=kind, headers={"Cache-Control": "max-age=3600"})

    async def session(self, session_id: str) -> Optional[Session]:
        """The live session for a cookie, checked against the store on every request: it ends
        when its account was removed or disabled or got a new password (also by
        cgtwist-admin), and its rights follow the account's current flags."""
        session = self.sessions.get(session_id) if session_id else None
        if session is None:
            return None
        found = await self.login.current(session.account)
        if found is None or found[1] != session.password:
            self.sessions.end_account(session.account)
            log.info(
                "web: sessions of {account} ended: account removed, disabled or password changed",
                account=session.account,
            )
            return None
        session.rights = Rights.of(found[0], self.main_domain)
        return session

    def site(self, spec: ListenerSpec) -> PeerLimit:
        """A factory for one ``http`` listener socket."""
        return PeerLimit(WebSite(self, spec))

    def acting(self, account: str) -> Admin:
        """The admin operations, logged as made by ``account`` through the web."""
        return self.admin.acting_as(f"web {account}")

    # -- limits (settings, read at use)
    def session_limits(self) -> tuple[float, float, int]:
        web = self.settings.current.web
        return (float(web.session_idle), float(web.session_lifetime), web.max_sessions)

    def body_limit(self) -> int:
        return self.settings.current.web.max_request_size

    def connection_timeout(self) -> float:
        return float(self.settings.current.web.idle_timeout)

    def max_text(self) -> int:
        """The longest Router table or address list a form takes: parsing and checking them
        runs on the reactor (the store validates a setting there), so their size bounds that
        CPU."""
        return self.settings.current.web.max_text_size

    def connections_per_ip(self) -> int:
        return self.settings.current.web.max_connections_per_ip

    def https_port(self) -> Optional[int]:
        """The port of a bound HTTPS listener, for plain HTTP's redirect."""
        for entry in self.listening():
            if entry.get("protocol") == "http" and entry.get("tls") == "implicit":
                if entry.get("bound") and entry.get("port"):
                    return int(entry["port"])
        return None
