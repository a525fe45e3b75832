"""What the listener factories share: the live sessions a shutdown drains (SMTP, POP3 and
IMAP: SessionDrain), per-IP connection counting, and for POP3 and IMAP their set-up and the
count of logged-in sessions per account and IP.

Limits are read from the settings at each new connection or login, so a changed
``access.max_connections_per_ip`` or ``auth.max_userip_connections`` applies to the next one.
Client IPs are exempt from the per-IP connection caps, as Postfix exempts ``mynetworks``: an
office behind one NAT address is one IP for many users.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Union, cast

from twisted.internet import defer
from twisted.internet.protocol import ServerFactory

from cgtwist.activesessions import ActiveSession
from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.interfaces import IAuthPenalty, IStatistics
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import ListenerSpec


class ConnectionCounter(Protocol):
    """What a factory asks at each connection: PerIPConnections in the server, the server's
    count over the pipe in an IMAP worker process (cgtwist.imapworker.remote)."""

    def opened(self, ip: str) -> bool: ...

    def closed(self, ip: str) -> None: ...


class PerIPConnections:
    """Counts open connections per client IP against a dynamic setting.

    ``exempt(ip)``, when given, names the IPs the limit does not apply to (the Client IPs);
    their connections are counted all the same, so ``closed`` stays balanced when the list
    changes while they are open.
    """

    def __init__(
        self,
        settings: SettingsHolder,
        limit: Callable[[Settings], int] = lambda s: s.access.max_connections_per_ip,
        exempt: Optional[Callable[[str], bool]] = None,
    ) -> None:
        self.settings = settings
        self.limit = limit
        self.exempt = exempt
        self.counts: dict[str, int] = {}

    def opened(self, ip: str) -> bool:
        """Count a new connection; False when the IP is now over the limit (0 = no limit).

        The connection is counted either way: the caller closes it and calls ``closed``.
        """
        n = self.counts.get(ip, 0) + 1
        self.counts[ip] = n
        limit = self.limit(self.settings.current)
        if limit <= 0 or n <= limit:
            return True
        return self.exempt is not None and self.exempt(ip)

    def closed(self, ip: str) -> None:
        n = self.counts.get(ip, 0) - 1
        if n > 0:
            self.counts[ip] = n
        else:
            self.counts.pop(ip, None)


Admitted = Optional[Callable[[], None]]


class SessionCounter(Protocol):
    """What a login asks of the count of sessions per account and IP: ``UserIPSessions`` in
    the server, the server's count over the pipe in an IMAP worker process
    (cgtwist.imapworker.remote), whose answer comes later (a Deferred)."""

    def admit(
        self, account: str, ip: str, logout: Callable[[], None]
    ) -> Union[Admitted, defer.Deferred[Admitted]]: ...


class SessionList(Protocol):
    """What a factory needs of the list WebUser shows (cgtwist.activesessions.ActiveSessions
    in the server; the server's list over the pipe in an IMAP worker process)."""

    def add(
        self, account: str, protocol: str, peer: str, secure: bool, end: Callable[[str], None]
    ) -> ActiveSession: ...

    def remove(self, session: ActiveSession) -> None: ...


class UserIPSessions:
    """Logged-in sessions per (account, client IP) against ``auth.max_userip_connections``
    (Dovecot's ``mail_max_userip_connections``, default 10).

    One object serves every POP3 and IMAP listener, so the limit counts a user's sessions from
    one address whichever port they came in on. It applies to Client IPs too: it is per
    account, a guard against a runaway client, not against a crowd behind one address.
    """

    def __init__(self, settings: SettingsHolder) -> None:
        self.settings = settings
        self.counts: dict[tuple[str, str], int] = {}

    def admit(
        self, account: str, ip: str, logout: Callable[[], None]
    ) -> Optional[Callable[[], None]]:
        """Count a new session of ``account`` from ``ip``; None (not counted) when it would go
        over the limit (0 = no limit). Otherwise the session's logout, which now also gives
        its place back (once, however often it is called)."""
        key = (account.lower(), ip)
        n = self.counts.get(key, 0)
        limit = self.settings.current.auth.max_userip_connections
        if limit > 0 and n >= limit:
            return None
        self.counts[key] = n + 1
        done: list[bool] = []

        def counted_logout() -> None:
            if not done:
                done.append(True)
                self._closed(key)
            logout()

        return counted_logout

    def _closed(self, key: tuple[str, str]) -> None:
        n = self.counts.get(key, 0) - 1
        if n > 0:
            self.counts[key] = n
        else:
            self.counts.pop(key, None)


class SessionDrain:
    """The live sessions of one listener's factory and the shutdown that drains them, for the
    SMTP, POP3 and IMAP factories alike.

    The factory adds each session to ``live`` when it starts and calls ``forget(session)``
    when its connection is lost. A session's ``shutdown()`` says the protocol's goodbye (SMTP
    421, IMAP ``* BYE``, POP3 ``-ERR [SYS/TEMP]``) now, or after the command it is running.
    ``live`` is also what ``Components.abort_sessions`` cuts after the grace period.
    """

    def __init__(self) -> None:
        self.live: set[Any] = set()
        self.stopping = False
        self._stopped: list[defer.Deferred[None]] = []

    def shutdown(self) -> defer.Deferred[None]:
        """Tell every session the server is going away (each closes after its goodbye); the
        factory refuses new ones from now on (``stopping``).

        Fires when every connection has closed, so the process exits with no client left
        seeing a reset. The service calls it on SIGTERM before it stops listening.
        """
        self.stopping = True
        d: defer.Deferred[None] = defer.Deferred()
        if not self.live:
            d.callback(None)
            return d
        self._stopped.append(d)
        for proto in list(self.live):
            proto.shutdown()
        return d

    def forget(self, proto: Any) -> None:
        """A connection ended; fire shutdown() waiters once none is left."""
        self.live.discard(proto)
        if self.stopping and not self.live:
            waiters, self._stopped = self._stopped, []
            for d in waiters:
                d.callback(None)


class AccessFactory(ServerFactory, SessionDrain):
    """The common part of ``POP3Factory`` and ``IMAPFactory``: one listener's settings, portal,
    TLS, clock and AUTH penalty, its per-IP connection counts, and its live sessions
    (SessionDrain; ``buildProtocol`` adds each to ``live``).

    A subclass names its session class in ``protocol``; a session is built as
    ``protocol(listener, settings, portal, tls, hostname, clock, penalty)``.

    ``tls()`` returns the server context factory or None. ``penalty`` is the server's shared
    AuthPenalty (delays count per IP across SMTP, POP3 and IMAP); without one (tests) the
    factory keeps its own on ``clock`` and ``settings``: the same rules, not shared.
    ``is_client_ip`` exempts the Client IPs from ``access.max_connections_per_ip``;
    ``sessions`` is the server's shared UserIPSessions (without one, the factory's own).
    ``stats`` counts each connection under the listener's protocol; ``active`` is the
    server's list of logged-in sessions that WebUser shows and ends (``listed``). ``per_ip``
    replaces the factory's own count against ``access.max_connections_per_ip`` (an IMAP
    worker process counts without a limit: the server admitted the connection before it
    reached the factory, cgtwist.imapworker.remote.AdmissionGate).
    """

    def __init__(
        self,
        listener: ListenerSpec,
        settings: SettingsHolder,
        portal: Any,
        tls: Callable[[], Any],
        hostname: str,
        clock: Any = None,
        penalty: Optional[IAuthPenalty] = None,
        is_client_ip: Optional[Callable[[str], bool]] = None,
        sessions: Optional[SessionCounter] = None,
        stats: Optional[IStatistics] = None,
        active: Optional[SessionList] = None,
        per_ip: Optional[ConnectionCounter] = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # composition default only
        self.listener = listener
        self.settings = settings
        self.portal = portal
        self.tls = tls
        self.hostname = hostname
        self.clock = clock
        self.penalty: IAuthPenalty = (
            penalty if penalty is not None else AuthPenalty(clock, settings)
        )
        self.per_ip: ConnectionCounter = (
            per_ip if per_ip is not None else PerIPConnections(settings, exempt=is_client_ip)
        )
        self.sessions: SessionCounter = (
            sessions if sessions is not None else UserIPSessions(settings)
        )
        self.stats = stats
        self.active = active
        SessionDrain.__init__(self)

    def buildProtocol(self, addr: Any) -> Any:
        """A new session of ``protocol`` for this listener, counted among the live ones."""
        p = cast(Callable[..., Any], self.protocol)(
            self.listener,
            self.settings,
            self.portal,
            self.tls,
            self.hostname,
            self.clock,
            self.penalty,
        )
        p.factory = self
        self.live.add(p)
        if self.stats is not None:
            self.stats.connection(self.listener.protocol)
        return p

    def listed(
        self,
        account: str,
        ip: str,
        secure: bool,
        end: Callable[[str], None],
        logout: Callable[[], None],
    ) -> Callable[[], None]:
        """List a session that just logged in among ``account``'s active ones (``end(reason)``
        says the protocol's goodbye and closes it); returns its logout, which now also takes
        it off the list."""
        active = self.active
        if active is None:
            return logout
        session = active.add(account, self.listener.protocol, ip, secure, end)

        def unlisted_logout() -> None:
            active.remove(session)
            logout()

        return unlisted_logout

    def connection_opened(self, ip: str) -> bool:
        """Count a new connection; False when the IP is over access.max_connections_per_ip."""
        return self.per_ip.opened(ip)

    def connection_closed(self, ip: str) -> None:
        self.per_ip.closed(ip)
