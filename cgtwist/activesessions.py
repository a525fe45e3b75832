"""The logged-in mail sessions of this process, per account: who is connected, and ending one.

Owns the list WebUser's "Active sessions" page shows (cgtwist.web.pages_sessions): each POP3,
IMAP and authenticated SMTP session from its login to its end, with its protocol, client
address, start time and whether it runs over TLS, and the call that ends it with the
protocol's own goodbye (IMAP ``* BYE``, POP3 ``-ERR``, SMTP 421). One object serves every
listener of the process, passed in by the composition root (cgtwist.app); the protocols add a
session at login and remove it when it ends. An SMTP worker process (``smtp.workers`` above
0) has its own, which the web panel does not see: its sessions are not listed.

It decides nothing about who may end what beyond "an account's own sessions only" (``end``
takes the account asking) and does no I/O; the web's own sessions stay in
cgtwist.web.sessions, where their secret identifiers are kept.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class ActiveSession:
    """One logged-in connection. ``id`` is random, shown to its account only; ``since`` is
    the login's time (seconds since the epoch, from the registry's clock)."""

    id: str
    account: str  # name@domain, lower case
    protocol: str  # "imap", "pop3", "smtp"
    peer: str  # the client's IP address
    since: float
    secure: bool  # TLS (implicit or STARTTLS/STLS before the login)
    end: Callable[[str], None] = field(compare=False, repr=False)  # says goodbye, closes


class ActiveSessions:
    """``ActiveSessions(now)``: the logged-in sessions of this server process, indexed by
    account; ``now`` gives the wall-clock time a session started (the reactor's ``seconds``).

    Bounded by what bounds connections (``access.max_connections_per_ip``,
    ``auth.max_userip_connections``): an entry lives exactly as long as its connection.
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._by_account: dict[str, dict[str, ActiveSession]] = {}

    def __len__(self) -> int:
        return sum(len(sessions) for sessions in self._by_account.values())

    def add(
        self,
        account: str,
        protocol: str,
        peer: str,
        secure: bool,
        end: Callable[[str], None],
    ) -> ActiveSession:
        """A session of ``account`` logged in; ``end(reason)`` will close it, saying
        ``reason`` in the protocol's goodbye. The caller removes it when its connection ends."""
        session = ActiveSession(
            id=secrets.token_urlsafe(12),
            account=account.lower(),
            protocol=protocol,
            peer=peer,
            since=self._now(),
            secure=secure,
            end=end,
        )
        self._by_account.setdefault(session.account, {})[session.id] = session
        return session

    def remove(self, session: ActiveSession) -> None:
        """The session's connection ended (once or more: later calls do nothing)."""
        sessions = self._by_account.get(session.account)
        if sessions is None:
            return
        sessions.pop(session.id, None)
        if not sessions:
            del self._by_account[session.account]

    def of_account(self, account: str) -> list[ActiveSession]:
        """``account``'s sessions, oldest first."""
        sessions = self._by_account.get(account.lower(), {})
        return sorted(sessions.values(), key=lambda s: (s.since, s.protocol, s.peer))

    def end(self, account: str, session_id: str, reason: str) -> Optional[ActiveSession]:
        """End the session ``session_id`` if it is one of ``account``'s (another account's,
        or one already gone, is None: nobody ends a session that is not theirs, even knowing
        its identifier). The session says ``reason`` in its goodbye and is removed at once."""
        session = self._by_account.get(account.lower(), {}).get(session_id)
        if session is None:
            return None
        self.remove(session)
        session.end(reason)
        return session
