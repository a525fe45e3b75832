"""Server-side web sessions: who is logged in, their CSRF token, when it ends.

Owns the session table in memory (a browser holds only a random identifier in a cookie):
creation at login, lookup with idle and absolute expiry on the clock passed in, ending at
logout, at a password change (every session of the account) or when the table is full (the
oldest goes). It must not read cookies or render; cgtwist.web.site does that.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

from twisted.internet.interfaces import IReactorTime

from cgtwist.web.rights import Rights


@dataclass
class Session:
    """One logged-in browser."""

    id: str
    account: str  # name@domain
    rights: Rights
    csrf: str
    created: float
    seen: float
    peer: str
    password: str = ""  # fingerprint of the stored hash at login (cgtwist.web.login)
    secure: bool = False  # logged in over HTTPS
    notes: list[str] = field(default_factory=list)  # one-shot messages for the next page
    # What WebUser's active sessions page names it by: ``id`` is the cookie's secret.
    handle: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def csrf_ok(self, token: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), token.encode("utf-8", "replace"))


class SessionStore:
    """Sessions of one server; ``limits()`` gives (idle seconds, lifetime seconds, maximum)
    from the current settings, so a change applies to the next lookup."""

    def __init__(self, clock: IReactorTime, limits: Callable[[], tuple[float, float, int]]) -> None:
        self.clock = clock
        self.limits = limits
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self, account: str, rights: Rights, peer: str, password: str = "", secure: bool = False
    ) -> Session:
        now = self.clock.seconds()
        _idle, _life, maximum = self.limits()
        while self._sessions and len(self._sessions) >= max(1, maximum):
            self._sessions.popitem(last=False)
        session = Session(
            id=secrets.token_urlsafe(32),
            account=account,
            rights=rights,
            csrf=secrets.token_urlsafe(32),
            created=now,
            seen=now,
            peer=peer,
            password=password,
            secure=secure,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Optional[Session]:
        """The live session with this identifier (touching it), or None; an expired one is
        removed."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock.seconds()
        idle, life, _maximum = self.limits()
        if now - session.seen > idle or now - session.created > life:
            del self._sessions[session_id]
            return None
        session.seen = now
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def end_account(self, account: str) -> int:
        """End every session of ``account`` (its password changed, or it was removed);
        returns how many there were."""
        ids = [sid for sid, s in self._sessions.items() if s.account == account]
        for sid in ids:
            del self._sessions[sid]
        return len(ids)

    def of_account(self, account: str) -> list[Session]:
        """``account``'s live sessions, oldest first (listing them touches none: an idle one
        still expires)."""
        now = self.clock.seconds()
        idle, life, _maximum = self.limits()
        return sorted(
            (
                s
                for s in self._sessions.values()
                if s.account == account and now - s.seen <= idle and now - s.created <= life
            ),
            key=lambda s: s.created,
        )

    def end_handle(self, account: str, handle: str) -> Optional[Session]:
        """End ``account``'s session named ``handle`` (WebUser's active sessions); another
        account's, or one already gone, is None."""
        for sid, session in self._sessions.items():
            if session.account == account and hmac.compare_digest(session.handle, handle):
                del self._sessions[sid]
                return session
        return None
