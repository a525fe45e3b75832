"""What every part of the account store shares: the database, the node it speaks for, the
write path that announces each change, and the Deferred face of its ``async`` methods.

Owns no table. ``SettingsStore`` (cgtwist.storage.settings_store: server and node settings,
the nodes), ``GroupStore`` (cgtwist.storage.groups), ``ScopedSettingsStore``
(cgtwist.storage.scoped_settings: domain and account settings), ``PasswordStore``
(cgtwist.storage.password_store) and ``AccountStore`` (cgtwist.storage.store: domains,
accounts, aliases) build on it, in that order.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Coroutine, Optional, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

from cgtwist.config import DEFAULT_NODE, check_node
from cgtwist.errors import AlreadyExists, StoreError
from cgtwist.logs import Logger
from cgtwist.storage import notify
from cgtwist.storage.database import Cursor, Database

P = ParamSpec("P")
T = TypeVar("T")


class InvalidValue(StoreError, ValueError):
    """A setting value, service name or alias target that is not acceptable."""


def _deferred(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Deferred[T]]:
    """Expose an ``async def`` method as a Deferred-returning one (the IAccountStore contract)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(fn(*args, **kwargs))

    return wrapper


class StoreBase:
    """The database behind ``db`` and the node (``[server] node``) this store speaks for;
    ``now`` gives the timestamps. On PostgreSQL every change is announced to the other nodes
    (cgtwist.storage.notify) in the transaction that makes it."""

    _log = Logger()

    def __init__(
        self, db: Database, now: Callable[[], float] = time.time, node: str = DEFAULT_NODE
    ) -> None:
        self._db = db
        self._now = now
        self.node = check_node(node)

    @property
    def db(self) -> Database:
        return self._db

    def close(self) -> None:
        """Close the database pool (the service calls this from stopService)."""
        self._db.close()

    # ---- plumbing ------------------------------------------------------------------------

    async def _write(
        self,
        desc: str,
        fn: Callable[..., T],
        *args: Any,
        node: Optional[str] = None,
        announce: bool = True,
    ) -> T:
        """A write transaction; a UNIQUE violation from a concurrent writer is AlreadyExists.

        Where the engine can, the change is announced to every node in the same transaction
        (delivered at commit): ``node`` names the node whose settings alone changed, None a
        cluster-wide change. ``announce`` False: nothing another node must know about.
        """
        if announce and self._db.engine.announces:
            payload = notify.encode(desc, self.node, node)

            def announced(cur: Cursor, *a: Any) -> T:
                result = fn(cur, *a)
                cur.engine.announce(cur, notify.CHANNEL, payload)
                return result

            call: Callable[..., T] = announced
        else:
            call = fn
        try:
            return await self._db.run_interaction(desc, call, *args)
        except Exception as e:
            if self._db.is_integrity_error(e):
                raise AlreadyExists(f"{desc}: already exists") from None
            raise
